"""Each bad input of the image contract, through the real command line: exit code 2, one
line on stderr naming the file and the problem, no traceback, and DEST exactly as it was."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.imagebuild import (
    Built,
    Layer,
    blob_file,
    build_image,
    file,
    hardlink,
    tar_bytes,
    write_layout,
)


def _good() -> Built:
    return build_image([[file("etc/a", b"a" * 4000)], [file("usr/b", b"b" * 100)]])


def _layout(tmp: Path, built: Built | None = None) -> Path:
    return write_layout(tmp / "src", {"t": built or _good()})


def _missing_index(tmp: Path) -> tuple[str, str]:
    src = _layout(tmp)
    (src / "index.json").unlink()
    return f"oci:{src}:t", "index.json"


def _malformed_index(tmp: Path) -> tuple[str, str]:
    src = _layout(tmp)
    (src / "index.json").write_text("{not json")
    return f"oci:{src}:t", "index.json"


def _malformed_manifest(tmp: Path) -> tuple[str, str]:
    built = _good()
    src = _layout(tmp, built)
    path = blob_file(src, built.digest)
    data = b'{"schemaVersion": 2, "layers": 7}'
    path.write_bytes(data)
    index = json.loads((src / "index.json").read_text())
    index["manifests"][0].update(
        digest="sha256:" + hashlib.sha256(data).hexdigest(), size=len(data)
    )
    os.rename(path, blob_file(src, index["manifests"][0]["digest"]))
    (src / "index.json").write_text(json.dumps(index))
    return f"oci:{src}:t", "manifest"


def _missing_config(tmp: Path) -> tuple[str, str]:
    built = _good()
    src = _layout(tmp, built)
    blob_file(src, built.config_digest).unlink()
    return f"oci:{src}:t", built.config_digest.split(":")[1][:12]


def _missing_blob(tmp: Path) -> tuple[str, str]:
    built = _good()
    src = _layout(tmp, built)
    blob_file(src, built.layer_digests[1]).unlink()
    return f"oci:{src}:t", built.layer_digests[1].split(":")[1][:12]


def _digest_mismatch(tmp: Path) -> tuple[str, str]:
    built = _good()
    src = _layout(tmp, built)
    path = blob_file(src, built.layer_digests[0])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return f"oci:{src}:t", "digest mismatch"


def _truncated(compression: str) -> Callable[[Path], tuple[str, str]]:
    def make(tmp: Path) -> tuple[str, str]:
        layer = Layer([file("etc/a", os.urandom(20000))], compression=compression)
        built = build_image([layer], diff_ids=False)
        src = _layout(tmp, built)
        # A blob cut short whose digest and size still match the manifest: only the
        # decompressor can tell.
        path = blob_file(src, built.layer_digests[0])
        cut = path.read_bytes()[:-7]
        new = "sha256:" + hashlib.sha256(cut).hexdigest()
        blob_file(src, new).write_bytes(cut)
        man = json.loads(blob_file(src, built.digest).read_text())
        man["layers"][0].update(digest=new, size=len(cut))
        mdata = json.dumps(man).encode()
        mdig = "sha256:" + hashlib.sha256(mdata).hexdigest()
        blob_file(src, mdig).write_bytes(mdata)
        index = json.loads((src / "index.json").read_text())
        index["manifests"][0].update(digest=mdig, size=len(mdata))
        (src / "index.json").write_text(json.dumps(index))
        return f"oci:{src}:t", f"truncated {compression}"

    return make


def _escaping_member(tmp: Path) -> tuple[str, str]:
    raw = tar_bytes([file("../../etc/shadow", b"x")])
    return f"oci:{_layout(tmp, build_image([Layer(raw=raw)]))}:t", "escapes the image root"


def _hardlink_missing(tmp: Path) -> tuple[str, str]:
    built = build_image([[file("usr/a", b"a"), hardlink("usr/x", "usr/gone")]])
    return f"oci:{_layout(tmp, built)}:t", "hardlink to missing path"


def _unknown_transport(tmp: Path) -> tuple[str, str]:
    return "ftp:somewhere", "ftp"


def _rootfs_not_dir(tmp: Path) -> tuple[str, str]:
    (tmp / "plain").write_text("x")
    return f"rootfs:{tmp / 'plain'}", "not a directory"


CASES = {
    "missing index.json": _missing_index,
    "malformed index.json": _malformed_index,
    "malformed manifest": _malformed_manifest,
    "missing config": _missing_config,
    "missing blob": _missing_blob,
    "digest mismatch": _digest_mismatch,
    "truncated gzip": _truncated("gzip"),
    "truncated zstd": _truncated("zstd"),
    "member escaping root": _escaping_member,
    "hardlink to missing path": _hardlink_missing,
    "unknown transport": _unknown_transport,
    "rootfs not a directory": _rootfs_not_dir,
}


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pkgchunk.cli", *args], capture_output=True, text=True,
        timeout=120, check=False,
    )


@pytest.fixture(scope="module")
def dest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A destination layout that already holds tag 'old'."""
    base = tmp_path_factory.mktemp("dest")
    src = write_layout(base / "src", {"t": _good()})
    res = _run("rechunk", f"oci:{src}:t", f"oci:{base}/dest:old")
    assert res.returncode == 0, res.stderr
    return base / "dest"


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exit_2_one_line_dest_untouched(case: str, tmp_path: Path, dest: Path) -> None:
    ref, needle = CASES[case](tmp_path)
    before = _snapshot(dest)
    res = _run("rechunk", ref, f"oci:{dest}:new")
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("pkgchunk: error: ")
    assert "Traceback" not in res.stderr
    assert needle in lines[0], lines[0]
    # Names the input it could not use.
    named = ref.split(":", 1)[1].rsplit(":", 1)[0]
    assert named in lines[0] or ref.split(":")[0] in lines[0]
    assert _snapshot(dest) == before
