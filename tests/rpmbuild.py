"""Test helpers for rpm databases: image trees on disk, real RPMs and rpmdbs made by real tools.

Everything here runs Debian's ``rpm``/``rpmbuild``/``db5.3_load`` (the truth the readers
are checked against); nothing is copied from the shared fixtures into the repo.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import struct
import subprocess
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pkgchunk.oci.rootfs import read_rootfs
from pkgchunk.tree import FileTree
from tests.helpers import require_tool

SQLITE_DBPATH = "/usr/lib/sysimage/rpm"


def make_tree(
    root: Path,
    files: Mapping[str, Path | bytes] = {},
    links: Mapping[str, str] = {},
) -> FileTree:
    """Lay out ``root`` (files copied or written, symlinks created) and read it as an image."""
    for rel, src in files.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, bytes):
            dest.write_bytes(src)
        else:
            shutil.copyfile(src, dest)
    for rel, target in links.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, dest)
    return read_rootfs(str(root)).tree


# -- real RPMs --------------------------------------------------------------------------------

#: A source package 'pkgchunk-demo' with a subpackage 'demo-tools' (a binary whose source
#: name differs), an epoch, a changelog, a %config(noreplace), a %ghost, a symlink, a dir.
DEMO_SPEC = """\
Name: pkgchunk-demo
Version: 1.2
Release: 3
Epoch: 2
Summary: demo
License: MIT
BuildArch: noarch

%description
demo

%package -n demo-tools
Summary: tools
License: GPL-2.0-or-later
%description -n demo-tools
tools

%install
mkdir -p %{buildroot}/etc/demo %{buildroot}/usr/bin %{buildroot}/usr/share/demo
echo conf > %{buildroot}/etc/demo/demo.conf
printf '#!/bin/sh\\necho hi\\n' > %{buildroot}/usr/bin/demo
chmod 755 %{buildroot}/usr/bin/demo
ln -s demo %{buildroot}/usr/bin/demo-link
echo data > %{buildroot}/usr/share/demo/data.txt
echo tool > %{buildroot}/usr/bin/demo-tool

%files
%config(noreplace) /etc/demo/demo.conf
%dir /etc/demo
/usr/bin/demo
/usr/bin/demo-link
/usr/share/demo
%ghost /var/log/demo.log

%files -n demo-tools
%attr(0750,root,root) /usr/bin/demo-tool

%changelog
* Tue Mar 05 2024 Dev <dev@example.org> - 2:1.2-3
- newer
* Mon Jan 02 2023 Dev <dev@example.org> - 2:1.1-1
- older
"""

#: No epoch, no changelog, the host's arch, a %doc and a %license file, file names with a
#: space and with non-ASCII UTF-8 (rpm 4.18 refuses names that are not valid UTF-8).
TINY_SPEC = """\
Name: tiny
Version: 0.1
Release: 1
Summary: tiny
License: BSD-3-Clause

%description
tiny

%install
mkdir -p %{buildroot}/usr/share/doc/tiny %{buildroot}/usr/share/licenses/tiny %{buildroot}/opt
echo readme > %{buildroot}/usr/share/doc/tiny/README
echo license > %{buildroot}/usr/share/licenses/tiny/COPYING
echo x > "%{buildroot}/opt/with space"
echo y > "%{buildroot}/opt/café"

%files
%doc /usr/share/doc/tiny/README
%license /usr/share/licenses/tiny/COPYING
"/opt/with space"
/opt/café
"""


def build_rpms(work: Path) -> list[Path]:
    """rpmbuild -bb both specs; returns the three binary RPMs."""
    rpmbuild = require_tool("rpmbuild")
    top = work / "rpmbuild"
    for name, spec in (("demo.spec", DEMO_SPEC), ("tiny.spec", TINY_SPEC)):
        (work / name).write_text(spec)
        run([rpmbuild, "-bb", "--define", f"_topdir {top}", str(work / name)])
    rpms = sorted((top / "RPMS").rglob("*.rpm"))
    assert len(rpms) == 3, rpms
    return rpms


def run(cmd: list[str], **kw: object) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="surrogateescape", **kw)  # type: ignore[call-overload]
    if proc.returncode:
        raise AssertionError(f"{cmd} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    out: str = proc.stdout
    return out


def rpm_cmd(root: Path, dbpath: str, *args: str, backend: str = "sqlite") -> str:
    rpm = require_tool("rpm")
    base = [rpm, "--root", str(root), "--dbpath", dbpath, "--define", f"_db_backend {backend}"]
    return run([*base, *args])


def install_sqlite(root: Path, rpms: Iterable[Path], dbpath: str = SQLITE_DBPATH) -> Path:
    """Install ``rpms`` --justdb into a fresh sqlite rpmdb under ``root``; its db file."""
    rpm_cmd(root, dbpath, "--initdb")
    rpm_cmd(root, dbpath, "-i", "--justdb", "--nodeps", "--noscripts", *map(str, rpms))
    db = root / dbpath.lstrip("/") / "rpmdb.sqlite"
    assert db.is_file()
    return db


# -- independent truth: what rpm itself reports -----------------------------------------------

PKG_QF = (
    "%{NAME}|%{EPOCH}|%{VERSION}|%{RELEASE}|%{ARCH}|%{SOURCERPM}|%{SIZE}|"
    "%{BUILDTIME}|%{INSTALLTIME}|%{LICENSE}|[%{CHANGELOGTIME} ]\\n"
)
FILE_QF = (
    "[%{=NAME}\\t%{FILENAMES}\\t%{FILEMODES}\\t%{FILESIZES}\\t%{FILEDIGESTS}\\t%{FILEFLAGS}\\n]"
)


@dataclass(frozen=True)
class RpmTruth:
    name: str
    epoch: int | None
    version: str
    release: str
    arch: str
    sourcerpm: str | None
    size: int
    buildtime: int
    installtime: int
    license: str
    changelog_times: tuple[int, ...]


def _none(v: str) -> str | None:
    return None if v == "(none)" else v


def query_packages(root: Path, dbpath: str, backend: str = "sqlite") -> list[RpmTruth]:
    out = rpm_cmd(root, dbpath, "-qa", "--qf", PKG_QF, backend=backend)
    res = []
    for line in out.splitlines():
        f = line.split("|")
        epoch = _none(f[1])
        res.append(
            RpmTruth(
                name=f[0],
                epoch=int(epoch) if epoch is not None else None,
                version=f[2],
                release=f[3],
                arch=_none(f[4]) or "",
                sourcerpm=_none(f[5]),
                size=int(f[6]),
                buildtime=int(f[7]),
                installtime=int(f[8]),
                license=f[9],
                changelog_times=tuple(int(t) for t in f[10].split()),
            )
        )
    return res


def query_files(
    root: Path, dbpath: str, backend: str = "sqlite"
) -> set[tuple[str, str, int, int, str, int]]:
    """(name, path, mode, size, digest, flags) of every file entry, as rpm reports it."""
    out = rpm_cmd(root, dbpath, "-qa", "--qf", FILE_QF, backend=backend)
    rows = set()
    for line in out.splitlines():
        name, path, mode, size, digest, flags = line.split("\t")
        rows.add((name, path, int(mode), int(size), digest, int(flags)))
    return rows


# -- other on-disk formats made from rpm's own header blobs -----------------------------------


def sqlite_blobs(db: Path) -> list[tuple[int, bytes]]:
    """(hnum, header blob) of an rpm sqlite db (opened immutable: the db is not touched)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
    try:
        return [(h, bytes(b)) for h, b in conn.execute("SELECT hnum, blob FROM Packages")]
    finally:
        conn.close()


def write_bdb(
    dest: Path,
    blobs: list[tuple[int, bytes]],
    *,
    config: Iterable[str] = (),
    big_endian_keys: bool = False,
) -> None:
    """A Berkeley DB hash ``Packages`` like rpm's, written by libdb's own db5.3_load.

    Keys are the uint32 header instances in host order (as rpm writes them; pass
    ``big_endian_keys`` to mimic a big-endian host), and key 0 holds the highest instance.
    ``config`` takes db_load ``-c`` settings (db_pagesize=512, db_lorder=4321, chksum=1).
    """
    load = require_tool("db5.3_load")
    order = ">" if big_endian_keys else "<"

    def esc(b: bytes) -> str:
        return "".join(f"\\{c:02x}" for c in b)

    lines = [
        esc(struct.pack(order + "I", 0)),
        esc(struct.pack(order + "I", max(h for h, _ in blobs))),
    ]
    for h, blob in blobs:
        lines += [esc(struct.pack(order + "I", h)), esc(blob)]
    text = dest.with_suffix(".txt")
    text.write_text("\n".join(lines) + "\n")
    cmd = [load, "-T", "-t", "hash", "-f", str(text)]
    for c in config:
        cmd += ["-c", c]
    run([*cmd, str(dest)])
    text.unlink()


def write_ndb(dest: Path, blobs: list[tuple[int, bytes]], *, generation: int = 7) -> None:
    """An ndb ``Packages.db`` holding ``blobs`` (keyed by their index), in rpm's layout.

    All integers little-endian. Header (32 bytes): 'RpmP', version 0, generation,
    slot page count, next package index. Slots (16 bytes, from offset 32 to the end
    of the slot pages, 4096 bytes each): 'Slot', pkgidx (0 = free), blkoff, blkcnt in
    16-byte blocks. Blob record at blkoff*16: 'BlbS', pkgidx, generation, length,
    the blob, zero padding, and a tail (adler32 of everything before it, length, 'BlbE').
    Records are placed after the slot pages, one free slot left between used ones.
    """
    nslots = 2 * len(blobs) + 2
    npages = max(1, -(-(nslots * 16 + 32) // 4096))
    table = bytearray(npages * 4096)
    struct.pack_into(
        "<4sIIII", table, 0, b"RpmP", 0, generation, npages, max(h for h, _ in blobs) + 1
    )
    for i in range(2, npages * 256):
        struct.pack_into("<4sIII", table, i * 16, b"Slot", 0, 0, 0)
    body = bytearray()
    for n, (idx, blob) in enumerate(blobs):
        record = struct.pack("<4sIII", b"BlbS", idx, generation, len(blob)) + blob
        record += b"\0" * (-(len(record) + 12) % 16)
        record += struct.pack("<II4s", zlib.adler32(record), len(blob), b"BlbE")
        blkoff = (len(table) + len(body)) // 16
        struct.pack_into("<4sIII", table, (2 + 2 * n) * 16, b"Slot", idx, blkoff, len(record) // 16)
        body += record
    dest.write_bytes(bytes(table) + bytes(body))


# -- hand-made header blobs (for semantics and hostile-input tests) ---------------------------

_INT_FMT = {1: "B", 2: "B", 3: "H", 4: "I", 5: "Q"}
_ALIGN = {3: 2, 4: 4, 5: 8}
HeaderEntry = tuple[int, int, object]


def make_header(
    entries: Iterable[HeaderEntry], *, region: bool = True, dribble: Iterable[HeaderEntry] = ()
) -> bytes:
    """A header blob as an rpmdb stores it, from (tag, type, value) triples.

    Integers are tuples, STRING a str, STRING_ARRAY/I18NSTRING lists of str, BIN bytes;
    values are aligned in the data store as rpm aligns them. With ``region`` the entries
    are wrapped in an immutable region (tag 63, trailer at the end of the region data);
    ``dribble`` entries come after the region, as rpm adds them at install time.
    """
    data = bytearray()
    index: list[tuple[int, int, int, int]] = []

    def put(tag: int, typ: int, value: object) -> None:
        data.extend(b"\0" * (-len(data) % _ALIGN.get(typ, 1)))
        off = len(data)
        if typ in _INT_FMT:
            assert isinstance(value, tuple)
            data.extend(struct.pack(f">{len(value)}{_INT_FMT[typ]}", *value))
            count = len(value)
        elif typ == 6:
            assert isinstance(value, str)
            data.extend(value.encode() + b"\0")
            count = 1
        elif typ in (8, 9):
            assert isinstance(value, list)
            for s in value:
                data.extend(s.encode() + b"\0")
            count = len(value)
        else:
            assert isinstance(value, bytes)
            data.extend(value)
            count = len(value)
        index.append((tag, typ, off, count))

    region_entries = list(entries)
    for e in region_entries:
        put(*e)
    if region:
        index.insert(0, (63, 7, len(data), 16))
        data.extend(struct.pack(">iIii", 63, 7, -16 * (len(region_entries) + 1), 16))
    for e in dribble:
        put(*e)
    head = struct.pack(">ii", len(index), len(data))
    return head + b"".join(struct.pack(">iIii", *i) for i in index) + bytes(data)
