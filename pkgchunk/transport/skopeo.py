"""Container storage and registries, reached through skopeo (and podman for mounts).

pkgchunk itself reads and writes only OCI layouts and archives. Every other transport
goes through a temporary OCI layout: an input is ``skopeo copy``-ed into one and read
from there, an output is written to one and ``skopeo copy``-ed to its destination. So
registries, credentials, TLS and storage drivers behave exactly as the user's own
skopeo and podman configuration says, and pkgchunk never speaks HTTP or touches a
store's on-disk format.

``containers-storage:`` input can instead be read in place through ``podman image
mount`` (``TransportOptions.mount``, :mod:`pkgchunk.transport.podman`): no copy and no
decompression, at the price of needing podman and root (or ``podman unshare``). What
only needs manifests (``diff``, a previous build) uses ``skopeo inspect``
(:mod:`pkgchunk.transport.remote`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

from pkgchunk import progress
from pkgchunk.errors import InputError, OutputError
from pkgchunk.refs import REMOTE_TRANSPORTS, ImageRef
from pkgchunk.transport.proc import run, tool

log = logging.getLogger(__name__)

Side = Literal["src", "dest"]

#: The tag used inside the temporary layouts.
TAG = "pkgchunk"

@dataclass(frozen=True)
class TransportOptions:
    """What passes through to skopeo and podman.

    ``storage_*`` name the containers-storage store (skopeo spells it
    ``containers-storage:[driver@root+runroot]NAME``; a reference that already has
    the brackets wins). ``*_tls_verify`` None means skopeo's default (verify).
    ``creds`` (USER[:PASSWORD]) applies to whichever registry is being talked to.
    """

    storage_root: str | None = None
    storage_runroot: str | None = None
    storage_driver: str | None = None
    src_tls_verify: bool | None = None
    dest_tls_verify: bool | None = None
    authfile: str | None = None
    creds: str | None = None
    mount: bool = False


#: Ambient on purpose: these are the user's skopeo/podman settings (store, TLS, credentials)
#: for one CLI invocation, needed by every skopeo call however deep (inputs, the previous
#: build, DEST's tag lookup, diff), and never by the stages in between; threading them
#: through io, previous, rechunk, diff and verify would add a parameter to every function
#: on the way and change no behaviour. Set once by the CLI, read only in transport/.
_OPTIONS: ContextVar[TransportOptions] = ContextVar(
    "pkgchunk_transport_options", default=TransportOptions()  # noqa: B039 - frozen
)


def current() -> TransportOptions:
    return _OPTIONS.get()


@contextlib.contextmanager
def transport_options(opts: TransportOptions) -> Iterator[TransportOptions]:
    """Use ``opts`` for every skopeo/podman call made inside the block."""
    token = _OPTIONS.set(opts)
    try:
        yield opts
    finally:
        _OPTIONS.reset(token)


def is_remote(ref: ImageRef) -> bool:
    return ref.transport in REMOTE_TRANSPORTS


# --------------------------------------------------------------------------- references


@dataclass(frozen=True, slots=True)
class Store:
    """A containers-storage reference taken apart: ``[driver@root+runroot:options]name``."""

    name: str
    driver: str | None = None
    root: str | None = None
    runroot: str | None = None
    options: str | None = None


def parse_store(ref: ImageRef) -> Store:
    """The store and image name of a ``containers-storage:`` reference, options filled in."""
    text = ref.path
    driver = root = runroot = options = None
    if text.startswith("["):
        spec, close, name = text[1:].partition("]")
        if not close or not name:
            raise InputError(f"{ref}: expected containers-storage:[driver@root+runroot]NAME")
        if "@" in spec:
            driver, _, spec = spec.partition("@")
        spec, _, opt_text = spec.partition(":")
        root, _, run_text = spec.partition("+")
        runroot, options = run_text or None, opt_text or None
        if not root:
            raise InputError(f"{ref}: the store in [...] has no root directory")
        return Store(name, driver or None, root, runroot, options)
    opts = current()
    root, runroot, driver = opts.storage_root, opts.storage_runroot, opts.storage_driver
    if root is None and (driver is not None or runroot is not None):
        root = _default_graphroot()
    return Store(text, driver, root, runroot, None)


def _default_graphroot() -> str:
    """containers-storage's default store for this user (skopeo needs it spelled out)."""
    if os.geteuid() == 0:
        return "/var/lib/containers/storage"
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(data, "containers", "storage")


def skopeo_name(ref: ImageRef) -> str:
    """``ref`` as skopeo spells it, with the store options of ``current()`` applied."""
    if ref.transport != "containers-storage":
        return str(ref)
    store = parse_store(ref)
    if store.root is None:
        return f"containers-storage:{store.name}"
    spec = f"{store.driver}@{store.root}" if store.driver else store.root
    if store.runroot:
        spec += f"+{store.runroot}"
    if store.options:
        spec += f":{store.options}"
    return f"containers-storage:[{spec}]{store.name}"


def by_digest(ref: ImageRef, digest: str) -> str:
    """skopeo's name for one manifest of ``ref`` (a tag and a digest cannot be combined)."""
    name = skopeo_name(ref)
    head, bracket, tail = name.rpartition("]")
    rest = tail if bracket else name
    prefix = (head + bracket) if bracket else ""
    if "@" in rest:
        rest = rest.partition("@")[0]
    else:
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            rest = rest[:colon]
    return f"{prefix}{rest}@{digest}"


# --------------------------------------------------------------------------- running skopeo


def auth_args(ref: ImageRef, side: Side, *, inspect: bool = False) -> list[str]:
    if ref.transport != "docker":
        return []
    opts = current()
    args: list[str] = []
    prefix = "" if inspect else f"{side}-"
    verify = opts.src_tls_verify if side == "src" else opts.dest_tls_verify
    if verify is not None:
        args.append(f"--{prefix}tls-verify={'true' if verify else 'false'}")
    if opts.authfile:
        args.append(f"--authfile={opts.authfile}")
    if opts.creds:
        args.append(f"--{prefix}creds={opts.creds}")
    return args


def _copy_args() -> list[str]:
    return [] if progress.enabled() else ["--quiet"]


def fetch(ref: ImageRef, workdir: str) -> ImageRef:
    """Copy ``ref`` into an OCI layout under ``workdir``; the layout's reference.

    Layers from containers-storage stay uncompressed (the store holds them that way, so
    compressing them only to decompress them again would be wasted time).
    """
    skopeo = tool("skopeo", f"{ref}: reading {ref.transport}: images")
    layout = os.path.join(workdir, "fetched")
    cmd = [skopeo, "copy", *_copy_args(), "--remove-signatures", *auth_args(ref, "src")]
    if ref.transport == "containers-storage":
        cmd.append("--dest-oci-accept-uncompressed-layers")
    if ref.transport == "docker":
        cmd.append("--retry-times=3")
    cmd += [skopeo_name(ref), f"oci:{layout}:{TAG}"]
    with progress.step(f"copying {ref} with skopeo"):
        run(cmd, str(ref), InputError, show_output=progress.enabled())
    return ImageRef("oci", layout, TAG)


# --------------------------------------------------------------------------- writing


def push(layout: ImageRef, ref: ImageRef) -> str | None:
    """``skopeo copy`` a written layout to ``ref``; the manifest digest the destination
    stored (None when skopeo did not say). The layout is the caller's to delete."""
    label = str(ref)
    skopeo = tool("skopeo", f"{label}: writing {ref.transport}: images")
    digest_file = os.path.join(os.path.dirname(layout.path), "digest")
    cmd = [skopeo, "copy", *_copy_args(), *auth_args(ref, "dest"),
           f"--digestfile={digest_file}"]
    if ref.transport == "docker":
        cmd.append("--retry-times=3")
    cmd += [str(layout), skopeo_name(ref)]
    with progress.step(f"copying to {label} with skopeo"):
        run(cmd, label, OutputError, show_output=progress.enabled())
    try:
        with open(digest_file) as f:
            return f.read(200).strip() or None
    except OSError:
        return None


def check_destination(ref: ImageRef) -> None:
    """Fail before any work on a destination skopeo could never write."""
    tool("skopeo", f"{ref}: writing {ref.transport}: images")
    if ref.transport == "containers-storage":
        parse_store(ref)
