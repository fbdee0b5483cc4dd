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
import dataclasses
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pkgchunk import progress
from pkgchunk.errors import InputError, OutputError, PkgchunkError, ToolMissingError
from pkgchunk.image import Image
from pkgchunk.refs import REMOTE_TRANSPORTS, ImageRef

if TYPE_CHECKING:
    from pkgchunk.layers import LayerSpec
    from pkgchunk.oci.write import WriteOptions, WriteResult
    from pkgchunk.tree import FileTree

log = logging.getLogger(__name__)

Side = Literal["src", "dest"]

#: The tag used inside the temporary layouts.
_TAG = "pkgchunk"

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


def tool(name: str, why: str) -> str:
    """Path of ``name`` or ToolMissingError saying how to install it."""
    path = shutil.which(name)
    if path is None:
        raise ToolMissingError(f"{why} needs {name}, which is not installed (apt-get install"
                               f" {name}, dnf install {name})")
    return path


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


def _shown(cmd: Sequence[str]) -> str:
    """A command line for the debug log, passwords hidden."""
    out = []
    for arg in cmd:
        key, eq, value = arg.partition("=")
        if eq and key.endswith("creds") and ":" in value:
            arg = f"{key}={value.partition(':')[0]}:***"
        out.append(arg)
    return " ".join(out)


def _message(stderr: str) -> str:
    """skopeo's own error text in one line (its logrus ``msg="..."`` when it has one)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        m = re.search(r'msg="((?:[^"\\]|\\.)*)"', line)
        if m:
            text = m.group(1).encode().decode("unicode_escape", "replace")
            return " ".join(text.split())
    return " ".join(lines[-1].split()) if lines else "failed without a message"


def run(
    cmd: Sequence[str],
    label: str,
    error: type[PkgchunkError],
    *,
    show_output: bool = False,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run a tool; its stdout, or ``error`` naming ``label`` with the tool's own message.

    ``show_output`` sends the tool's progress lines to our stderr (never our stdout,
    which may carry a JSON document).
    """
    log.debug("running %s", _shown(cmd))
    direct = show_output and _has_fd(sys.stderr)
    try:
        proc = subprocess.run(
            list(cmd),
            stdout=sys.stderr if direct else subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env} if env else None,
            check=False,
        )
    except OSError as err:
        raise error(f"{label}: cannot run {cmd[0]}: {err.strerror or err}") from None
    if show_output and not direct and proc.stdout:
        sys.stderr.write(proc.stdout.decode("utf-8", "replace"))  # a captured stderr (tests)
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        words = [a for a in cmd[1:] if not a.startswith("-")][:2]
        verb = " ".join(words if words[:1] == ["image"] else words[:1])
        raise error(f"{label}: {os.path.basename(cmd[0])} {verb} failed: {_message(stderr)}")
    if stderr.strip():
        log.debug("%s: %s", os.path.basename(cmd[0]), stderr.strip())
    return "" if show_output else proc.stdout.decode("utf-8", "replace")


def _has_fd(stream: object) -> bool:
    try:
        return isinstance(stream.fileno(), int)  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False


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
    cmd += [skopeo_name(ref), f"oci:{layout}:{_TAG}"]
    with progress.step(f"copying {ref} with skopeo"):
        run(cmd, str(ref), InputError, show_output=progress.enabled())
    return ImageRef("oci", layout, _TAG)


def open_remote(ref: ImageRef, *, max_bytes: int) -> Image:
    """A flattened Image of a ``containers-storage:`` or ``docker://`` reference."""
    from pkgchunk.oci.read import read_image

    if ref.transport == "containers-storage" and current().mount:
        from pkgchunk.transport.podman import mount_image

        return mount_image(ref)
    workdir = tempfile.mkdtemp(prefix="pkgchunk-fetch-")
    try:
        local = fetch(ref, workdir)
        image = read_image(local, max_bytes=max_bytes)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    image.ref = str(ref)
    image.tree.label = str(ref)
    image.cleanups.append(lambda: shutil.rmtree(workdir, ignore_errors=True))
    return image


# --------------------------------------------------------------------------- writing


def write_remote(
    tree: FileTree,
    config: Mapping[str, Any],
    specs: Sequence[LayerSpec],
    ref: ImageRef,
    opts: WriteOptions,
) -> WriteResult:
    """Write an OCI layout in a temporary directory, then ``skopeo copy`` it to ``ref``."""
    from pkgchunk.oci.write import write_image

    label = str(ref)
    skopeo = tool("skopeo", f"{label}: writing {ref.transport}: images")
    if ref.transport == "containers-storage":
        parse_store(ref)  # a malformed store fails before any work
    workdir = tempfile.mkdtemp(prefix="pkgchunk-push-")
    try:
        layout = ImageRef("oci", os.path.join(workdir, "layout"), _TAG)
        result = write_image(tree, config, specs, layout, opts)
        digest_file = os.path.join(workdir, "digest")
        cmd = [skopeo, "copy", *_copy_args(), *auth_args(ref, "dest"),
               f"--digestfile={digest_file}"]
        if ref.transport == "docker":
            cmd.append("--retry-times=3")
        cmd += [str(layout), skopeo_name(ref)]
        with progress.step(f"copying to {label} with skopeo"):
            run(cmd, label, OutputError, show_output=progress.enabled())
        try:
            with open(digest_file) as f:
                manifest_digest = f.read(200).strip() or result.manifest_digest
        except OSError:
            manifest_digest = result.manifest_digest
        if manifest_digest != result.manifest_digest:
            log.info(
                "%s: the destination stored manifest %s (written as %s)",
                label, manifest_digest, result.manifest_digest,
            )
        return dataclasses.replace(result, ref=label, manifest_digest=manifest_digest)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
