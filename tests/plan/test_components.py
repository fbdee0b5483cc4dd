"""``user.component`` / ``user.update-interval`` xattrs: components ahead of the rules."""

from __future__ import annotations

import dataclasses
import math

import pytest

from pkgchunk.errors import InputError
from pkgchunk.plan import frequency
from pkgchunk.plan.groups import build_groups, parse_interval, xattr_components
from pkgchunk.tree import FileTree
from tests.plan.test_groups import RULES, check_partition, make_tree, ownership, pkg


def tag(tree: FileTree, path: str, **xattrs: str) -> None:
    e = tree.entries[path]
    add = tuple((k.replace("_", "-").replace("user-", "user."), v.encode())
                for k, v in xattrs.items())
    tree.entries[path] = dataclasses.replace(e, xattrs=e.xattrs + add)


def test_file_and_directory_components_with_inheritance() -> None:
    tree = make_tree({"opt/app/bin/run": 10, "opt/app/lib/x": 20, "opt/app/lib/special": 5,
                      "opt/app-other": 7, "usr/bin/tool": 30})
    tag(tree, "opt/app", user_component="app")
    tag(tree, "opt/app/lib/special", user_component="special")
    tag(tree, "usr/bin/tool", user_component="app", user_update_interval="monthly")
    comps, intervals = xattr_components(tree)
    assert comps == {"opt/app": "app", "opt/app/bin": "app", "opt/app/bin/run": "app",
                     "opt/app/lib": "app", "opt/app/lib/x": "app",
                     "opt/app/lib/special": "special", "usr/bin/tool": "app"}
    assert intervals == {"app": 30}


def test_component_beats_owner_and_pkgdb() -> None:
    tree = make_tree({"usr/bin/tool": 300, "usr/bin/other": 100, "var/lib/dpkg/status": 5})
    tool = pkg("tool")
    own = ownership({tool: ["usr/bin/tool", "usr/bin/other"]}, pkgdb=["var/lib/dpkg/status"])
    tag(tree, "usr/bin/tool", user_component="mine", user_update_interval="90")
    groups = build_groups(tree, own, RULES)
    where = check_partition(tree, groups)
    assert where["usr/bin/tool"] == "component/mine"
    assert where["usr/bin/other"] == "src/tool"
    g = {x.key: x for x in groups}["component/mine"]
    assert (g.kind, g.packages, g.update_interval, g.bytes) == ("component", (tool.key,), 90, 300)
    assert "tool=1.0" in g.versions  # a package update changes the component's version
    probs = frequency.probabilities(groups, own.packages)
    assert probs["component/mine"] == pytest.approx(1 - math.exp(-7 / 90))


def test_component_without_interval_is_weekly() -> None:
    tree = make_tree({"srv/a": 10})
    tag(tree, "srv/a", user_component="a")
    groups = build_groups(tree, ownership({}), RULES)
    probs = frequency.probabilities(groups, {})
    assert probs["component/a"] == pytest.approx(1 - math.exp(-1))


@pytest.mark.parametrize(("text", "days"), [("daily", 1), ("weekly", 7), ("biweekly", 14),
                                            ("monthly", 30), ("quarterly", 90),
                                            ("yearly", 365), ("3", 3)])
def test_interval_values(text: str, days: int) -> None:
    assert parse_interval("x", text) == days


@pytest.mark.parametrize("text", ["0", "-1", "often", ""])
def test_bad_interval_is_an_input_error(text: str) -> None:
    with pytest.raises(InputError, match=r"user\.update-interval"):
        parse_interval("x", text)


def test_conflicting_intervals_and_bad_names() -> None:
    tree = make_tree({"a": 1, "b": 1})
    tag(tree, "a", user_component="c", user_update_interval="daily")
    tag(tree, "b", user_component="c", user_update_interval="yearly")
    with pytest.raises(InputError, match=r"conflicting user\.update-interval on /a .* /b"):
        xattr_components(tree)
    tree = make_tree({"a": 1})
    tag(tree, "a", user_component="bad\nname")
    with pytest.raises(InputError, match="printable"):
        xattr_components(tree)


def test_fedora_bootc_rules_place_what_a_bootc_image_adds() -> None:
    """The paths rules/fedora-bootc.yaml cites (kernel.spec, bootupd, rpm-ostree)."""
    from pkgchunk.plan.rules import load_rules

    kver = "usr/lib/modules/6.11.4-301.fc41.x86_64"
    tree = make_tree({
        f"{kver}/vmlinuz": 15_000, f"{kver}/initramfs.img": 40_000, f"{kver}/modules.dep": 10,
        "usr/lib/bootupd/updates/EFI.json": 300,
        "usr/lib/bootupd/updates/EFI/fedora/shimx64.efi": 900,
        "usr/lib/bootupd/grub2-static/grub-static-pre.cfg": 50, "usr/bin/bootupctl": 800,
        "usr/lib/ostree-boot/efi/EFI/fedora/grubx64.efi": 2000,
        "usr/share/rpm/rpmdb.sqlite": 5000, "usr/share/rpm/.rpm.lock": 0,
        "usr/lib/sysimage/rpm-ostree-base-db/rpmdb.sqlite": 5000,
    })
    kernel = pkg("kernel-core", source="kernel", version="6.11.4")
    bootupd = pkg("bootupd", version="0.2.35")
    own = ownership({kernel: [f"{kver}/vmlinuz", f"{kver}/modules.dep"],
                     bootupd: ["usr/bin/bootupctl",
                               "usr/lib/bootupd/grub2-static/grub-static-pre.cfg"]},
                    pkgdb=["usr/share/rpm/rpmdb.sqlite"])
    where = check_partition(tree, build_groups(tree, own, load_rules("fedora-bootc")))
    assert where[f"{kver}/vmlinuz"] == where[f"{kver}/modules.dep"] == "rule/kernel"
    assert where[f"{kver}/initramfs.img"] == "bucket/initramfs"
    for p in ("usr/lib/bootupd/updates/EFI.json",
              "usr/lib/bootupd/updates/EFI/fedora/shimx64.efi",
              "usr/lib/ostree-boot/efi/EFI/fedora/grubx64.efi"):
        assert where[p] == "bucket/bootloader", p
    assert where["usr/bin/bootupctl"] == "src/bootupd"
    assert where["usr/lib/bootupd/grub2-static/grub-static-pre.cfg"] == "src/bootupd"
    assert where["usr/share/rpm/rpmdb.sqlite"] == "pkgdb"
    assert where["usr/share/rpm/.rpm.lock"] == "bucket/pkgmeta"
    assert where["usr/lib/sysimage/rpm-ostree-base-db/rpmdb.sqlite"] == "bucket/pkgmeta"
