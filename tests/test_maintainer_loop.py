"""The maintainer's loop through the real CLI (issue 12): rules that extend, explain and
warn; tables that do not mislead, in a terminal and in a pipe; references and layouts."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pkgchunk.oci.store import LOCK_FILE, referenced
from pkgchunk.render import LIST_WIDTH, human_size
from tests.helpers import REPO, require_tool
from tests.versions import demo_versions, temp_store


def run(*args: str, cwd: str | None = None) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pkgchunk.cli", *args], capture_output=True, text=True,
        check=False, cwd=cwd,
    )
    return proc.returncode, proc.stdout, proc.stderr


def ok(*args: str) -> str:
    code, out, err = run(*args)
    assert code == 0, err
    return out


def as_json(*args: str) -> Any:
    return json.loads(ok(*args, "--json"))


@pytest.fixture(scope="module")
def imgs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("loop")
    v1, v2 = demo_versions(tmp)
    return {"v1": v1, "v2": v2, "tmp": str(tmp)}


def table_rows(out: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("LAYER"))
    end = next(i for i in range(start, len(lines)) if re.match(r"\d+ layers?, ", lines[i]))
    return lines[start : end + 1]


def contents_cell(header: str, row: str) -> str:
    return row[header.index("CONTENTS") :]


def expected_contents(layer: dict[str, Any]) -> list[str]:
    """What a layer holds as the table lists it: packages, then non-package groups."""
    other = [g for g in layer["groups"] if not g.startswith(("src/", "rule/", "pkg/"))]
    return [*layer["packages"], *other]


def check_list(cell: str, full: list[str], width: int | None) -> None:
    """A cell is whole names from the start of ``full``, then ',+N more' for the rest."""
    m = re.fullmatch(r"(.*?)(?:,\+(\d+) more)?", cell)
    assert m is not None
    shown = m.group(1).split(",")
    more = int(m.group(2) or 0)
    assert shown == full[: len(shown)], (cell, full)
    assert len(shown) + more == len(full), (cell, full)
    if width is not None and len(shown) > 1:
        assert len(cell) <= width, cell


# --------------------------------------------------------------------------- rules


USER_RULES = """\
version: 1
extends: debian
groups:
  - name: shells
    packages: [bash, dash]
  - name: kernal
    packages: ['kernal*']
buckets:
  - name: opt
    paths: [opt/*]
"""


def test_rules_show_and_check_with_extends(imgs: dict[str, str], tmp_path: Path) -> None:
    assert ok("rules", "show").split() == ["debian", "fedora-bootc", "generic"]
    assert ok("rules", "show", "debian") == (REPO / "rules" / "debian.yaml").read_text()
    code, _, err = run("rules", "show", "debain")
    assert code == 2 and err.startswith("pkgchunk: error: debain: no such rules file")

    mine = tmp_path / "mine.yaml"
    mine.write_text(USER_RULES)
    out = ok("rules", "check", str(mine))
    assert out.startswith(f"{mine}: valid (extends {REPO / 'rules' / 'debian.yaml'});")
    # With an image: what each group and bucket takes there, and the typo is called out.
    code, out, err = run("rules", "check", str(mine), imgs["v1"])
    assert code == 0, err
    rows = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith(("group/", "bucket/"))}
    assert list(rows)[:2] == ["group/shells", "group/kernal"]  # mine first, then the base's
    assert rows["group/shells"].split()[1] == "mine.yaml:4"
    assert rows["group/shells"].endswith("  bash")
    assert rows["group/kernal"].endswith("matches nothing)")
    assert rows["group/kernel"].split()[1].startswith("debian.yaml:")
    doc = as_json("rules", "check", str(mine), imgs["v1"])
    shells = next(m for m in doc["matches"] if m["name"] == "shells")
    assert shells["packages"] == ["bash"] and shells["paths"] > 0
    assert err.splitlines() == [
        f"pkgchunk: warning: {mine}:6: rules group 'kernal' matches nothing in this image"
        " (a typo in its globs?)"
    ]
    # Every plan warns about it, naming the line; the shipped file's unused groups do not.
    code, out, err = run("plan", "--rules", str(mine), imgs["v1"])
    assert code == 0 and out.startswith("LAYER")
    assert [ln for ln in err.splitlines() if "matches nothing" in ln] == [
        f"pkgchunk: warning: {mine}:6: rules group 'kernal' matches nothing in this image"
        " (a typo in its globs?)"
    ]
    code, _, err = run("plan", imgs["v1"])
    assert code == 0 and "matches nothing" not in err


def test_rules_errors_all_at_once_with_hints_and_file_lines(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("version: 1\ngroups:\n  - name: a\n    packages: a\n")
    top = tmp_path / "top.yaml"
    top.write_text("version: 1\nextends: base.yaml\n")
    code, out, err = run("rules", "check", str(top))
    assert (code, out) == (2, "")
    assert err == (
        f"pkgchunk: error: {base}:4:15: group 'a': packages must be a list, not a string\n"
    )

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\n"
        "big_file_threshold: 16MB\n"
        "groups:\n"
        "  - name: k\n"
        "    packages: [linux]\n"
        "    dedicated: yes\n"
        "  - name: j\n"
        "    paths: [a]\n"
        "    frequency: often\n"
    )
    code, _, err = run("rules", "check", str(bad))
    assert code == 2
    assert err.splitlines() == [
        f"pkgchunk: error: {bad}:2:21: big_file_threshold '16MB' is ambiguous: write M or MiB"
        " (units are binary: 1M = 1024 KiB)",
        f"pkgchunk: error: {bad}:6:16: group 'k': dedicated must be true or false, not 'yes'",
        f"pkgchunk: error: {bad}:9:16: group 'j': frequency must be one of high, medium, low,"
        " not 'often'",
    ]
    # The same through plan, before the (here missing) image is read.
    code, _, err2 = run("plan", "--rules", str(bad), "rootfs:/nonexistent")
    assert (code, err2) == (2, err)
    # PyYAML's words for an unquoted glob become a one-line hint.
    bad.write_text("version: 1\ngroups:\n  - name: k\n    packages: [*lib*]\n")
    code, _, err = run("rules", "check", str(bad))
    assert (code, err) == (
        2, f"pkgchunk: error: {bad}:4:16: a glob that starts with '*' must be quoted: '*lib*'\n"
    )


# --------------------------------------------------------------------------- tables


def test_tables_never_cut_names_and_label_sizes(imgs: dict[str, str], tmp_path: Path) -> None:
    # plan: uncompressed sizes only, labelled; one merged layer shows the merge.
    out = ok("plan", imgs["v2"], "--max-layers", "1")
    doc = as_json("plan", imgs["v2"], "--max-layers", "1")
    (layer,) = doc["layers"]
    head, row, foot = table_rows(out)
    assert head.split() == ["LAYER", "UNCOMPRESSED", "P(change)", "CONTENTS"]
    assert row.startswith(f"{layer['name']} +{len(layer['groups']) - 1} ")
    full = expected_contents(layer)
    assert "pkgdb" in full and len(",".join(full)) > LIST_WIDTH
    cell = contents_cell(head, row)
    assert cell.endswith(" more")
    check_list(cell, full, LIST_WIDTH)
    assert foot == f"1 layer, {human_size(layer['bytes'])} uncompressed, rules debian"
    # -v: every name.
    head, row, _ = table_rows(ok("plan", imgs["v2"], "--max-layers", "1", "-v"))
    assert contents_cell(head, row) == ",".join(full)

    # rechunk: both sizes, labelled; totals in the footer say which is which.
    dest = f"oci:{tmp_path}/out:t"
    out = ok("rechunk", imgs["v2"], dest, "--max-layers", "4")
    doc = as_json("rechunk", imgs["v2"], f"oci:{tmp_path}/out:u", "--max-layers", "4")
    rows = table_rows(out)
    head, foot = rows[0], rows[-1]
    assert head.split() == ["LAYER", "UNCOMPRESSED", "COMPRESSED", "P(change)", "DIGEST",
                            "CONTENTS"]
    for row, la in zip(rows[1:-1], doc["layers"], strict=True):
        cells = row.split()
        merged = len(la["groups"]) - 1
        assert row.startswith(la["name"] + (f" +{merged}" if merged else "") + " ")
        assert human_size(la["bytes"]) in row and human_size(la["compressed_bytes"]) in row
        check_list(contents_cell(head, row), expected_contents(la), LIST_WIDTH)
        assert la["digest"][7:19] in cells
        # A layer without packages lists what it holds instead of '-'.
        assert contents_cell(head, row) != "-"
    total = sum(la["bytes"] for la in doc["layers"])
    packed = sum(la["compressed_bytes"] for la in doc["layers"])
    assert foot == (
        f"{len(doc['layers'])} layers, {human_size(total)} uncompressed, {human_size(packed)}"
        " compressed (gzip), 0 reused, rules debian"
    )


def test_tables_in_a_real_terminal_fit_its_width(imgs: dict[str, str], tmp_path: Path) -> None:
    tmux = require_tool("tmux")
    columns = 100
    dest = f"oci:{tmp_path}/t:x"
    done = tmp_path / "done"
    cmd = (f"{sys.executable} -m pkgchunk.cli rechunk {imgs['v2']} {dest} --max-layers 2;"
           f" touch {done}; sleep 60")
    sock = f"pkgchunk-test-{os.getpid()}"
    subprocess.run([tmux, "-L", sock, "new-session", "-d", "-x", str(columns), "-y", "40",
                    "-s", "t", "-c", str(REPO), cmd], check=True)
    try:
        for _ in range(300):
            if done.exists():
                break
            time.sleep(0.1)
        screen = subprocess.run([tmux, "-L", sock, "capture-pane", "-p", "-J", "-t", "t"],
                                capture_output=True, text=True, check=True).stdout
    finally:
        subprocess.run([tmux, "-L", sock, "kill-server"], check=False)
    assert done.exists(), screen
    rows = table_rows(screen)
    # On the terminal: progress went before the table, each row is one screen line
    # (capture-pane -J joins wrapped lines: a row longer than the pane would show).
    assert "writing " in screen.split("LAYER")[0]
    head = rows[0]
    cells = []
    for row in rows[1:-1]:
        assert len(row) <= columns, row
        cell = contents_cell(head, row)
        assert re.fullmatch(r"[^ ]+?(,\+\d+ more)?", cell), cell  # names, then ',+N more'
        cells.append(cell)
    assert len(cells) == 2 and any("," in c for c in cells)  # a shared layer lists its groups
    # In a pipe the same table has LIST_WIDTH lists, independent of any terminal.
    piped_out = ok("rechunk", imgs["v2"], f"oci:{tmp_path}/p:x", "--max-layers", "2")
    prow = table_rows(piped_out)
    assert [r.split()[0] for r in prow] == [r.split()[0] for r in rows]
    for row in prow[1:-1]:
        assert len(contents_cell(prow[0], row)) <= LIST_WIDTH + len(",+99 more")


def test_plan_dest_finds_the_previous_build_as_rechunk_does(
    imgs: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    ok("rechunk", imgs["v1"], f"oci:{out}:app", "--max-layers", "4")
    planned = as_json("plan", imgs["v2"], "--dest", f"oci:{out}:app")
    cold = as_json("plan", imgs["v2"], "--max-layers", "4")
    assert (planned["previous"], cold["previous"]) == (f"oci:{out}:app", None)
    text = ok("plan", imgs["v2"], "--dest", f"oci:{out}:app")
    assert text.splitlines()[0] == f"previous build: oci:{out}:app"
    shutil.copytree(out, tmp_path / "copy")
    written = as_json("rechunk", imgs["v2"], f"oci:{tmp_path}/copy:app")
    assert written["previous"] == f"oci:{tmp_path}/copy:app"
    for key in ("name", "groups", "packages", "bytes", "change_probability"):
        assert [la[key] for la in planned["layers"]] == [la[key] for la in written["layers"]]
    assert [la["change_probability"] for la in cold["layers"]] != [
        la["change_probability"] for la in planned["layers"]]


def test_reused_is_marked_in_containers_storage(imgs: dict[str, str], tmp_path: Path) -> None:
    require_tool("skopeo")
    with temp_store(tmp_path) as store:
        dest = "containers-storage:localhost/loop:v1"
        first = as_json("rechunk", imgs["v1"], dest, *store.cli_options)
        assert not any(la["reused"] for la in first["layers"])
        again = as_json("rechunk", imgs["v1"], dest, *store.cli_options)
        assert again["previous"] == dest
        assert [la["digest"] for la in again["layers"]] == [la["digest"] for la in first["layers"]]
        assert all(la["reused"] for la in again["layers"])
        nxt = as_json("rechunk", imgs["v2"], "containers-storage:localhost/loop:v2",
                      "--prev", dest, *store.cli_options)
        old = {la["digest"] for la in first["layers"]}
        assert [la["reused"] for la in nxt["layers"]] == [
            la["digest"] in old for la in nxt["layers"]]
        assert any(la["reused"] for la in nxt["layers"])


def test_demo_explains_its_table_and_reruns_the_same(tmp_path: Path) -> None:
    first = ok("demo", str(tmp_path / "d"))
    second = ok("demo", str(tmp_path / "d"))
    removed, rest = second.split("\n", 1)
    assert removed.startswith("removed the previous run's ") and rest == first
    for term in ("src/NAME ", "rule/NAME ", "bucket/NAME ", "P(change) "):
        (line,) = [ln for ln in first.splitlines() if ln.strip().startswith(term)]
        assert len(line.strip()) > len(term) + 10
    rows = table_rows(first)
    layers = {r.split()[0] for r in rows[1:-1]}
    pulls = [ln.split()[-1] for ln in first.splitlines() if ln.startswith(("pull ", "have "))
             and "KiB of" not in ln and " B of " not in ln]
    assert pulls and set(pulls) == layers  # the pull names the table's layers
    changes = [ln.split()[1] for ln in first.splitlines() if ln.startswith("      ~ ")]
    assert "src/libssl3" in changes
    # A directory that holds something else is left alone.
    (tmp_path / "mine" / "out").mkdir(parents=True)
    code, _, err = run("demo", str(tmp_path / "mine"))
    assert code == 2 and "is not a demo layout" in err
    assert (tmp_path / "mine" / "out").is_dir()


# --------------------------------------------------------------------------- references


def test_docker_with_one_colon_is_refused() -> None:
    for ref, right in [("docker:debian:bookworm", "docker://debian:bookworm"),
                       ("docker:127.0.0.1:5000/app:1", "docker://127.0.0.1:5000/app:1")]:
        code, out, err = run("plan", ref)
        assert (code, out) == (2, "")
        assert err.startswith(f"pkgchunk: error: {ref}: write {right} ")


def test_untagged_oci_gc_and_no_lock_left(imgs: dict[str, str], tmp_path: Path) -> None:
    layout = tmp_path / "app"
    ok("rechunk", imgs["v1"], f"oci:{layout}:keep", "--max-layers", "3")
    for n in ("2", "3", "4", "5"):  # the same tag rewritten: old blobs pile up
        ok("rechunk", imgs["v2"], f"oci:{layout}", "--max-layers", n, "--fresh")
    index = json.loads((layout / "index.json").read_text())
    tags = [m.get("annotations", {}).get("org.opencontainers.image.ref.name")
            for m in index["manifests"]]
    assert tags == ["keep", "latest"]  # no tag: 'latest', replaced in place
    assert ok("plan", f"oci:{layout}").startswith("LAYER")  # a plain read still works
    assert not (layout / LOCK_FILE).exists()

    blobs = {p.name for p in (layout / "blobs" / "sha256").iterdir()}
    refs = referenced(str(layout))
    assert refs is not None and refs < blobs
    garbage = blobs - refs
    dry = as_json("gc", f"oci:{layout}", "--dry-run")
    assert sorted(dry["removed"]) == sorted("sha256:" + b for b in garbage)
    assert {p.name for p in (layout / "blobs" / "sha256").iterdir()} == blobs
    out = ok("gc", f"oci:{layout}")
    assert out == (f"oci:{layout}: removed {len(garbage)} unreferenced blobs"
                   f" ({human_size(dry['removed_bytes'])}), kept {len(refs)}\n")
    assert {p.name for p in (layout / "blobs" / "sha256").iterdir()} == refs
    assert not (layout / LOCK_FILE).exists()
    for ref, src in ((f"oci:{layout}:keep", imgs["v1"]), (f"oci:{layout}:latest", imgs["v2"])):
        code, _, err = run("verify", src, ref)
        assert code == 0, err
    assert ok("gc", f"oci:{layout}").startswith(f"oci:{layout}: removed 0 ")
    code, _, err = run("gc", f"oci:{layout}:keep")
    assert code == 2 and "gc takes a layout, oci:DIR" in err
    code, _, err = run("gc", f"oci:{tmp_path}/nothing")
    assert code == 2 and "is not an OCI layout" in err


# --------------------------------------------------------------------------- fixtures


def test_fixture_directory_from_the_environment(tmp_path: Path) -> None:
    test = "tests/pkgdb/test_ownership.py::test_rpm_fixture_ownership_matches_files_tsv"

    def pytest_run(**env: str) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items()
                 if k not in ("PKGCHUNK_FIXTURES", "PKGCHUNK_REQUIRE_TOOLS")}
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", test],
            capture_output=True, text=True, check=False, cwd=REPO, env={**clean, **env},
        )

    missing = str(tmp_path / "no-fixtures")
    skipped = pytest_run(PKGCHUNK_FIXTURES=missing)
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout
    assert f"fixture directory {missing} is absent" in skipped.stdout
    failed = pytest_run(PKGCHUNK_FIXTURES=missing, PKGCHUNK_REQUIRE_TOOLS="1")
    assert failed.returncode == 1 and "1 failed" in failed.stdout, failed.stdout
    from tests.helpers import SHARED_FIXTURES
    if SHARED_FIXTURES.is_dir():
        link = tmp_path / "elsewhere"
        link.symlink_to(SHARED_FIXTURES)
        passed = pytest_run(PKGCHUNK_FIXTURES=str(link), PKGCHUNK_REQUIRE_TOOLS="1")
        assert passed.returncode == 0 and "1 passed" in passed.stdout, passed.stdout


def test_readme_commands_and_ci_agree() -> None:
    """README's first command installs only what the demo needs; .ci/run runs README's
    commands (the first without the demo, the second verbatim)."""
    blocks = re.findall(r"```sh\n(.*?)\n```", (REPO / "README.md").read_text(), re.S)
    first, second = blocks[0], blocks[1]
    assert first.endswith(" && .venv/bin/pkgchunk demo") and "[test]" not in first
    ci = (REPO / ".ci" / "run").read_text()
    for step in first.split(" && ")[:-1]:
        assert step in ci.replace("pip install -q ", "pip install "), step
    assert second in ci.splitlines()
    assert "'.[test]'" in second
