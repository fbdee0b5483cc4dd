"""Build OCI layouts, oci-archives and docker-archives from tar member specs, in pure Python.

Tests describe each layer as a list of :class:`Member` (files, dirs, links, devices,
whiteouts, xattrs, non-UTF-8 names) and get real image files that pkgchunk — or
skopeo/umoci — can read. Blobs are content-addressed exactly as the specs say, so
a test can also corrupt one on purpose.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from pkgchunk.oci.platform import host_arch

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"

_OCI_LAYER = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
_DOCKER_LAYER = {
    "none": "application/vnd.docker.image.rootfs.diff.tar",
    "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def _text(name: str | bytes) -> str:
    return name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name


@dataclass(frozen=True)
class Member:
    """One tar member. ``name``/``target`` may be bytes (kept byte for byte)."""

    name: str | bytes
    type: str = "file"
    data: bytes = b""
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    mtime: int = 1_700_000_000
    target: str | bytes = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: Mapping[str, bytes] = field(default_factory=dict)
    pax: Mapping[str, str] = field(default_factory=dict)
    uname: str = ""
    gname: str = ""

    def tarinfo(self) -> tarfile.TarInfo:
        info = tarfile.TarInfo(_text(self.name))
        info.type = _TYPES[self.type]
        default = 0o755 if self.type == "dir" else 0o777 if self.type == "symlink" else 0o644
        info.mode = default if self.mode is None else self.mode
        info.uid, info.gid, info.mtime = self.uid, self.gid, self.mtime
        info.uname, info.gname = self.uname, self.gname
        info.linkname = _text(self.target)
        info.devmajor, info.devminor = self.devmajor, self.devminor
        info.size = len(self.data) if self.type == "file" else 0
        headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in
                   self.xattrs.items()}
        headers.update(self.pax)
        info.pax_headers = headers
        return info


def file(name: str | bytes, data: bytes = b"", **kw: Any) -> Member:
    return Member(name, "file", data, **kw)


def directory(name: str | bytes, **kw: Any) -> Member:
    return Member(name, "dir", **kw)


def symlink(name: str | bytes, target: str | bytes, **kw: Any) -> Member:
    return Member(name, "symlink", target=target, **kw)


def hardlink(name: str | bytes, target: str | bytes, **kw: Any) -> Member:
    return Member(name, "hardlink", target=target, **kw)


def chardev(name: str, major: int, minor: int, **kw: Any) -> Member:
    return Member(name, "chr", devmajor=major, devminor=minor, **kw)


def blockdev(name: str, major: int, minor: int, **kw: Any) -> Member:
    return Member(name, "blk", devmajor=major, devminor=minor, **kw)


def fifo(name: str, **kw: Any) -> Member:
    return Member(name, "fifo", **kw)


def whiteout(path: str) -> Member:
    """Hide ``path`` of the lower layers."""
    head, _, base = path.rpartition("/")
    return file(f"{head}/.wh.{base}" if head else f".wh.{base}")


def opaque(directory_path: str) -> Member:
    """Hide everything lower layers put in ``directory_path``."""
    return file(f"{directory_path}/.wh..wh..opq")


def tar_bytes(members: Iterable[Member], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """An uncompressed tar of the members, in the given order."""
    buf = io.BytesIO()
    with tarfile.open(
        fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape"
    ) as tf:
        for m in members:
            tf.addfile(m.tarinfo(), io.BytesIO(m.data) if m.type == "file" else None)
    return buf.getvalue()


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(write_checksum=True).compress(data)
    assert compression == "none", compression
    return data


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Layer:
    """A layer: members (or a ready-made uncompressed ``raw`` tar) and how to compress it."""

    members: Sequence[Member] = ()
    compression: str = "gzip"
    raw: bytes | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    #: overrides the media type the compression implies (to test detection by magic)
    media_type: str | None = None

    def tar(self) -> bytes:
        return self.raw if self.raw is not None else tar_bytes(self.members)


@dataclass
class Built:
    """An image (or index) as blobs: ``digest`` names the top document in ``blobs``."""

    digest: str
    media_type: str
    size: int
    blobs: dict[str, bytes]
    config_digest: str = ""
    layer_digests: list[str] = field(default_factory=list)
    diff_ids: list[str] = field(default_factory=list)
    platform: dict[str, str] | None = None

    def descriptor(self, **annotations: str) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            d["platform"] = self.platform
        if annotations:
            d["annotations"] = dict(annotations)
        return d


def _json(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def build_image(
    layers: Sequence[Layer | Sequence[Member]],
    *,
    docker: bool = False,
    arch: str | None = None,
    config: Mapping[str, Any] | None = None,
    diff_ids: bool = True,
) -> Built:
    """Blobs of one image. ``docker`` uses Docker schema2 media types."""
    blobs: dict[str, bytes] = {}
    descs: list[dict[str, Any]] = []
    ids: list[str] = []
    for layer in layers:
        lay = layer if isinstance(layer, Layer) else Layer(list(layer))
        tar = lay.tar()
        blob = compress(tar, lay.compression)
        digest = digest_of(blob)
        blobs[digest] = blob
        ids.append(digest_of(tar))
        media = lay.media_type or (_DOCKER_LAYER if docker else _OCI_LAYER)[lay.compression]
        desc: dict[str, Any] = {"mediaType": media, "digest": digest, "size": len(blob)}
        if lay.annotations:
            desc["annotations"] = dict(lay.annotations)
        descs.append(desc)
    arch = arch or host_arch()
    cfg: dict[str, Any] = {"architecture": arch, "os": "linux", "config": {}}
    if diff_ids:
        cfg["rootfs"] = {"type": "layers", "diff_ids": ids}
    cfg.update(config or {})
    cfg_bytes = _json(cfg)
    cfg_digest = digest_of(cfg_bytes)
    blobs[cfg_digest] = cfg_bytes
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": {
            "mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
            "digest": cfg_digest,
            "size": len(cfg_bytes),
        },
        "layers": descs,
    }
    man_bytes = _json(manifest)
    man_digest = digest_of(man_bytes)
    blobs[man_digest] = man_bytes
    return Built(
        digest=man_digest,
        media_type=manifest["mediaType"],
        size=len(man_bytes),
        blobs=blobs,
        config_digest=cfg_digest,
        layer_digests=[d["digest"] for d in descs],
        diff_ids=ids,
        platform={"os": "linux", "architecture": arch},
    )


def build_index(images: Sequence[Built | dict[str, Any]], *, docker: bool = False) -> Built:
    """A (nested) index over images; a dict entry is a raw descriptor (e.g. an attestation)."""
    blobs: dict[str, bytes] = {}
    descs = []
    for img in images:
        if isinstance(img, Built):
            blobs.update(img.blobs)
            descs.append(img.descriptor())
        else:
            descs.append(img)
    media = DOCKER_LIST if docker else OCI_INDEX
    doc = {"schemaVersion": 2, "mediaType": media, "manifests": descs}
    data = _json(doc)
    digest = digest_of(data)
    blobs[digest] = data
    return Built(digest=digest, media_type=media, size=len(data), blobs=blobs)


def write_layout(
    dest: Path, images: Sequence[tuple[str | None, Built]] | Mapping[str | None, Built]
) -> Path:
    """An OCI layout at ``dest``; index.json lists each image under its tag (None: untagged).

    Untagged descriptors keep their platform, so several of them form a multi-arch layout.
    """
    pairs = list(images.items()) if isinstance(images, Mapping) else list(images)
    blob_dir = dest / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    manifests = []
    for tag, built in pairs:
        for digest, data in built.blobs.items():
            (blob_dir / digest.split(":", 1)[1]).write_bytes(data)
        desc = built.descriptor(**({REF_NAME: tag} if tag is not None else {}))
        if tag is not None or len(pairs) == 1:
            desc.pop("platform", None)
        manifests.append(desc)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    (dest / "index.json").write_bytes(_json(index))
    return dest


def blob_file(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def tar_directory(src: Path, dest: Path, *, extra: Sequence[tarfile.TarInfo] = ()) -> Path:
    """A tar of every file under ``src`` (relative names), as skopeo's oci-archive is."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tf:
        for root, dirs, files in os.walk(src):
            dirs.sort()
            for name in sorted(dirs) + sorted(files):
                full = Path(root) / name
                tf.add(full, arcname=str(full.relative_to(src)), recursive=False)
        for info in extra:
            tf.addfile(info)
    return dest


def write_oci_archive(dest: Path, work: Path, images: Mapping[str | None, Built]) -> Path:
    """An oci-archive: a tar of an OCI layout (built under ``work``)."""
    layout = write_layout(work, images)
    return tar_directory(layout, dest)


def write_docker_archive(
    dest: Path,
    images: Sequence[tuple[Sequence[str], Built]],
    *,
    legacy: bool = True,
    link_duplicates: bool = False,
) -> Path:
    """A ``docker save`` archive. ``legacy``: ``<id>/layer.tar`` names (docker < 25),
    else ``blobs/sha256/<hex>`` (docker >= 25). Layers are stored uncompressed, as
    docker does; ``link_duplicates`` makes a repeated layer a symlink like docker save.
    """
    files: dict[str, bytes] = {}
    links: dict[str, str] = {}
    entries = []
    for tags, built in images:
        cfg = built.blobs[built.config_digest]
        cfg_hex = built.config_digest.split(":", 1)[1]
        cfg_name = f"{cfg_hex}.json" if legacy else f"blobs/sha256/{cfg_hex}"
        files[cfg_name] = cfg
        names: list[str] = []
        for digest in built.layer_digests:
            tar = _decompress(built.blobs[digest])
            hexd = digest_of(tar).split(":", 1)[1]
            name = f"{hexd}/layer.tar" if legacy else f"blobs/sha256/{hexd}"
            if name in files and link_duplicates and legacy:
                alias = f"{hashlib.sha256(name.encode() + str(len(names)).encode()).hexdigest()}"
                links[f"{alias}/layer.tar"] = f"../{name}"
                name = f"{alias}/layer.tar"
            else:
                files[name] = tar
            names.append(name)
        entries.append({"Config": cfg_name, "RepoTags": list(tags), "Layers": names})
    files["manifest.json"] = json.dumps(entries).encode()
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tf:
        made: set[str] = set()
        for name in sorted(set(files) | set(links)):
            head = name.rpartition("/")[0]
            if head and head not in made:
                made.add(head)
                d = tarfile.TarInfo(head)
                d.type = tarfile.DIRTYPE
                d.mode = 0o755
                tf.addfile(d)
            if name in links:
                info = tarfile.TarInfo(name)
                info.type = tarfile.SYMTYPE
                info.linkname = links[name]
                tf.addfile(info)
                continue
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(files[name]))
    return dest


def _decompress(blob: bytes) -> bytes:
    if blob[:2] == b"\x1f\x8b":
        return gzip.decompress(blob)
    if blob[:4] == b"\x28\xb5\x2f\xfd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    return blob


def summary(tree: Any) -> dict[str, tuple[Any, ...]]:
    """A FileTree as comparable data: metadata, content hash and hardlink peers per path.

    Hardlink ids are arbitrary, so a linked file is described by the set of paths
    sharing its group; content by its sha256, read through ``tree.open``.
    """
    groups: dict[int, set[str]] = {}
    for path, e in tree.entries.items():
        if e.link:
            groups.setdefault(e.link, set()).add(path)
    out: dict[str, tuple[Any, ...]] = {}
    for path, e in tree.entries.items():
        content = None
        if e.kind == "reg":
            with tree.open(path) as f:
                content = hashlib.sha256(f.read()).hexdigest()
        peers = frozenset(groups[e.link]) if e.link else frozenset()
        out[path] = (
            e.kind, e.mode, e.uid, e.gid, e.mtime, e.size, e.target,
            e.devmajor, e.devminor, tuple(e.xattrs), content, peers,
        )
    return out


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
