"""Hostile images as a whole: compression bombs, repeated and countless layers, blobs that
are not files, archive header floods, symlink loops in rootfs: input; most of them through
the real CLI in a child limited in memory and time, checking that nothing is written
outside the destination and no temp file survives.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from pkgchunk.errors import InputError
from pkgchunk.io import open_image
from pkgchunk.oci.read import MAX_LAYERS
from tests.hostile.crafted import (
    bomb_tar_prefix,
    cli_env,
    gzip_bomb,
    layout_of,
    layout_of_tars,
    member,
    one_error_line,
    pax_member,
    pax_record,
    replace_layer_blob,
    run_cli,
    tar_of,
    tree_files,
    within,
    zstd_bomb,
)
from tests.imagebuild import (
    Built,
    Layer,
    blob_file,
    build_image,
    digest_of,
    file,
    symlink,
    tar_bytes,
    write_docker_archive,
    write_layout,
)

MiB = 1 << 20


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    """A directory hostile names aim at; it must stay exactly as it is."""
    d = tmp_path / "sentinel"
    d.mkdir()
    (d / "keep").write_text("untouched")
    return d


def untouched(sentinel: Path) -> bool:
    return tree_files(sentinel) == ["keep"] and (sentinel / "keep").read_text() == "untouched"


def assert_no_temp_left(tmp_path: Path) -> None:
    assert tree_files(tmp_path / "tmpdir") == []


# --- compression bombs ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_bomb_stops_at_the_limit(tmp_path: Path, sentinel: Path, kind: str) -> None:
    """512 MiB of zeros in a ~0.5 MiB blob; the limit is 64 MiB: the child stops early,
    within 1 GiB of address space, and cleans its spool."""
    inflated = 512 * MiB
    prefix = bomb_tar_prefix(inflated - 1024)
    blob = gzip_bomb(inflated, prefix) if kind == "gzip" else zstd_bomb(inflated, prefix)
    assert len(blob) < inflated // 500
    built = build_image([[file("x")]])
    layout = write_layout(tmp_path / "src", {"t": built})
    media = f"application/vnd.oci.image.layer.v1.tar+{kind}"
    src = replace_layer_blob(layout, built, 0, blob, media)
    env = cli_env(tmp_path, {"PKGCHUNK_MAX_IMAGE_BYTES": str(64 * MiB)})
    res = run_cli(["rechunk", src, f"oci:{sentinel}/../out:v1"], env, timeout=60)
    msg = one_error_line(res.returncode, res.stderr, f"{src}: layers hold more than")
    assert "PKGCHUNK_MAX_IMAGE_BYTES" in msg
    assert untouched(sentinel) and not (tmp_path / "out").exists()
    assert_no_temp_left(tmp_path)


def test_bomb_limit_through_the_library(tmp_path: Path) -> None:
    inflated = 64 * MiB
    blob = gzip_bomb(inflated, bomb_tar_prefix(inflated - 1024))
    built = build_image([[file("x")]])
    layout = write_layout(tmp_path / "src", {"t": built})
    src = replace_layer_blob(layout, built, 0, blob, "application/vnd.oci.image.layer.v1.tar+gzip")
    with pytest.raises(InputError, match="layers hold more than 1048576 uncompressed bytes"):
        open_image(src, max_bytes=MiB)
    with open_image(src, max_bytes=inflated) as image:  # exactly fits: a correct result
        assert image.tree.entries["zeros"].size == inflated - 1024


def test_zstd_frame_needing_a_huge_window(tmp_path: Path) -> None:
    """A frame that asks for a 2 GiB window is refused instead of allocating it."""
    params = zstandard.ZstdCompressionParameters(window_log=31, enable_ldm=True,
                                                 write_content_size=False)
    out = io.BytesIO()
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(
        out, closefd=False
    ) as w:
        w.write(tar_bytes([file("a", b"z" * 100_000)]))
    built = build_image([[file("x")]])
    layout = write_layout(tmp_path / "src", {"t": built})
    src = replace_layer_blob(layout, built, 0, out.getvalue(),
                             "application/vnd.oci.image.layer.v1.tar+zstd")
    with pytest.raises(InputError, match=r"corrupt zstd data: .*too much memory"):
        open_image(src)


# --- layers: repeated, countless ----------------------------------------------------------


def test_one_layer_repeated_costs_every_time(tmp_path: Path) -> None:
    """The same 10 MiB layer of 20000 members listed 1000 times is spooled once but
    flattened each time: every use counts against the limit."""
    built = repeat_layer(build_image([[file(f"f{i}") for i in range(20_000)]]), MAX_LAYERS)
    write_layout(tmp_path / "src", {"t": built})
    with within(20), pytest.raises(InputError, match="layers hold more than"):
        open_image(f"oci:{tmp_path}/src:t", max_bytes=64 * MiB)


def repeat_layer(built: Built, times: int) -> Built:
    """``built`` (one layer) with its layer listed ``times`` times."""
    manifest = json.loads(built.blobs[built.digest])
    config = json.loads(built.blobs[built.config_digest])
    manifest["layers"] *= times
    config["rootfs"]["diff_ids"] *= times
    cfg = json.dumps(config).encode()
    manifest["config"].update({"digest": digest_of(cfg), "size": len(cfg)})
    data = json.dumps(manifest).encode()
    blobs = {**built.blobs, digest_of(cfg): cfg, digest_of(data): data}
    return Built(digest_of(data), built.media_type, len(data), blobs)


def test_thousand_layers_read_and_one_more_refused(tmp_path: Path) -> None:
    layers = [Layer([file(f"f{i}", b"%d" % i)], compression="none") for i in range(MAX_LAYERS)]
    write_layout(tmp_path / "ok", {"t": build_image(layers)})
    with within(30), open_image(f"oci:{tmp_path}/ok:t") as image:
        assert len(image.tree) == MAX_LAYERS
    write_layout(tmp_path / "big", {"t": build_image([*layers, Layer([file("one-more")])])})
    with within(5), pytest.raises(InputError) as err:
        open_image(f"oci:{tmp_path}/big:t")
    assert str(err.value) == f"oci:{tmp_path}/big:t: 1001 layers, more than the 1000 pkgchunk reads"


def test_docker_archive_with_countless_layers(tmp_path: Path) -> None:
    """manifest.json naming 100000 layers (all the same file) is refused before reading any."""
    built = build_image([[file("x")]])
    archive = write_docker_archive(tmp_path / "d.tar", [(["x:1"], built)], legacy=False)
    with tarfile.open(archive) as tf:
        doc = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
    doc[0]["Layers"] = doc[0]["Layers"] * 100_000
    data = json.dumps(doc).encode()
    out = tmp_path / "many.tar"
    with tarfile.open(archive) as src, tarfile.open(out, "w") as dst:
        for info in src.getmembers():
            if info.name == "manifest.json":
                info.size = len(data)
                dst.addfile(info, io.BytesIO(data))
            else:
                dst.addfile(info, src.extractfile(info) if info.isreg() else None)
    with within(10), pytest.raises(InputError, match="100000 layers, more than the 1000"):
        open_image(f"docker-archive:{out}")


# --- blobs that are not regular files --------------------------------------------------------


@pytest.mark.parametrize("what", ["fifo", "dev-zero", "directory"])
def test_blob_that_is_not_a_file(tmp_path: Path, what: str) -> None:
    """A FIFO would block the reader forever and /dev/zero never end."""
    built = build_image([[file("a", b"x")]])
    layout = write_layout(tmp_path / "src", {"t": built})
    blob = blob_file(layout, built.layer_digests[0])
    blob.unlink()
    if what == "fifo":
        os.mkfifo(blob)
    elif what == "dev-zero":
        blob.symlink_to("/dev/zero")
    else:
        blob.mkdir()
    with within(5), pytest.raises(InputError) as err:
        open_image(f"oci:{layout}:t")
    assert str(err.value).endswith(f"{blob}: not a regular file") or "Is a directory" in str(
        err.value
    )


def test_index_json_that_is_a_fifo(tmp_path: Path) -> None:
    layout = write_layout(tmp_path / "src", {"t": build_image([[file("a")]])})
    (layout / "index.json").unlink()
    os.mkfifo(layout / "index.json")
    with within(5), pytest.raises(InputError, match=r"index\.json: not a regular file"):
        open_image(f"oci:{layout}:t")


# --- archives --------------------------------------------------------------------------------


def test_archive_header_flood_counts_against_the_limit(tmp_path: Path) -> None:
    """A gzip'd oci-archive of 40000 empty directories (20 MiB of headers, 0 bytes of
    data) is stopped by the size limit instead of creating them all."""
    raw = tar_of(*(_dir_header(f"d{i}") for i in range(40_000)))
    path = tmp_path / "flood.tar.gz"
    path.write_bytes(gzip.compress(raw, 1))
    with within(20), pytest.raises(InputError, match=r"archive holds more than 4194304 bytes"):
        open_image(f"oci-archive:{path}", max_bytes=4 * MiB)


def _dir_header(name: str) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def test_archive_members_never_land_outside(tmp_path: Path, sentinel: Path) -> None:
    """Absolute member names stay inside the private unpack directory; escaping ones and
    links out are refused; the sentinel they aim at is untouched, and the CLI says so in
    one line and leaves no temp file."""
    env = cli_env(tmp_path)
    reg = tarfile.REGTYPE
    cases: dict[str, list[tuple[str, bytes, bytes]]] = {
        "absolute": [(f"{sentinel}/abs", b"pwned", reg)],
        "dotdot": [(f"../../../..{sentinel}/rel", b"pwned", reg)],
        "symlink-out": [("blobs", os.fsencode(sentinel), tarfile.SYMTYPE),
                        ("blobs/x", b"pwned", reg)],
        "hardlink-out": [("h", os.fsencode(f"../../../..{sentinel}/keep"), tarfile.LNKTYPE)],
    }
    for name, members in cases.items():
        archive = tmp_path / f"{name}.tar"
        with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tf:
            for path, data, kind in members:
                info = tarfile.TarInfo(path)
                info.type = kind
                if kind == reg:
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
                else:
                    info.linkname = os.fsdecode(data)
                    tf.addfile(info)
        res = run_cli(["rechunk", f"oci-archive:{archive}", f"oci:{tmp_path}/out-{name}"], env)
        one_error_line(res.returncode, res.stderr, f"oci-archive:{archive}: ")
        assert untouched(sentinel), name
        assert not (tmp_path / f"out-{name}").exists()
        assert_no_temp_left(tmp_path)


# --- through the CLI: each command, one line, nothing left ------------------------------------


@pytest.mark.parametrize("command", ["rechunk", "packages", "verify"])
def test_hostile_layer_through_every_command(tmp_path: Path, command: str) -> None:
    src = layout_of(tmp_path / "src", [file("ok", b"ok")], tag="t")
    bad_ref = layout_of_tars(tmp_path / "bad", tar_of(pax_member(pax_record(b"path", b"../../x"))))
    args = {
        "rechunk": ["rechunk", bad_ref, f"oci:{tmp_path}/out:v1"],
        "packages": ["packages", bad_ref],
        "verify": ["verify", src, bad_ref],
    }[command]
    res = run_cli(args, cli_env(tmp_path))
    msg = one_error_line(res.returncode, res.stderr, f"{bad_ref}: layer 1 (sha256:")
    assert msg.endswith("member '../../x' escapes the image root")
    assert not (tmp_path / "out").exists()
    assert_no_temp_left(tmp_path)


def test_malformed_pax_through_cli_is_fast_and_one_line(tmp_path: Path) -> None:
    """The CVE-2024-6232 shape: 8 MiB of digits in a pax header. Python 3.11.7's tarfile
    would take hours; we answer at once."""
    ref = layout_of_tars(tmp_path / "src", tar_of(pax_member(b"7" * (8 * MiB))))
    res = run_cli(["rechunk", ref, f"oci:{tmp_path}/out"], cli_env(tmp_path), timeout=30)
    assert one_error_line(res.returncode, res.stderr, ref).endswith(
        "malformed pax record at offset 512"
    )


# --- rootfs: loops and links to the host ----------------------------------------------------


def test_rootfs_loops_and_host_links(tmp_path: Path, sentinel: Path) -> None:
    """A rootfs: tree whose links loop or point at the host's /var, /usr and the sentinel:
    nothing is followed on the host (the host's own dpkg database is not listed), the
    tree rechunks into an identical image, and the sentinel stays as it was."""
    root = tmp_path / "root"
    (root / "loops").mkdir(parents=True)
    for name, target in {
        "var": "/var", "usr": "/usr", "etc": str(sentinel), "loops/a": "b", "loops/b": "a",
        "loops/self": "self", "loops/up": "../../../../..", "loops/abs-up": "/../..",
    }.items():
        (root / name).symlink_to(target)
    for i in range(45):
        (root / f"loops/c{i}").symlink_to(f"c{i + 1}")
    (root / "loops/c45").write_text("end")
    (root / "data").write_bytes(b"d" * 1000)
    env = cli_env(tmp_path)
    res = run_cli(["packages", f"rootfs:{root}", "--json"], env)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["databases"] == [] and doc["packages"] == []
    assert Path("/var/lib/dpkg/status").exists() or Path("/var/lib/rpm").exists()
    res = run_cli(["rechunk", f"rootfs:{root}", f"oci:{tmp_path}/out:v1"], env)
    assert res.returncode == 0, res.stderr
    res = run_cli(["verify", f"rootfs:{root}", f"oci:{tmp_path}/out:v1"], env)
    assert res.returncode == 0 and res.stdout.startswith("identical: "), res.stdout + res.stderr
    assert untouched(sentinel)
    assert_no_temp_left(tmp_path)


def test_hostile_member_names_and_many_small_errors_leave_no_temp(tmp_path: Path) -> None:
    """Several failing reads in a row (each spooling layers first) leave TMPDIR empty."""
    env = cli_env(tmp_path)
    for n, tar in enumerate([
        tar_of(member("ok", b"1"), member("../x", b"2")),
        tar_of(pax_member(pax_record(b"GNU.sparse.size", b"5"))),
        member("a", b"a") + b"garbage" * 100,
    ]):
        ref = layout_of_tars(tmp_path / f"src{n}", tar, compression="zstd")
        res = run_cli(["rechunk", ref, f"oci:{tmp_path}/out{n}"], env)
        one_error_line(res.returncode, res.stderr, ref)
        assert_no_temp_left(tmp_path)
        assert not (tmp_path / f"out{n}").exists()


def test_symlinked_image_files_in_rootfs_are_not_read_from_the_host(tmp_path: Path) -> None:
    """var/lib/dpkg/status as an absolute link to the host's status: resolved inside the
    tree it names nothing, so the database is reported unreadable (the host's is never
    opened, its packages never listed)."""
    host_status = Path("/var/lib/dpkg/status")
    if not host_status.exists():
        pytest.skip("no host dpkg database to aim at")
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").symlink_to(host_status)
    res = run_cli(["packages", f"rootfs:{root}", "--json"], cli_env(tmp_path))
    msg = one_error_line(res.returncode, res.stderr, f"rootfs:{root}: ")
    assert msg.endswith("var/lib/dpkg/status: not a regular file") and res.stdout == ""


def test_symlink_swap_in_layer_does_not_redirect_files(tmp_path: Path) -> None:
    """A layer makes etc a link to /host, the next writes etc/passwd: in the image etc is
    a directory again (nothing resolves through the link), and rechunking gives it back."""
    src = layout_of(
        tmp_path / "src", [symlink("etc", "/host/etc")], [file("etc/passwd", b"mine")]
    )
    with open_image(src) as image:
        assert image.tree.entries["etc"].kind == "dir"
        assert image.tree.entries["etc/passwd"].size == 4


def test_hostile_plan_label_of_the_previous_build(tmp_path: Path) -> None:
    """The image already at DEST's tag is read as the previous build: a plan label nested
    100000 deep there is one warning, the new image is planned from scratch and verifies."""
    src = layout_of(tmp_path / "src", [file("usr/bin/x", b"x"), file("etc/y", b"y")])
    dest = tmp_path / "out"
    label = {"config": {"Labels": {"org.pkgchunk.plan": "[" * 100_000}}}
    write_layout(dest, {"v1": build_image([[file("old")]], config=label)})
    env = cli_env(tmp_path)
    res = run_cli(["rechunk", src, f"oci:{dest}:v1"], env)
    assert res.returncode == 0, res.stderr
    (warning,) = [line for line in res.stderr.splitlines() if line.strip()]
    assert warning.startswith("pkgchunk: warning: org.pkgchunk.plan label: not JSON")
    res = run_cli(["verify", src, f"oci:{dest}:v1"], env)
    assert res.returncode == 0 and res.stdout.startswith("identical: "), res.stdout + res.stderr
