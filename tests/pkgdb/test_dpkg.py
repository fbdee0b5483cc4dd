"""The dpkg reader against the real dpkg: tiny .debs built with dpkg-deb, installed with
dpkg --root, read back and compared with dpkg-query (package list, ownership, conffiles).
"""

from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pkgchunk.errors import PkgdbError, PkgdbWarning
from pkgchunk.oci.rootfs import read_rootfs
from pkgchunk.pkgdb import dpkg
from pkgchunk.pkgdb.changelog import parse_times
from pkgchunk.pkgdb.model import FLAG_CONFIG, Ownership
from pkgchunk.pkgdb.ownership import collect
from pkgchunk.tree import FileTree
from tests import debbuild
from tests.helpers import require_tool

CHANGELOG = """alpha-src (2.0-3) unstable; urgency=medium

  * Third.

 -- Jane Doe <jane@example.org>  Tue, 05 Mar 2024 10:11:12 +0100

alpha-src (2.0-2) unstable; urgency=low

  * Second.

 -- J. Random <jr@example.org>  Sat, 29 Feb 2020 23:59:59 -0800

alpha-src (2.0-1) unstable; urgency=low

  * First.

 -- Jane Doe <jane@example.org>  Thu, 01 Jan 2015 00:00:00 +0000
"""


def _foreign(native: str) -> str:
    return "i386" if native != "i386" else "amd64"


def _triplet(arch: str) -> str:
    return {"amd64": "x86_64-linux-gnu", "i386": "i386-linux-gnu"}.get(arch, f"{arch}-linux")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A merged-/usr root with conffiles, a Multi-Arch: same pair, diversions, a removed
    package left in config-files state, and an unowned file."""
    work = tmp_path_factory.mktemp("debs")
    r = debbuild.new_root(tmp_path_factory.mktemp("root"))
    for d in ("usr/bin", "usr/lib", "usr/sbin"):
        (r / d).mkdir(parents=True)
    for link in ("bin", "lib", "sbin"):
        (r / link).symlink_to(f"usr/{link}")
    native = debbuild.native_arch()
    foreign = _foreign(native)
    debbuild.dpkg(r, "--add-architecture", foreign)
    build = debbuild.build_deb
    debs = [
        build(
            work,
            "alpha",
            "1:2.0-3",
            files={
                "/bin/alpha": b"alpha\n",
                "/etc/alpha.conf": b"x=1\n",
                "/usr/share/alpha/caf\udce9": b"latin-1 name\n",  # not UTF-8 on disk
            },
            symlinks={"/usr/bin/alpha-link": "alpha"},
            conffiles=["/etc/alpha.conf"],
            fields={"Source": "alpha-src (2.0-1)", "Installed-Size": "123"},
            changelog=CHANGELOG,
        ),
        build(
            work,
            "alpha-data",
            "2.0-3",
            files={"/usr/share/alpha/data.txt": b"data\n"},
            symlinks={"/usr/share/doc/alpha-data": "alpha"},
            fields={"Source": "alpha-src"},
        ),
        build(work, "diverter", "1.0", files={"/usr/bin/tool": b"diverter's tool\n"}),
        build(
            work,
            "victim",
            "1.0",
            files={"/usr/bin/tool": b"victim's tool\n", "/usr/share/victim/x": b"x\n"},
        ),
        build(work, "gone", "0.1", files={"/etc/gone.conf": b"g\n"}, conffiles=["/etc/gone.conf"]),
    ]
    for arch in (native, foreign):
        debs.append(
            build(
                work,
                "libmulti",
                "1.0-1",
                arch=arch,
                files={
                    f"/usr/lib/{_triplet(arch)}/libmulti.so.1": f"lib {arch}\n".encode(),
                    "/usr/share/doc/libmulti/copyright": b"same for all\n",
                },
                fields={"Multi-Arch": "same"},
            )
        )
    debbuild.divert(
        r, "--package", "diverter", "--divert", "/usr/bin/tool.real", "--rename", "/usr/bin/tool"
    )
    debbuild.divert(
        r, "--local", "--divert", "/usr/share/victim/x.local", "--add", "/usr/share/victim/x"
    )
    debbuild.install(r, *debs)
    debbuild.dpkg(r, "-r", "gone")
    (r / "opt").mkdir()
    (r / "opt/unowned.bin").write_bytes(b"u" * 1000)
    return r


@pytest.fixture(scope="module")
def tree(root: Path) -> FileTree:
    return read_rootfs(str(root)).tree


@pytest.fixture(scope="module")
def own(tree: FileTree) -> Ownership:
    return collect(tree)


def _admin(root: Path) -> Path:
    return root / "var/lib/dpkg"


def test_packages_match_dpkg_query(root: Path, own: Ownership) -> None:
    truth = debbuild.query_packages(_admin(root))
    got = {(p.name, p.evr, p.arch, p.source) for p in own.packages.values()}
    assert got == truth
    assert ("alpha", "1:2.0-3", "all", "alpha-src") in got  # epoch kept, source version dropped
    assert not any(p.name == "gone" for p in own.packages.values())  # config-files: not installed
    assert [db.format for db in own.dbs] == ["dpkg"]


def test_installed_size_matches(root: Path, own: Ownership) -> None:
    out = subprocess.run(
        [
            "dpkg-query",
            f"--admindir={_admin(root)}",
            "-W",
            "-f",
            "${Package}:${Architecture} ${Installed-Size}\n",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    sizes = {k: int(v or 0) for k, _, v in (line.partition(" ") for line in out.splitlines())}
    for key, pkg in own.packages.items():
        assert pkg.size == sizes[key] * 1024
    assert own.packages["alpha:all"].size == 123 * 1024


def _tree_path(root: Path, listed: str) -> str:
    """Where dpkg really put a listed path: the host resolves its parent inside root."""
    head, _, name = listed.rpartition("/")
    real_parent = os.path.realpath(str(root) + head)
    rel = os.path.relpath(os.path.join(real_parent, name), root)
    return "" if rel == "." else rel


def test_ownership_matches_dpkg_query_s(root: Path, tree: FileTree, own: Ownership) -> None:
    admin = _admin(root)
    arch_of = {name: arch for name, _v, arch, _s in debbuild.query_packages(admin)}
    listed = debbuild.query_listed(admin)
    diverted = {"/usr/bin/tool", "/usr/share/victim/x"}
    paths = sorted({p for ps in listed.values() for p in ps} - diverted - {"/."})
    truth = debbuild.query_owners(admin, paths)
    expected: dict[str, set[str]] = {}
    for path in paths:
        # a config-files package still has a list, but it is not installed: no owner
        keys = {o if ":" in o else f"{o}:{arch_of[o]}" for o in truth[path] if o != "gone"}
        if not keys:
            continue
        expected.setdefault(_tree_path(root, path), set()).update(keys)
    for tp, keys in expected.items():
        if tp in own.pkgdb_paths:
            continue
        assert set(own.owners[tp]) == keys, tp
    # merged /usr: /bin/alpha is found at usr/bin/alpha; the 'bin' symlink itself is not payload
    assert own.owners["usr/bin/alpha"] == ("alpha:all",)
    assert own.owners["usr/bin/alpha-link"] == ("alpha:all",)
    assert own.owners["usr/share/alpha/caf\udce9"] == ("alpha:all",)
    native = debbuild.native_arch()
    assert own.owners["usr/share/doc/libmulti/copyright"] == tuple(
        sorted(f"libmulti:{a}" for a in (native, _foreign(native)))
    )
    assert "opt/unowned.bin" in tree and "opt/unowned.bin" not in own.owners
    assert "etc/gone.conf" in tree and "etc/gone.conf" not in own.owners


def test_diverted_files_owned_where_they_are(tree: FileTree, own: Ownership) -> None:
    with tree.open("usr/bin/tool.real") as f:
        assert f.read() == b"victim's tool\n"
    with tree.open("usr/bin/tool") as f:
        assert f.read() == b"diverter's tool\n"
    assert own.owners["usr/bin/tool.real"] == ("victim:all",)
    assert own.owners["usr/bin/tool"] == ("diverter:all",)
    assert "usr/share/victim/x" not in tree
    assert own.owners["usr/share/victim/x.local"] == ("victim:all",)


def test_conffiles_flagged(root: Path, own: Ownership) -> None:
    out = subprocess.run(
        ["dpkg-query", f"--admindir={_admin(root)}", "-W", "-f", "${Conffiles}\n"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    truth = {line.split()[0] for line in out.splitlines() if line.strip()}
    installed_truth = truth - {"/etc/gone.conf"}
    got = {f.path for p in own.packages.values() for f in p.files if f.flags & FLAG_CONFIG}
    assert got == installed_truth == {"/etc/alpha.conf"}


def test_info_files_owned_and_db_files_are_pkgdb(tree: FileTree, own: Ownership) -> None:
    native = debbuild.native_arch()
    assert own.owners["var/lib/dpkg/info/alpha.list"] == ("alpha:all",)
    assert own.owners["var/lib/dpkg/info/alpha.conffiles"] == ("alpha:all",)
    key = f"libmulti:{native}"
    assert own.owners[f"var/lib/dpkg/info/{key}.list"] == (key,)
    for p in ("status", "status-old", "diversions", "info/format", "lock", "triggers/Lock"):
        path = f"var/lib/dpkg/{p}"
        if path in tree:
            assert path in own.pkgdb_paths and path not in own.owners
    # the removed package's leftover info files are database, not payload
    gone = [p for p in tree.entries if p.startswith("var/lib/dpkg/info/gone.")]
    assert gone and all(p in own.pkgdb_paths for p in gone)
    every = set(own.owners) | own.pkgdb_paths
    assert all(
        p in every
        for p in tree.entries
        if p.startswith("var/lib/dpkg/") and tree.entries[p].kind != "dir"
    )


def _parsechangelog(text: str, tmp: Path) -> tuple[int, ...]:
    require_tool("dpkg-parsechangelog")
    path = tmp / "changelog"
    path.write_text(text)
    out = subprocess.run(
        ["dpkg-parsechangelog", "-l", str(path), "--format", "rfc822", "--all", "-S", "Timestamp"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return tuple(sorted((int(x) for x in out.split()), reverse=True))


def test_changelog_times_match_dpkg_parsechangelog(own: Ownership, tmp_path: Path) -> None:
    truth = _parsechangelog(CHANGELOG, tmp_path)
    assert len(truth) == 3
    assert own.packages["alpha:all"].changelog_times == truth
    # /usr/share/doc/alpha-data is a symlink to alpha's doc dir inside the image
    assert own.packages["alpha-data:all"].changelog_times == truth
    assert own.packages["diverter:all"].changelog_times == ()


def test_changelog_parse_ignores_bad_dates_and_bounds(tmp_path: Path) -> None:
    text = (
        CHANGELOG
        + "\n -- Bad <b@x>  Foo, 99 Zzz 2020 99:99:99 +0100\n -- no mail  Mon, 01 Jan 2024\n"
    )
    assert parse_times(text.encode()) == _parsechangelog(CHANGELOG, tmp_path)
    assert parse_times(b"\xff\xfe garbage \x00") == ()


def test_changelog_corrupt_gzip_is_a_warning(tmp_path: Path) -> None:
    good = gzip.compress(CHANGELOG.encode() * 50, mtime=0)
    bad = tmp_path / "changelog.Debian.gz"
    bad.write_bytes(good[: len(good) // 2])
    status = tmp_path / "status"
    status.write_text("Package: p\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n")
    t = debbuild.hand_tree(
        {"var/lib/dpkg/status": status, "usr/share/doc/p/changelog.Debian.gz": bad}
    )
    own = collect(t)
    assert any("changelog" in w for w in own.warnings)
    times = own.packages["p:all"].changelog_times
    assert set(times) <= set(_parsechangelog(CHANGELOG, tmp_path))


# --- status parsing, hostile input ----------------------------------------------------


def _status_tree(tmp_path: Path, data: bytes) -> FileTree:
    status = tmp_path / "status"
    status.write_bytes(data)
    return debbuild.hand_tree({"var/lib/dpkg/status": status}, dirs=["var/lib/dpkg/info"])


def _read(tree: FileTree) -> list[str]:
    reader = dpkg.DpkgReader()
    (path,) = reader.detect(tree)
    return sorted(p.key for p in reader.read(tree, path).packages)


GOOD = b"Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n\n"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"this is not\na status file at all\n", "not a 'Field: value' line"),
        (GOOD + b"\x00\x01\x02binary", "NUL byte"),
        (GOOD + b"Package: b\nDescription: caf\xe9\n", "not valid UTF-8"),
        (b"Version: 1\n\nVersion: 2\n", "without a Package field"),
        (b" continuation first\n", "continuation line"),
    ],
)
def test_malformed_status_names_the_file(tmp_path: Path, data: bytes, problem: str) -> None:
    with pytest.raises(PkgdbError) as err:
        _read(_status_tree(tmp_path, data))
    assert str(err.value).startswith("hand: var/lib/dpkg/status: ")
    assert problem in str(err.value)


def test_one_odd_stanza_is_a_warning(tmp_path: Path) -> None:
    with pytest.warns(PkgdbWarning, match="line 6"):
        keys = _read(_status_tree(tmp_path, GOOD + b"Version: 2\nArchitecture: all\n"))
    assert keys == ["a:all"]


def test_only_installed_states_count(tmp_path: Path) -> None:
    data = b"".join(
        f"Package: p{i}\nStatus: {s}\nVersion: 1\nArchitecture: all\n\n".encode()
        for i, s in enumerate(
            [
                "install ok installed",
                "deinstall ok config-files",
                "purge ok not-installed",
                "hold ok installed",
                "install ok unpacked",
                "install reinstreq half-installed",
            ]
        )
    )
    assert _read(_status_tree(tmp_path, data)) == ["p0:all", "p3:all", "p4:all"]


def test_empty_status_is_an_empty_database(tmp_path: Path) -> None:
    assert _read(_status_tree(tmp_path, b"")) == []


def test_source_and_epoch_fields() -> None:
    assert dpkg.split_source("util-linux (2.38.1-5+deb12u3)", "bsdutils") == "util-linux"
    assert dpkg.split_source("gcc-12", "gcc-12-base") == "gcc-12"
    assert dpkg.split_source("", "bash") == "bash"
    assert dpkg.split_epoch("1:2.38.1-5") == (1, "2.38.1-5")
    assert dpkg.split_epoch("2.0:1") == (None, "2.0:1")


def test_bad_diversions_file(tmp_path: Path) -> None:
    (tmp_path / "status").write_bytes(GOOD)
    (tmp_path / "diversions").write_bytes(b"/a\n/b\n")
    t = debbuild.hand_tree(
        {
            "var/lib/dpkg/status": tmp_path / "status",
            "var/lib/dpkg/diversions": tmp_path / "diversions",
        }
    )
    with pytest.raises(PkgdbError, match=r"^hand: var/lib/dpkg/diversions: 2 lines"):
        _read(t)


def test_list_with_relative_path_is_corrupt(tmp_path: Path) -> None:
    (tmp_path / "status").write_bytes(GOOD)
    (tmp_path / "a.list").write_bytes(b"/.\n/usr\nusr/bin/x\n")
    t = debbuild.hand_tree(
        {
            "var/lib/dpkg/status": tmp_path / "status",
            "var/lib/dpkg/info/a.list": tmp_path / "a.list",
        }
    )
    with pytest.raises(PkgdbError, match=r"^hand: var/lib/dpkg/info/a.list: line 3"):
        _read(t)


@pytest.mark.filterwarnings("ignore::pkgchunk.errors.PkgdbWarning")
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_fuzzed_status_only_pkgdb_errors(tmp_path: Path, data: bytes) -> None:
    try:
        _read(_status_tree(tmp_path, GOOD + data))
    except PkgdbError as err:
        assert str(err).startswith("hand: var/lib/dpkg/status: ")
