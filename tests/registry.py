"""Debian's docker-registry on loopback for tests: a random free port on 127.0.0.1, a temp
storage directory, its access log as the measure of bytes served; stopped at the end."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .helpers import require_tool

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


@contextlib.contextmanager
def running_registry(tmp_path: Path) -> Iterator[Registry]:
    """A registry listening on 127.0.0.1 only, its data and log under ``tmp_path``."""
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
