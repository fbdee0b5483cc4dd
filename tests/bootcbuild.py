"""bootc-shaped test images, made the way ostree makes them, with the real ``ostree`` CLI.

A Fedora/CentOS bootc base image is ostree-encapsulated: ``/usr`` is committed into
``/sysroot/ostree/repo`` and every file under ``/usr`` is a hard link to its content
object (``objects/XX/YYYY.file``); identical objects are stored once, so files of
unrelated packages share inodes. :func:`ostree_farm` does exactly that to a root on disk:

    ostree --repo=ROOT/sysroot/ostree/repo init --mode=bare
    ostree --repo=... commit --tree=dir=ROOT/usr
    ostree --repo=... checkout -H COMMIT ROOT/usr   (the old /usr replaced)

:func:`pack_root` writes a root as a one-layer OCI layout (tar streamed from disk with
its hard links and xattrs, gzip) with the labels bootc reads (``containers.bootc``,
``ostree.bootable``) and the two ostree-ext writes (``ostree.commit``,
``ostree.final-diffid``). Roots come from :mod:`tests.debbuild` (real .debs installed
by dpkg) or :func:`tests.versions.fedora_root` (real RPMs installed by rpm).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from pkgchunk.oci.platform import host_arch
from tests.helpers import require_tool
from tests.imagebuild import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, REF_NAME

REPO = "sysroot/ostree/repo"
#: The ostree.* labels an ostree-ext encapsulated image carries besides the bootc ones.
BOOTC_LABELS = {"containers.bootc": "1", "ostree.bootable": "1"}
#: Fixed commit time: the same root gives the same commit checksum.
COMMIT_TIME = "2024-01-01T00:00:00Z"


def _run(cmd: Sequence[str]) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return proc.stdout


def ostree_farm(root: Path, *, branch: str = "bootc") -> str:
    """Commit ROOT/usr into ROOT/sysroot/ostree/repo and replace ROOT/usr with a hardlink
    checkout of that commit; add the ``/ostree -> sysroot/ostree`` link bootc expects.
    Returns the commit checksum. Root gets a ``bare`` repo (real owners); anyone else
    ``bare-user`` with a user-mode checkout."""
    ostree = require_tool("ostree")
    repo = root / REPO
    repo.mkdir(parents=True)
    bare = os.geteuid() == 0
    _run([ostree, f"--repo={repo}", "init", f"--mode={'bare' if bare else 'bare-user'}"])
    commit = _run([
        ostree, f"--repo={repo}", "commit", f"--branch={branch}", f"--tree=dir={root / 'usr'}",
        f"--timestamp={COMMIT_TIME}", "--subject=pkgchunk test", "--no-bindings",
    ]).strip()
    fresh = root / "usr.checkout"
    _run([ostree, f"--repo={repo}", "checkout", "-H", *([] if bare else ["-U"]), commit,
          str(fresh)])
    shutil.rmtree(root / "usr")
    fresh.rename(root / "usr")
    zero_mtimes(root / "usr")
    if not (root / "ostree").exists():
        (root / "ostree").symlink_to("sysroot/ostree")
    return commit


def zero_mtimes(top: Path) -> None:
    """ostree stores no mtimes: its objects (so every hardlinked /usr file) have mtime 0, and
    ostree-ext's tar export writes 0 for every entry. A checkout creates symlinks and empty
    files fresh, dated now; give them (and every directory) the 0 an encapsulated image has."""
    for dirpath, dirs, files in os.walk(top):
        for name in dirs + files:
            full = os.path.join(dirpath, name)
            if os.lstat(full).st_mtime != 0:
                os.utime(full, (0, 0), follow_symlinks=False)
    os.utime(top, (0, 0), follow_symlinks=False)


def copy_root(src: Path, dest: Path) -> Path:
    """A copy keeping hard links, modes, owners, times and xattrs (``cp -a``)."""
    _run(["cp", "-a", str(src), str(dest)])
    return dest


class _HashingWriter:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.h.update(data)
        self.size += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()

    def tell(self) -> int:
        return self.size


def _xattrs(full: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        names = os.listxattr(full, follow_symlinks=False)
    except OSError:
        return out
    for name in sorted(names):
        value = os.getxattr(full, name, follow_symlinks=False)
        out[f"SCHILY.xattr.{name}"] = value.decode("utf-8", "surrogateescape")
    return out


def tar_root(root: Path, dest: Path) -> str:
    """An uncompressed tar of everything under ``root`` (sorted, hard links as links,
    xattrs as SCHILY records); returns its sha256 (the layer's diff_id)."""
    with open(dest, "wb") as raw:
        sink = _HashingWriter(raw)
        with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                          encoding="utf-8", errors="surrogateescape") as tf:
            for dirpath, dirs, files in os.walk(root):
                dirs.sort()
                for name in sorted(dirs) + sorted(files):
                    full = os.path.join(dirpath, name)
                    arc = os.path.relpath(full, root)
                    info = tf.gettarinfo(full, arcname=arc)
                    info.uname = info.gname = ""
                    info.pax_headers = _xattrs(full)
                    if info.isreg():
                        with open(full, "rb") as f:
                            tf.addfile(info, f)
                    else:
                        tf.addfile(info)
                # os.walk lists symlinks to directories among dirs: never descend into them
                dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(dirpath, d))]
    return "sha256:" + sink.h.hexdigest()


def _blob(blobs: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def pack_root(
    root: Path,
    layout: Path,
    tag: str = "latest",
    *,
    labels: Mapping[str, str] | None = None,
    bootc: bool = True,
    commit: str | None = None,
    level: int = 6,
) -> str:
    """Write ``root`` as a one-layer gzip image tagged ``tag`` in the OCI layout ``layout``
    (created or added to); returns its ``oci:`` reference. ``bootc`` adds the bootc labels,
    and with ``commit`` the two ostree-ext labels (``ostree.final-diffid`` is this layer's
    diff_id, as ostree-ext writes it for its last layer)."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    work = layout / f".{tag}.tar"
    diff_id = tar_root(root, work)
    gz = layout / f".{tag}.tar.gz"
    with open(work, "rb") as src, open(gz, "wb") as out:
        sink = _HashingWriter(out)
        with gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=level, mtime=0) as z:
            shutil.copyfileobj(src, z, 1 << 20)
    work.unlink()
    layer_digest = sink.h.hexdigest()
    gz.rename(blobs / layer_digest)
    all_labels = dict(BOOTC_LABELS) if bootc else {}
    if bootc and commit is not None:
        all_labels.update({"ostree.commit": commit, "ostree.final-diffid": diff_id})
    all_labels.update(labels or {})
    config = {
        "architecture": host_arch(), "os": "linux",
        "config": {"Labels": all_labels, "Cmd": ["/sbin/init"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "ostree-ext encapsulate (test)"}],
    }
    cdesc = _blob(blobs, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **cdesc},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": f"sha256:{layer_digest}", "size": sink.size}],
    }
    mdesc = _blob(blobs, json.dumps(manifest, sort_keys=True).encode())
    index_path = layout / "index.json"
    index: dict[str, Any] = (
        json.loads(index_path.read_text()) if index_path.exists()
        else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    )
    index["manifests"] = [m for m in index["manifests"]
                          if (m.get("annotations") or {}).get(REF_NAME) != tag]
    index["manifests"].append(
        {"mediaType": OCI_MANIFEST, **mdesc, "annotations": {REF_NAME: tag}}
    )
    index_path.write_text(json.dumps(index, sort_keys=True))
    return f"oci:{layout}:{tag}"


def relabel(ref: str, drop: Sequence[str] = (), set_labels: Mapping[str, str] | None = None,
            new_tag: str | None = None) -> str:
    """Rewrite the config labels of image ``oci:LAYOUT:TAG`` (a forged output, for tests that
    check what verify trusts); returns the reference of the relabelled image."""
    _, _, rest = ref.partition(":")
    layout_s, _, tag = rest.rpartition(":")
    layout = Path(layout_s)
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    desc = next(m for m in index["manifests"] if (m.get("annotations") or {}).get(REF_NAME) == tag)
    manifest = json.loads((blobs / desc["digest"].split(":", 1)[1]).read_bytes())
    config = json.loads((blobs / manifest["config"]["digest"].split(":", 1)[1]).read_bytes())
    found = dict(config.get("config", {}).get("Labels") or {})
    for key in drop:
        found.pop(key, None)
    found.update(set_labels or {})
    config.setdefault("config", {})["Labels"] = found
    manifest["config"] = {**manifest["config"], **_blob(blobs, json.dumps(config).encode())}
    mdesc = _blob(blobs, json.dumps(manifest).encode())
    tag2 = new_tag or tag
    index["manifests"] = [m for m in index["manifests"]
                          if (m.get("annotations") or {}).get(REF_NAME) != tag2]
    index["manifests"].append({"mediaType": desc["mediaType"], **mdesc,
                               "annotations": {REF_NAME: tag2}})
    (layout / "index.json").write_text(json.dumps(index))
    return f"oci:{layout}:{tag2}"


def is_hardlinked(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISREG(st.st_mode) and st.st_nlink > 1
