"""The tar files around a written image: oci-archive (a tarred layout) and docker-archive.

Both are packed deterministically (sorted names, mtime 0, root-owned, fixed modes),
so the same image always gives the same archive bytes. docker-archive is the
``docker save`` format with its blobs under ``blobs/sha256/`` (as docker >= 25
writes them): ``manifest.json`` names the config, the RepoTags and the layer
files; layers keep the chosen compression (docker load and skopeo detect it).
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections.abc import Sequence

from pkgchunk.errors import OutputError
from pkgchunk.oci.compress import Writable
from pkgchunk.oci.mediatypes import OCI_INDEX
from pkgchunk.oci.store import (
    LAYOUT_FILE,
    LAYOUT_VERSION,
    BlobStore,
    Descriptor,
    canonical_json,
    set_tag,
)

#: An archive member: its name and either its bytes or the path of a file to stream.
Member = tuple[str, bytes | str]

_REF_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOCKER_REF = re.compile(
    rf"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?{_REF_COMPONENT}(?:/{_REF_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?$"
)


def blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.partition(":")[2]


def docker_repo_tag(label: str, ref: str | None) -> str | None:
    """The RepoTags entry for a docker-archive ``:REF`` (``:latest`` added like docker does)."""
    if ref is None:
        return None
    if not _DOCKER_REF.match(ref):
        raise OutputError(f"{label}: '{ref}' is not a valid docker image name[:tag]")
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else ref + ":latest"


def archive_members(
    transport: str,
    store: BlobStore,
    config: Descriptor,
    manifest: Descriptor,
    layers: Sequence[str],
    tag: str | None,
    label: str,
) -> list[Member]:
    """What goes into the archive: the format's own JSON files, then every blob."""
    if transport == "oci-archive":
        index = set_tag(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}, manifest, tag
        )
        files: list[Member] = [
            (LAYOUT_FILE, canonical_json({"imageLayoutVersion": LAYOUT_VERSION})),
            ("index.json", canonical_json(index)),
        ]
        blobs = [config.digest, manifest.digest, *layers]
    else:
        repo_tag = docker_repo_tag(label, tag)
        doc = [
            {
                "Config": blob_name(config.digest),
                "RepoTags": [repo_tag] if repo_tag else [],
                "Layers": [blob_name(d) for d in layers],
            }
        ]
        files = [("manifest.json", canonical_json(doc))]
        blobs = [config.digest, *layers]
    files.extend((blob_name(d), store.path(d)) for d in sorted(set(blobs)))
    return files


def pack(out: Writable, files: Sequence[Member]) -> None:
    """A deterministic tar of ``files``, with their parent directories first."""
    dirs = sorted({d for name, _ in files for d in _parents(name)})
    tf = tarfile.TarFile(fileobj=out, mode="w", format=tarfile.PAX_FORMAT)  # type: ignore[arg-type]
    for d in dirs:
        ti = tarfile.TarInfo(d)
        ti.type = tarfile.DIRTYPE
        ti.mode = 0o755
        tf.addfile(ti)
    for name, content in files:
        ti = tarfile.TarInfo(name)
        ti.mode = 0o644
        if isinstance(content, bytes):
            ti.size = len(content)
            tf.addfile(ti, io.BytesIO(content))
        else:
            ti.size = os.path.getsize(content)
            with open(content, "rb") as f:
                tf.addfile(ti, f)
    tf.close()


def _parents(name: str) -> list[str]:
    parts = name.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]
