"""Carrying unchanged entries forward on a real update pair (real .debs, the real dpkg).

``data`` is rebuilt as 1.0-2 with byte-identical payload (a binNMU, a no-change rebuild)
and ``tool`` is upgraded to 1.1-1 with its big data file unchanged and its binary changed.
Both come out of their new packages with new mtimes: under the clamp policy alone every
entry of theirs changes its tar header. With the previous build known, identical entries
take the previous build's mtime: their tar entries are byte for byte last time's, the layer
holding only unchanged content keeps its digest, and less is pulled.
"""

from __future__ import annotations

import calendar
import dataclasses
import gzip
import io
import random
import tarfile
from pathlib import Path

import pytest

from pkgchunk.diff import diff
from pkgchunk.image import LayerSpec
from pkgchunk.io import open_image, write_image
from pkgchunk.oci.write import WriteOptions
from pkgchunk.plan.record import BuildRecord
from pkgchunk.rechunk import PlanOptions, RechunkResult, rechunk_packages
from pkgchunk.tree import FileTree, encode_path
from pkgchunk.verify import verify
from tests.debbuild import build_deb, install, new_root


def _t(year: int, month: int) -> int:
    return calendar.timegm((year, month, 1, 0, 0, 0))


def _deb(work: Path, name: str, version: str, when: int, files: dict[str, bytes],
         mp: pytest.MonkeyPatch) -> Path:
    mp.setenv("SOURCE_DATE_EPOCH", str(when))  # dpkg-deb clamps payload mtimes to it
    deb = build_deb(work, name, version, files=files)
    mp.delenv("SOURCE_DATE_EPOCH")
    return deb


def _payload(name: str, salt: str, size: int) -> bytes:
    return random.Random(f"{name}-{salt}").randbytes(size)


@dataclasses.dataclass
class Pair:
    root1: Path
    root2: Path
    out: Path


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    tmp = tmp_path_factory.mktemp("carry")
    work = tmp / "debs"
    work.mkdir()
    mp = pytest.MonkeyPatch()
    try:
        data = {"/usr/share/data/blob.bin": _payload("data", "blob", 300_000),
                "/usr/share/doc/data/README": b"data\n"}
        tool1 = {"/usr/lib/tool/tool.bin": _payload("tool", "1.0", 200_000),
                 "/usr/share/tool/table.dat": _payload("tool", "table", 250_000)}
        tool2 = {**tool1, "/usr/lib/tool/tool.bin": _payload("tool", "1.1", 200_000)}
        other = {"/usr/lib/other/other.bin": _payload("other", "1", 150_000)}
        v1 = [_deb(work, "data", "1.0-1", _t(2021, 3), data, mp),
              _deb(work, "tool", "1.0-1", _t(2021, 4), tool1, mp),
              _deb(work, "other", "1.0-1", _t(2020, 2), other, mp)]
        v2 = [_deb(work, "data", "1.0-2", _t(2023, 6), data, mp),
              _deb(work, "tool", "1.1-1", _t(2023, 7), tool2, mp), v1[2]]
    finally:
        mp.undo()
    root1, root2 = new_root(tmp / "root1"), new_root(tmp / "root2")
    install(root1, *v1)
    install(root2, *v2)
    return Pair(root1, root2, tmp / "out")


def _layer_of(result: RechunkResult, source: str) -> str:
    (name,) = {la.name for la in result.planned.outcome.plan.layers
               if f"src/{source}" in la.groups}
    return next(w.digest for w in result.write.layers if w.name == name)


def _headers(ref: str, paths: set[str]) -> dict[str, bytes]:
    """The raw tar header block(s) of these paths in the image's layers."""
    layout = ref.removeprefix("oci:").rpartition(":")[0]
    out: dict[str, bytes] = {}
    with open_image(ref) as image:
        assert image.manifest is not None
        for layer in image.manifest["layers"]:
            blob = Path(layout, "blobs/sha256", layer["digest"].partition(":")[2])
            raw = io.BytesIO(gzip.decompress(blob.read_bytes()))
            with tarfile.open(fileobj=raw, mode="r:") as t:
                for m in t:
                    name = m.name.rstrip("/")
                    if name in paths:
                        raw.seek(m.offset)
                        out[name] = raw.read(m.offset_data - m.offset)
    return out


@pytest.mark.slow
def test_unchanged_entries_keep_their_tar_entries_and_layer(pair: Pair) -> None:
    out = pair.out
    v1 = rechunk_packages(f"rootfs:{pair.root1}", f"oci:{out}:v1")
    v2 = rechunk_packages(f"rootfs:{pair.root2}", f"oci:{out}:v2",
                          PlanOptions(prev=f"oci:{out}:v1"))
    plain = rechunk_packages(f"rootfs:{pair.root2}", f"oci:{out}:plain",
                             PlanOptions(prev=f"oci:{out}:v1", carry=False))
    assert not v2.warnings

    # data's payload is identical: its layer is byte for byte v1's; without carrying it is not
    assert _layer_of(v2, "data") == _layer_of(v1, "data")
    assert _layer_of(plain, "data") != _layer_of(v1, "data")
    # tool: the unchanged table's tar entry is v1's, the changed binary's is new
    same = {"usr/share/tool/table.dat", "usr/share/data/blob.bin"}
    h1 = _headers(f"oci:{out}:v1", same | {"usr/lib/tool/tool.bin"})
    h2 = _headers(f"oci:{out}:v2", same | {"usr/lib/tool/tool.bin"})
    hp = _headers(f"oci:{out}:plain", same)
    for path in same:
        assert h2[path] == h1[path], path
        assert hp[path] != h1[path], path
    assert h2["usr/lib/tool/tool.bin"] != h1["usr/lib/tool/tool.bin"]

    # less is pulled, and mtimes only ever move backwards from what the policy gives
    assert diff(f"oci:{out}:v1", f"oci:{out}:v2").pull_bytes < \
        diff(f"oci:{out}:v1", f"oci:{out}:plain").pull_bytes
    by_policy = plain.planned.tree.entries
    moved = [p for p, e in v2.planned.tree.entries.items() if e.mtime != by_policy[p].mtime]
    assert "usr/share/tool/table.dat" in moved and "usr/lib/tool/tool.bin" not in moved
    assert all(v2.planned.tree.entries[p].mtime < by_policy[p].mtime for p in moved)

    # the record names the previous build and the layers holding carried entries
    with open_image(f"oci:{out}:v2") as image:
        record = BuildRecord.from_labels(image.labels).mtime
    assert record is not None and record.carry == v1.write.manifest_digest
    names = [s.name for s in v2.planned.outcome.layer_specs]
    assert names.index(next(la.name for la in v2.planned.outcome.plan.layers
                            if "src/tool" in la.groups)) in record.carried

    # verify excuses exactly the carried mtimes: found in the layout, or named with --prev
    assert verify(f"rootfs:{pair.root2}", f"oci:{out}:v2").identical
    assert verify(f"rootfs:{pair.root2}", f"oci:{out}:v2", prev=f"oci:{out}:v1").identical
    # a build carried from v2 still carries (v2's carried entries are read again)
    v3 = rechunk_packages(f"rootfs:{pair.root2}", f"oci:{out}:v3",
                          PlanOptions(prev=f"oci:{out}:v2"))
    assert [w.digest for w in v3.write.layers] == [w.digest for w in v2.write.layers]


def _forge(src: str, dest: str, change: dict[str, int]) -> None:
    """``src`` rewritten with some mtimes changed and its labels kept (one layer)."""
    with open_image(src) as image:
        entries = dict(image.tree.entries)
        for path, mtime in change.items():
            entries[path] = dataclasses.replace(entries[path], mtime=mtime)
        tree = FileTree(entries, image.tree.label)
        spec = LayerSpec("all", tuple(sorted(entries, key=encode_path)))
        write_image(tree, image.config, [spec], dest, WriteOptions())


@pytest.mark.slow
def test_verify_refuses_a_forged_carry(pair: Pair) -> None:
    out = pair.out
    if not (out / "index.json").exists():
        rechunk_packages(f"rootfs:{pair.root1}", f"oci:{out}:v1")
        rechunk_packages(f"rootfs:{pair.root2}", f"oci:{out}:v2", PlanOptions(prev=f"oci:{out}:v1"))
    with open_image(f"oci:{out}:v1") as v1:
        old = {p: e.mtime for p, e in v1.tree.entries.items()}
    # an mtime moved back to a value the previous build does not hold for that path
    _forge(f"oci:{out}:v2", f"oci:{out}:forged",
           {"usr/share/tool/table.dat": old["usr/share/tool/table.dat"] - 1})
    got = verify(f"rootfs:{pair.root2}", f"oci:{out}:forged")
    # (the forged image's plan label names more layers than its one: a config difference)
    assert [d.path for d in got.differences if d.path] == ["usr/share/tool/table.dat"]
    # the previous build's mtime, but on content that changed: not an identical entry
    _forge(f"oci:{out}:v2", f"oci:{out}:forged2",
           {"usr/lib/tool/tool.bin": old["usr/lib/tool/tool.bin"]})
    got = verify(f"rootfs:{pair.root2}", f"oci:{out}:forged2")
    assert [d.path for d in got.differences if d.path] == ["usr/lib/tool/tool.bin"]
    # a carry that names no previous build verify can find is reported, not excused
    lone = pair.out.parent / "lone"
    _forge(f"oci:{out}:v2", f"oci:{lone}:v2", {})
    got = verify(f"rootfs:{pair.root2}", f"oci:{lone}:v2")
    config = [d.what for d in got.differences if not d.path]
    paths = [d for d in got.differences if d.path]
    assert any("--prev" in w for w in config)
    assert paths and all(d.what.startswith("mtime ") for d in paths)
    got = verify(f"rootfs:{pair.root2}", f"oci:{lone}:v2", prev=f"oci:{out}:v1")
    assert not [d for d in got.differences if d.path]


@pytest.mark.slow
def test_a_mismatched_previous_build_is_one_warning(pair: Pair) -> None:
    out = pair.out
    if not (out / "index.json").exists():
        rechunk_packages(f"rootfs:{pair.root1}", f"oci:{out}:v1")
    # v1's files and labels, but one layer where its plan names several
    _forge(f"oci:{out}:v1", f"oci:{out}:squashed", {})
    got = rechunk_packages(f"rootfs:{pair.root2}", f"oci:{out}:after",
                           PlanOptions(prev=f"oci:{out}:squashed"))
    carry_warnings = [w for w in got.warnings if "carried forward" in w]
    assert len(carry_warnings) == 1 and "squashed" in carry_warnings[0]
    plain = rechunk_packages(f"rootfs:{pair.root2}", f"oci:{out}:plain2",
                             PlanOptions(prev=f"oci:{out}:squashed", carry=False))
    assert [w.digest for w in got.write.layers] == [w.digest for w in plain.write.layers]
    assert verify(f"rootfs:{pair.root2}", f"oci:{out}:after").identical
    with open_image(f"oci:{out}:after") as image:
        record = BuildRecord.from_labels(image.labels).mtime
    assert record is not None and record.carry is None  # nothing carried: nothing named


@pytest.mark.slow
def test_a_previous_build_in_a_registry_is_fetched_and_carried(
    pair: Pair, tmp_path: Path
) -> None:
    import subprocess

    from pkgchunk.transport.skopeo import TransportOptions, transport_options
    from tests.helpers import require_tool
    from tests.registry import running_registry

    skopeo = require_tool("skopeo")
    out = tmp_path / "out"
    v1 = rechunk_packages(f"rootfs:{pair.root1}", f"oci:{out}:v1")
    local = rechunk_packages(f"rootfs:{pair.root2}", f"oci:{out}:v2",
                             PlanOptions(prev=f"oci:{out}:v1"))
    with running_registry(tmp_path) as registry:
        remote = f"docker://{registry.host}/carry:v1"
        subprocess.run([skopeo, "copy", "-q", "--dest-tls-verify=false", f"oci:{out}:v1",
                        remote], check=True, capture_output=True)
        with transport_options(TransportOptions(src_tls_verify=False, dest_tls_verify=False)):
            got = rechunk_packages(f"rootfs:{pair.root2}", f"oci:{out}:remote",
                                   PlanOptions(prev=remote))
            assert verify(f"rootfs:{pair.root2}", f"oci:{out}:remote", prev=remote).identical
    assert not got.warnings
    # the same carried build as with the previous build on disk: its layers were fetched
    assert [w.digest for w in got.write.layers] == [w.digest for w in local.write.layers]
    assert [w.digest for w in got.write.layers] != [w.digest for w in v1.write.layers]


@pytest.mark.slow
def test_dest_tag_as_previous_build_verifies_after_the_tag_moved(
    pair: Pair, tmp_path: Path
) -> None:
    dest = f"oci:{tmp_path / 'same'}:latest"
    v1 = rechunk_packages(f"rootfs:{pair.root1}", dest)
    v2 = rechunk_packages(f"rootfs:{pair.root2}", dest)  # DEST's tag is the previous build
    assert v2.previous == dest and not v2.warnings
    with open_image(dest) as image:
        record = BuildRecord.from_labels(image.labels).mtime
    assert record is not None and record.carry == v1.write.manifest_digest
    # the tag now names v2; v1's manifest is still among the layout's blobs
    assert verify(f"rootfs:{pair.root2}", dest).identical
