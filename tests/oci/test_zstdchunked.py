"""zstd:chunked layers, checked by an independent reader written here from the spec.

The reader below rebuilds every layer tar from the tar-split stream plus the file payloads
it decompresses frame by frame from the TOC's offsets, and hashes it to the diff_id: what
a partial-pull client (containers/storage >= 1.57) does before it accepts a layer. It also
checks every TOC entry against the tar header Python's tarfile reads, every digest against
its payload, and the CRC-64 tar-split keeps per file, with a bytewise CRC written here.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import struct
import subprocess
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import zstandard
from click.testing import CliRunner

from pkgchunk.cli import cli
from pkgchunk.errors import OutputError
from pkgchunk.io import open_image
from pkgchunk.oci import zstdchunked as zc
from pkgchunk.oci.compress import compressor
from pkgchunk.oci.write import WriteOptions
from pkgchunk.verify import verify
from tests.helpers import require_tool
from tests.imagebuild import (
    Layer,
    Member,
    build_image,
    file,
    symlink,
    tar_bytes,
    write_layout,
)
from tests.oci.rewrite import rechunk
from tests.oci.test_roundtrip_tools import expected, walk
from tests.oci.writecases import CONFIG, rich_layers

CHUNKED = WriteOptions(compression="zstd:chunked")


# --- an independent reader -------------------------------------------------------------------

def _crc_byte(c: int) -> int:
    for _ in range(8):
        c = (c >> 1) ^ (0xD800000000000000 if c & 1 else 0)
    return c


_TABLE = [_crc_byte(i) for i in range(256)]


def crc64_iso(data: bytes) -> int:
    """CRC-64/GO-ISO from its definition (poly 0x1b reflected, init/xorout ~0), a byte at a
    time through a table built bit by bit."""
    crc = 0xFFFFFFFFFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


def frame(blob: bytes, start: int, end: int) -> bytes:
    """Decompress exactly the zstd frame(s) in blob[start:end]."""
    out = zstandard.ZstdDecompressor().stream_reader(
        io.BytesIO(blob[start:end]), read_across_frames=True
    ).read()
    assert isinstance(out, bytes)
    return out


def position(value: str) -> list[int]:
    return [int(x) for x in value.split(":")]


def read_toc(blob: bytes, ann: dict[str, str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The TOC (checked against its annotation digest) and the tar-split entries (checked
    against the TOC's tarSplitDigest); the footer must agree with both."""
    off, length, raw, kind = position(ann[zc.POSITION_KEY])
    assert kind == 1 and ann[zc.OLD_POSITION_KEY] == ann[zc.POSITION_KEY]
    toc_bytes = blob[off : off + length]
    assert blob[off - 8 : off] == b"\x50\x2a\x4d\x18" + struct.pack("<I", length)
    assert "sha256:" + hashlib.sha256(toc_bytes).hexdigest() == ann[zc.CHECKSUM_KEY]
    assert ann[zc.OLD_CHECKSUM_KEY] == ann[zc.CHECKSUM_KEY]
    toc_json = zstandard.ZstdDecompressor().decompress(toc_bytes, max_output_size=raw)
    assert len(toc_json) == raw
    toc = json.loads(toc_json)
    assert toc["version"] == 1
    ts_off, ts_len, ts_raw = position(ann[zc.TARSPLIT_KEY])
    ts_bytes = blob[ts_off : ts_off + ts_len]
    assert toc["tarSplitDigest"] == "sha256:" + hashlib.sha256(ts_bytes).hexdigest()
    ts = zstandard.ZstdDecompressor().decompress(ts_bytes, max_output_size=ts_raw)
    assert len(ts) == ts_raw
    footer = blob[-64:]
    assert blob[-72:-64] == b"\x50\x2a\x4d\x18" + struct.pack("<I", 64)
    assert struct.unpack("<7Q", footer[:56]) == (off, length, raw, 1, ts_off, ts_len, ts_raw)
    assert footer[56:] == b"GNUlInUx"
    return toc, [json.loads(line) for line in ts.splitlines()]


def files_of(blob: bytes, toc: dict[str, Any]) -> dict[str, bytes]:
    """name -> content, from the chunks alone (each chunk's frames, its digest checked)."""
    out: dict[str, bytes] = {}
    entries = toc["entries"]
    i = 0
    while i < len(entries):
        e = entries[i]
        i += 1
        if e["type"] != "reg":
            assert e["type"] != "chunk", "a chunk entry must follow its file"
            continue
        chunks = [e]
        while i < len(entries) and entries[i]["type"] == "chunk":
            assert entries[i]["name"] == e["name"]
            chunks.append(entries[i])
            i += 1
        if not e.get("size"):
            assert "digest" not in e and "offset" not in e
            out[e["name"]] = b""
            continue
        parts: list[bytes] = []
        for n, c in enumerate(chunks):
            end = c["endOffset"] if n + 1 == len(chunks) else chunks[n + 1]["offset"]
            data = frame(blob, c["offset"], end)
            if len(chunks) > 1:
                assert c.get("chunkOffset", 0) == sum(len(p) for p in parts)
                assert c["chunkSize"] == len(data)
                assert c["chunkDigest"] == "sha256:" + hashlib.sha256(data).hexdigest()
                if c.get("chunkType") == "zeros":
                    assert data == bytes(len(data)) and len(data) >= zc.HOLE_MIN
            parts.append(data)
        content = b"".join(parts)
        assert chunks[-1]["endOffset"] == e["endOffset"]
        assert len(content) == e["size"]
        assert e["digest"] == "sha256:" + hashlib.sha256(content).hexdigest()
        out[e["name"]] = content
    return out


def rebuild_tar(split: list[dict[str, Any]], files: dict[str, bytes]) -> bytes:
    """The layer tar from tar-split: raw segments as they are, each file's payload from the
    chunks, its CRC-64 checked."""
    out = bytearray()
    for n, entry in enumerate(split):
        assert entry["position"] == n
        if entry["type"] == 2:
            out += base64.b64decode(entry["payload"])
            continue
        assert entry["type"] == 1
        size = entry.get("size", 0)
        if size == 0:
            assert entry["payload"] is None
            continue
        data = files.get(entry["name"], b"")
        assert struct.pack(">Q", crc64_iso(data)) == base64.b64decode(entry["payload"])
        out += data
    return bytes(out)


def check_layer(blob: bytes, ann: dict[str, str], diff_id: str) -> dict[str, Any]:
    """Everything a strict client checks; returns the TOC."""
    toc, split = read_toc(blob, ann)
    files = files_of(blob, toc)
    tar = rebuild_tar(split, files)
    assert "sha256:" + hashlib.sha256(tar).hexdigest() == diff_id
    plain = zstandard.ZstdDecompressor().stream_reader(
        io.BytesIO(blob), read_across_frames=True
    ).read()
    assert plain == tar
    # each TOC entry equals its tar header, as tarfile (not our parser) reads it
    by_name = {e["name"]: e for e in toc["entries"] if e["type"] != "chunk"}
    kinds = {tarfile.REGTYPE: "reg", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
             tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block",
             tarfile.FIFOTYPE: "fifo"}
    with tarfile.open(fileobj=io.BytesIO(tar), encoding="utf-8") as tf:
        members = tf.getmembers()
    names = []
    for m in members:
        name = m.name + "/" if m.isdir() else m.name
        names.append(name)
        e = by_name[name]
        assert e["type"] == kinds[m.type]
        assert e.get("linkName", "") == m.linkname
        assert e.get("mode", 0) == m.mode
        assert e.get("size", 0) == m.size
        assert e.get("uid", 0) == e.get("UID", 0) == m.uid
        assert e.get("gid", 0) == e.get("GID", 0) == m.gid
        when = datetime.fromtimestamp(m.mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert e["modtime"] == e["ModTime"] == when
        assert e.get("devMajor", 0) == (m.devmajor if m.ischr() or m.isblk() else 0)
        assert e.get("devMinor", 0) == (m.devminor if m.ischr() or m.isblk() else 0)
        xattrs = {k[len("SCHILY.xattr."):]: base64.b64encode(
            v.encode("utf-8", "surrogateescape")).decode()
            for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
        assert e.get("xattrs", {}) == xattrs
    assert names == [e["name"] for e in toc["entries"] if e["type"] != "chunk"]
    return toc


def layers_of(layout: Path, tag: str = "t") -> Iterator[tuple[bytes, dict[str, str], str]]:
    index = json.loads((layout / "index.json").read_text())
    (desc,) = [m for m in index["manifests"]
               if m["annotations"]["org.opencontainers.image.ref.name"] == tag]
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / desc["digest"][7:]).read_bytes())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_bytes())
    for lay, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        assert lay["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
        blob = (blobs / lay["digest"][7:]).read_bytes()
        yield blob, lay["annotations"], diff_id


def utf8_source(dest: Path, extra: list[Member] | None = None) -> str:
    """rich_layers without its names that are not UTF-8 (a JSON TOC cannot hold them)."""
    layers = []
    for lay in rich_layers():
        members = [m for m in lay.members if isinstance(m.name, str)]
        layers.append(Layer(members, compression=lay.compression))
    if extra:
        layers.append(Layer(extra))
    write_layout(dest, {"src": build_image(layers, config=CONFIG)})
    return f"oci:{dest}:src"


def big_files() -> list[Member]:
    rng = random.Random(7)
    noise = rng.randbytes(1_100_000)
    return [
        file("big/noise", noise),  # cut by the rolling sum (>= ROLLSUM_MIN_FILE)
        symlink("big/noise-link", "noise"),  # not a file, right after a chunked one
        file("big/sparse", noise[:700_000] + bytes(50_000) + noise[700_000:] + bytes(900)),
        file("big/small-hole", noise[:5000] + bytes(2000) + noise[5000:9000]),  # holes only
        file("big/zeros", bytes(3000)),
        file("big/long-" + "n" * 120, b"a long name"),
        file("big/é-ü", b"non-ASCII name", uid=1234, gid=99),
        file("big/back\\slash \"q\"", b"JSON escapes"),
    ]


# --- tests ---------------------------------------------------------------------------------

def test_layers_rebuild_to_their_diff_ids(tmp_path: Path) -> None:
    src = utf8_source(tmp_path / "src", big_files())
    result = rechunk(src, f"oci:{tmp_path}/out:t", max_layers=4, options=CHUNKED)
    assert verify(src, f"oci:{tmp_path}/out:t").identical
    seen_chunks = seen_zeros = 0
    for blob, ann, diff_id in layers_of(tmp_path / "out"):
        toc = check_layer(blob, ann, diff_id)
        seen_chunks += sum(e["type"] == "chunk" for e in toc["entries"])
        seen_zeros += sum(e.get("chunkType") == "zeros" for e in toc["entries"])
    assert seen_chunks >= 30 and seen_zeros == 2  # big files were cut, the holes found
    assert all(dict(lay.annotations)[zc.CHECKSUM_KEY] for lay in result.layers)


def test_zstd_cli_decompresses_to_the_tar(tmp_path: Path) -> None:
    zstd = require_tool("zstd")
    src = utf8_source(tmp_path / "src", big_files())
    rechunk(src, f"oci:{tmp_path}/out:t", max_layers=3, options=CHUNKED)
    for blob, _ann, diff_id in layers_of(tmp_path / "out"):
        proc = subprocess.run([zstd, "-dc"], input=blob, capture_output=True, check=True)
        assert "sha256:" + hashlib.sha256(proc.stdout).hexdigest() == diff_id


def test_same_tar_same_blob_however_it_is_written() -> None:
    members = [*big_files(), *(file(f"d/f{i}", os.urandom(i * 37)) for i in range(50))]
    raw = tar_bytes(members)
    outs = []
    for step in (1 << 20, 777, 512, 100_003):
        out = io.BytesIO()
        comp = compressor("zstd:chunked", None, out)
        for i in range(0, len(raw), step):
            comp.write(raw[i : i + step])
        comp.close()
        outs.append((out.getvalue(), comp.annotations))  # type: ignore[attr-defined]
    assert all(o == outs[0] for o in outs)
    blob, ann = outs[0]
    toc = check_layer(blob, ann, "sha256:" + hashlib.sha256(raw).hexdigest())
    assert [e["type"] for e in toc["entries"][:2]] == ["reg", "chunk"]  # big/noise, cut


def test_prev_reuses_chunked_blobs_only(tmp_path: Path) -> None:
    src = utf8_source(tmp_path / "src", big_files())
    # --prev: unchanged layers are copied with their annotations, byte for byte
    runner = CliRunner()
    res = runner.invoke(cli, ["rechunk", src, f"oci:{tmp_path}/a:t", "--compression",
                              "zstd:chunked", "--json"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["rechunk", src, f"oci:{tmp_path}/c:t", "--compression",
                              "zstd:chunked", "--prev", f"oci:{tmp_path}/a:t", "--json"])
    assert res.exit_code == 0, res.output
    first = {d: ann for _b, ann, d in layers_of(tmp_path / "a")}
    again = list(layers_of(tmp_path / "c"))
    assert {d for _b, _a, d in again} == set(first)
    for blob, ann, diff_id in again:
        for key in zc.ANNOTATION_KEYS:
            assert ann[key] == first[diff_id][key]
        check_layer(blob, ann, diff_id)
    report = json.loads(res.output)
    assert report["layers"] and all(lay["reused"] for lay in report["layers"])
    # a plain zstd --prev blob is not taken for a zstd:chunked layer (it has no TOC)
    res = runner.invoke(cli, ["rechunk", src, f"oci:{tmp_path}/z:t", "--compression", "zstd"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["rechunk", src, f"oci:{tmp_path}/d:t", "--compression",
                              "zstd:chunked", "--prev", f"oci:{tmp_path}/z:t", "--json"])
    assert res.exit_code == 0, res.output
    assert not any(lay["reused"] for lay in json.loads(res.output)["layers"])
    for blob, ann, diff_id in layers_of(tmp_path / "d"):
        check_layer(blob, ann, diff_id)


def test_chunked_image_as_input(tmp_path: Path) -> None:
    src = utf8_source(tmp_path / "src", big_files())
    rechunk(src, f"oci:{tmp_path}/a:t", max_layers=3, options=CHUNKED)
    rechunk(f"oci:{tmp_path}/a:t", f"oci:{tmp_path}/b:t", max_layers=5)
    assert verify(src, f"oci:{tmp_path}/b:t").identical
    assert verify(f"oci:{tmp_path}/a:t", f"oci:{tmp_path}/b:t").identical
    with open_image(f"oci:{tmp_path}/a:t") as image:
        assert all(zc.CHECKSUM_KEY in dict(lay.annotations) for lay in image.layers)


def test_name_that_json_cannot_hold_is_refused(tmp_path: Path) -> None:
    from tests.oci.writecases import make_source

    src = make_source(tmp_path / "src")  # has names that are not UTF-8
    with pytest.raises(OutputError, match="not UTF-8"):
        rechunk(src, f"oci:{tmp_path}/o:t", options=CHUNKED)
    assert not (tmp_path / "o").exists()


def go_chunks(data: bytes) -> list[tuple[int, int, bool]]:
    """(offset, size, zeros) chunks, bytewise the way the reference compressor cuts them
    (rollsum.go + compressor.go's hole finder), for comparison with the fast paths."""
    s1, s2 = 64 * 31, 64 * 63 * 31
    window = [0] * 64
    wofs = 0
    chunks: list[tuple[int, int, bool]] = []
    start = 0

    def roll(ch: int) -> None:
        nonlocal s1, s2, wofs
        drop = window[wofs]
        s1 = (s1 + ch - drop) & 0xFFFFFFFF
        s2 = (s2 + s1 - 64 * (drop + 31)) & 0xFFFFFFFF
        window[wofs] = ch
        wofs = (wofs + 1) & 63

    i = 0
    while i < len(data):
        if data[i] == 0:
            j = i
            while j < len(data) and data[j] == 0:
                j += 1
            if j - i >= 1024:  # a hole: ends the data chunk, is a chunk of its own
                if i > start:
                    chunks.append((start, i - start, False))
                for _ in range(j - i):
                    roll(0)
                chunks.append((i, j - i, True))
                start = i = j
                continue
        roll(data[i])
        i += 1
        if s2 & 0xFFFF == 0xFFFF:
            chunks.append((start, i - start, False))
            start = i
    if start < len(data):
        chunks.append((start, len(data) - start, False))
    return chunks


def our_chunks(data: bytes, step: int) -> list[tuple[int, int, bool]]:
    ch = zc.Chunker()
    out: list[tuple[int, int, bool]] = []
    size, zeros, pos = 0, False, 0
    for i in range(0, len(data), step):
        piece = data[i : i + step]
        for part, z, cut in ch.feed(piece, final=i + step >= len(data)):
            n = part if isinstance(part, int) else len(part)
            if n:
                zeros = z
            size += n
            if cut and size:
                out.append((pos, size, zeros))
                pos += size
                size = 0
    return out


@pytest.mark.parametrize("accel", [True, False])
def test_chunks_match_the_reference_algorithm(monkeypatch: pytest.MonkeyPatch,
                                              accel: bool) -> None:
    if not accel:
        monkeypatch.setattr(zc, "_np", None)
        monkeypatch.setattr(zc, "_fastcrc64", None)
    rng = random.Random(11)
    noise = bytes(rng.getrandbits(8) for _ in range(300_000))
    data = (noise[:90_000] + bytes(1023) + noise[90_000:150_000] + bytes(1024) + b"\x01"
            + bytes(5000) + noise[150_000:] + bytes(2000))
    want = go_chunks(data)
    assert sum(z for _o, _s, z in want) == 3 and len(want) > 8
    for step in (len(data), 65536, 1000, 1023, 4097):
        assert our_chunks(data, step) == want, step
    assert our_chunks(bytes(5000), 700) == go_chunks(bytes(5000)) == [(0, 5000, True)]
    assert our_chunks(b"\0" * 10 + b"x", 3) == go_chunks(b"\0" * 10 + b"x")
    assert zc.crc64(noise[:2000]) == crc64_iso(noise[:2000])
    assert zc.crc64(b"123456789") == 0xB90956C775A41001
    assert zc.crc64(noise[1000:2000], zc.crc64(noise[:1000])) == zc.crc64(noise[:2000])


def test_skopeo_and_umoci_read_it(tmp_path: Path) -> None:
    skopeo = require_tool("skopeo")
    umoci = require_tool("umoci")
    src = utf8_source(tmp_path / "src", big_files())
    rechunk(src, f"oci:{tmp_path}/out:t", max_layers=3, options=CHUNKED)
    subprocess.run([skopeo, "copy", "-q", f"oci:{tmp_path}/out:t", f"oci:{tmp_path}/copy:t"],
                   check=True, capture_output=True)
    assert verify(src, f"oci:{tmp_path}/copy:t").identical
    raw = json.loads(subprocess.run([skopeo, "inspect", "--raw", f"oci:{tmp_path}/copy:t"],
                                    check=True, capture_output=True).stdout)
    assert all(zc.CHECKSUM_KEY in lay["annotations"] for lay in raw["layers"])
    if os.geteuid() != 0:
        pytest.skip("umoci unpack keeps owners and device nodes only as root")
    bundle = tmp_path / "bundle"
    proc = subprocess.run([umoci, "unpack", "--image", f"{tmp_path}/out:t", str(bundle)],
                          capture_output=True, text=True)
    if proc.returncode and "not correct mediatype" in proc.stderr:
        pytest.skip("this umoci reads no tar+zstd layer at all (plain zstd neither)")
    assert proc.returncode == 0, proc.stderr
    got = walk(bundle / "rootfs")
    with open_image(src) as image:
        want = expected(image.tree)
    assert got == want
