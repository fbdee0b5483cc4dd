"""Hostile rules files beyond the schema errors test_rules.py checks: YAML tags, merge keys,
node and item floods, nesting and number bombs, files that are not files, token-soup
fuzzing, and a bad --rules through ``pkgchunk rechunk``. Each gives one RulesError line
(file:line:col first) in bounded time.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pkgchunk.errors import RulesError
from pkgchunk.plan.rules import MAX_EVENTS, MAX_ITEMS, load_rules, parse_rules
from tests.hostile.crafted import cli_env, fuzz_settings, layout_of, one_error_line, run_cli, within
from tests.imagebuild import file


def error_of(text: str) -> str:
    with within(20), pytest.raises(RulesError) as err:
        parse_rules(text, "r.yaml")
    msg = str(err.value)
    # one problem per line (independent problems are all reported), each with its place
    assert all(line.startswith("r.yaml:") for line in msg.split("\n")), msg
    return msg


GROUP = "version: 1\ngroups:\n  - name: g\n    packages: [a]\n"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("version: !!python/object/apply:os.system ['true']\n", "version must be an integer"),
        ("version: !!binary aGk=\n", "version must be an integer"),
        ("version: 1\ngroups: !!set {a, b}\n", "groups must be a list"),
        ("version: !custom 1\n", "version must be an integer"),
        ("version: 1\nbase: &b {name: x}\ngroups:\n  - <<: *b\n", "anchors are not allowed"),
        ("version: 1\ngroups:\n  - {<<: {name: x}, packages: [a]}\n", "keys must be strings"),
        ("version: 1\n? [complex, key]\n: 1\n", "keys must be strings, not a list"),
        ("version: 1\nmax_layers: 1.0e+3\n", "max_layers must be an integer, not a number"),
        ("version: 1\nmax_layers: 0x7fffffffffffffff\n", "max_layers must be between 1 and"),
        ("version: 1\nmax_layers: -1\n", "max_layers must be between 1 and"),
        ("version: 1\nbig_file_threshold: -5\n", "must not be negative"),
        ("version: 1\nbig_file_threshold: 5 parsecs\n", "is not a size"),
        ("version: 1\ngroup_by: [source]\n", "group_by must be one of"),
        (GROUP.replace("[a]", "[a, [b]]"), "packages item must be a string, not a list"),
        (GROUP.replace("[a]", "[a, null]"), "packages item must be a string, not null"),
        (GROUP.replace("name: g", "name: ../../etc"), "must be 1-64 characters"),
        (GROUP.replace("name: g", "name: \"g\\0\""), "must be 1-64 characters"),
        ("version: 1\ngroups:\n  - name: g\n    paths: ['/../etc/*']\n", "relative path glob"),
        ("version: 1\nversion: 1\n", "duplicate key 'version'"),
        ("\ufeffversion: 2\n", "unsupported version 2"),
        ("version: 1\n" + "x" * 2000 + ": 1\n", "a key without ':'"),
    ],
    ids=lambda v: v[:30] if isinstance(v, str) else None,
)
def test_refused_with_position(text: str, words: str) -> None:
    msg = error_of(text)
    assert words in msg, msg


def test_node_flood_is_refused_early() -> None:
    """More than MAX_EVENTS nodes in under 1 MiB: refused while scanning, not after
    building a node graph of them."""
    text = "version: 1\nx: [" + "a," * (MAX_EVENTS + 10) + "a]\n"
    assert len(text) < 1 << 20
    assert f"more than {MAX_EVENTS} YAML nodes" in error_of(text)


def test_item_flood() -> None:
    text = "version: 1\ngroups:\n" + "".join(
        f"  - {{name: g{i}, packages: [p]}}\n" for i in range(MAX_ITEMS + 1)
    )
    assert f"groups: more than {MAX_ITEMS} items" in error_of(text)


@pytest.mark.parametrize("style", ["flow", "block"])
def test_deep_nesting(style: str) -> None:
    depth = 600  # a few hundred levels exhaust the composer's recursion
    nest = ("[" * depth + "]" * depth if style == "flow"
            else "\n" + "".join("  " * (i + 1) + "-\n" for i in range(depth)))
    assert "nested too deeply" in error_of("version: 1\ngroups: " + nest + "\n")


def test_size_too_large_for_a_float() -> None:
    assert "is not a size" in error_of('version: 1\nbig_file_threshold: "' + "9" * 400 + 'G"\n')


def test_integer_with_thousands_of_digits() -> None:
    assert "max_layers" in error_of("version: 1\nmax_layers: " + "9" * 5000 + "\n")


def test_rules_file_that_is_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "rules.yaml"
    os.mkfifo(fifo)
    with within(1), pytest.raises(RulesError, match="not a regular file"):
        load_rules(fifo)


def test_rules_path_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "d.yaml").mkdir()
    with pytest.raises(RulesError) as err:
        load_rules(tmp_path / "d.yaml")
    assert str(err.value).startswith(f"{tmp_path}/d.yaml: cannot read")


def test_bad_rules_through_rechunk(tmp_path: Path) -> None:
    src = layout_of(tmp_path / "src", [file("usr/bin/x", b"x")])
    rules = tmp_path / "bad.yaml"
    rules.write_text("version: 1\ngroups:\n  - name: k\n    packages: [*-devel]\n")
    res = run_cli(["rechunk", "--rules", str(rules), src, f"oci:{tmp_path}/out:v1"],
                  cli_env(tmp_path))
    msg = one_error_line(res.returncode, res.stderr, f"{rules}:4:16: ")
    assert "aliases are not allowed" in msg
    assert not (tmp_path / "out").exists()


TOKENS = ["version: 1\n", "version: ", "1", "groups:", "buckets:", "max_layers:", "group_by:",
          "big_file_threshold:", "\n", "  ", "- ", "name: ", "packages: ", "paths: ", "[", "]",
          "{", "}", ", ", "'", '"', "*", "&", "!", "!!str ", "?", ":", "#", "|", ">", "%YAML 1.2",
          "---", "...", "\t", "\\", "\xff", "k", "usr/*", "16M", "yes", "null", "~", "-1", "0x10"]


@fuzz_settings(200)
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join))
def test_token_soup(text: str) -> None:
    """Arbitrary sequences of YAML and schema tokens (no deep nesting or huge numbers:
    those have their own tests above)."""
    try:
        with within(10):
            parse_rules(text, "r.yaml")
    except RulesError as err:
        assert all(line.startswith("r.yaml:") for line in str(err).split("\n")), err
