"""The partial-pull figure of `pkgchunk diff`: the ranges it counts hold exactly the changed
files, and range merging follows containers/storage's rules."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

from click.testing import CliRunner

from pkgchunk.cli import cli
from pkgchunk.oci import zstdchunked as zc
from pkgchunk.oci.write import WriteOptions
from pkgchunk.partialpull import AUTO_MERGE_GAP, MAX_RANGES, known_digests, merge, missing_ranges
from tests.imagebuild import build_image, file, write_layout
from tests.oci.rewrite import rechunk
from tests.oci.test_zstdchunked import frame, layers_of


def _image(dest: Path, files: dict[str, bytes]) -> str:
    write_layout(dest, {"t": build_image([[file(n, d) for n, d in sorted(files.items())]])})
    return f"oci:{dest}:t"


def test_fetched_ranges_hold_exactly_the_changed_files(tmp_path: Path) -> None:
    rng = random.Random(3)
    v1 = {f"usr/share/f{i:03d}": rng.randbytes(rng.randrange(1, 40_000)) for i in range(200)}
    v1["usr/lib/big"] = rng.randbytes(1_500_000)
    v2 = dict(v1)
    for name in ("usr/share/f010", "usr/share/f011", "usr/share/f150"):
        v2[name] = rng.randbytes(5000)
    v2["usr/share/new"] = b"a new file" * 100
    big = bytearray(v1["usr/lib/big"])
    big[700_000:700_010] = b"0123456789"  # a changed chunk in the middle of a big file
    big[100:110] = b"ABCDEFGHIJ"  # and its first chunk
    v2["usr/lib/big"] = bytes(big)
    opts = WriteOptions(compression="zstd:chunked")
    rechunk(_image(tmp_path / "s1", v1), f"oci:{tmp_path}/o:1", max_layers=1, options=opts)
    rechunk(_image(tmp_path / "s2", v2), f"oci:{tmp_path}/o:2", max_layers=1, options=opts)
    (old_blob, old_ann, _), = layers_of(tmp_path / "o", "1")
    (blob, ann, _), = layers_of(tmp_path / "o", "2")
    old_where, where = zc.layout(old_ann), zc.layout(ann)
    assert old_where is not None and where is not None
    known = known_digests([zc.read_toc(io.BytesIO(old_blob), old_where, "old")])
    toc = zc.read_toc(io.BytesIO(blob), where, "new")
    wanted, files = missing_ranges(toc, known)
    assert files == 5
    # each range is exactly one chunk's frame: it decompresses to that chunk, no more
    sizes = {}
    for e in toc["entries"]:
        if e.get("offset"):
            sizes[e["offset"]] = e.get("chunkSize") or e["size"]
    for start, end in wanted:
        assert len(frame(blob, start, end)) == sizes[start]
    got = b"".join(frame(blob, start, end) for start, end in wanted)
    changed = [v2[n] for n in sorted(v2) if v1.get(n) != v2[n] and n != "usr/lib/big"]
    # every changed small file whole, and of the big one only a chunk or two around the edit
    small = b"".join(changed)
    assert len(got) - len(small) < 300_000
    for content in changed:
        assert content in got
    assert b"0123456789" in got and b"ABCDEFGHIJ" in got
    # the CLI reports the same, next to the whole-blob figure
    res = CliRunner().invoke(cli, ["diff", f"oci:{tmp_path}/o:1", f"oci:{tmp_path}/o:2",
                                   "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    part = doc["partial_pull"]
    assert part["files"] == 5 and part["chunk_bytes"] == sum(e - s for s, e in wanted)
    assert doc["partial_pull_bytes"] == (part["toc_bytes"] + part["tarsplit_bytes"]
                                         + part["chunk_bytes"] + part["gap_bytes"])
    assert part["toc_bytes"] == where.toc.length
    assert doc["partial_pull_bytes"] < doc["pull_bytes"] / 5
    text = CliRunner().invoke(cli, ["diff", f"oci:{tmp_path}/o:1", f"oci:{tmp_path}/o:2"])
    assert "partial pull (zstd:chunked)" in text.output


def test_merge_rules() -> None:
    ranges = [(0, 100), (100, 200), (1224, 1300), (2400, 2500)]
    out, gap = merge(ranges)
    # adjacent and a 1024-byte gap merge; an 1100-byte gap does not
    assert out == [(0, 1300), (2400, 2500)] and gap == 1024
    many = [(k * 10_000, k * 10_000 + 10) for k in range(MAX_RANGES + 5)]
    out, gap = merge(many)
    assert len(out) == MAX_RANGES and gap == 5 * (10_000 - 10)
    assert merge([]) == ([], 0)
    assert AUTO_MERGE_GAP == 1024
