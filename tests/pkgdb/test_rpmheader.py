"""Header blob parsing: format semantics on hand-made blobs, and real headers of real RPMs
checked against ``rpm -qp`` and ``rpmfile`` (two independent readers of the same bytes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import rpmfile.headers

from pkgchunk.errors import PkgdbError
from pkgchunk.pkgdb.model import FLAG_CONFIG, FLAG_GHOST, FLAG_NOREPLACE, Package
from pkgchunk.pkgdb.rpmheader import Header, parse_package, source_name
from tests.helpers import require_tool
from tests.rpmbuild import HeaderEntry, build_rpms, make_header, run

NAME = (1000, 6, "hello")
VERSION = (1001, 6, "1.0")
RELEASE = (1002, 6, "2.fc40")
ARCH = (1022, 6, "x86_64")
BASE = [NAME, VERSION, RELEASE, ARCH]


def pkg(*entries: HeaderEntry) -> Package:
    return parse_package(make_header([*BASE, *entries]), "db: package 1", "rpm-sqlite")


def test_basic_fields_and_defaults() -> None:
    p = parse_package(make_header(BASE), "db: package 1", "rpm-bdb")
    assert (p.name, p.version, p.release, p.arch) == ("hello", "1.0", "2.fc40", "x86_64")
    assert p.epoch is None and p.buildtime is None and p.installtime is None
    assert p.source == "hello"  # no SOURCERPM (gpg-pubkey style): its own source
    assert p.files == () and p.changelog_times == () and p.size == 0
    assert p.db == "rpm-bdb" and p.key == "hello-1.0-2.fc40.x86_64"


def test_epoch_zero_is_kept_distinct_from_absent() -> None:
    p = parse_package(make_header([*BASE, (1003, 4, (0,))]), "x", "rpm-sqlite")
    assert p.epoch == 0
    p = parse_package(make_header([*BASE, (1003, 4, (7,))]), "x", "rpm-sqlite")
    assert p.epoch == 7 and p.key == "hello-7:1.0-2.fc40.x86_64"


def test_dribble_entries_replace_region_entries() -> None:
    """rpm appends install-time tags after the immutable region; later wins."""
    blob = make_header(
        [*BASE, (1008, 4, (111,)), (1014, 6, "GPL")],
        dribble=[(1008, 4, (222,)), (1014, 6, "MIT")],
    )
    p = parse_package(blob, "x", "rpm-sqlite")
    assert p.installtime == 222 and p.license == "MIT"


def test_legacy_header_without_region() -> None:
    p = parse_package(make_header([*BASE, (1009, 4, (42,))], region=False), "x", "rpm-bdb")
    assert p.name == "hello" and p.size == 42


def test_i18n_string_takes_the_first_translation() -> None:
    h = Header(make_header([*BASE, (1004, 9, ["C summary", "de Zusammenfassung"])]), "x")
    assert h.string(1004) == "C summary"
    assert h.strings(1004) == ["C summary", "de Zusammenfassung"]


def test_bin_and_wrong_type_access() -> None:
    md5 = bytes(range(16))
    h = Header(make_header([*BASE, (261, 7, md5)]), "db: package 3")
    assert h.bin(261) == md5
    assert h.bin(999) is None and h.ints(999) is None and h.strings(999) is None
    with pytest.raises(PkgdbError, match=r"^db: package 3: tag 261: expected integers"):
        h.ints(261)
    with pytest.raises(PkgdbError, match=r"^db: package 3: tag 1000: expected binary"):
        h.bin(1000)


@pytest.mark.parametrize("typ", [2, 3, 4, 5])
def test_integer_widths(typ: int) -> None:
    values = (1, 2, 255) if typ == 2 else (1, 2, 0xFFFF if typ == 3 else 0xFFFFFFFF)
    if typ == 5:
        values = (1, 1 << 40, (1 << 64) - 1)
    h = Header(make_header([*BASE, (5000 + 100, typ, values)]), "x")
    assert h.ints(5100) == values
    assert h.scalar(5100) == values[0]


def test_long_sizes_win_over_32_bit_sizes() -> None:
    big = 5 << 30
    p = pkg(
        (1009, 4, (1,)),
        (5009, 5, (big,)),
        (1116, 4, (0,)),
        (1117, 8, ["f"]),
        (1118, 8, ["/d/"]),
        (1028, 4, (1,)),
        (5008, 5, (big,)),
    )
    assert p.size == big
    assert p.files[0].size == big


def test_file_list_from_dirnames_basenames() -> None:
    p = pkg(
        (1116, 4, (1, 0, 1)),
        (1117, 8, ["a.conf", "bin", "b.log"]),
        (1118, 8, ["/usr/", "/etc/"]),
        (1028, 4, (5, 0, 0)),
        (1030, 3, (0o100644, 0o40755, 0o100000)),
        (1035, 8, ["ab" * 32, "", ""]),
        (1037, 4, (FLAG_CONFIG | FLAG_NOREPLACE, 0, FLAG_GHOST)),
    )
    assert [(f.path, f.size, f.mode, f.digest, f.flags) for f in p.files] == [
        ("/etc/a.conf", 5, 0o100644, "ab" * 32, FLAG_CONFIG | FLAG_NOREPLACE),
        ("/usr/bin", 0, 0o40755, "", 0),
        ("/etc/b.log", 0, 0o100000, "", FLAG_GHOST),
    ]


def test_old_style_filenames() -> None:
    p = pkg((1027, 8, ["/bin/sh", "/etc/x"]), (1028, 4, (3, 4)))
    assert [(f.path, f.size) for f in p.files] == [("/bin/sh", 3), ("/etc/x", 4)]


def test_changelog_times_newest_first() -> None:
    p = pkg((1080, 4, (100, 300, 200)))
    assert p.changelog_times == (300, 200, 100)


@pytest.mark.parametrize(
    ("sourcerpm", "name", "want"),
    [
        ("glibc-2.31-9.3.2.src.rpm", "glibc-locale", "glibc"),
        ("python-rpm-macros-3.9-38.el9.src.rpm", "python-srpm-macros", "python-rpm-macros"),
        ("kernel-6.1-1.nosrc.rpm", "kernel-core", "kernel"),
        ("", "gpg-pubkey", "gpg-pubkey"),
        (None, "gpg-pubkey", "gpg-pubkey"),
        ("odd.src.rpm", "odd", "odd"),
    ],
)
def test_source_name(sourcerpm: str | None, name: str, want: str) -> None:
    assert source_name(sourcerpm, name) == want


# -- real headers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rpms(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return build_rpms(tmp_path_factory.mktemp("rpms"))


def _main_header_blob(rpm: Path) -> bytes:
    """The main header of an .rpm without its 8-byte magic: the bytes an rpmdb stores."""
    with open(rpm, "rb") as f:
        (start, end), _ = rpmfile.headers.get_headers(f)
        f.seek(start)
        raw = f.read(end - start)
    assert raw[:3] == b"\x8e\xad\xe8"
    return raw[8:]


QF = "%{NAME}|%{EPOCH}|%{VERSION}|%{RELEASE}|%{ARCH}|%{SOURCERPM}|%{SIZE}|%{BUILDTIME}|%{LICENSE}"
FILES_QF = "[%{FILENAMES}\\t%{FILEMODES}\\t%{FILESIZES}\\t%{FILEDIGESTS}\\t%{FILEFLAGS}\\n]"


def _tuple(v: object) -> tuple[object, ...]:
    """rpmfile returns a bare value for one-element integer arrays."""
    return v if isinstance(v, tuple) else (v,)


@pytest.mark.slow
def test_real_rpm_headers_match_rpm_and_rpmfile(rpms: list[Path]) -> None:
    rpm = require_tool("rpm")
    for path in rpms:
        p = parse_package(_main_header_blob(path), str(path), "rpm-sqlite")
        f = run([rpm, "-qp", "--qf", QF, str(path)]).split("|")
        assert [
            p.name,
            str(p.epoch) if p.epoch is not None else "(none)",
            p.version,
            p.release,
        ] == f[:4]
        assert [p.arch, str(p.size), str(p.buildtime), p.license] == [f[4], f[6], f[7], f[8]]
        assert p.source == f[5].rsplit("-", 2)[0]
        rows = run([rpm, "-qp", "--qf", FILES_QF, str(path)]).splitlines()
        assert [f"{x.path}\t{x.mode}\t{x.size}\t{x.digest}\t{x.flags}" for x in p.files] == rows
        with open(path, "rb") as fh:
            _, theirs = rpmfile.headers.get_headers(fh)
        assert theirs["name"].decode() == p.name
        assert _tuple(theirs["filemodes"]) == tuple(x.mode for x in p.files)
        assert _tuple(theirs.get("changelogtime", ())) == p.changelog_times
    names = {parse_package(_main_header_blob(x), "x", "rpm-sqlite").name for x in rpms}
    assert names == {"pkgchunk-demo", "demo-tools", "tiny"}
