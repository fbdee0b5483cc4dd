"""containers-storage: in and out through skopeo (vfs store under a temp dir), podman mount,
the previous build found in the store, and the pieces: names, messages, missing tools."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pkgchunk.cli import cli
from pkgchunk.errors import InputError, OutputError, ToolMissingError
from pkgchunk.image import LayerSpec
from pkgchunk.io import open_image, write_image
from pkgchunk.plan.record import LABEL
from pkgchunk.refs import parse_ref
from pkgchunk.transport import proc, remote, skopeo
from pkgchunk.transport.skopeo import TransportOptions, transport_options
from pkgchunk.tree import FileTree
from tests.helpers import require_tool
from tests.versions import TempStore, demo_versions, temp_store


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command in a child process (skopeo's output must not reach our stdout)."""
    return subprocess.run(
        [sys.executable, "-m", "pkgchunk.cli", *args], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return demo_versions(tmp_path_factory.mktemp("versions"))


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[TempStore]:
    require_tool("skopeo")
    with temp_store(tmp_path) as s:
        yield s


# --------------------------------------------------------------------------- the pieces


def test_store_options_become_skopeos_bracket_syntax() -> None:
    ref = parse_ref("containers-storage:localhost/app:1")
    assert skopeo.skopeo_name(ref) == "containers-storage:localhost/app:1"
    opts = TransportOptions(storage_root="/s", storage_runroot="/r", storage_driver="vfs")
    with transport_options(opts):
        assert skopeo.skopeo_name(ref) == "containers-storage:[vfs@/s+/r]localhost/app:1"
        # A reference that names its store keeps it, options notwithstanding.
        own = parse_ref("containers-storage:[overlay@/x+/y:a=b]img")
        assert skopeo.skopeo_name(own) == "containers-storage:[overlay@/x+/y:a=b]img"
        assert skopeo.parse_store(own) == skopeo.Store("img", "overlay", "/x", "/y", "a=b")
    with transport_options(TransportOptions(storage_root="/s")):
        assert skopeo.skopeo_name(ref) == "containers-storage:[/s]localhost/app:1"
    with pytest.raises(InputError, match=r"^containers-storage:\[vfs@\]x: the store"):
        skopeo.parse_store(parse_ref("containers-storage:[vfs@]x"))


def test_by_digest_drops_the_tag() -> None:
    d = "sha256:" + "a" * 64
    assert skopeo.by_digest(parse_ref("docker://h:5000/a/b:v1"), d) == f"docker://h:5000/a/b@{d}"
    assert skopeo.by_digest(parse_ref("docker://h:5000/a/b"), d) == f"docker://h:5000/a/b@{d}"
    assert skopeo.by_digest(parse_ref("containers-storage:[vfs@/s]n:t"), d) == (
        f"containers-storage:[vfs@/s]n@{d}"
    )


def test_skopeo_messages_become_one_line_and_passwords_stay_out_of_logs() -> None:
    stderr = (
        'noise\ntime="x" level=fatal msg="reading manifest v9 in h/a: manifest unknown: \\"x\\""\n'
    )
    assert proc._message(stderr) == 'reading manifest v9 in h/a: manifest unknown: "x"'
    assert proc._message("plain failure\n\n") == "plain failure"
    shown = proc._shown(["skopeo", "copy", "--src-creds=me:secret", "--creds=you"])
    assert "secret" not in shown and "--src-creds=me:***" in shown and "--creds=you" in shown


@pytest.mark.parametrize("ref", ["containers-storage:img", "docker://example.org/a:1"])
def test_missing_skopeo_says_how_to_install(
    ref: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissingError, match=r"apt-get install skopeo"):
        open_image(ref)
    with pytest.raises(ToolMissingError, match=rf"^{ref}: writing .*apt-get install skopeo"):
        write_image(FileTree(), {"os": "linux"}, [], ref)
    res = CliRunner().invoke(cli, ["diff", ref, ref])
    assert res.exit_code == 2 and "pkgchunk: error: " in res.output and "skopeo" in res.output


# --------------------------------------------------------------------------- a real store


def test_containers_storage_out_and_in(versions: tuple[str, str], store: TempStore) -> None:
    v1, v2 = versions
    dest = "containers-storage:localhost/demo:v1"
    res = run_cli("rechunk", v1, dest, *store.cli_options, "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)  # skopeo said nothing on our stdout
    assert doc["ref"] == dest and doc["previous"] is None
    # skopeo sees the image in the store, with our plan label and our layers.
    inspected = json.loads(store.skopeo("inspect", store.ref("localhost/demo:v1")))
    assert LABEL in inspected["Labels"]
    assert len(inspected["Layers"]) == len(doc["layers"])
    raw = store.skopeo("inspect", "--raw", store.ref("localhost/demo:v1"))
    assert doc["manifest_digest"] == "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
    # Read back through skopeo: the same files as the source.
    res = run_cli("verify", v1, dest, *store.cli_options)
    assert res.returncode == 0 and res.stdout.startswith("identical: "), res.stdout + res.stderr
    # The same tag again: the store's image is the previous build, and nothing changes.
    again = run_cli("rechunk", v1, dest, *store.cli_options, "--json")
    assert again.returncode == 0, again.stderr
    doc2 = json.loads(again.stdout)
    assert doc2["previous"] == dest
    assert [la["digest"] for la in doc2["layers"]] == [la["digest"] for la in doc["layers"]]
    # The next build, stable against v1 in the store; diff reads only manifests.
    res = run_cli(
        "rechunk", v2, "containers-storage:localhost/demo:v2", *store.cli_options,
        "--prev", dest, "--json",
    )
    assert res.returncode == 0, res.stderr
    new = json.loads(res.stdout)
    res = run_cli("diff", dest, "containers-storage:localhost/demo:v2", *store.cli_options,
                  "--json")
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    old_digests = {la["digest"] for la in doc["layers"]}
    assert [la["pulled"] for la in d["layers"]] == [
        la["digest"] not in old_digests for la in new["layers"]
    ]
    assert 0 < d["pull_bytes"] < d["total_bytes"]
    assert {g["group"] for g in d["changed_groups"]} >= {"src/tzdata", "src/libssl3"}


def test_mount_reads_the_store_in_place(versions: tuple[str, str], store: TempStore) -> None:
    require_tool("podman")
    v1, _ = versions
    dest = "containers-storage:localhost/demo:m"
    assert run_cli("rechunk", v1, dest, *store.cli_options).returncode == 0
    res = run_cli("verify", v1, dest, "--mount", "-v", *store.cli_options)
    assert res.returncode == 0 and res.stdout.startswith("identical: "), res.stdout + res.stderr
    assert "image mount" in res.stderr and "image unmount" in res.stderr  # -v shows the tools
    # Released at the end: podman holds no mount of it.
    mounts = store.podman("image", "mount")
    assert "localhost/demo" not in mounts


def test_missing_image_in_store_is_one_clear_line(store: TempStore) -> None:
    ref = "containers-storage:localhost/nothing:here"
    with transport_options(TransportOptions(str(store.root), str(store.runroot), "vfs")):
        assert not remote.exists(parse_ref(ref))
        with pytest.raises(InputError) as err:
            open_image(ref)
    msg = str(err.value)
    assert msg.startswith(f"{ref}: skopeo copy failed: ") and "\n" not in msg
    res = run_cli("packages", ref, *store.cli_options)
    assert res.returncode == 2
    assert res.stderr.startswith(f"pkgchunk: error: {ref}: ") and res.stderr.count("\n") == 1


def test_unwritable_store_is_an_output_error(versions: tuple[str, str], tmp_path: Path) -> None:
    require_tool("skopeo")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    opts = TransportOptions(str(blocker / "root"), str(tmp_path / "run"), "vfs")
    with transport_options(opts), open_image(versions[0]) as image:
        spec = LayerSpec("all", tuple(image.tree.paths()))
        with pytest.raises(OutputError, match=r"^containers-storage:x:1: skopeo copy failed"):
            write_image(image.tree, image.config, [spec], "containers-storage:x:1")


def test_stacking_a_stored_image_leaves_no_temporary_files(
    versions: tuple[str, str], store: TempStore, tmp_path: Path
) -> None:
    from tests.imagebuild import build_image, file, write_layout

    v1, _ = versions
    stored = "containers-storage:localhost/demo:base"
    assert run_cli("rechunk", v1, stored, *store.cli_options).returncode == 0
    app = write_layout(tmp_path / "app", {"t": build_image([[file("srv/app", b"app\n")]])})
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    dest = f"oci:{tmp_path}/out:merged"
    for push in (dest, "containers-storage:localhost/demo:merged"):
        proc = subprocess.run(
            [sys.executable, "-m", "pkgchunk.cli", "rechunk", stored, f"oci:{app}:t", push,
             *store.cli_options, "--json"],
            capture_output=True, text=True, check=False, env=env,
        )
        assert proc.returncode == 0, proc.stderr
        assert list(scratch.iterdir()) == []  # fetched and pushed layouts are gone
    with transport_options(TransportOptions(str(store.root), str(store.runroot), "vfs")):
        with open_image(dest) as out, open_image(v1) as base:
            assert set(out.tree.entries) == set(base.tree.entries) | {"srv", "srv/app"}
        res = CliRunner().invoke(cli, ["verify", dest, "containers-storage:localhost/demo:merged",
                                       *store.cli_options])
    assert res.exit_code == 0 and res.output.startswith("identical: "), res.output
