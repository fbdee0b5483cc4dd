"""``--patch-layers``: builds over a previous one written as its layers plus one patch, on a
real update series (real .debs installed by the real dpkg).

v1 -> v2: ``tool`` upgraded (its binary changed, its big table not), ``gone`` removed,
``fresh`` added. v2 -> v3: ``tool`` again. v3 -> v4 with both patch slots used: every layer
is planned again. An independent extractor (umoci) must see exactly each input.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pkgchunk.diff import diff
from pkgchunk.errors import InputError
from pkgchunk.io import open_image
from pkgchunk.oci.write import WriteOptions
from pkgchunk.plan.record import BuildRecord, PatchRecord
from pkgchunk.rechunk import PlanOptions, RechunkResult, rechunk_packages
from pkgchunk.verify import verify
from tests.debbuild import install, new_root
from tests.helpers import require_tool
from tests.test_carry import _deb, _payload, _t


@dataclasses.dataclass
class Series:
    roots: list[Path]
    out: Path
    tmp: Path


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Series:
    require_tool("dpkg")
    tmp = tmp_path_factory.mktemp("patch")
    work = tmp / "debs"
    work.mkdir()
    mp = pytest.MonkeyPatch()
    try:
        def tool(v: str) -> dict[str, bytes]:
            return {"/usr/lib/tool/tool.bin": _payload("tool", v, 200_000),
                    "/usr/share/tool/table.dat": _payload("tool", "table", 400_000)}

        data = _deb(work, "data", "1.0-1", _t(2021, 3),
                    {"/usr/share/data/blob.bin": _payload("data", "blob", 300_000)}, mp)
        other = _deb(work, "other", "1.0-1", _t(2020, 2),
                     {"/usr/lib/other/other.bin": _payload("other", "1", 150_000)}, mp)
        gone = _deb(work, "gone", "1.0-1", _t(2020, 4),
                    {"/usr/share/gone/g.dat": _payload("gone", "1", 50_000),
                     "/usr/share/gone/sub/h.dat": _payload("gone", "2", 10_000)}, mp)
        fresh = _deb(work, "fresh", "1.0-1", _t(2023, 1),
                     {"/usr/lib/fresh/fresh.bin": _payload("fresh", "1", 30_000)}, mp)
        tools = [_deb(work, "tool", v, _t(2021 + i, 4), tool(v), mp)
                 for i, v in enumerate(["1.0-1", "1.1-1", "1.2-1", "1.3-1"])]
    finally:
        mp.undo()
    sets = [[data, other, gone, tools[0]], [data, other, fresh, tools[1]],
            [data, other, fresh, tools[2]], [data, other, fresh, tools[3]]]
    roots = []
    for n, debs in enumerate(sets, 1):
        root = new_root(tmp / f"root{n}")
        install(root, *debs)
        roots.append(root)
    return Series(roots, tmp / "out", tmp)


def _build(s: Series, n: int, *, prev: bool = True, slots: int = 2) -> RechunkResult:
    return rechunk_packages(
        f"rootfs:{s.roots[n - 1]}", f"oci:{s.out}:v{n}",
        PlanOptions(max_layers=8, patch_layers=slots,
                    prev=f"oci:{s.out}:v{n - 1}" if prev and n > 1 else None),
    )


def _digests(s: Series, tag: str) -> list[str]:
    with open_image(f"oci:{s.out}:{tag}") as image:
        assert image.manifest is not None
        return [la["digest"] for la in image.manifest["layers"]]


def _record(s: Series, tag: str) -> BuildRecord:
    with open_image(f"oci:{s.out}:{tag}") as image:
        return BuildRecord.from_labels(image.labels)


def _unpacked(s: Series, tag: str) -> dict[str, str]:
    """path -> sha256 (files) or kind, as umoci applies the layers and their whiteouts."""
    bundle = s.tmp / f"bundle-{tag}"
    subprocess.run([require_tool("umoci"), "unpack", "--rootless", "--image",
                    f"{s.out}:{tag}", str(bundle)], check=True, capture_output=True)
    return _snapshot(bundle / "rootfs")


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            full = Path(dirpath, name)
            rel = str(full.relative_to(root))
            if full.is_symlink():
                out[rel] = "-> " + os.readlink(full)
            elif full.is_file():
                out[rel] = hashlib.sha256(full.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


@pytest.fixture(scope="module")
def built(series: Series) -> list[RechunkResult]:
    return [_build(series, n) for n in (1, 2, 3, 4)]


def test_the_first_build_leaves_the_patch_slots_free(series: Series,
                                                     built: list[RechunkResult]) -> None:
    first = built[0]
    assert not first.planned.patched and len(first.write.layers) <= 8 - 2
    assert _record(series, "v1").patch == PatchRecord()


def test_a_patch_keeps_every_previous_layer_and_pulls_only_what_changed(
    series: Series, built: list[RechunkResult]
) -> None:
    v1, v2 = _digests(series, "v1"), _digests(series, "v2")
    assert built[1].planned.patched
    assert v2[:-1] == v1 and len(v2) == len(v1) + 1
    cost = diff(f"oci:{series.out}:v1", f"oci:{series.out}:v2")
    assert [la.name for la in cost.layers if la.pulled] == ["patch/1"]
    assert cost.prefix_pull_bytes == cost.pull_bytes  # Docker's classic store: the same
    # tool's unchanged 400 kB table is not in the patch: the binary, fresh, the pkgdb are
    assert cost.pull_bytes < 200_000 + 30_000 + 60_000
    # the same update planned again pulls tool's whole layer, table included
    planned = rechunk_packages(f"rootfs:{series.roots[1]}", f"oci:{series.out}:v2plain",
                               PlanOptions(max_layers=8, prev=f"oci:{series.out}:v1"))
    assert not planned.planned.patched
    assert diff(f"oci:{series.out}:v1", f"oci:{series.out}:v2plain").pull_bytes > \
        cost.pull_bytes + 200_000
    record = _record(series, "v2")
    assert record.patch.layers == 1 and 200_000 < record.patch.bytes < 300_000
    assert record.mtime is not None and record.mtime.carry is not None


def test_patched_images_hold_exactly_their_input(series: Series,
                                                 built: list[RechunkResult]) -> None:
    for n in (2, 3):
        got = _unpacked(series, f"v{n}")
        want = _snapshot(series.roots[n - 1])
        assert got == want, n
        assert "usr/share/gone" not in got
        result = verify(f"rootfs:{series.roots[n - 1]}", f"oci:{series.out}:v{n}",
                        prev=f"oci:{series.out}:v{n - 1}")
        assert result.identical, result.differences


def test_patches_stack_until_the_slots_are_used_then_every_layer_is_planned_again(
    series: Series, built: list[RechunkResult]
) -> None:
    v1, v2, v3, v4 = (_digests(series, f"v{n}") for n in (1, 2, 3, 4))
    assert built[2].planned.patched and v3[:-1] == v2
    record = _record(series, "v3")
    assert record.patch.layers == 2
    # v4: both slots used, so a full plan against v1's layout; untouched packages keep
    # the digests of v1's layers, and the stale copies are gone
    assert not built[3].planned.patched
    assert "planning every layer again" in built[3].planned.patch_note
    assert _record(series, "v4").patch.layers == 0
    assert len(v4) <= 6 and set(v4) & set(v1)
    assert _unpacked(series, "v4") == _snapshot(series.roots[3])
    result = verify(f"rootfs:{series.roots[3]}", f"oci:{series.out}:v4",
                    prev=f"oci:{series.out}:v3")
    assert result.identical, result.differences


def test_the_cli_reports_the_patch(series: Series, built: list[RechunkResult]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pkgchunk.cli", "rechunk", f"rootfs:{series.roots[1]}",
         f"oci:{series.out}:cli", "--max-layers", "8", "--patch-layers", "2",
         "--prev", f"oci:{series.out}:v1", "--json"],
        capture_output=True, text=True, check=True,
    )
    assert "patch layer patch/1" in out.stderr
    doc = json.loads(out.stdout)
    assert doc["layers"][-1]["name"] == "patch/1"
    assert _digests(series, "cli") == _digests(series, "v2")  # reproducible
    table = subprocess.run(
        [sys.executable, "-m", "pkgchunk.cli", "rechunk", f"rootfs:{series.roots[1]}",
         f"oci:{series.out}:cli2", "--max-layers", "8", "--patch-layers", "2",
         "--prev", f"oci:{series.out}:v1"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "(previous build, kept)" in table and "patch/1" in table


def test_a_budget_with_no_room_for_packages_is_one_error(series: Series) -> None:
    with pytest.raises(InputError, match="--patch-layers 8: must leave"):
        rechunk_packages(f"rootfs:{series.roots[0]}", f"oci:{series.out}:bad",
                         PlanOptions(max_layers=8, patch_layers=8))
    index = series.out / "index.json"
    tags = [m.get("annotations", {}).get("org.opencontainers.image.ref.name")
            for m in json.loads(index.read_text())["manifests"]] if index.exists() else []
    assert "bad" not in tags  # (a substring test would match a digest's hex)


def test_a_rebuild_of_the_same_input_is_the_same_image(series: Series) -> None:
    def build(n: int, tag: str, prev: str | None) -> RechunkResult:
        return rechunk_packages(
            f"rootfs:{series.roots[n - 1]}", f"oci:{series.out}:{tag}",
            PlanOptions(max_layers=8, patch_layers=2,
                        prev=f"oci:{series.out}:{prev}" if prev else None),
            WriteOptions(source_date_epoch=1_700_000_000),
        )

    build(1, "same1", None)
    patched = build(2, "same2", "same1")
    again = build(2, "same3", "same2")
    assert patched.planned.patched and again.planned.patched
    assert "no change" in again.planned.patch_note
    assert again.write.manifest_digest == patched.write.manifest_digest


def test_patches_and_a_kept_base_are_one_error_line(series: Series) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pkgchunk.cli", "rechunk", f"rootfs:{series.roots[0]}",
         f"oci:{series.out}:kb", "--patch-layers", "2", "--keep-base", "1"],
        capture_output=True, text=True,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "do not combine" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_registry_tag_is_patched_in_place(series: Series, tmp_path: Path) -> None:
    """The CI loop: rechunk straight to a registry tag, whose image is the previous build."""
    from pkgchunk.transport.skopeo import TransportOptions, transport_options
    from tests.registry import running_registry

    skopeo = require_tool("skopeo")
    with running_registry(tmp_path) as registry, transport_options(
        TransportOptions(src_tls_verify=False, dest_tls_verify=False)
    ):
        dest = f"docker://{registry.host}/app:latest"
        opts = PlanOptions(max_layers=8, patch_layers=2)
        first = rechunk_packages(f"rootfs:{series.roots[0]}", dest, opts)
        second = rechunk_packages(f"rootfs:{series.roots[1]}", dest, opts)
        assert second.previous == dest and second.planned.patched, second.planned.patch_note

        def layers(ref: str) -> list[str]:
            raw = subprocess.run([skopeo, "inspect", "--raw", "--tls-verify=false", ref],
                                 check=True, capture_output=True, text=True).stdout
            return [la["digest"] for la in json.loads(raw)["layers"]]

        before = f"docker://{registry.host}/app@{first.write.manifest_digest}"
        assert layers(dest)[:-1] == layers(before)
        local = tmp_path / "client"
        subprocess.run([skopeo, "copy", "-q", "--src-tls-verify=false", before,
                        f"oci:{local}:v1"], check=True, capture_output=True)
        mid = registry.log.stat().st_size
        subprocess.run([skopeo, "copy", "-q", "--src-tls-verify=false", dest,
                        f"oci:{local}:v2"], check=True, capture_output=True)
        # a client holding v1 fetches exactly one layer blob for v2: the patch
        fetched = {d for d, _ in registry.blob_gets(mid)}
        assert {d for d in fetched if d in layers(dest)} == {layers(dest)[-1]}
        result = verify(f"rootfs:{series.roots[1]}", f"oci:{local}:v2", prev=f"oci:{local}:v1")
        assert result.identical, result.differences


def test_the_rules_file_can_keep_the_slots(series: Series, tmp_path: Path) -> None:
    """A maintainer sets patch_layers once in the rules; --patch-layers 0 turns it off."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nextends: debian\nmax_layers: 8\npatch_layers: 2\n")
    out = tmp_path / "out"
    first = rechunk_packages(f"rootfs:{series.roots[0]}", f"oci:{out}:r1",
                             PlanOptions(rules=str(rules)))
    assert first.planned.patch_slots == 2 and len(first.write.layers) <= 6
    second = rechunk_packages(f"rootfs:{series.roots[1]}", f"oci:{out}:r2",
                              PlanOptions(rules=str(rules), prev=f"oci:{out}:r1"))
    assert second.planned.patched
    off = rechunk_packages(f"rootfs:{series.roots[1]}", f"oci:{out}:r3",
                           PlanOptions(rules=str(rules), prev=f"oci:{out}:r1", patch_layers=0))
    assert not off.planned.patched and off.planned.patch_slots == 0


def test_plan_says_rechunk_may_patch_instead(series: Series,
                                             built: list[RechunkResult]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pkgchunk.cli", "plan", f"rootfs:{series.roots[1]}",
         "--max-layers", "8", "--patch-layers", "2", "--prev", f"oci:{series.out}:v1"],
        capture_output=True, text=True, check=True,
    )
    assert "plus one patch layer instead" in done.stderr
