"""bootc images (ostree-encapsulated, built with the real ostree CLI): detection, the farm
left out, hard links recomputed, labels, verify, --keep-sysroot, --prune, --label, xattr
components and the layer budget warning, through the real CLI.

The dpkg roots are real .debs installed by dpkg; the RPM root is real RPMs installed by
rpm. Each is packed once as a plain image and once as a bootc image whose /usr is an
``ostree checkout -H`` of its own commit in /sysroot/ostree/repo.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pkgchunk.io import open_image
from tests import bootcbuild, debbuild
from tests.helpers import require_tool

LICENSE = b"Permission is hereby granted, free of charge, to any person ...\n" * 40


def _bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _debs(work: Path) -> dict[str, Path]:
    """Every .deb of both versions (unchanged packages are the same file in both)."""

    def deb(name: str, version: str, files: dict[str, bytes], source: str = "") -> Path:
        files = {**files, f"/usr/share/doc/{name}/copyright": LICENSE}
        fields = {"Source": source} if source else None
        # a symlink too: ostree checkout creates those fresh, like empty files
        links = {f"/usr/share/doc/{name}/LICENSE": "copyright"}
        return debbuild.build_deb(work, name, version, files=files, fields=fields,
                                  symlinks=links)

    k = 1024
    return {
        "base-files": deb("base-files", "12.4", {
            "/usr/lib/os-release": b'PRETTY_NAME="Debian GNU/Linux 12"\nID=debian\n',
            "/usr/share/common-licenses/GPL-2": LICENSE * 8}),
        "libalpha": deb("libalpha1", "1.0", {
            "/usr/lib/x86_64-linux-gnu/libalpha.so.1": _bytes(1, 900 * k),
            "/usr/share/alpha/empty": b""}, source="alpha"),
        "alpha-tools": deb("alpha-tools", "1.0", {
            "/usr/bin/alpha": _bytes(2, 300 * k), "/usr/share/alpha-tools/empty": b""},
            source="alpha"),
        "beta-1.0": deb("beta", "1.0", {
            "/usr/bin/beta": _bytes(3, 600 * k), "/usr/share/beta/data": _bytes(4, 700 * k)}),
        "beta-1.1": deb("beta", "1.1", {
            "/usr/bin/beta": _bytes(13, 600 * k), "/usr/share/beta/data": _bytes(4, 700 * k)}),
        "gamma-1.0": deb("python3-gamma", "1.0", {
            "/usr/lib/python3/dist-packages/gamma/__init__.py": b"",
            "/usr/lib/python3/dist-packages/gamma/mod.py": _bytes(5, 500 * k)}, source="gamma"),
        "gamma-1.1": deb("python3-gamma", "1.1", {
            "/usr/lib/python3/dist-packages/gamma/__init__.py": b"",
            "/usr/lib/python3/dist-packages/gamma/mod.py": _bytes(15, 500 * k)}, source="gamma"),
        "delta": deb("delta-data", "2.0", {"/usr/share/delta/big": _bytes(6, 1500 * k)}),
    }


V1 = ("base-files", "libalpha", "alpha-tools", "beta-1.0", "gamma-1.0", "delta")
V2 = ("base-files", "libalpha", "alpha-tools", "beta-1.1", "gamma-1.1", "delta")


def skeleton(root: Path) -> Path:
    """What every bootc root has besides the farm: /sysroot and /ostree -> sysroot/ostree
    (so "the same root without the farm" differs from the farm image by the farm only)."""
    (root / "sysroot").mkdir()
    (root / "ostree").symlink_to("sysroot/ostree")
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """plain1/plain2 (dpkg roots, no farm), farm1/farm2 (the same roots, bootc-shaped),
    rpm/rpmfarm (an RPM root), bare (a farm without any bootc label)."""
    require_tool("ostree")
    tmp = tmp_path_factory.mktemp("bootc")
    debs = _debs(tmp)
    out: dict[str, str] = {}
    for n, names in ((1, V1), (2, V2)):
        root = debbuild.new_root(tmp / f"root{n}")
        debbuild.install(root, *(debs[x] for x in names))
        skeleton(root)
        out[f"plain{n}"] = bootcbuild.pack_root(root, tmp / "plain", f"v{n}", bootc=False)
        farm = bootcbuild.copy_root(root, tmp / f"farm{n}")
        commit = bootcbuild.ostree_farm(farm)
        out[f"farm{n}"] = bootcbuild.pack_root(farm, tmp / "farm", f"v{n}", commit=commit)
        if n == 1:
            out["bare"] = bootcbuild.pack_root(farm, tmp / "bare", "v1", bootc=False)
    from tests.versions import fedora_root

    rroot = skeleton(fedora_root(tmp))
    out["rpm"] = bootcbuild.pack_root(rroot, tmp / "rpm", "plain", bootc=False)
    rfarm = bootcbuild.copy_root(rroot, tmp / "rpmfarm")
    commit = bootcbuild.ostree_farm(rfarm)
    out["rpmfarm"] = bootcbuild.pack_root(rfarm, tmp / "rpm", "farm", commit=commit)
    out["out"] = str(tmp / "out")
    return out


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pkgchunk.cli", *args],
                          capture_output=True, text=True, check=False)


def ok(*args: str) -> subprocess.CompletedProcess[str]:
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr
    return proc


def layers(plan_doc: dict[str, Any]) -> list[tuple[str, list[str]]]:
    return [(la["name"], la["groups"]) for la in plan_doc["layers"]]


def labels_of(ref: str) -> dict[str, str]:
    with open_image(ref) as image:
        return image.labels


# --------------------------------------------------------------------------- the farm


def test_farm_is_what_ostree_makes(images: dict[str, str]) -> None:
    """The builder's images really are hardlink farms: /usr files share inodes with objects."""
    with open_image(images["farm1"]) as image:
        tree = image.tree
        objects = [p for p in tree.entries if p.startswith("sysroot/ostree/repo/objects/")
                   and p.endswith(".file")]
        lib = tree.entries["usr/lib/x86_64-linux-gnu/libalpha.so.1"]
        assert lib.link and any(tree.entries[o].link == lib.link for o in objects)
        # ostree stores identical objects once: one inode for four packages' copyright
        cr = {tree.entries[f"usr/share/doc/{n}/copyright"].link
              for n in ("libalpha1", "alpha-tools", "beta", "delta-data")}
        assert len(cr) == 1 and cr != {0}
        assert "ostree.commit" in image.labels and "ostree.final-diffid" in image.labels


@pytest.mark.parametrize("name", ["farm1", "bare"])
def test_detection_line(images: dict[str, str], name: str) -> None:
    err = ok("plan", images[name]).stderr
    lines = [x for x in err.splitlines() if "bootc image" in x]
    assert len(lines) == 1
    why = "label containers.bootc" if name == "farm1" else "/sysroot/ostree/repo present"
    assert why in lines[0] and "leaving out /sysroot/ostree" in lines[0]
    assert "bootc" not in ok("plan", images["plain1"]).stderr
    assert "bootc image" in ok("rechunk", images[name], f"oci:{images['out']}:det-{name}").stderr


@pytest.mark.parametrize(("farm", "plain"), [("farm1", "plain1"), ("farm2", "plain2"),
                                             ("rpmfarm", "rpm")])
def test_plan_same_as_without_the_farm(images: dict[str, str], farm: str, plain: str) -> None:
    want = json.loads(ok("plan", images[plain], "--json").stdout)
    got = json.loads(ok("plan", images[farm], "--json").stdout)
    assert layers(got) == layers(want)
    # and the farm kept would not: it glues packages into one unowned group
    kept = json.loads(ok("plan", images[farm], "--json", "--keep-sysroot").stdout)
    assert layers(kept) != layers(want)


def test_dpkg_plan_has_several_layers(images: dict[str, str]) -> None:
    """The equality above is worth something: the plain plan keeps packages apart."""
    doc = json.loads(ok("plan", images["plain1"], "--json").stdout)
    assert len(doc["layers"]) >= 3


def _pull(images: dict[str, str], a: str, b: str, tag: str, *extra: str) -> int:
    out = images["out"]
    ok("rechunk", images[a], f"oci:{out}:{tag}-1", *extra)
    ok("rechunk", images[b], f"oci:{out}:{tag}-2", "--prev", f"oci:{out}:{tag}-1", *extra)
    doc = json.loads(ok("diff", f"oci:{out}:{tag}-1", f"oci:{out}:{tag}-2", "--json").stdout)
    return int(doc["pull_bytes"])


def test_update_pulls_within_ten_percent_of_no_farm(images: dict[str, str]) -> None:
    plain = _pull(images, "plain1", "plain2", "upd-plain")
    farm = _pull(images, "farm1", "farm2", "upd-farm")
    kept = _pull(images, "farm1", "farm2", "upd-kept", "--keep-sysroot")
    assert plain > 0
    assert abs(farm - plain) <= 0.10 * plain, (farm, plain)
    assert kept > 1.5 * plain, (kept, plain)  # what the issue saw without pruning


# --------------------------------------------------------------------------- the output


def test_output_has_no_farm_no_ostree_labels_and_verifies(images: dict[str, str]) -> None:
    dest = f"oci:{images['out']}:pruned"
    ok("rechunk", images["farm1"], dest)
    with open_image(dest) as image:
        tree = image.tree
        assert not [p for p in tree.entries if p.startswith("sysroot/ostree")]
        assert tree.entries["sysroot"].kind == "dir"
        assert tree.entries["ostree"].kind == "sym"  # /ostree -> sysroot/ostree stays
        # its only other name was its object: a plain file again
        assert tree.entries["usr/lib/x86_64-linux-gnu/libalpha.so.1"].link == 0
        # identical copyrights of different packages are no longer one inode
        links = [tree.entries[f"usr/share/doc/{n}/copyright"].link
                 for n in ("libalpha1", "alpha-tools", "beta", "delta-data")]
        assert len(set(links)) == 4 or set(links) == {0}
        labels = image.labels
    assert "ostree.commit" not in labels and "ostree.final-diffid" not in labels
    assert labels["containers.bootc"] == "1" and labels["ostree.bootable"] == "1"
    edits = json.loads(labels["org.pkgchunk.edits"])
    assert edits["prune"] == ["/sysroot/ostree"]
    res = ok("verify", images["farm1"], dest)
    n_farm = len([p for p in _paths(images["farm1"]) if p.startswith("sysroot/ostree")])
    assert f"pruned: {n_farm} paths under /sysroot/ostree" in res.stdout
    assert "identical" in res.stdout


def _paths(ref: str) -> list[str]:
    with open_image(ref) as image:
        return list(image.tree.entries)


def test_verify_trusts_only_what_the_output_records(images: dict[str, str]) -> None:
    dest = f"oci:{images['out']}:pruned2"
    ok("rechunk", images["farm1"], dest)
    # without the record, every farm path is missing, and the labels differ
    forged = bootcbuild.relabel(dest, drop=["org.pkgchunk.edits"], new_tag="forged")
    proc = run("verify", images["farm1"], forged)
    assert proc.returncode == 1
    assert "/sysroot/ostree/repo/config: only in A" in proc.stdout
    # a record naming a narrower prefix covers that prefix only
    narrow = json.dumps({"v": 1, "prune": ["/sysroot/ostree/repo/objects"],
                         "labels": {"removed": ["ostree.commit", "ostree.final-diffid"],
                                    "set": []}})
    forged = bootcbuild.relabel(dest, set_labels={"org.pkgchunk.edits": narrow},
                                new_tag="narrow")
    proc = run("verify", images["farm1"], forged, "--json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1 and not doc["identical"]
    assert doc["pruned"][0]["prefix"] == "/sysroot/ostree/repo/objects"
    missing = {d["path"] for d in doc["differences"]}
    assert "/sysroot/ostree/repo/config" in missing
    assert not any(p.startswith("/sysroot/ostree/repo/objects/") for p in missing)


def test_keep_sysroot_keeps_everything_and_verify_demands_it(images: dict[str, str]) -> None:
    dest = f"oci:{images['out']}:kept"
    proc = ok("rechunk", images["farm1"], dest, "--keep-sysroot")
    assert "keeping /sysroot/ostree" in proc.stderr
    assert sorted(_paths(dest)) == sorted(_paths(images["farm1"]))
    labels = labels_of(dest)
    assert "ostree.commit" in labels and "org.pkgchunk.edits" not in labels
    assert "pruned" not in ok("verify", images["farm1"], dest).stdout
    # verify demands the farm: the pruned output measured against this one is short of it
    pruned = f"oci:{images['out']}:pruned3"
    ok("rechunk", images["farm1"], pruned)
    forged = bootcbuild.relabel(pruned, drop=["org.pkgchunk.edits"], new_tag="noedits")
    assert run("verify", dest, forged).returncode == 1


def test_prune_and_label_edits_on_any_image(images: dict[str, str]) -> None:
    dest = f"oci:{images['out']}:edited"
    ok("rechunk", images["plain1"], dest, "--prune", "/usr/share/doc/",
       "--label", "org.example.a=1", "--label", "org.example.b=2", "--label",
       "org.example.b-", "--label", "containers.bootc=1")
    paths = _paths(dest)
    assert "usr/share/doc" in paths  # trailing '/': the directory stays
    assert not [p for p in paths if p.startswith("usr/share/doc/")]
    labels = labels_of(dest)
    assert labels["org.example.a"] == "1" and "org.example.b" not in labels
    assert labels["containers.bootc"] == "1"
    res = ok("verify", images["plain1"], dest)
    assert "pruned:" in res.stdout and "under /usr/share/doc/" in res.stdout
    bad = run("rechunk", images["plain1"], f"oci:{images['out']}:bad", "--label", "nokey")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "pkgchunk: error: --label 'nokey': expected KEY=VALUE or KEY- (remove)"]
    bad = run("plan", images["plain1"], "--prune", "/")
    assert bad.returncode == 2 and "whole image" in bad.stderr


def test_layer_budget_warns_once_above_127(images: dict[str, str]) -> None:
    err = ok("plan", images["plain1"], "--max-layers", "128").stderr
    assert err.count("above 127") == 1 and "overlay2" in err
    assert "above 127" not in ok("plan", images["plain1"], "--max-layers", "127").stderr


# --------------------------------------------------------------------------- xattrs


def test_xattr_components(tmp_path: Path, images: dict[str, str]) -> None:
    """``user.component`` on a file and on a directory (inherited below it) moves those
    paths out of their package's group, ahead of the rules; ``user.update-interval``
    sets how often the component is expected to change."""
    root = debbuild.new_root(tmp_path / "root")
    debs = _debs(tmp_path / "debs")
    debbuild.install(root, *(debs[x] for x in V1))
    app = root / "usr/share/myapp"
    (app / "sub").mkdir(parents=True)
    (app / "sub/data").write_bytes(_bytes(7, 400 * 1024))
    (root / "usr/bin/myapp").write_bytes(_bytes(8, 300 * 1024))
    try:
        os.setxattr(app, "user.component", b"myapp")
        os.setxattr(root / "usr/bin/myapp", "user.component", b"myapp")
        os.setxattr(root / "usr/bin/myapp", "user.update-interval", b"monthly")
        os.setxattr(root / "usr/bin/beta", "user.component", b"myapp")  # owned by beta
    except OSError as err:
        pytest.skip(f"user xattrs unsupported here: {err}")
    ref = bootcbuild.pack_root(root, tmp_path / "img", bootc=False)
    doc = json.loads(ok("plan", ref, "--json").stdout)
    where = {g: la for la in doc["layers"] for g in la["groups"]}
    assert "component/myapp" in where
    dest = f"oci:{tmp_path / 'out'}:x"
    ok("rechunk", ref, dest)
    label = json.loads(labels_of(dest)["org.pkgchunk.plan"])
    layer_of = {key: name for name, groups in label["layers"] for key, *_ in groups}
    assert layer_of["component/myapp"] == where["component/myapp"]["name"]
    ok("verify", ref, dest)  # the xattrs themselves are kept
    with open_image(dest) as image:
        assert dict(image.tree.entries["usr/bin/myapp"].xattrs)["user.component"] == b"myapp"
    # a conflicting interval is one clear error
    os.setxattr(app / "sub/data", "user.update-interval", b"weekly")
    bad_ref = bootcbuild.pack_root(root, tmp_path / "bad", bootc=False)
    bad = run("plan", bad_ref)
    assert bad.returncode == 2
    assert "conflicting user.update-interval" in bad.stderr and len(bad.stderr.splitlines()) == 1
