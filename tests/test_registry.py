"""A real registry round trip: push two rechunked builds with pkgchunk (skopeo underneath)
to Debian's docker-registry on loopback, pull the second into a store that holds the first,
and check that the layer bytes the registry served are exactly `pkgchunk diff`'s pull_bytes.

The registry's access log is the independent measure: one line per request with the bytes
it wrote. The registry listens on 127.0.0.1 only and is stopped at the end.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .helpers import require_tool
from .versions import demo_versions, temp_store

pytestmark = pytest.mark.slow

_ACCESS = re.compile(r'"GET /v2/([^ ]+)/blobs/(sha256:[0-9a-f]{64}) HTTP/[0-9.]+" (\d{3}) (\d+)')


@dataclass
class Registry:
    host: str
    log: Path

    def blob_gets(self, since: int) -> list[tuple[str, int]]:
        """(digest, bytes written) of each successful blob GET logged after byte ``since``."""
        text = self.log.read_bytes()[since:].decode("utf-8", "replace")
        return [
            (m.group(2), int(m.group(4)))
            for m in _ACCESS.finditer(text)
            if m.group(3) == "200"
        ]

    def settled_gets(self, since: int) -> list[tuple[str, int]]:
        """The blob GETs once the log has stopped growing (lines land after the response)."""
        last: list[tuple[str, int]] | None = None
        for _ in range(20):
            now = self.blob_gets(since)
            if now == last:
                return now
            last = now
            time.sleep(0.25)
        return last or []

    def offset(self) -> int:
        return self.log.stat().st_size


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture()
def registry(tmp_path: Path) -> Iterator[Registry]:
    binary = require_tool("docker-registry")
    port = _free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'registry-data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = tmp_path / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"docker-registry did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield Registry(f"127.0.0.1:{port}", log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
