"""Read a containers-storage image in place through ``podman image mount``.

No copy and no decompression: the mounted root is read like ``rootfs:``, and the
image's own config comes from ``skopeo inspect --config``. Needs root (podman mounts
only there, or inside ``podman unshare``); the mount is released when the Image closes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from pkgchunk.errors import InputError
from pkgchunk.refs import ImageRef
from pkgchunk.transport.proc import run, tool
from pkgchunk.transport.skopeo import Store, parse_store, skopeo_name

log = logging.getLogger(__name__)


def _podman_args(store: Store) -> list[str]:
    args = []
    if store.root:
        args.append(f"--root={store.root}")
    if store.runroot:
        args.append(f"--runroot={store.runroot}")
    if store.driver:
        args.append(f"--storage-driver={store.driver}")
    if store.options:
        args += [f"--storage-opt={o}" for o in store.options.split(",") if o]
    return args


@dataclass(frozen=True)
class Mounted:
    """A containers-storage image mounted read-only: its root directory and raw config."""

    path: str
    config: bytes
    release: Callable[[], None]


def mount(ref: ImageRef) -> Mounted:
    """Mount a containers-storage image through ``podman image mount``; the caller reads
    ``path`` and must call ``release``."""
    label = str(ref)
    podman = tool("podman", f"{label}: --mount")
    skopeo = tool("skopeo", f"{label}: reading the image config")
    if os.geteuid() != 0:
        raise InputError(
            f"{label}: podman image mount needs root; run pkgchunk under 'podman unshare'"
            " or leave out --mount"
        )
    store = parse_store(ref)
    base = [podman, *_podman_args(store)]
    config = run(
        [skopeo, "inspect", "--config", "--raw", skopeo_name(ref)], label, InputError
    ).encode()
    path = run([*base, "image", "mount", store.name], label, InputError).strip()
    unmount = [*base, "image", "unmount", store.name]

    def release() -> None:
        try:
            run(unmount, label, InputError)
        except InputError as err:
            log.warning("%s", err)

    if not path or not os.path.isdir(path):
        release()
        raise InputError(f"{label}: podman image mount gave no directory ({path!r})")
    return Mounted(path, config, release)
