"""A real registry round trip: push two rechunked builds with pkgchunk (skopeo underneath)
to Debian's docker-registry on loopback, pull the second into a store that holds the first,
and check that the layer bytes the registry served are exactly `pkgchunk diff`'s pull_bytes.

The registry's access log is the independent measure: one line per request with the bytes
it wrote. The registry listens on 127.0.0.1 only and is stopped at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import require_tool
from tests.registry import Registry, running_registry
from tests.versions import demo_versions, temp_store

pytestmark = pytest.mark.slow

@pytest.fixture()
def registry(tmp_path: Path) -> Iterator[Registry]:
    with running_registry(tmp_path) as reg:
        yield reg


def pkgchunk(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "pkgchunk.cli", *args], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"pkgchunk {args}: {proc.stderr}"
    return proc.stdout


def skopeo(*args: str) -> None:
    proc = subprocess.run(
        [require_tool("skopeo"), *args], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"skopeo {args}: {proc.stderr}"


def test_pull_of_an_update_costs_pull_bytes(registry: Registry, tmp_path: Path) -> None:
    v1, v2 = demo_versions(tmp_path)
    repo = f"docker://{registry.host}/demo"
    insecure = ["--src-tls-verify=false", "--dest-tls-verify=false"]

    first = json.loads(pkgchunk("rechunk", v1, f"{repo}:v1", *insecure, "--json"))
    assert first["previous"] is None  # nothing at that tag yet
    second = json.loads(
        pkgchunk("rechunk", v2, f"{repo}:v2", "--prev", f"{repo}:v1", *insecure, "--json")
    )
    assert second["previous"] == f"{repo}:v1"
    # What the registry holds is what we wrote: same manifest digest, same layers.
    assert second["ref"] == f"{repo}:v2"
    d = json.loads(pkgchunk("diff", f"{repo}:v1", f"{repo}:v2", *insecure, "--json"))
    assert [la["digest"] for la in d["layers"]] == [la["digest"] for la in second["layers"]]
    pulled = {la["digest"] for la in d["layers"] if la["pulled"]}
    held = {la["digest"] for la in d["layers"] if not la["pulled"]}
    assert pulled and held, d  # a real update: some layers change, some do not
    assert d["pull_bytes"] == sum(la["bytes"] for la in d["layers"] if la["pulled"])

    with temp_store(tmp_path) as store:
        skopeo("copy", "-q", "--src-tls-verify=false", f"{repo}:v1", store.ref("demo:v1"))
        start = registry.offset()
        skopeo("copy", "-q", "--src-tls-verify=false", f"{repo}:v2", store.ref("demo:v2"))
        gets = registry.settled_gets(start)
    layer_gets = [(digest, n) for digest, n in gets if digest in pulled | held]
    assert {digest for digest, _ in layer_gets} == pulled  # held layers were not fetched
    assert sum(n for _, n in layer_gets) == d["pull_bytes"]
    # Everything else fetched was the config (a few KiB), nothing more.
    others = [digest for digest, _ in gets if digest not in pulled | held]
    assert others in ([], [second["config_digest"]])

    # The same into an OCI layout that holds v1: skopeo skips the blobs it has.
    layout = f"oci:{tmp_path}/pulled"
    skopeo("copy", "-q", "--src-tls-verify=false", f"{repo}:v1", f"{layout}:v1")
    start = registry.offset()
    skopeo("copy", "-q", "--src-tls-verify=false", f"{repo}:v2", f"{layout}:v2")
    gets = registry.settled_gets(start)
    assert sum(n for digest, n in gets if digest in pulled | held) == d["pull_bytes"]

    # A first pull with nothing held costs the whole image (the measure is not stuck at 0).
    (tmp_path / "fresh").mkdir()
    with temp_store(tmp_path / "fresh") as s2:
        start = registry.offset()
        skopeo("copy", "-q", "--src-tls-verify=false", f"{repo}:v2", s2.ref("demo:v2"))
        full = registry.settled_gets(start)
    assert sum(n for digest, n in full if digest in pulled | held) == d["total_bytes"]


def test_docker_input_and_a_multi_arch_index(registry: Registry, tmp_path: Path) -> None:
    from pkgchunk.oci.platform import host_arch
    from tests.imagebuild import build_image, build_index, file, write_layout

    other = "arm64" if host_arch() != "arm64" else "amd64"
    mine = build_image([[file("which", b"mine")]], arch=host_arch())
    theirs = build_image([[file("which", b"theirs")]], arch=other)
    layout = write_layout(tmp_path / "multi", {"1": build_index([mine, theirs])})
    ref = f"docker://{registry.host}/multi:1"
    skopeo("copy", "-q", "--all", "--dest-tls-verify=false", f"oci:{layout}:1", ref)
    # diff reads the index through skopeo inspect and picks this machine's image.
    d = json.loads(pkgchunk("diff", ref, ref, "--src-tls-verify=false", "--json"))
    assert [la["digest"] for la in d["layers"]] == mine.layer_digests
    assert d["pull_bytes"] == 0
    # Reading docker:// (skopeo copy to a temporary layout): this machine's files.
    out = pkgchunk("verify", f"oci:{layout}:1", ref, "--src-tls-verify=false")
    assert out.startswith("identical: ")
    # Without --src-tls-verify=false the plain-HTTP registry is refused, in one line.
    proc = subprocess.run(
        [sys.executable, "-m", "pkgchunk.cli", "diff", ref, ref], capture_output=True,
        text=True, check=False,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"pkgchunk: error: {ref}: skopeo inspect failed: ")
    assert proc.stderr.rstrip().endswith(  # with the way out
        "(a plain-HTTP registry: pass --src-tls-verify=false to read from it,"
        " --dest-tls-verify=false to write to it)")
