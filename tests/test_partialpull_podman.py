"""zstd:chunked with the real partial-pull client: podman over a registry on loopback.

A real Debian 12 update (the essential set from ``bookworm``, then from ``bookworm`` plus
``-updates`` and ``-security``: glibc, pam, perl, zlib, ... change) is rechunked into
zstd:chunked images v1 and v2, pushed with skopeo to Debian's docker-registry on
127.0.0.1, and pulled by podman with overlay storage and ``enable_partial_images``: v1,
then v2. The bytes the registry served for v2 (its access log) must be what
``pkgchunk diff`` predicts for a partial-pull client, within the TOC overhead; the image
podman put together from the chunks must hold exactly v2's files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from pkgchunk.cli import cli
from pkgchunk.io import open_image
from tests.helpers import require_tool
from tests.oci.test_roundtrip_tools import expected, walk
from tests.registry import running_registry

MIRROR = "http://deb.debian.org/debian"
SOURCES = {
    "v1": [f"deb {MIRROR} bookworm main"],
    "v2": [f"deb {MIRROR} bookworm main", f"deb {MIRROR} bookworm-updates main",
           "deb http://deb.debian.org/debian-security bookworm-security main"],
}
EPOCH = "1700000000"
_GET = re.compile(r'"GET /v2/[^ ]+/blobs/(sha256:[0-9a-f]{64}) HTTP/[0-9.]+" (200|206) (\d+)')


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=env, check=False)


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{proc.args}: {proc.stderr[-3000:]}"
    return proc.stdout


def _pkgchunk(*args: str) -> str:
    res = CliRunner().invoke(cli, list(args))
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.slow
def test_podman_partial_pull_fetches_what_diff_predicts(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: mmdebstrap --mode=root and an overlay mount")
    mmdebstrap = require_tool("mmdebstrap")
    podman = require_tool("podman")
    skopeo = require_tool("skopeo")
    # the two roots, built at once (the mirror is the slow part)
    procs = {
        tag: subprocess.Popen(
            [mmdebstrap, "--quiet", "--variant=essential", "--mode=root", "bookworm",
             str(tmp_path / tag), *SOURCES[tag]],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for tag in SOURCES
    }
    for tag, proc in procs.items():
        _out, err = proc.communicate()
        assert proc.returncode == 0, f"mmdebstrap {tag}: {err[-2000:]}"
    out = f"oci:{tmp_path}/out"
    _pkgchunk("rechunk", f"rootfs:{tmp_path}/v1", f"{out}:v1", "--compression", "zstd:chunked",
              "--source-date-epoch", EPOCH)
    _pkgchunk("rechunk", f"rootfs:{tmp_path}/v2", f"{out}:v2", "--compression", "zstd:chunked",
              "--source-date-epoch", EPOCH, "--prev", f"{out}:v1")
    predicted = json.loads(_pkgchunk("diff", f"{out}:v1", f"{out}:v2", "--json"))
    part = predicted["partial_pull"]
    assert part is not None and part["files"] > 0, predicted
    pulled = {la["digest"] for la in predicted["layers"] if la["pulled"]}

    runroot = tempfile.mkdtemp(prefix="pkgchunk-run-")  # podman: at most 50 characters
    conf = tmp_path / "storage.conf"
    env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(conf)}
    try:
        conf.write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{tmp_path / "storage"}"\n'
            f'runroot = "{runroot}"\n'
            '[storage.options]\npull_options = {enable_partial_images = "true", '
            'use_hard_links = "false"}\n'
        )
        with running_registry(tmp_path) as registry:
            for tag in ("v1", "v2"):
                _ok(_run(skopeo, "copy", "-q", "--dest-tls-verify=false", f"{out}:{tag}",
                         f"docker://{registry.host}/deb:{tag}"))
            first = _run(podman, "pull", "-q", "--tls-verify=false",
                         f"{registry.host}/deb:v1", env=env)
            if first.returncode and "overlay" in first.stderr:
                pytest.skip(f"overlay storage cannot be mounted here: {first.stderr[-300:]}")
            _ok(first)
            since = registry.offset()
            second = _run(podman, "--log-level=debug", "pull", "--tls-verify=false",
                          f"{registry.host}/deb:v2", env=env)
            _ok(second)
            assert "Failed to retrieve partial blob" not in second.stderr, second.stderr[-3000:]
            log = registry.log.read_bytes()[since:].decode("utf-8", "replace")
            served = sum(int(m.group(3)) for m in _GET.finditer(log) if m.group(1) in pulled)
            ranges = sum(1 for m in _GET.finditer(log) if m.group(1) in pulled)
            # What podman 4.3 (containers/storage 1.43) fetches: each TOC and the missing
            # chunks, in one multi-range request per layer (newer clients add the
            # tar-split and fetch gaps up to 1 KiB between chunks; the registry adds a
            # part header per range). The figure is within the TOC overhead of it.
            floor = part["toc_bytes"] + part["chunk_bytes"]
            ceiling = (predicted["partial_pull_bytes"]
                       + 160 * (part["ranges"] + len(pulled)))  # multipart part headers
            assert floor <= served <= ceiling, (served, part, ranges)
            assert abs(served - predicted["partial_pull_bytes"]) <= part["toc_bytes"], served
            assert served < predicted["pull_bytes"] / 2  # a partial pull, not whole blobs
            mount = Path(_ok(_run(podman, "image", "mount", f"{registry.host}/deb:v2",
                                  env=env)).strip())
            try:
                got = walk(mount)
                with open_image(f"rootfs:{tmp_path}/v2") as image:
                    want = expected(image.tree)
            finally:
                _run(podman, "image", "unmount", f"{registry.host}/deb:v2", env=env)
            # podman 4.3's partial pull skips device nodes and fifos (its differ ignores
            # them); everything else is v2's, byte for byte, with v2's modes and owners.
            special = {p for p, v in want.items() if v[0] in (0o020000, 0o060000, 0o010000)}
            assert got.keys() <= want.keys() and want.keys() - got.keys() <= special
            diffs = [p for p in got if got[p][:5] != want[p][:5]]
            assert diffs == []
            # skopeo as a comparison: a partially pulled layer's diff_id is recorded as its
            # compressed digest in 4.3, so copying it out fails with a digest mismatch.
            back = _run(skopeo, "copy", "-q", f"containers-storage:{registry.host}/deb:v2",
                        f"oci:{tmp_path}/back:v2", env=env)
            if back.returncode == 0:
                from pkgchunk.verify import verify

                assert verify(f"rootfs:{tmp_path}/v2", f"oci:{tmp_path}/back:v2",
                              mtime_clamp=int(EPOCH)).identical
            else:
                assert "Digest did not match" in back.stderr, back.stderr
    finally:
        if conf.exists():  # this store only: unmount and remove what the test pulled
            _run(podman, "image", "unmount", "--all", env=env)
            _run(podman, "rmi", "--all", "--force", env=env)
        shutil.rmtree(runroot, ignore_errors=True)
