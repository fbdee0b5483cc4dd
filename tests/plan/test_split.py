"""Big package groups split into parts by file behaviour (plan/split.py): the heuristics on
real package file lists, hardlinks and derived files, the history the plan label carries per
part, and the planner keeping a stable part's layer when only the volatile part changed."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from pkgchunk.pkgdb.model import (
    FLAG_CONFIG,
    FLAG_DOC,
    FLAG_LICENSE,
    Ownership,
    Package,
    PackageDb,
    PkgFile,
)
from pkgchunk.plan import frequency
from pkgchunk.plan.compose import plan_layers
from pkgchunk.plan.groups import Group, build_groups
from pkgchunk.plan.record import decode, encode
from pkgchunk.plan.rules import Rules, load_rules, parse_rules
from pkgchunk.plan.split import (
    PART_FACTOR,
    classify,
    parent_key,
    part_of,
    split_groups,
)
from pkgchunk.tree import Entry, FileTree, ancestors
from tests.helpers import shared_fixtures
from tests.plan.test_groups import check_partition, debian_tree

MARINER = "rpmdb/cbl-mariner-2.0-sqlite/files.tsv"


def with_threshold(rules: Rules, threshold: int) -> Rules:
    return dataclasses.replace(rules, split_threshold=threshold)


def parts_of(groups: tuple[Group, ...], parent: str) -> dict[str, Group]:
    return {g.part: g for g in groups if parent_key(g.key) == parent and g.part}


def where(groups: tuple[Group, ...]) -> dict[str, str]:
    return {p: g.key for g in groups for p in g.paths}


# --------------------------------------------------------------------------- real file lists


def test_real_debian_minbase_perl_splits_by_behaviour() -> None:
    """dpkg's own file lists of a real Debian 12 root: perl's modules stay out of the
    volatile part although their directory names perl's upstream version (5.36.0): a patch
    update keeps those paths, while its .so files, changelogs, man pages and md5sums go."""
    from pkgchunk.pkgdb.ownership import collect

    admin = shared_fixtures() / "dpkg" / "debian-12-bookworm-minbase"
    tree, _ = debian_tree(admin)
    own = collect(tree)
    rules = with_threshold(load_rules("debian"), 4096)  # the fixture's sizes are path lengths
    whole = build_groups(tree, own, rules)
    groups, splits = split_groups(whole, tree, own, rules)
    check_partition(tree, groups)
    at = where(groups)
    perl = parts_of(groups, "rule/perl")
    assert set(perl) == {"bin", "code", "data"}
    assert "rule/perl" in {s.group for s in splits}
    mods = [p for p in tree.entries if p.startswith("usr/share/perl/5.36.0/") and p.endswith(".pm")]
    assert mods and all(at[p] == "rule/perl#code" for p in mods)
    sos = [p for p in tree.entries if p.startswith("usr/lib/x86_64-linux-gnu/perl") and
           p.endswith(".so")]
    assert sos and all(at[p] == "rule/perl#bin" for p in sos)
    for p in ("usr/share/doc/perl-base/changelog.Debian.gz", "var/lib/dpkg/info/perl-base.md5sums",
              "usr/share/man/man1/perl.1.gz", "usr/bin/perl"):
        assert at[p] == "rule/perl#bin", p
    assert at["usr/share/doc/perl-base/copyright"] in ("rule/perl#data", "rule/perl#code")
    # each part keeps the parent's packages; the parts' bytes add up to the parent's
    parent = next(g for g in whole if g.key == "rule/perl")
    assert all(g.packages == parent.packages for g in perl.values())
    assert sum(g.bytes for g in perl.values()) == parent.bytes
    # small groups stay whole
    assert all(not g.part for g in groups if g.bytes < 4096 and g.key in {w.key for w in whole})


def _mariner_root() -> tuple[FileTree, Ownership]:
    """The CBL-Mariner rpmdb's file list (paths, modes, sizes, flags) as a tree."""
    tree = FileTree(label="mariner")
    files: dict[str, list[PkgFile]] = {}
    owners: dict[str, list[str]] = {}
    flag_bits = {"c": FLAG_CONFIG, "d": FLAG_DOC, "l": FLAG_LICENSE}
    lines = (shared_fixtures() / MARINER).read_text().splitlines()[1:]
    for line in lines:
        nevra, path, mode, size, digest, flags, _, _ = line.split("\t")
        p = path.lstrip("/")
        m = int(mode, 8)
        kind = {0o040000: "dir", 0o120000: "sym"}.get(m & 0o170000, "reg")
        for anc in ancestors(p):
            tree.entries.setdefault(anc, Entry(anc, "dir", 0o755))
        if kind == "reg":
            tree.entries[p] = Entry(p, "reg", m & 0o7777, size=int(size or 0))
        elif kind == "sym":
            tree.entries[p] = Entry(p, "sym", 0o777, target="x")
        else:
            tree.entries[p] = Entry(p, "dir", m & 0o7777)
        bits = sum(flag_bits.get(c, 0) for c in flags)
        files.setdefault(nevra, []).append(PkgFile(path, int(size or 0), m, digest, bits))
        owners.setdefault(p, []).append(nevra)
    packages: dict[str, Package] = {}
    for nevra, fs in files.items():
        name_ver, _, arch = nevra.rpartition(".")
        name, version, release = name_ver.rsplit("-", 2)
        pkg = Package(name=name, version=version, release=release, arch=arch, source=name,
                      db="rpm-sqlite", files=tuple(fs))
        assert pkg.key == nevra
        packages[nevra] = pkg
    db = PackageDb("rpm-sqlite", "var/lib/rpm/rpmdb.sqlite", tuple(packages.values()))
    own = Ownership((db,), packages, {k: tuple(sorted(v)) for k, v in owners.items()})
    return tree, own


def test_real_rpm_file_list_splits_with_doc_flags_and_modes() -> None:
    """The Mariner rpmdb: executables by mode, rpm's %doc/%license flags to the data part,
    locales to data, shared objects to bin; groups under a 4M threshold stay whole."""
    tree, own = _mariner_root()
    assert load_rules("generic").split_threshold == 0  # shipped: off (docs/rules.md)
    rules = with_threshold(load_rules("generic"), 4 << 20)
    whole = build_groups(tree, own, rules)
    groups, splits = split_groups(whole, tree, own, rules)
    check_partition(tree, groups)
    split = {s.group for s in splits}
    big = {g.key for g in whole if g.kind == "package" and g.bytes >= rules.split_threshold}
    assert split and split <= big
    assert all(not g.part for g in groups if parent_key(g.key) not in split)
    at = where(groups)
    for pkg in own.packages.values():
        for f in pkg.files:
            p = f.path.lstrip("/")
            key = at[p]
            if not part_of(key):
                continue
            e = tree.entries[p]
            if e.kind == "reg" and f.flags & (FLAG_DOC | FLAG_LICENSE) and not (
                p.startswith(("usr/share/man/", "usr/share/info/"))
                or p.lower().rpartition("/")[2].startswith(("changelog", "news", "changes"))
            ):
                assert part_of(key) in ("data", "code"), p
            if e.kind == "reg" and e.mode & 0o111 and p.startswith("usr/bin/"):
                assert part_of(key) == "bin", p
            if p.endswith(".mo"):
                assert part_of(key) == "data", p


def test_classify_examples() -> None:
    reg = Entry("x", "reg", 0o644, size=1)
    exe = Entry("x", "reg", 0o755, size=1)
    assert classify("usr/lib/x86_64-linux-gnu/libssl.so.3", reg) == "binary"
    assert classify("usr/lib/modules/6.1.0-18-amd64/kernel/fs/x.ko.xz", reg) == "binary"
    assert classify("usr/share/foo/helper", exe) == "binary"
    assert classify("usr/share/foo/helper.py", exe) == "script"
    assert classify("usr/bin/tool", reg) == "binary"
    assert classify("usr/share/doc/foo/changelog.Debian.gz", reg) == "changelog"
    assert classify("usr/share/doc/foo/NEWS.md.gz", reg) == "changelog"
    assert classify("usr/share/doc/foo/copyright", reg) == "doc"
    assert classify("usr/share/locale/de/LC_MESSAGES/foo.mo", reg) == "locale"
    assert classify("usr/share/man/man1/foo.1.gz", reg) == "manual"
    assert classify("usr/share/foo/table.dat", reg) == "data"
    assert classify("usr/share/doc/foo-1.2-3/README", reg, ("1.2-3",)) == "versioned"
    assert classify("usr/share/perl/5.36.0/strict.pm", reg, ("5.36.0-7",)) == "script"
    assert classify("usr/share/foo", Entry("usr/share/foo", "dir", 0o755)) == "dirs"


# --------------------------------------------------------------------------- synthetic packages


def _big_package(
    version: str = "1.0-1",
    *,
    bin_mtime: int = 1_700_000_000,
    data_mtime: int = 1_600_000_000,
    data_files: int = 8,
    links: Mapping[str, int] | None = None,
) -> tuple[FileTree, Ownership]:
    """Package ``big`` (bin 1 MiB, code 600 KiB, data ``data_files`` x 512 KiB) and ``small``."""
    spec: dict[str, tuple[int, int, int]] = {  # path -> (size, mode, mtime)
        "usr/bin/big": (1 << 20, 0o755, bin_mtime),
        "usr/share/doc/big/changelog.Debian.gz": (4000, 0o644, bin_mtime),
        "var/lib/dpkg/info/big.md5sums": (900, 0o644, bin_mtime),
        "usr/lib/python3/dist-packages/big/__init__.py": (600 << 10, 0o644, data_mtime),
        "usr/lib/python3/dist-packages/big/__pycache__/__init__.cpython-311.pyc": (
            100 << 10, 0o644, data_mtime),
        **{f"usr/share/big/data{i}.dat": (512 << 10, 0o644, data_mtime)
           for i in range(data_files)},
        "usr/bin/small": (2000, 0o755, 1_650_000_000),
    }
    tree = FileTree(label="big")
    for p, (size, mode, mtime) in spec.items():
        for anc in ancestors(p):
            tree.entries.setdefault(anc, Entry(anc, "dir", 0o755, mtime=1_500_000_000))
        tree.entries[p] = Entry(p, "reg", mode, size=size, mtime=mtime,
                                link=(links or {}).get(p, 0))
    big = Package(name="big", version=version, arch="amd64", source="big", db="dpkg",
                  changelog_times=(1_690_000_000, 1_680_000_000))
    small = Package(name="small", version="1", arch="amd64", source="small", db="dpkg")
    owners = {p: (("small:amd64",) if p.endswith("small") else ("big:amd64",))
              for p in spec if "__pycache__" not in p}
    db = PackageDb("dpkg", "var/lib/dpkg/status", (big, small))
    return tree, Ownership((db,), {big.key: big, small.key: small}, owners)


RULES = parse_rules("version: 1\nsplit_threshold: 1M\n", "test.yaml")


def test_parts_hardlinks_derived_and_small_groups() -> None:
    tree, own = _big_package(links={"usr/bin/big": 7, "usr/share/big/data3.dat": 7})
    groups, splits = split_groups(build_groups(tree, own, RULES), tree, own, RULES)
    at = where(groups)
    assert at["usr/bin/big"] == at["usr/share/big/data3.dat"] == "src/big#bin"  # one inode
    assert at["usr/share/big/data0.dat"] == "src/big#data"
    py = "usr/lib/python3/dist-packages/big/__init__.py"
    assert at[py] == at[py.replace("__init__.py", "__pycache__/__init__.cpython-311.pyc")] \
        == "src/big#code"
    assert at["usr/bin/small"] == "src/small"  # under the threshold: whole
    [info] = splits
    assert info.group == "src/big" and [p.part for p in info.parts] == ["bin", "code", "data"]
    assert "bin" in info.reason() and "binary" in info.reason()
    # a hardlinked inode counts once, in the part it went to
    assert sum(p.bytes for p in info.parts) == next(
        g.bytes for g in build_groups(tree, own, RULES) if g.key == "src/big")


def test_small_parts_fold_and_threshold_zero_disables() -> None:
    tree, own = _big_package(data_files=0)  # bin 1M + code 700K + a 300-byte copyright
    doc = "usr/share/doc/big/copyright"
    tree.entries[doc] = Entry(doc, "reg", 0o644, size=300)
    own = dataclasses.replace(own, owners={**own.owners, doc: ("big:amd64",)})
    groups, _ = split_groups(build_groups(tree, own, RULES), tree, own, RULES)
    assert {g.part for g in groups if parent_key(g.key) == "src/big"} == {"bin", "code"}
    assert where(groups)[doc] == "src/big#code"  # the tiny data part joined its neighbour
    assert all(g.bytes >= RULES.split_threshold // 16 for g in groups if g.part)
    off = dataclasses.replace(RULES, split_threshold=0)
    groups, splits = split_groups(build_groups(tree, own, off), tree, own, off)
    assert not splits and all(not g.part for g in groups)
    dedicated = parse_rules(
        "version: 1\nsplit_threshold: 1M\ngroups:\n  - name: big\n    packages: [big]\n"
        "    dedicated: true\n", "t.yaml")
    groups, splits = split_groups(build_groups(tree, own, dedicated), tree, own, dedicated)
    assert not splits


def test_deterministic_and_order_independent() -> None:
    tree, own = _big_package()
    whole = build_groups(tree, own, RULES)
    a = split_groups(whole, tree, own, RULES)
    b = split_groups(tuple(reversed(whole)), tree, own, RULES)
    assert a == b
    x = plan_layers(tree, own, RULES, max_layers=4)
    y = plan_layers(tree, own, RULES, max_layers=4)
    assert x.label == y.label and x.plan == y.plan


# --------------------------------------------------------------------------- history and planning


def test_label_round_trip_and_per_part_history() -> None:
    """An old label (the package whole) still decodes; after it, each part keeps its own
    seen/changed: the data part that never changed ends up far below the bin part."""
    old_label = '{"layers":[["src/big",[["src/big",6,2,"big=0.9-1"]]]],"n":6,"v":1}'
    prev = decode(old_label)
    assert prev.history["src/big"].seen == 6
    label = None
    for n in range(4):  # four upgrades: new binary, same data
        tree, own = _big_package(f"1.{n}-1", bin_mtime=1_700_000_000 + n)
        out = plan_layers(tree, own, RULES, prev, max_layers=8)
        assert {s.group for s in out.splits} == {"src/big"}
        label = out.label
        prev = decode(label)
    assert prev is not None
    h = prev.history
    assert "src/big" not in h
    assert (h["src/big#bin"].seen, h["src/big#bin"].changed) == (4, 3)
    assert (h["src/big#data"].seen, h["src/big#data"].changed) == (4, 0)
    tree, own = _big_package("1.9-1", bin_mtime=1_800_000_000)
    groups, _ = split_groups(build_groups(tree, own, RULES), tree, own, RULES, prev)
    probs = frequency.probabilities(groups, own.packages, prev)
    assert probs["src/big#data"] < probs["src/big#bin"] * PART_FACTOR["data"] + 1e-9
    assert probs["src/big#bin"] > probs["src/big#code"] > probs["src/big#data"]
    # the label is still format 1: an older pkgchunk reads it
    assert '"v":1' in encode(out.plan, out.groups, prev)


def test_stable_part_keeps_its_layer_when_only_the_binary_changed() -> None:
    tree1, own1 = _big_package("1.0-1", bin_mtime=1_700_000_000)
    first = plan_layers(tree1, own1, RULES, max_layers=6)
    layer_of = first.plan.layer_of()
    assert layer_of["src/big#data"] != layer_of["src/big#bin"]
    tree2, own2 = _big_package("1.1-1", bin_mtime=1_700_100_000)
    tree2.entries["usr/bin/big"] = dataclasses.replace(
        tree2.entries["usr/bin/big"], size=(1 << 20) + 4096)
    second = plan_layers(tree2, own2, RULES, decode(first.label), max_layers=6)
    assert second.plan.layer_of()["src/big#data"] == layer_of["src/big#data"]

    def content(out: object, tree: FileTree, name: str) -> list[Entry]:
        layer = next(la for la in out.plan.layers if la.name == name)  # type: ignore[attr-defined]
        return [tree.entries[p] for p in layer.paths]

    name = layer_of["src/big#data"]
    assert content(first, tree1, name) == content(second, tree2, name)  # same tar entries
    bin_name = layer_of["src/big#bin"]
    assert content(first, tree1, bin_name) != content(second, tree2, bin_name)


def test_previously_split_group_stays_split_above_half_the_threshold() -> None:
    tree, own = _big_package(data_files=1)  # ~2.2M: split at 2M, kept split down to 1M
    rules = dataclasses.replace(RULES, split_threshold=2 << 20)
    whole = build_groups(tree, own, rules)
    big = next(g for g in whole if g.key == "src/big")
    assert big.bytes >= (2 << 20) and (3 << 20) // 2 <= big.bytes < 3 << 20
    rules3 = dataclasses.replace(RULES, split_threshold=3 << 20)
    first = plan_layers(tree, own, rules, max_layers=6)
    assert first.splits
    assert not plan_layers(tree, own, rules3, max_layers=6).splits
    assert plan_layers(tree, own, rules3, decode(first.label), max_layers=6).splits
