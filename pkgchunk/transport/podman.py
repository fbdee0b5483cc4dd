"""Read a containers-storage image in place through ``podman image mount``.

No copy and no decompression: the mounted root is read like ``rootfs:``, and the
image's own config comes from ``skopeo inspect --config``. Needs root (podman mounts
only there, or inside ``podman unshare``); the mount is released when the Image closes.
"""

from __future__ import annotations

import logging
import os

from pkgchunk.errors import InputError
from pkgchunk.image import Image
from pkgchunk.refs import ImageRef
from pkgchunk.transport.skopeo import Store, parse_store, run, skopeo_name, tool

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


def mount_image(ref: ImageRef) -> Image:
    """Read a containers-storage image in place through ``podman image mount``."""
    from pkgchunk.oci.blobs import parse_json
    from pkgchunk.oci.rootfs import read_rootfs

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
    config_text = run(
        [skopeo, "inspect", "--config", "--raw", skopeo_name(ref)], label, InputError
    )
    config = parse_json(label, config_text.encode(), "config")
    path = run([*base, "image", "mount", store.name], label, InputError).strip()
    unmount = [*base, "image", "unmount", store.name]

    def release() -> None:
        try:
            run(unmount, label, InputError)
        except InputError as err:
            log.warning("%s", err)

    try:
        if not path or not os.path.isdir(path):
            raise InputError(f"{label}: podman image mount gave no directory ({path!r})")
        image = read_rootfs(path, ref=label)
    except BaseException:
        release()
        raise
    image.config = config
    image.cleanups.append(release)
    return image
