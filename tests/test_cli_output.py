"""Output for people and machines: progress only on a terminal (or when asked), --quiet,
-v debug logging, and every --json document exactly as docs/json.md's schema blocks say."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO
from tests.imagebuild import build_image, file, write_layout
from tests.versions import demo_versions

DOCS = REPO / "docs" / "json.md"
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "null": (type(None),), "array": (list,), "object": (dict,),
}


def run(*args: str, stderr_tty: bool = False) -> tuple[int, str, str]:
    """Run the real command; stderr on a pipe, or on a pseudo-terminal."""
    cmd = [sys.executable, "-m", "pkgchunk.cli", *args]
    if not stderr_tty:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        return done.returncode, done.stdout, done.stderr
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave) as proc:
        os.close(slave)
        out, _ = proc.communicate(timeout=300)
    reader.join(timeout=10)
    os.close(master)
    return proc.returncode, out.decode(), b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("cli-output")
    v1, v2 = demo_versions(tmp)
    a = write_layout(tmp / "a", {"t": build_image([[file("f", b"1")]],
                                                  config={"config": {"Env": ["X=1"]}})})
    b = write_layout(tmp / "b", {"t": build_image([[file("f", b"2")]],
                                                  config={"config": {"Env": ["X=2"]}})})
    odd_status = b"Package: x\nStatus: install ok installed\n\nthis is not a field\n\n"
    odd = write_layout(tmp / "odd", {"t": build_image([[file("var/lib/dpkg/status", odd_status)]])})
    return {"v1": v1, "v2": v2, "out": str(tmp / "out"), "a": f"oci:{a}:t", "b": f"oci:{b}:t",
            "odd": f"oci:{odd}:t"}


# --------------------------------------------------------------------------- progress


def test_no_progress_when_stderr_is_not_a_terminal(work: dict[str, str]) -> None:
    code, out, err = run("rechunk", work["v1"], f"oci:{work['out']}:p1", "--max-layers", "3")
    assert code == 0
    assert err == ""  # nothing at all: no progress, no warnings
    assert out.splitlines()[0].startswith("LAYER")


def test_progress_on_a_terminal_and_when_asked(work: dict[str, str]) -> None:
    dest = f"oci:{work['out']}:p2"
    code, out, err = run("rechunk", work["v1"], dest, "--max-layers", "3", stderr_tty=True)
    assert code == 0, err
    lines = [line.strip("\r\x1b[K") for line in re.split(r"[\r\n]", err) if line.strip()]
    assert any(re.match(rf"reading {re.escape(work['v1'])}: .* in [\d.]+ s", x) for x in lines)
    assert any(re.match(rf"writing {re.escape(dest)}: .*B in [\d.]+ s", x) for x in lines)
    assert out.splitlines()[0].startswith("LAYER")  # stdout is the table, untouched
    # Forced on a pipe; forced off on a terminal.
    code, _, err = run("rechunk", work["v1"], dest, "--max-layers", "3", "--progress")
    assert code == 0 and "reading " in err and "/s" in err
    code, _, err = run("rechunk", work["v1"], dest, "--max-layers", "3", "--no-progress",
                       stderr_tty=True)
    assert code == 0 and "reading " not in err


def test_quiet_prints_only_errors_and_json(work: dict[str, str]) -> None:
    dest = f"oci:{work['out']}:q"
    code, out, err = run("rechunk", work["v1"], dest, "-q", stderr_tty=True)
    assert (code, out) == (0, "") and "reading" not in err
    code, out, _ = run("rechunk", work["v1"], dest, "-q", "--json")
    assert code == 0 and json.loads(out)["ref"] == dest
    code, out, err = run("verify", work["a"], work["b"], "-q")
    assert (code, out, err) == (1, "", "")  # the exit code still tells
    code, out, err = run("verify", work["a"], f"oci:{work['out']}:nope", "-q")
    assert code == 2 and out == "" and err.startswith("pkgchunk: error: ")


def test_verbose_logs_the_steps(work: dict[str, str]) -> None:
    code, _, err = run("rechunk", work["v1"], f"oci:{work['out']}:v", "-v")
    assert code == 0
    debug = [x for x in err.splitlines() if x.startswith("pkgchunk: debug: ")]
    assert any("previous build: none" in x for x in debug)
    assert any(re.search(r"planned \d+ layers \(rules debian\)", x) for x in debug)
    assert any(re.search(r"wrote .* \(\d+ of \d+ layers reused\)", x) for x in debug)


# --------------------------------------------------------------------------- JSON schemas


def documented_schemas() -> dict[str, dict[str, set[str]]]:
    """command -> path -> allowed JSON types, from the ```schema blocks of docs/json.md."""
    out: dict[str, dict[str, set[str]]] = {}
    for m in re.finditer(r"```schema (\w+)\n(.*?)```", DOCS.read_text(), re.S):
        fields: dict[str, set[str]] = {}
        for line in m.group(2).splitlines():
            key, _, types = line.partition(": ")
            fields[key.strip()] = set(types.strip().split("|"))
            assert fields[key.strip()] <= set(_TYPES), line
        out[m.group(1)] = fields
    return out


def flatten(doc: Any, path: str = "") -> list[tuple[str, Any]]:
    """(schema path, value) of every value in a JSON document."""
    items: list[tuple[str, Any]] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            sub = f"{path}.{key}" if path else key
            items.append((sub, value))
            items += flatten(value, sub)
    elif isinstance(doc, list):
        for value in doc:
            items.append((f"{path}[]", value))
            items += flatten(value, f"{path}[]")
    return items


def _type_ok(value: Any, allowed: set[str]) -> bool:
    for name in allowed:
        if isinstance(value, _TYPES[name]) and not (name in ("integer", "number")
                                                   and isinstance(value, bool)):
            return True
    return False


def _json(*args: str) -> Any:
    code, out, err = run(*args, "--json")
    assert code in (0, 1), err
    return json.loads(out)


def _user_rules(out: str) -> str:
    path = out + "-rules.yaml"
    with open(path, "w") as f:
        f.write("version: 1\nextends: debian\ngroups:\n  - name: shells\n"
                "    packages: [bash]\n  - name: typo\n    packages: [bsah]\n")
    return path


def _layout_with_garbage(src: str, layout: str) -> str:
    for n in ("2", "3"):  # one tag rewritten: the first build's blobs are garbage
        assert run("rechunk", src, f"oci:{layout}:t", "--max-layers", n, "--fresh")[0] == 0
    return f"oci:{layout}"


def test_every_json_document_matches_its_documented_schema(work: dict[str, str]) -> None:
    schemas = documented_schemas()
    assert set(schemas) == {"packages", "plan", "rechunk", "diff", "verify", "rules_check", "gc"}
    out = work["out"]
    split = Path(out).parent / "split.yaml"  # every package split (plan/split.py)
    split.write_text("version: 1\nsplit_threshold: 1\n")
    docs: dict[str, list[Any]] = {
        "packages": [_json("packages", work["v2"])],
        "plan": [_json("plan", work["v2"], "--max-layers", "4"),
                 _json("plan", work["v2"], "--keep-base", "1"),
                 _json("plan", work["v2"], "--rules", str(split))],
        "rechunk": [
            _json("rechunk", work["v1"], f"oci:{out}:s1", "--max-layers", "4"),
            _json("rechunk", work["v2"], f"oci:{out}:s2", "--prev", f"oci:{out}:s1"),
            _json("rechunk", work["odd"], f"oci:{out}:odd"),  # a warning
            _json("rechunk", work["v1"], f"oci:{out}:c1", "--compression", "zstd:chunked"),
            _json("rechunk", work["v2"], f"oci:{out}:c2", "--compression", "zstd:chunked",
                  "--prev", f"oci:{out}:c1"),
            _json("rechunk", work["v2"], f"oci:{out}:kb", "--keep-base", "1"),
            _json("rechunk", work["v1"], f"oci:{out}:p1", "--rules", str(split)),
            _json("rechunk", work["v2"], f"oci:{out}:p2", "--rules", str(split),
                  "--prev", f"oci:{out}:p1"),
            _json("rechunk", work["v2"], f"oci:{out}:pruned", "--prune", "/usr/share/doc"),
        ],
        "diff": [
            _json("diff", f"oci:{out}:s1", f"oci:{out}:s2"),
            _json("diff", f"oci:{out}:c1", f"oci:{out}:c2"),  # zstd:chunked: partial pull
            _json("diff", f"oci:{out}:p1", f"oci:{out}:p2"),  # split groups
        ],
        "verify": [
            _json("verify", work["v2"], f"oci:{out}:s2"),
            _json("verify", work["a"], work["b"]),
            _json("verify", f"oci:{out}:s2", work["v2"]),  # swapped: a note
            _json("verify", work["a"], work["b"], "--symmetric"),
            _json("verify", work["v2"], f"oci:{out}:pruned"),
        ],
        "rules_check": [_json("rules", "check", _user_rules(out), work["v2"])],
        "gc": [_json("gc", _layout_with_garbage(work["v1"], out + "-gc"), "--dry-run")],
    }
    for command, documents in docs.items():
        schema = schemas[command]
        seen: set[str] = set()
        for doc in documents:
            assert isinstance(doc, dict)
            for path, value in flatten(doc):
                assert path in schema, f"{command}: {path} is not documented in docs/json.md"
                assert _type_ok(value, schema[path]), f"{command}: {path} = {value!r}"
                seen.add(path)
        missing = set(schema) - seen
        assert not missing, f"{command}: documented but never produced: {missing}"
    # The documents also mean what the docs say.
    _, s2, odd, _c1, _c2, _kb, _p1, _p2, _pruned = docs["rechunk"]
    assert any("not a 'Field: value' line" in w for w in odd["warnings"])
    assert s2["previous"] == f"oci:{out}:s1" and any(la["reused"] for la in s2["layers"])
    d = docs["diff"][0]
    assert d["pull_bytes"] == sum(la["bytes"] for la in d["layers"] if la["pulled"])
    layer_names = {la["name"] for la in s2["layers"]}
    assert d["changed_groups"] and all(g["layer"] in layer_names for g in d["changed_groups"])
    same, differ, swapped, symmetric, pruned = docs["verify"]
    assert pruned["identical"] and pruned["pruned"][0]["prefix"] == "/usr/share/doc"
    assert pruned["pruned"][0]["paths"] > 0
    assert not swapped["identical"] and any("swapped" in n for n in swapped["notes"])
    assert symmetric["symmetric"] and not same["symmetric"] and not same["notes"]
    assert same["identical"] and same["differences"] == [] and same["paths"] > 100
    assert not differ["identical"]
    assert {"path": None, "what": "config.Env ['X=1'] != ['X=2']"} in differ["differences"]
    assert {"path": "/f", "what": "content differs"} in differ["differences"]


def test_reporter_counts_every_thread_and_nests_steps() -> None:
    import io

    from pkgchunk import progress

    buf = io.StringIO()
    assert not progress.enabled()
    progress.advance(10)  # off: nothing happens
    with progress.reporting(buf):
        assert progress.enabled()
        with progress.step("outer"):
            progress.advance(1024)
            with progress.step("inner"):
                def work() -> None:
                    for _ in range(256):
                        progress.advance(1024)

                workers = [threading.Thread(target=work) for _ in range(4)]
                for w in workers:
                    w.start()
                for w in workers:
                    w.join()
            progress.advance(1024)
        progress.advance(5)  # between steps: not counted anywhere
    assert not progress.enabled()
    lines = [line.rsplit("\x1b[K", 1)[-1] for line in buf.getvalue().split("\n") if line]
    finals = [line for line in lines if " in " in line]  # a running line ends with a rate
    assert len(finals) == 2, lines
    assert re.fullmatch(r"inner: 1\.0 MiB in [\d.]+ s \(.*/s\)", finals[0]), finals
    assert re.fullmatch(r"outer: 2\.0 KiB in [\d.]+ s \(.*/s\)", finals[1]), finals
