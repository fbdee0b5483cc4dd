"""Debian's docker-registry on loopback for tests: a random free port on 127.0.0.1, a temp
storage directory, its access log as the measure of bytes served; stopped at the end.

Plain HTTP (clients pass --tls-verify=false), or HTTPS with a throw-away self-signed
certificate that clients trust through SSL_CERT_FILE (Go's TLS stack reads it), so
commands run exactly as they would against a real registry.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import require_tool

_ACCESS = re.compile(r'"GET /v2/([^ ]+)/blobs/(sha256:[0-9a-f]{64}) HTTP/[0-9.]+" (\d{3}) (\d+)')


@dataclass
class Registry:
    host: str
    log: Path
    #: The certificate to trust (SSL_CERT_FILE), when it speaks HTTPS.
    ca: Path | None = None

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


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    openssl = require_tool("openssl")
    cert, key = tmp_path / "registry.crt", tmp_path / "registry.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, capture_output=True,
    )
    return cert, key


@contextlib.contextmanager
def running_registry(tmp_path: Path, *, tls: bool = False) -> Iterator[Registry]:
    """A registry listening on 127.0.0.1 only, its data and log under ``tmp_path``."""
    binary = require_tool("docker-registry")
    port = _free_port()
    config = tmp_path / "registry.yml"
    http = f"http:\n  addr: 127.0.0.1:{port}\n"
    cert = None
    if tls:
        cert, key = _certificate(tmp_path)
        http += f"  tls:\n    certificate: {cert}\n    key: {key}\n"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'registry-data'}\n"
        + http
    )
    log = tmp_path / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 30
        scheme = "https" if tls else "http"
        context = ssl.create_default_context(cafile=str(cert)) if cert else None
        while True:
            try:
                with urllib.request.urlopen(
                    f"{scheme}://127.0.0.1:{port}/v2/", timeout=2, context=context
                ) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"docker-registry did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield Registry(f"127.0.0.1:{port}", log, cert)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
