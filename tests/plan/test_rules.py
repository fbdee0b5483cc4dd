"""Rules files: every validation error names FILE:LINE:COL; shipped rules load."""

from __future__ import annotations

from pathlib import Path

import pytest

from pkgchunk.errors import RulesError
from pkgchunk.pkgdb.model import Ownership, Package, PackageDb
from pkgchunk.plan.rules import (
    BucketRule,
    Glob,
    default_rules_name,
    load_rules,
    parse_rules,
    parse_size,
    shipped_rules,
)

REPO = Path(__file__).resolve().parents[2]


def where(text: str, needle: str, nth: int = 0) -> str:
    """'LINE:COL' (1-based) of the nth occurrence of needle: computed from the text."""
    pos = -1
    for _ in range(nth + 1):
        pos = text.index(needle, pos + 1)
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"{line}:{col}"


def error_of(text: str) -> str:
    with pytest.raises(RulesError) as info:
        parse_rules(text, "my.yaml")
    return str(info.value)


# (rules text, token the error must point at, words the message must contain)
CASES = [
    ("version: 1\nfoo: 2\n", "foo", "unknown key 'foo'"),
    (
        "version: 1\ngroups:\n  - name: k\n    paths: [a]\n    name: j\n",
        "name: j",
        "groups[0]: duplicate key 'name'",
    ),
    ("max_layers: 3\n", "max_layers", "missing 'version'"),
    ("version: 2\n", "2", "unsupported version 2"),
    ("version: '1'\n", "'1'", "version must be an integer, not a string"),
    ("version: 1\nmax_layers: 0\n", "0", "max_layers must be between 1 and 500"),
    ("version: 1\nmax_layers: 501\n", "501", "max_layers must be between 1 and 500"),
    ("version: 1\nmax_layers: true\n", "true", "max_layers must be an integer, not a boolean"),
    ("version: 1\nmax_layers: 2.5\n", "2.5", "must be an integer, not a number"),
    ("version: 1\ngroup_by: arch\n", "arch", "group_by must be one of source, name, not 'arch'"),
    ("version: 1\nbig_file_threshold: 16Q\n", "16Q", "'16Q' is not a size"),
    ("version: 1\nbig_file_threshold: -1\n", "-1", "must not be negative"),
    ("version: 1\nbig_file_threshold: [1]\n", "[1]", "must be a size"),
    ("version: 1\ngroups: {name: x}\n", "{name", "groups must be a list, not a mapping"),
    ("version: 1\ngroups:\n  - kernel\n", "kernel", "groups[0] must be a mapping, not a string"),
    ("version: 1\ngroups:\n  - packages: [a]\n", "packages", "groups[0]: missing 'name'"),
    ("version: 1\ngroups:\n  - name: 'a b'\n", "'a b'", "must be 1-64 characters"),
    (
        "version: 1\ngroups:\n  - name: 12\n",
        "12",
        "groups[0].name must be a string, not an integer",
    ),
    (
        "version: 1\ngroups:\n  - name: k\n    packages: [a]\n    color: red\n",
        "color",
        "groups[0]: unknown key 'color'",
    ),
    ("version: 1\ngroups:\n  - name: k\n", "name", "group 'k' matches nothing"),
    ("version: 1\ngroups:\n  - name: k\n    packages: linux\n", "linux", "packages must be a list"),
    ("version: 1\ngroups:\n  - name: k\n    packages: [a, 7]\n", "7", "item must be a string"),
    ("version: 1\ngroups:\n  - name: k\n    sources: ['']\n", "''", "must not be empty"),
    ("version: 1\ngroups:\n  - name: k\n    paths: ['usr/../etc']\n", "'usr", "relative path glob"),
    (
        "version: 1\ngroups:\n  - name: k\n    paths: [a]\n    dedicated: maybe\n",
        "maybe",
        "dedicated must be true or false",
    ),
    (
        "version: 1\ngroups:\n  - name: k\n    paths: [a]\n    frequency: often\n",
        "often",
        "frequency must be one of high, medium, low, not 'often'",
    ),
    (
        "version: 1\ngroups:\n  - name: k\n    paths: [a]\n  - name: k\n    paths: [b]\n",
        "k\n    paths: [b]",
        "name 'k' is already used at line 3",
    ),
    (
        "version: 1\nbuckets:\n  - name: all\n  - name: etc\n    paths: [etc/*]\n",
        "name: all",
        "only the last bucket may be a catch-all",
    ),
    (
        "version: 1\nbuckets:\n  - name: b\n    paths: ['*', 'etc/*']\n",
        "['*'",
        "'*' already matches every path",
    ),
    (
        "version: 1\nbuckets:\n  - name: unowned\n    paths: [x/*]\n",
        "unowned",
        "reserved for the implied catch-all bucket",
    ),
    ("version: 1\ngroups:\n  - name: k\n    packages: [*-devel]\n", "*-devel", "aliases are not"),
    ("version: 1\nx: &a [1]\n", "&a", "anchors are not allowed"),
    ("- version\n", "- version", "rules file must be a mapping, not a list"),
    ("version: 1\n1: 2\n", "1: 2", "keys must be strings, not an integer"),
    ("version: 1\ngroups: [\n", "", "expected"),  # scanner error at end of input
    ("version: 1\n---\nversion: 1\n", "---", "one document only"),
    ("version: 1\n\tmax_layers: 3\n", "\t", "a tab: indent with spaces"),
    # pyyaml's words for common slips become a hint
    (
        "version: 1\ngroups:\n  - name: k\n    packages: [*lib*]\n",
        "*lib*",
        "a glob that starts with '*' must be quoted",
    ),
    (
        "version: 1\ngroups:\n  - name: k\n   packages: [a]\n",
        "packages",
        "bad indentation",
    ),
    ("version: 1\ngroups:\n  - name: k\n    packages: [@x]\n", "@x", "'@' cannot start"),
    ("version: 1\ngroups:\n  - name:k\n", "name:k", "put a space after ':'"),
    # strict: YAML 1.1 booleans and decimal-looking size units are refused
    (
        "version: 1\ngroups:\n  - name: k\n    paths: [a]\n    dedicated: yes\n",
        "yes",
        "dedicated must be true or false, not 'yes'",
    ),
    ("version: 1\nbig_file_threshold: 16MB\n", "16MB", "'16MB' is ambiguous: write M or MiB"),
    ("version: 1\nmax_layers: 7\npatch_layers: 12\n", "12",
     "patch_layers must be between 0 and 6 (max_layers - 1)"),
    ("version: 1\npatch_layers: -1\n", "-1", "patch_layers must be between 0"),
    ("version: 1\npatch_layers: two\n", "two", "patch_layers must be an integer"),
]


@pytest.mark.parametrize(("text", "token", "words"), CASES, ids=[c[2][:40] for c in CASES])
def test_every_error_names_file_line_and_column(text: str, token: str, words: str) -> None:
    msg = error_of(text)
    assert msg.startswith("my.yaml:"), msg
    assert words in msg, msg
    if token:
        assert msg.startswith(f"my.yaml:{where(text, token)}: "), msg
    # one line, as the CLI prints it
    assert "\n" not in msg


def test_independent_errors_are_all_reported_one_per_line() -> None:
    text = (
        "version: 1\n"
        "max_layers: 0\n"
        "colour: red\n"
        "groups:\n"
        "  - name: kernel\n"
        "    packages: [linux]\n"
        "    frequency: often\n"
        "    dedicated: on\n"
        "  - name: 'bad name'\n"
        "  - name: ok\n"
        "    packages: [a]\n"
        "buckets:\n"
        "  - name: etc\n"
        "    paths: etc/*\n"
    )
    lines = error_of(text).splitlines()
    expected = [
        (where(text, "0\n"), "max_layers must be between 1 and 500"),
        (where(text, "colour"), "unknown key 'colour'"),
        (where(text, "often"), "frequency must be one of"),
        (where(text, "on\n"), "dedicated must be true or false, not 'on'"),
        (where(text, "'bad name'"), "must be 1-64 characters"),
        (where(text, "etc/*"), "paths must be a list"),
    ]
    assert len(lines) == len(expected), lines
    for (pos, words) in expected:
        assert any(ln.startswith(f"my.yaml:{pos}: ") and words in ln for ln in lines), (
            pos, words, lines)


def test_scanner_error_points_into_the_file() -> None:
    text = "version: 1\ngroups: [\n"
    msg = error_of(text)
    line = int(msg.split(":")[1])
    assert 2 <= line <= text.count("\n") + 1


def test_alias_bomb_is_refused_before_expansion() -> None:
    lines = ["version: 1", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 30):
        lines.append(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]")
    msg = error_of("\n".join(lines) + "\n")
    assert msg.startswith("my.yaml:2:5: YAML anchors are not allowed"), msg


def test_empty_file() -> None:
    assert error_of("") == "my.yaml:1:1: empty rules file (it needs at least 'version: 1')"
    assert error_of("# only a comment\n").startswith("my.yaml:1:1: empty rules file")


def test_not_utf8_names_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"version: 1\ngroups:\n  - name: k\xff\n")
    with pytest.raises(RulesError) as info:
        load_rules(bad)
    assert str(info.value) == f"{bad}:3:12: not UTF-8 text"


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"version: 1\n" + b"#" * (1 << 20) + b"\n")
    with pytest.raises(RulesError, match="larger than"):
        load_rules(big)


def test_valid_file_gives_typed_rules(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "version: 1\n"
        "max_layers: 0x20\n"
        "group_by: name\n"
        "big_file_threshold: 1.5M\n"
        "patch_layers: 3\n"
        "groups:\n"
        "  - name: kernel\n"
        "    sources: [linux]\n"
        "    paths: [/usr/lib/modules/*]\n"
        "    dedicated: true\n"
        "    frequency: high\n"
        "buckets:\n"
        "  - name: etc\n"
        "    paths: [etc/*]\n"
        "    frequency: low\n"
    )
    rules = load_rules(path)
    assert rules.source == str(path)
    assert rules.max_layers == 32
    assert rules.group_by == "name"
    assert rules.big_file_threshold == 1536 * 1024
    assert rules.patch_layers == 3
    (kernel,) = rules.groups
    assert kernel.sources == ("linux",)
    assert kernel.paths == ("usr/lib/modules/*",)  # leading '/' dropped
    assert kernel.dedicated and kernel.frequency == "high"
    assert rules.buckets == (
        BucketRule("etc", ("etc/*",), frequency="low"),
        BucketRule("unowned"),  # implied catch-all
    )


def test_explicit_catch_all_is_kept() -> None:
    rules = parse_rules(
        "version: 1\nbuckets:\n  - name: etc\n    paths: [etc/*]\n  - name: rest\n", "r"
    )
    assert [b.name for b in rules.buckets] == ["etc", "rest"]
    assert rules.buckets[-1].catch_all


def test_defaults_when_keys_are_absent() -> None:
    rules = parse_rules("version: 1\n", "r")
    assert (rules.max_layers, rules.group_by, rules.big_file_threshold) == (64, "source", 16 << 20)
    assert rules.groups == ()
    assert [b.name for b in rules.buckets] == ["unowned"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4096", 4096), ("512K", 512 << 10), ("16M", 16 << 20), ("16MiB", 16 << 20),
     ("1.5G", 3 << 29), ("2 M", 2 << 20), ("2 MB", None), ("1GB", None),
     ("0", 0), ("16Q", None), ("M", None), ("-1", None)],
)  # fmt: skip
def test_parse_size(text: str, expected: int | None) -> None:
    assert parse_size(text) == expected


def test_path_globs_cross_slashes_and_match_the_directory() -> None:
    rule = parse_rules("version: 1\ngroups: [{name: k, paths: [usr/lib/modules/*]}]\n", "r")
    glob = rule.groups[0].path_glob()
    assert glob("usr/lib/modules")
    assert glob("usr/lib/modules/6.1.0/kernel/fs/ext4.ko")
    assert not glob("usr/lib/modulesX")
    assert not glob("usr/lib")
    assert not Glob.of(())("anything")


def test_shipped_rules_load_and_keep_their_promises() -> None:
    assert shipped_rules() == ["debian", "fedora-bootc", "generic"]
    for name in shipped_rules():
        rules = load_rules(name)
        assert rules.source == str(REPO / "rules" / f"{name}.yaml")
        groups = {g.name: g for g in rules.groups}
        buckets = {b.name: b for b in rules.buckets}
        kernel = groups["kernel"]
        assert kernel.dedicated
        assert kernel.path_glob()("usr/lib/modules/6.8.5-301.fc40.x86_64/vmlinuz")
        assert kernel.path_glob()("boot/vmlinuz-6.1.0-18-amd64")
        assert "firmware" in groups and "python" in groups and "perl" in groups
        assert rules.buckets[0].name == "initramfs" and buckets["initramfs"].dedicated
        for unowned in ("etc", "var", "unowned"):
            assert unowned in buckets
        assert rules.buckets[-1].catch_all
    deb = {g.name: g for g in load_rules("debian").groups}
    assert deb["kernel"].source_glob()("linux-signed-amd64")
    assert deb["kernel"].package_glob()("linux-image-6.1.0-18-amd64")
    # Debian's kernel changelog estimates its rate better than `high` (see debian.yaml)
    assert deb["kernel"].frequency is None
    fed = {g.name: g for g in load_rules("fedora-bootc").groups}
    assert fed["kernel"].source_glob()("kernel")
    assert fed["python"].source_glob()("python3.12")


def test_shipped_rules_are_commented_for_maintainers() -> None:
    for name in shipped_rules():
        text = (REPO / "rules" / f"{name}.yaml").read_text()
        comments = [line for line in text.splitlines() if line.lstrip().startswith("#")]
        assert len(comments) >= 20, name
        for topic in ("kernel", "firmware", "initramfs", "package database", "/etc", "/var"):
            assert topic in text, (name, topic)


def test_load_rules_errors_name_the_argument(tmp_path: Path) -> None:
    with pytest.raises(RulesError) as info:
        load_rules("debain")
    assert str(info.value) == (
        "debain: no such rules file or shipped rules (shipped: debian, fedora-bootc, generic)"
    )
    missing = tmp_path / "nope.yaml"
    with pytest.raises(RulesError, match=rf"^{missing}: cannot read: "):
        load_rules(missing)


def test_a_file_argument_wins_over_a_shipped_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "debian").write_text("version: 1\nmax_layers: 7\n")
    monkeypatch.chdir(tmp_path)
    assert load_rules("debian").max_layers == 7


def _ownership(fmt: str, *names: str) -> Ownership:
    pkgs = {n: Package(name=n, version="1", arch="x86_64", source=n, db=fmt) for n in names}
    db = PackageDb(format=fmt, path="db", packages=tuple(pkgs.values()))  # type: ignore[arg-type]
    return Ownership(dbs=(db,), packages=pkgs, owners={})


def test_default_rules_follow_the_image_family() -> None:
    assert default_rules_name(_ownership("rpm-sqlite", "bash", "fedora-release-common")) == (
        "fedora-bootc"
    )
    assert default_rules_name(_ownership("rpm-sqlite", "bash", "bootc")) == "fedora-bootc"
    assert default_rules_name(_ownership("rpm-ndb", "bash", "sles-release")) == "generic"
    assert default_rules_name(_ownership("dpkg", "bash", "base-files")) == "debian"
    assert default_rules_name(_ownership("dpkg-status.d", "libc6")) == "debian"
    assert default_rules_name(Ownership(dbs=(), packages={}, owners={})) == "generic"
    assert load_rules(default_rules_name(_ownership("dpkg", "bash"))).source.endswith(
        "debian.yaml"
    )
