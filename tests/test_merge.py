"""Merge: `rechunk SRC1 SRC2 ... DEST` stacks images in order and rechunks them as one.

The truth is an image built independently whose layer list is the concatenation of the
sources' layers (what a Containerfile adding B's layers on top of A would give):
the merged output must verify identical to it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pkgchunk.cli import cli
from pkgchunk.errors import InputError
from pkgchunk.io import open_image, open_stack
from pkgchunk.rechunk import rechunk_packages
from pkgchunk.verify import verify
from tests.imagebuild import (
    Layer,
    build_image,
    directory,
    file,
    hardlink,
    opaque,
    summary,
    symlink,
    whiteout,
    write_layout,
)
from tests.versions import demo_versions

A_LAYERS = [
    Layer([
        directory("etc"), directory("usr"), directory("usr/bin"), directory("opt"),
        directory("opt/data"), directory("opt/old"),
        file("usr/bin/tool", b"tool v1\n", mode=0o755),
        hardlink("usr/bin/tool-alias", "usr/bin/tool"),
        file("etc/app.conf", b"a=1\n"),
        file("opt/data/x", b"x" * 5000), file("opt/data/y", b"y" * 3000),
        file("opt/old/a", b"old a\n"),
    ]),
    Layer([file("etc/app.conf", b"a=2\n", mtime=1_700_000_500)], compression="zstd"),
]
B_LAYERS = [
    Layer([
        whiteout("opt/data/x"),
        opaque("opt/old"), file("opt/old/b", b"new b\n"),
        file("etc/app.conf", b"b=1\n", mtime=1_700_001_000),
        directory("srv"), file("srv/app.py", b"print('hi')\n" * 100),
        symlink("usr/bin/app", "/srv/app.py"),
    ]),
    Layer([whiteout("usr/bin/tool-alias"), file("srv/extra", b"e" * 700)]),
]
A_CONFIG = {"config": {"Env": ["A=1"], "Labels": {"from": "a"}}}
B_CONFIG = {
    "config": {"Env": ["B=2"], "Entrypoint": ["/usr/bin/app"], "Labels": {"from": "b"}}
}


@pytest.fixture()
def images(tmp_path: Path) -> tuple[str, str, str]:
    """References to A, B and the truth C (A's layers then B's, B's config)."""
    a = write_layout(tmp_path / "a", {"t": build_image(A_LAYERS, config=A_CONFIG)})
    b = write_layout(tmp_path / "b", {"t": build_image(B_LAYERS, config=B_CONFIG)})
    c = write_layout(tmp_path / "c", {"t": build_image(A_LAYERS + B_LAYERS, config=B_CONFIG)})
    return f"oci:{a}:t", f"oci:{b}:t", f"oci:{c}:t"


def test_stack_reads_like_the_concatenated_image(images: tuple[str, str, str]) -> None:
    a, b, c = images
    with open_stack([a, b]) as stacked, open_image(c) as truth:
        assert summary(stacked.tree) == summary(truth.tree)
        assert stacked.config["config"] == B_CONFIG["config"]
        assert stacked.config["rootfs"]["diff_ids"] == truth.config["rootfs"]["diff_ids"]
        assert [la.digest for la in stacked.layers] == [la.digest for la in truth.layers]
        paths = set(stacked.tree.entries)
    # B's whiteouts and opaque directory removed A's files; B's file won.
    assert "opt/data/x" not in paths and "opt/old/a" not in paths
    assert {"opt/data/y", "opt/old/b", "srv/app.py", "usr/bin/tool"} <= paths
    assert "usr/bin/tool-alias" not in paths


def test_merge_cli_verifies_equal_to_the_stacked_image(
    images: tuple[str, str, str], tmp_path: Path
) -> None:
    a, b, c = images
    dest = f"oci:{tmp_path}/out:merged"
    res = CliRunner().invoke(cli, ["rechunk", a, b, dest, "--max-layers", "3"])
    assert res.exit_code == 0, res.output
    assert verify(c, dest).identical
    # Not just B rewritten, not just A: both, in that order.
    assert not verify(b, dest).identical
    assert not verify(a, dest).identical
    with open_image(dest) as out:
        assert out.config["config"]["Entrypoint"] == ["/usr/bin/app"]
        with out.tree.open("etc/app.conf") as f:
            assert f.read() == b"b=1\n"


def test_order_matters(images: tuple[str, str, str], tmp_path: Path) -> None:
    a, b, _ = images
    with open_stack([b, a]) as reversed_stack:
        with reversed_stack.tree.open("etc/app.conf") as f:
            assert f.read() == b"a=2\n"  # A's layers came last
        assert reversed_stack.config["config"] == A_CONFIG["config"]


def _concat_layout(dest: Path, layouts: list[tuple[Path, str]]) -> str:
    """An OCI layout whose one image has the layers of ``layouts``' images in order and the
    last one's config: the stacked image, made with plain file copies."""
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layers: list[dict[str, object]] = []
    diff_ids: list[str] = []
    config: dict[str, object] = {}
    for root, tag in layouts:
        for blob in (root / "blobs" / "sha256").iterdir():
            shutil.copyfile(blob, blobs / blob.name)
        index = json.loads((root / "index.json").read_text())
        (desc,) = [
            m for m in index["manifests"]
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
        ]
        manifest = json.loads((blobs / desc["digest"].split(":")[1]).read_text())
        config = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_text())
        layers += manifest["layers"]
        diff_ids += config["rootfs"]["diff_ids"]  # type: ignore[index]
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    data = json.dumps(config).encode()
    cdigest = hashlib.sha256(data).hexdigest()
    (blobs / cdigest).write_bytes(data)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": f"sha256:{cdigest}", "size": len(data)},
        "layers": layers,
    }
    mdata = json.dumps(manifest).encode()
    mdigest = hashlib.sha256(mdata).hexdigest()
    (blobs / mdigest).write_bytes(mdata)
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": manifest["mediaType"], "digest": f"sha256:{mdigest}", "size": len(mdata),
        "annotations": {"org.opencontainers.image.ref.name": "t"}}]}
    (dest / "index.json").write_text(json.dumps(index))
    return f"oci:{dest}:t"


def test_merge_with_a_package_image_plans_by_package(
    images: tuple[str, str, str], tmp_path: Path
) -> None:
    v1, _ = demo_versions(tmp_path)
    _, b, _ = images
    truth = _concat_layout(
        tmp_path / "truth", [(Path(v1[4:].rpartition(":")[0]), "v1"), (tmp_path / "b", "t")]
    )
    dest = f"oci:{tmp_path}/out:pk"
    result = rechunk_packages([v1, b], dest)
    assert result.planned.rules_name == "debian"  # the base's dpkg database was read
    owned = {p.name for p in result.planned.ownership.packages.values()}
    assert {"libc6", "tzdata", "bash"} <= owned
    assert verify(truth, dest).identical
    assert not verify(v1, dest).identical


def test_plan_accepts_several_sources(images: tuple[str, str, str]) -> None:
    a, b, _ = images
    res = CliRunner().invoke(cli, ["plan", a, b, "--json"])
    assert res.exit_code == 0, res.output
    assert '"layers"' in res.output


def test_rootfs_cannot_be_stacked(images: tuple[str, str, str], tmp_path: Path) -> None:
    a, _, _ = images
    with pytest.raises(InputError, match=r"^rootfs:.*cannot be stacked"):
        open_stack([a, f"rootfs:{tmp_path}"])
    res = CliRunner().invoke(cli, ["rechunk", a])
    assert res.exit_code == 2 and "need SRC and DEST" in res.output
