"""Image references in skopeo's transport syntax, so users type what they already know.

``oci:DIR[:TAG]``, ``oci-archive:FILE[:TAG]``, ``docker-archive:FILE[:REF]``,
``rootfs:DIR`` (a plain directory, input only), ``containers-storage:NAME`` and
``docker://REF``. A bare path to a directory holding ``oci-layout`` means ``oci:``.
Like skopeo, the path ends at the first ':' after the transport.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pkgchunk.errors import InputError

#: Transports whose ``path`` is a file or directory on this machine.
LOCAL_TRANSPORTS = ("oci", "oci-archive", "docker-archive", "rootfs")
#: Transports that need skopeo to reach a registry or container storage.
REMOTE_TRANSPORTS = ("containers-storage", "docker")
TRANSPORTS = LOCAL_TRANSPORTS + REMOTE_TRANSPORTS

_HINT = (
    "use oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REF], rootfs:DIR,"
    " containers-storage:NAME or docker://REF"
)


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A parsed reference. ``tag`` is the ``:TAG`` (or docker-archive ``:REF``), if any."""

    transport: str
    path: str
    tag: str | None = None

    def __str__(self) -> str:
        if self.transport == "docker":
            return f"docker://{self.path}"
        base = f"{self.transport}:{self.path}"
        return f"{base}:{self.tag}" if self.tag is not None else base


def parse_ref(text: str, *, output: bool = False) -> ImageRef:
    """Parse a reference; ``output=True`` rejects transports that cannot be written."""
    ref = _parse(text)
    if output and ref.transport == "rootfs":
        raise InputError(f"{text}: rootfs: can only be read, not written")
    return ref


def _parse(text: str) -> ImageRef:
    if not text:
        raise InputError(f"empty image reference ({_HINT})")
    if text.startswith("docker://"):
        name = text[len("docker://") :]
        if not name:
            raise InputError(f"{text}: missing image name after docker://")
        return ImageRef("docker", name)
    if os.path.isdir(text) and os.path.exists(os.path.join(text, "oci-layout")):
        return ImageRef("oci", text)
    transport, colon, rest = text.partition(":")
    if not colon:
        if os.path.isdir(text):
            raise InputError(
                f"{text}: directory has no oci-layout file (use rootfs:{text} for a plain tree)"
            )
        raise InputError(f"{text}: not an image reference ({_HINT})")
    if transport == "docker":
        # skopeo refuses 'docker:NAME'; cutting it at the next ':' would silently read
        # another image (docker:debian:bookworm as debian, a registry port as the tag).
        raise InputError(f"{text}: write docker://{rest.lstrip('/')} (a registry reference"
                         " takes two slashes after 'docker:')")
    if transport not in TRANSPORTS:
        raise InputError(f"{text}: unknown transport '{transport}' ({_HINT})")
    if transport in ("rootfs", "containers-storage"):
        path, tag = rest, None
    else:
        path, sep, tag_text = rest.partition(":")
        tag = tag_text if sep else None
        if tag == "":
            raise InputError(f"{text}: empty tag after ':'")
    if not path:
        raise InputError(f"{text}: missing path after '{transport}:'")
    return ImageRef(transport, path, tag)
