"""Two builds of one image, and a throw-away container store, for transport and recipe tests.

The demo image (pkgchunk.demo) has a base layer, an update layer (two packages
upgraded, the dpkg database rewritten) and an application layer. ``v1`` is the base
and application layers, ``v2`` all three: a rebuild in which two packages changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pkgchunk.demo import build_demo_image
from tests.helpers import require_tool


def _put(blobs: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def demo_versions(tmp: Path) -> tuple[str, str]:
    """An OCI layout at ``tmp/versions`` with tags v1 and v2; their references."""
    src = tmp / "demo-src"
    build_demo_image(str(src))
    index = json.loads((src / "index.json").read_text())
    blobs = src / "blobs" / "sha256"

    def blob(desc: dict[str, object]) -> bytes:
        return (blobs / str(desc["digest"]).split(":", 1)[1]).read_bytes()

    manifest = json.loads(blob(index["manifests"][0]))
    config = json.loads(blob(manifest["config"]))
    layout = tmp / "versions"
    shutil.copytree(src, layout)
    out_blobs = layout / "blobs" / "sha256"
    entries = []
    for tag, keep in (("v1", [0, 2]), ("v2", [0, 1, 2])):
        cfg = dict(config)
        ids = [config["rootfs"]["diff_ids"][i] for i in keep]
        cfg["rootfs"] = {"type": "layers", "diff_ids": ids}
        cfg["history"] = [config["history"][i] for i in keep]
        cdesc = _put(out_blobs, json.dumps(cfg, sort_keys=True).encode())
        man = {
            "schemaVersion": 2,
            "mediaType": manifest["mediaType"],
            "config": {"mediaType": manifest["config"]["mediaType"], **cdesc},
            "layers": [manifest["layers"][i] for i in keep],
        }
        mdesc = _put(out_blobs, json.dumps(man, sort_keys=True).encode())
        entries.append(
            {
                "mediaType": manifest["mediaType"],
                **mdesc,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        )
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
    return f"oci:{layout}:v1", f"oci:{layout}:v2"


@dataclass(frozen=True)
class TempStore:
    """A containers-storage store under a test's temp dir, vfs driver (no mounts needed)."""

    root: Path
    runroot: Path
    driver: str = "vfs"

    def ref(self, name: str) -> str:
        """skopeo's reference to ``name`` in this store."""
        return f"containers-storage:[{self.driver}@{self.root}+{self.runroot}]{name}"

    @property
    def cli_options(self) -> list[str]:
        """pkgchunk's options naming this store."""
        return [
            f"--storage-root={self.root}",
            f"--storage-runroot={self.runroot}",
            f"--storage-driver={self.driver}",
        ]

    def podman(self, *args: str) -> str:
        podman = require_tool("podman")
        cmd = [podman, f"--root={self.root}", f"--runroot={self.runroot}",
               f"--storage-driver={self.driver}", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"{cmd}: {proc.stderr}"
        return proc.stdout

    def skopeo(self, *args: str) -> str:
        skopeo = require_tool("skopeo")
        proc = subprocess.run([skopeo, *args], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"skopeo {args}: {proc.stderr}"
        return proc.stdout


@contextlib.contextmanager
def temp_store(tmp: Path) -> Iterator[TempStore]:
    """A store in ``tmp``; its run root is a short /tmp directory (podman refuses run
    roots longer than 50 characters), removed at the end."""
    runroot = Path(tempfile.mkdtemp(prefix="pkgchunk-run-"))
    store = TempStore(tmp / "storage", runroot)
    store.root.mkdir()
    try:
        yield store
    finally:
        shutil.rmtree(runroot, ignore_errors=True)


def fedora_root(tmp: Path) -> Path:
    """A Fedora-like root: real RPMs installed by the real rpm into a sqlite rpmdb, and an
    os-release saying Fedora 40 (what a bootc base image looks like to the readers)."""
    from tests.rpmbuild import SQLITE_DBPATH, build_rpms, rpm_cmd

    work = tmp / "rpmwork"
    work.mkdir()
    rpms = build_rpms(work)
    root = tmp / "fedora-root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "usr/lib/os-release").write_text(
        'NAME="Fedora Linux"\nVERSION="40 (Container Image)"\nID=fedora\nVERSION_ID=40\n'
    )
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    rpm_cmd(root, SQLITE_DBPATH, "--initdb")
    rpm_cmd(root, SQLITE_DBPATH, "-i", "--nodeps", "--noscripts", *map(str, rpms))
    return root
