"""``--keep-base``: a derived image rechunked above its base, across a base update and an
update of its own packages.

The images are built the way a ``FROM base`` + ``RUN apt-get install`` build makes them,
with real tools: the base is a root filesystem installed by the real dpkg from .debs built
by dpkg-deb, added as a layer by umoci; the derived image is that base unpacked by umoci,
more .debs installed into it by dpkg, base files changed and deleted, and repacked by umoci
(which writes the derived layer, whiteouts included, above the base's unchanged layers).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.debbuild import build_deb, install, new_root
from tests.helpers import require_tool
from tests.imagebuild import tar_directory

EPOCH = "1700000000"


def _blob(size: int, seed: str) -> bytes:
    """Incompressible-ish bytes, so layer sizes mean something."""
    out = bytearray()
    n = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}/{n}".encode()).digest()
        n += 1
    return bytes(out[:size])


#: What the builds were given, stated to verify (it never takes it from the output).
STATED = ("--source-date-epoch", EPOCH)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pkgchunk.cli", *args], capture_output=True, text=True,
        check=False,
    )


def _ok(*args: str) -> str:
    done = _cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _settle(root: Path, when: int) -> None:
    """Every path under ``root`` (root included) gets the mtime ``when``."""
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            os.utime(Path(dirpath) / name, (when, when), follow_symlinks=False)
    os.utime(root, (when, when))


def _umoci(*args: str) -> None:
    subprocess.run([require_tool("umoci"), *args], check=True, capture_output=True)


class Site:
    """The layout ``src`` (base and derived images by tag), the .debs, and ``out``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.src = tmp / "src"
        self.out = tmp / "out"
        self.debs = tmp / "debs"
        self.debs.mkdir()
        _umoci("init", "--layout", str(self.src))

    def deb(self, name: str, version: str, files: dict[str, bytes], **kw: Any) -> Path:
        got = self.debs / f"{name}_{version}_all.deb"
        if not got.exists():
            build_deb(self.debs, name, version, files=files, **kw)
        return got

    def base(self, tag: str, libbase: str) -> None:
        """Two layers: a dpkg-installed root, then a small release file."""
        root = new_root(self.tmp / f"root-{tag}")
        install(root, *[
            self.deb("base-files", "12.4", {
                "/etc/issue": b"Debian GNU/Linux 12\n", "/etc/motd": b"welcome\n",
                "/usr/share/basedoc/README": b"base docs\n" * 100,
                "/usr/share/basedoc/FAQ": b"faq\n" * 100,
            }),
            self.deb("libbase", libbase, {
                "/usr/lib/libbase.so.1": _blob(200_000, f"libbase {libbase}"),
            }),
            self.deb("coreutils", "9.1-1", {"/usr/bin/ls": _blob(150_000, "ls")}),
        ])
        # A base is built once, long before the derived step: fixed mtimes, so that umoci
        # repack sees every path the derived step touches as changed, whatever the second.
        _settle(root, 1_600_000_000)
        _umoci("new", "--image", f"{self.src}:{tag}")
        layer = tar_directory(root, self.tmp / f"{tag}-1.tar")
        _umoci("raw", "add-layer", "--image", f"{self.src}:{tag}", str(layer))
        extra = self.tmp / f"extra-{tag}"
        (extra / "etc").mkdir(parents=True)
        (extra / "etc/base-release").write_text("base 12\n")
        for path in (extra / "etc/base-release", extra / "etc", extra):
            os.utime(path, (1_600_000_000, 1_600_000_000))  # the same in every release
        layer = tar_directory(extra, self.tmp / f"{tag}-2.tar")
        _umoci("raw", "add-layer", "--image", f"{self.src}:{tag}", str(layer))

    def derived(self, tag: str, base: str, app: str) -> None:
        """``FROM base`` + install app and applib, edit /etc/issue, delete base files."""
        bundle = self.tmp / f"bundle-{tag}"
        _umoci("unpack", "--image", f"{self.src}:{base}", str(bundle))
        root = bundle / "rootfs"
        install(root, *[
            self.deb("app", app, {"/usr/lib/app/app.bin": _blob(300_000, f"app {app}")}),
            self.deb("applib", "1.0-1", {"/usr/lib/libapplib.so.1": _blob(250_000, "applib")}),
        ])
        (root / "etc/issue").write_text("Derived on Debian 12\n")
        (root / "etc/motd").unlink()
        shutil.rmtree(root / "usr/share/basedoc")
        _umoci("repack", "--image", f"{self.src}:{tag}", str(bundle))

    def rechunk(self, src: str, dest: str, *args: str) -> dict[str, Any]:
        out = _ok("rechunk", f"oci:{self.src}:{src}", f"oci:{self.out}:{dest}",
                  "--source-date-epoch", EPOCH, "--json", *args)
        doc: dict[str, Any] = json.loads(out)
        return doc

    def manifest(self, layout: Path, tag: str) -> dict[str, Any]:
        index = json.loads((layout / "index.json").read_text())
        for m in index["manifests"]:
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
                doc: dict[str, Any] = json.loads(self.blob(layout, m["digest"]))
                return doc
        raise AssertionError(f"{layout}: no tag {tag}")

    @staticmethod
    def blob(layout: Path, digest: str) -> bytes:
        return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    require_tool("dpkg")
    require_tool("umoci")
    s = Site(tmp_path_factory.mktemp("keepbase"))
    s.base("base1", "1.0-1")
    s.base("base2", "1.0-2")  # a base release: libbase updated
    s.derived("d1", "base1", "1.0-1")
    s.derived("d2", "base2", "1.0-1")  # the same derived step on the new base
    s.derived("d3", "base2", "2.0-1")  # the same base, the app updated
    return s


def _layers(site: Site, layout: Path, tag: str) -> list[tuple[str, str]]:
    return [(d["digest"], d["mediaType"]) for d in site.manifest(layout, tag)["layers"]]


def _owners(doc: dict[str, Any], package: str) -> str:
    """The digest of the layer holding ``package``."""
    (digest,) = [la["digest"] for la in doc["layers"] if package in la["packages"]]
    return str(digest)


def test_base_layers_survive_byte_for_byte(site: Site) -> None:
    doc = site.rechunk("d1", "k1", "--keep-base", f"oci:{site.src}:base1")
    base = _layers(site, site.src, "base1")
    got = _layers(site, site.out, "k1")
    assert len(base) == 2
    assert got[: len(base)] == base  # same digests, same media types
    assert [(b["digest"], b["media_type"]) for b in doc["base_layers"]] == base
    for digest, _ in base:
        assert site.blob(site.out, digest) == site.blob(site.src, digest)
    # Only the derived part was planned: no base package has a layer of its own.
    packages = {p for la in doc["layers"] for p in la["packages"]}
    assert {"app", "applib"} <= packages
    assert "libbase" not in packages and "coreutils" not in packages
    labels = json.loads(site.blob(site.out, site.manifest(site.out, "k1")["config"]["digest"]))
    assert labels["config"]["Labels"]["org.pkgchunk.base"] == "layers=2"
    verified = _ok("verify", *STATED, f"oci:{site.src}:d1", f"oci:{site.out}:k1")
    assert verified.startswith("identical")
    # Not vacuous above a kept base: another input's files are differences.
    other = _cli("verify", *STATED, f"oci:{site.src}:d3", f"oci:{site.out}:k1")
    assert other.returncode == 1
    assert "/usr/lib/app/app.bin" in other.stdout and "/usr/lib/libbase.so.1" in other.stdout
    table = _ok("plan", f"oci:{site.src}:d1", "--keep-base", "2")
    assert "base/1" in table.splitlines()[1] and "(base, kept)" in table
    assert "above 2 base layers" in table


def test_whiteouts_delete_base_files(site: Site, tmp_path: Path) -> None:
    site.rechunk("d1", "w1", "--keep-base", "2")
    layers = site.manifest(site.out, "w1")["layers"][2:]
    names: dict[str, bytes] = {}
    for desc in layers:
        data = gzip.decompress(site.blob(site.out, desc["digest"]))
        tar = tmp_path / "layer.tar"
        tar.write_bytes(data)
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                f = tf.extractfile(m) if m.isfile() else None
                names[m.name] = f.read() if f is not None else b""
    assert "etc/.wh.motd" in names
    assert "usr/share/.wh.basedoc" in names  # the topmost deleted path only
    assert not any(n.startswith("usr/share/basedoc/") for n in names)
    assert names["etc/issue"] == b"Derived on Debian 12\n"  # the base file, changed
    assert "usr/lib/libbase.so.1" not in names  # untouched base files stay below
    # An independent extractor agrees: umoci applies the whiteouts.
    bundle = tmp_path / "bundle"
    _umoci("unpack", "--image", f"{site.out}:w1", str(bundle))
    root = bundle / "rootfs"
    assert not (root / "etc/motd").exists() and not (root / "usr/share/basedoc").exists()
    assert (root / "etc/issue").read_text() == "Derived on Debian 12\n"
    assert (root / "usr/lib/libbase.so.1").stat().st_size == 200_000
    assert (root / "usr/lib/app/app.bin").stat().st_size == 300_000


def test_rebuild_on_new_base_and_new_packages(site: Site) -> None:
    first = site.rechunk("d1", "r", "--keep-base", f"oci:{site.src}:base1")
    # A new base release, the same derived packages: stable against the previous build.
    second = site.rechunk("d2", "r2", "--keep-base", f"oci:{site.src}:base2",
                          "--prev", f"oci:{site.out}:r")
    base1, base2 = _layers(site, site.src, "base1"), _layers(site, site.src, "base2")
    assert _layers(site, site.out, "r2")[:2] == base2
    assert base1[0] != base2[0] and base1[1] == base2[1]
    for package in ("app", "applib"):
        assert _owners(second, package) == _owners(first, package)
    reused = {la["digest"] for la in second["layers"] if la["reused"]}
    assert _owners(second, "app") in reused
    assert _ok("verify", *STATED, "--prev", f"oci:{site.out}:r", f"oci:{site.src}:d2",
               f"oci:{site.out}:r2").startswith("identical")

    only_base = json.loads(_ok("diff", f"oci:{site.out}:r", f"oci:{site.out}:r2", "--json"))
    pulled = {la["digest"] for la in only_base["layers"] if la["pulled"]}
    assert base2[0][0] in pulled and base2[1][0] not in pulled
    assert _owners(second, "app") not in pulled and _owners(second, "applib") not in pulled
    by_digest = {la["digest"]: la["bytes"] for la in only_base["layers"]}
    derived_pull = sum(by_digest[d] for d in pulled if d != base2[0][0])
    assert derived_pull < 20_000  # the package database, not the packages

    # The same base, the app updated: no base layer is pulled, nor applib's layer.
    third = site.rechunk("d3", "r3", "--keep-base", f"oci:{site.src}:base2",
                         "--prev", f"oci:{site.out}:r2")
    only_app = json.loads(_ok("diff", f"oci:{site.out}:r2", f"oci:{site.out}:r3", "--json"))
    pulled = {la["digest"] for la in only_app["layers"] if la["pulled"]}
    assert not pulled & {d for d, _ in base2}
    assert _owners(third, "app") in pulled and _owners(third, "applib") not in pulled
    assert [la["name"] for la in only_app["layers"][:2]] == ["base/1", "base/2"]
    changed = {g["group"] for g in only_app["changed_groups"]}
    assert any("app" in g for g in changed) and not any("libbase" in g for g in changed)
    assert _ok("verify", *STATED, "--prev", f"oci:{site.out}:r2", f"oci:{site.src}:d3",
               f"oci:{site.out}:r3").startswith("identical")


def test_count_form_gives_the_same_image(site: Site) -> None:
    by_ref = site.rechunk("d1", "c1", "--keep-base", f"oci:{site.src}:base1")
    by_count = site.rechunk("d1", "c2", "--keep-base", "2")
    assert by_count["manifest_digest"] == by_ref["manifest_digest"]
    one = site.rechunk("d1", "c3", "--keep-base", "1")
    assert len(one["base_layers"]) == 1
    verified = _ok("verify", *STATED, f"oci:{site.src}:d1", f"oci:{site.out}:c3")
    assert verified.startswith("identical")


def test_a_mismatched_base_is_one_error_line(site: Site) -> None:
    done = _cli("rechunk", "--keep-base", f"oci:{site.src}:base2", f"oci:{site.src}:d1",
                f"oci:{site.out}:bad")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not start with the base" in lines[0]
    assert "layer 1" in lines[0]
    done = _cli("rechunk", "--keep-base", "9", f"oci:{site.src}:d1", f"oci:{site.out}:bad")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "must be 1 to 3" in done.stderr
    index = json.loads((site.out / "index.json").read_text()) if site.out.exists() else {}
    tags = {m["annotations"]["org.opencontainers.image.ref.name"]
            for m in index.get("manifests", [])}
    assert "bad" not in tags  # nothing half-written


@pytest.mark.slow
def test_real_debian_minbase_base(tmp_path: Path) -> None:
    """A real Debian 12 minbase from the mirror (mmdebstrap) as the base, a derived image
    installing a package with dpkg and deleting base files: the base's layer survives
    byte for byte, only the derived part is planned, verify passes."""
    mmdebstrap = require_tool("mmdebstrap")
    require_tool("umoci")
    s = Site(tmp_path)
    root = tmp_path / "minbase"
    subprocess.run([mmdebstrap, "--quiet", "--variant=minbase", "bookworm", str(root),
                    "http://deb.debian.org/debian"], check=True, capture_output=True)
    _umoci("new", "--image", f"{s.src}:base")
    _umoci("raw", "add-layer", "--image", f"{s.src}:base",
           str(tar_directory(root, tmp_path / "base.tar")))
    bundle = tmp_path / "bundle"
    _umoci("unpack", "--image", f"{s.src}:base", str(bundle))
    install(bundle / "rootfs", s.deb("app", "1.0-1", {
        "/usr/lib/app/app.bin": _blob(300_000, "app"),
    }))
    shutil.rmtree(bundle / "rootfs/usr/share/doc/debconf")
    _umoci("repack", "--image", f"{s.src}:derived", str(bundle))
    doc = s.rechunk("derived", "k", "--keep-base", f"oci:{s.src}:base")
    assert _layers(s, s.out, "k")[:1] == _layers(s, s.src, "base")
    packages = {p for la in doc["layers"] for p in la["packages"]}
    assert "app" in packages and "libc6" not in packages and "bash" not in packages
    assert _ok("verify", *STATED, f"oci:{s.src}:derived", f"oci:{s.out}:k").startswith("identical")
    out = tmp_path / "unpacked"
    _umoci("unpack", "--image", f"{s.out}:k", str(out))
    assert not (out / "rootfs/usr/share/doc/debconf").exists()
    assert (out / "rootfs/usr/share/doc/bash").is_dir()
    assert (out / "rootfs/usr/lib/app/app.bin").stat().st_size == 300_000
