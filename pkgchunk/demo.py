"""A small built-in demo image, so the first command works on a fresh machine.

It is an OCI layout of three layers made the way real images are: a Debian-like
base (merged /usr, a dpkg database with ``.list``/``.md5sums`` files and
changelogs, a hardlinked binary), an update layer that upgrades two packages
(whiteouts, an opaque directory), and an application layer. Everything is
derived from fixed names and versions: no network, no daemon, same bytes on
every run.
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import io
import os
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field

from pkgchunk.diff import diff
from pkgchunk.errors import OutputError
from pkgchunk.oci.compress import compressor
from pkgchunk.oci.mediatypes import LAYER_MEDIA_TYPES, OCI_CONFIG, OCI_MANIFEST
from pkgchunk.oci.store import (
    BlobStore,
    add_to_index,
    canonical_json,
    init_layout,
)
from pkgchunk.oci.write import WriteOptions
from pkgchunk.rechunk import PlanOptions, rechunk_packages
from pkgchunk.render import PLAN_LEGEND, diff_text, plan_table, verify_text
from pkgchunk.verify import verify

TAG = "demo"
ARCH = "amd64"
#: Times of the demo's builds (packages' payload and the two image builds).
T_PAYLOAD = 1_700_000_000
T_BUILD1 = 1_710_000_000
T_BUILD2 = 1_720_000_000
DAY = 86_400


@dataclass
class _Pkg:
    name: str
    version: str
    files: dict[str, bytes] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # hardlink path -> first path
    section: str = "misc"


def _blob(seed: str, size: int) -> bytes:
    """Deterministic text-like content of about ``size`` bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        digest = hashlib.sha256(f"{seed}/{counter}".encode()).hexdigest()
        out += f"{seed} {counter} {digest}\n".encode()
        counter += 1
    return bytes(out[:size])


def _changelog(pkg: str, version: str, releases: int, t0: int) -> bytes:
    lines: list[str] = []
    for i in range(releases):
        t = t0 - i * 37 * DAY
        when = _rfc2822(t)
        lines += [
            f"{pkg} ({version}{'' if i == 0 else f'~old{i}'}) unstable; urgency=medium",
            "",
            f"  * Release {releases - i} of the demo package.",
            "",
            f" -- Demo Maintainer <demo@example.org>  {when}",
            "",
        ]
    return gzip.compress("\n".join(lines).encode(), mtime=0)


def _rfc2822(t: int) -> str:
    return email.utils.formatdate(t, usegmt=False).replace("-0000", "+0000")


def _packages(updated: bool) -> list[_Pkg]:
    """The demo's packages; ``updated`` gives the second build's versions."""
    pkgs: list[_Pkg] = []

    def pkg(name: str, version: str, section: str, releases: int) -> _Pkg:
        p = _Pkg(name, version, section=section)
        doc = f"usr/share/doc/{name}"
        p.files[f"{doc}/copyright"] = _blob(f"{name} copyright", 600)
        p.files[f"{doc}/changelog.Debian.gz"] = _changelog(name, version, releases, T_PAYLOAD)
        pkgs.append(p)
        return p

    base = pkg("base-files", "13", "admin", 3)
    for f in ("os-release", "issue", "debian_version", "profile", "motd"):
        base.files["usr/lib/os-release" if f == "os-release" else f"etc/{f}"] = _blob(f, 120)
    libc = pkg("libc6", "2.36-9", "libs", 8)
    for i in range(24):
        libc.files[f"usr/lib/x86_64-linux-gnu/libdemo{i}.so.6"] = _blob(f"libc {i}", 3000 + 97 * i)
    for loc in ("C.utf8", "en_US.utf8"):
        for part in ("LC_CTYPE", "LC_NUMERIC", "LC_TIME", "LC_COLLATE", "LC_MESSAGES"):
            libc.files[f"usr/lib/locale/{loc}/{part}"] = _blob(f"{loc} {part}", 900)
    core = pkg("coreutils", "9.1-1", "utils", 6)
    for tool in ("ls", "cp", "mv", "rm", "cat", "echo", "env", "id", "ln", "mkdir", "sort",
                 "head", "tail", "touch", "uname", "wc"):
        core.files[f"usr/bin/{tool}"] = _blob(f"coreutils {tool}", 1500 + len(tool) * 211)
        core.files[f"usr/share/man/man1/{tool}.1.gz"] = _blob(f"man {tool}", 300)
    bash = pkg("bash", "5.2.15-2", "shells", 5)
    bash.files["usr/bin/bash"] = _blob("bash", 12000)
    bash.files["etc/bash.bashrc"] = _blob("bashrc", 400)
    perl = pkg("perl-base", "5.36.0-7", "perl", 9)
    perl.files["usr/bin/perl"] = _blob("perl", 8000)
    perl.links["usr/bin/perl5.36.0"] = "usr/bin/perl"
    for i in range(30):
        perl.files[f"usr/lib/x86_64-linux-gnu/perl-base/Demo/Mod{i:02d}.pm"] = _blob(f"pm {i}", 700)
    tz_version = "2024a-1" if updated else "2023c-5"
    tz = pkg("tzdata", tz_version, "localization", 20)
    regions = {"Europe": 40, "America": 50, "Asia": 40, "Africa": 20, "Australia": 10}
    for region, count in regions.items():
        for i in range(count):
            tz.files[f"usr/share/zoneinfo/{region}/Zone{i:02d}"] = _blob(
                f"tz {tz_version} {region} {i}", 200 + (i * 13) % 400
            )
    if not updated:
        for i in range(5):
            tz.files[f"usr/share/zoneinfo/Etc/Legacy{i}"] = _blob(f"tz legacy {i}", 150)
    for i in range(10):
        tz.files[f"usr/share/zoneinfo/right/Zone{i}"] = _blob(f"tz {tz_version} right {i}", 250)
    ssl_version = "3.0.13-1~deb12u1" if updated else "3.0.11-1~deb12u2"
    ssl = pkg("libssl3", ssl_version, "libs", 12)
    ssl.files["usr/lib/x86_64-linux-gnu/libssl.so.3"] = _blob(f"ssl {ssl_version}", 20000)
    ssl.files["usr/lib/x86_64-linux-gnu/libcrypto.so.3"] = _blob(f"crypto {ssl_version}", 40000)
    ca = pkg("ca-certificates", "20230311", "misc", 4)
    for i in range(40):
        ca.files[f"usr/share/ca-certificates/mozilla/Demo_Root_CA_{i:02d}.crt"] = _blob(
            f"ca {i}", 1300
        )
    return pkgs


@dataclass
class _Layer:
    """Members of one source layer: path -> (kind, content or target, mode, mtime)."""

    members: dict[str, tuple[str, bytes | str, int, int]] = field(default_factory=dict)

    def add_dirs(self, path: str, mtime: int) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            self.members.setdefault(d, ("dir", b"", 0o755, mtime))

    def file(self, path: str, data: bytes, mtime: int, mode: int = 0o644) -> None:
        self.add_dirs(path, mtime)
        self.members[path] = ("reg", data, mode, mtime)

    def link(self, path: str, first: str, mtime: int) -> None:
        self.add_dirs(path, mtime)
        self.members[path] = ("hardlink", first, 0o755, mtime)

    def symlink(self, path: str, target: str, mtime: int) -> None:
        self.add_dirs(path, mtime)
        self.members[path] = ("sym", target, 0o777, mtime)

    def whiteout(self, path: str, mtime: int) -> None:
        head, _, name = path.rpartition("/")
        self.file(f"{head}/.wh.{name}" if head else f".wh.{name}", b"", mtime)

    def tar(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for path in sorted(self.members):
                kind, content, mode, mtime = self.members[path]
                ti = tarfile.TarInfo(path)
                ti.mode, ti.mtime = mode, mtime
                if kind == "reg":
                    assert isinstance(content, bytes)
                    ti.size = len(content)
                    tf.addfile(ti, io.BytesIO(content))
                    continue
                if kind == "dir":
                    ti.type = tarfile.DIRTYPE
                elif kind == "sym":
                    ti.type, ti.linkname = tarfile.SYMTYPE, str(content)
                else:
                    ti.type, ti.linkname = tarfile.LNKTYPE, str(content)
                tf.addfile(ti)
        return buf.getvalue()


def _install(layer: _Layer, pkgs: list[_Pkg], installed_at: int) -> None:
    """Unpack ``pkgs`` into ``layer`` and record them in the dpkg database like dpkg does."""
    for i, p in enumerate(pkgs):
        mtime = T_PAYLOAD - 1000 * DAY + i * DAY
        for path, data in p.files.items():
            mode = 0o755 if path.startswith("usr/bin/") else 0o644
            layer.file(path, data, mtime, mode)
        for path, first in p.links.items():
            layer.link(path, first, mtime)
        dirs = sorted({"/".join(f.split("/")[:k]) for f in [*p.files, *p.links]
                       for k in range(1, f.count("/") + 1)})
        listing = ["/.", *("/" + d for d in dirs), *("/" + f for f in sorted([*p.files, *p.links]))]
        info = f"var/lib/dpkg/info/{p.name}"
        layer.file(f"{info}.list", ("\n".join(listing) + "\n").encode(), installed_at)
        sums = "".join(
            f"{hashlib.md5(p.files[p.links.get(f, f)]).hexdigest()}  {f}\n"
            for f in sorted([*p.files, *p.links])
        )
        layer.file(f"{info}.md5sums", sums.encode(), installed_at)


def _status(pkgs: list[_Pkg]) -> bytes:
    stanzas = []
    for p in sorted(pkgs, key=lambda p: p.name):
        size = sum(len(d) for d in p.files.values()) // 1024 + 1
        stanzas.append(
            f"Package: {p.name}\nStatus: install ok installed\nPriority: required\n"
            f"Section: {p.section}\nInstalled-Size: {size}\n"
            f"Maintainer: Demo Maintainer <demo@example.org>\nArchitecture: {ARCH}\n"
            f"Version: {p.version}\nDescription: demo package {p.name}\n"
            f" A stand-in for the real {p.name}, generated by pkgchunk demo.\n"
        )
    return "\n".join(stanzas).encode()


def _layers(updated: bool = True) -> list[_Layer]:
    old, new = _packages(updated=False), _packages(updated=True)
    base = _Layer()
    for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("sbin", "usr/sbin")):
        base.symlink(link, target, T_PAYLOAD)
    base.members["tmp"] = ("dir", b"", 0o1777, T_PAYLOAD)
    _install(base, old, T_BUILD1)
    base.file("var/lib/dpkg/status", _status(old), T_BUILD1)
    for f in ("etc/hostname", "etc/hosts"):
        base.file(f, _blob(f, 60), T_BUILD1)

    # The update: two packages upgraded, files they dropped whited out, one directory
    # replaced wholesale (opaque), and the database rewritten.
    update = _Layer()
    changed = {p.name for p, q in zip(old, new, strict=True) if p.version != q.version}
    upgraded = [q for q in new if q.name in changed]
    _install(update, upgraded, T_BUILD2)
    for p, q in zip(old, new, strict=True):
        if p.name in changed:
            for gone in sorted(set(p.files) - set(q.files)):
                update.whiteout(gone, T_BUILD2)
    update.file("usr/share/zoneinfo/right/.wh..wh..opq", b"", T_BUILD2)
    update.file("var/lib/dpkg/status", _status(new), T_BUILD2)
    update.whiteout("etc/motd", T_BUILD2)

    app = _Layer()
    for i in range(40):
        app.file(f"opt/demo/lib/module{i:02d}.py", _blob(f"app module {i}", 500 + 31 * i), T_BUILD2)
    app.file("opt/demo/bin/demo", b"#!/bin/sh\necho 'hello from the pkgchunk demo'\n",
             T_BUILD2, 0o755)
    app.file("etc/demo.conf", b"greeting = hello\n", T_BUILD2, 0o640)
    app.symlink("usr/bin/demo", "/opt/demo/bin/demo", T_BUILD2)
    return [base, update, app] if updated else [base, app]


def build_demo_image(directory: str, *, updated: bool = True) -> str:
    """Write the demo source image as an OCI layout at ``directory``; returns its reference.

    ``updated=False`` is the same image built before the tzdata/libssl3 upgrade (no
    update layer): the previous release the demo rechunks first.
    """
    label = f"oci:{directory}:{TAG}"
    init_layout(directory, label)
    store = BlobStore(directory, label)
    layer_descs = []
    diff_ids = []
    for layer in _layers(updated):
        raw = layer.tar()
        out = io.BytesIO()
        comp = compressor("gzip", None, out)
        comp.write(raw)
        comp.close()
        layer_descs.append(store.put_bytes(out.getvalue(), LAYER_MEDIA_TYPES["gzip"]))
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    created = ["2024-03-09T16:00:00Z", "2024-07-03T09:20:00Z", "2024-07-03T09:20:00Z"]
    history = [
        {"created": created[0], "created_by": "debootstrap-like base"},
        {"created": created[1], "created_by": "apt-get upgrade tzdata libssl3"},
        {"created": created[2], "created_by": "COPY demo /opt/demo"},
    ]
    if not updated:
        del history[1]
    config = {
        "architecture": ARCH,
        "os": "linux",
        "created": created[-1],
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "DEMO_GREETING=hello"],
            "Entrypoint": ["/opt/demo/bin/demo"],
            "Cmd": ["--help"],
            "WorkingDir": "/opt/demo",
            "User": "0:0",
            "Labels": {"org.opencontainers.image.title": "pkgchunk demo"},
            "ExposedPorts": {"8080/tcp": {}},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    cdesc = store.put_bytes(canonical_json(config), OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": cdesc.to_json(),
        "layers": [d.to_json() for d in layer_descs],
    }
    mdesc = store.put_bytes(canonical_json(manifest), OCI_MANIFEST)
    add_to_index(directory, mdesc, TAG, label)
    store.keep()
    return label


def _start_clean(directory: str) -> list[str]:
    """Remove what an earlier run left (its layouts only), so every run prints the same
    P(change) and digests: a kept ``out`` would be the previous build of the next run.
    Returns the removed directories; refuses to touch anything that is not a layout."""
    removed = []
    for name in ("src-before", "src", "out"):
        path = os.path.join(directory, name)
        if not os.path.lexists(path):
            continue
        if os.path.islink(path) or not os.path.isfile(os.path.join(path, "oci-layout")):
            raise OutputError(
                f"{path}: exists and is not a demo layout; give the demo another directory"
            )
        shutil.rmtree(path)
        removed.append(path)
    return removed


def run_demo(directory: str, echo: Callable[[str], None] = print, max_layers: int = 8) -> bool:
    """The whole story on the demo image: rechunk the release before a package update,
    rechunk the updated image against it, show what a client pulls, and verify.

    Every run starts clean (an earlier run's layouts under ``directory`` are removed and
    that is said), so a rerun prints the same. Returns True when the output holds exactly
    the input's files.
    """
    removed = _start_clean(directory)
    if removed:
        echo(f"removed the previous run's {', '.join(removed)} (every run starts clean)")
    before = build_demo_image(os.path.join(directory, "src-before"), updated=False)
    src = build_demo_image(os.path.join(directory, "src"))
    out = os.path.join(directory, "out")
    echo(f"built {before} (before the update) and {src} (tzdata and libssl3 upgraded)")
    opts = PlanOptions(max_layers=max_layers, fresh=True)
    rechunk_packages(before, f"oci:{out}:before", opts, WriteOptions())
    dest = f"oci:{out}:{TAG}"
    result = rechunk_packages(
        src, dest, PlanOptions(max_layers=max_layers, prev=f"oci:{out}:before"), WriteOptions()
    )
    echo(f"rechunked both; {dest} against the previous build oci:{out}:before:")
    echo(plan_table(result.planned, result.write))
    for line in PLAN_LEGEND:
        echo("  " + line)
    echo("what a client holding the previous build pulls:")
    echo(diff_text(diff(f"oci:{out}:before", dest)))
    check = verify(src, dest, prev=f"oci:{out}:before")
    echo(verify_text(check))
    return check.identical
