"""Ownership + tree + rules -> groups: every path once, derived files follow their origin."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pkgchunk.pkgdb.model import Ownership, Package, PackageDb
from pkgchunk.plan.groups import Group, build_groups, derived_owners, version_string
from pkgchunk.plan.rules import Rules, load_rules, parse_rules
from pkgchunk.tree import DataRef, Entry, FileTree, ancestors
from tests.helpers import shared_fixtures

Spec = int | str  # a size (regular file), "dir", or "->target" (symlink)


def make_tree(files: Mapping[str, Spec], links: Mapping[str, int] | None = None) -> FileTree:
    """A tree of regular files (size), dirs and symlinks; parents are added as dirs."""
    tree = FileTree(label="test")
    for path, spec in files.items():
        for anc in ancestors(path):
            tree.entries.setdefault(anc, Entry(anc, "dir", 0o755))
        if spec == "dir":
            tree.entries[path] = Entry(path, "dir", 0o755)
        elif isinstance(spec, str):
            tree.entries[path] = Entry(path, "sym", 0o777, target=spec.removeprefix("->"))
        else:
            tree.entries[path] = Entry(
                path, "reg", 0o644, size=spec, link=(links or {}).get(path, 0)
            )
    return tree


def pkg(name: str, source: str = "", version: str = "1.0", **kw: object) -> Package:
    return Package(name=name, version=version, arch="amd64", source=source or name, db="dpkg", **kw)  # type: ignore[arg-type]


def ownership(owned: Mapping[Package, Iterable[str]], pkgdb: Iterable[str] = ()) -> Ownership:
    owners: dict[str, list[str]] = {}
    for p, paths in owned.items():
        for path in paths:
            owners.setdefault(path, []).append(p.key)
    packages = {p.key: p for p in owned}
    db = PackageDb(format="dpkg", path="var/lib/dpkg/status", packages=tuple(owned))
    return Ownership(
        dbs=(db,),
        packages=packages,
        owners={k: tuple(sorted(v)) for k, v in owners.items()},
        pkgdb_paths=frozenset(pkgdb),
    )


def by_path(groups: Sequence[Group]) -> dict[str, str]:
    out: dict[str, str] = {}
    for g in groups:
        for p in g.paths:
            assert p not in out, f"{p} in {out[p]} and {g.key}"
            out[p] = g.key
    return out


def check_partition(tree: FileTree, groups: Sequence[Group]) -> dict[str, str]:
    where = by_path(groups)
    assert set(where) == set(tree.entries)
    assert [g.key for g in groups] == sorted(g.key for g in groups)
    for g in groups:
        assert g.paths and list(g.paths) == [p for p in tree.paths() if where[p] == g.key]
    return where


RULES = parse_rules(
    """
version: 1
big_file_threshold: 1000
groups:
  - name: kernel
    sources: [linux]
    paths: [usr/lib/modules/*, boot/*]
    dedicated: true
    frequency: high
  - name: perl
    packages: [perl*, libperl*]
buckets:
  - name: initramfs
    paths: [boot/initrd.img-*, usr/lib/modules/*/initramfs.img]
  - name: etc
    paths: [etc/*]
    frequency: low
  - name: var
    paths: [var/*]
""",
    "test-rules",
)


def test_packages_group_by_source_and_rules_win() -> None:
    tree = make_tree(
        {
            "usr/bin/apt": 10,
            "usr/lib/libapt.so": 20,
            "usr/bin/perl": 30,
            "usr/share/perl/5.36/strict.pm": 5,
            "usr/bin/gzip": 7,
        }
    )
    apt, libapt = pkg("apt"), pkg("libapt-pkg6.0", "apt", "2.6.1")
    perl, mods = pkg("perl"), pkg("perl-modules-5.36", "perl")
    gzip = pkg("gzip")
    own = ownership(
        {
            apt: ["usr/bin/apt"],
            libapt: ["usr/lib/libapt.so"],
            perl: ["usr/bin/perl"],
            mods: ["usr/share/perl/5.36/strict.pm"],
            gzip: ["usr/bin/gzip"],
        }
    )
    groups = build_groups(tree, own, RULES)
    where = check_partition(tree, groups)
    assert where["usr/bin/apt"] == where["usr/lib/libapt.so"] == "src/apt"
    assert where["usr/bin/perl"] == where["usr/share/perl/5.36/strict.pm"] == "rule/perl"
    assert where["usr/bin/gzip"] == "src/gzip"
    g = {x.key: x for x in groups}
    assert g["src/apt"].packages == ("apt:amd64", "libapt-pkg6.0:amd64")
    assert g["src/apt"].versions == ("apt=1.0", "libapt-pkg6.0=2.6.1")
    assert g["src/apt"].bytes == 30 and g["src/apt"].kind == "package"
    # unowned parent directories went to the catch-all bucket
    assert where["usr"] == where["usr/bin"] == "bucket/unowned"
    assert g["bucket/unowned"].kind == "bucket"

    by_name = build_groups(tree, own, parse_rules("version: 1\ngroup_by: name\n", "r"))
    where = check_partition(tree, by_name)
    assert where["usr/bin/apt"] == "pkg/apt" and where["usr/lib/libapt.so"] == "pkg/libapt-pkg6.0"


def test_kernel_keeps_one_group_across_abi_bumps_and_takes_its_modules() -> None:
    tree = make_tree(
        {
            "boot/vmlinuz-6.1.0-18-amd64": 500,
            "boot/initrd.img-6.1.0-18-amd64": 5000,
            "usr/lib/modules/6.1.0-18-amd64/kernel/fs/ext4.ko": 300,
            "usr/lib/modules/6.1.0-18-amd64/modules.dep": 40,
            "usr/lib/modules/6.1.0-18-amd64/updates/dkms/zfs.ko": 200,
            "usr/lib/modules/6.1.0-18-amd64/extra/vbox.ko": 100,
            "usr/lib/modules/6.1.0-18-amd64/initramfs.img": 3000,
            "boot/grub/grub.cfg": 50,
        }
    )
    image = pkg("linux-image-6.1.0-18-amd64", "linux-signed-amd64", "6.1.76-1")
    zfs = pkg("zfs-modules-6.1.0-18", "zfs-dkms")
    tools = pkg("kmod")  # owns a file there, but most of its bytes elsewhere
    own = ownership(
        {
            image: [
                "boot/vmlinuz-6.1.0-18-amd64",
                "usr/lib/modules/6.1.0-18-amd64",
                "usr/lib/modules/6.1.0-18-amd64/kernel/fs/ext4.ko",
            ],
            zfs: ["usr/lib/modules/6.1.0-18-amd64/updates/dkms/zfs.ko"],
        }
    )
    rules = parse_rules(
        "version: 1\nbig_file_threshold: 100\ngroups:\n"
        "  - name: kernel\n    sources: [linux, linux-signed-*]\n"
        "    paths: [usr/lib/modules/*, boot/*]\n"
        "buckets:\n  - name: initramfs\n"
        "    paths: [boot/initrd.img-*, usr/lib/modules/*/initramfs.img]\n",
        "r",
    )
    del tools
    groups = build_groups(tree, own, rules)
    where = check_partition(tree, groups)
    kdir = "usr/lib/modules/6.1.0-18-amd64"
    for p in ("boot/vmlinuz-6.1.0-18-amd64", f"{kdir}/kernel/fs/ext4.ko", f"{kdir}/modules.dep"):
        assert where[p] == "rule/kernel", p
    # zfs-modules: all its bytes under usr/lib/modules -> the kernel group by path majority
    assert where[f"{kdir}/updates/dkms/zfs.ko"] == "rule/kernel"
    # an unowned module follows the kernel that owns its tree (before the size rule)
    assert where[f"{kdir}/extra/vbox.ko"] == "rule/kernel"
    # the initramfs bucket is explicit, so it wins over the kernel's paths and the size rule
    assert where["boot/initrd.img-6.1.0-18-amd64"] == "bucket/initramfs"
    assert where[f"{kdir}/initramfs.img"] == "bucket/initramfs"
    # a rules group's paths select packages, never unowned files: grub.cfg is rewritten
    # by every build and must not drag the kernel's layer along
    assert where["boot/grub/grub.cfg"] == where["boot/grub"] == "bucket/unowned"
    g = {x.key: x for x in groups}
    assert g["rule/kernel"].packages == (image.key, zfs.key)


def test_unowned_module_files_follow_the_kernel_package_without_rules() -> None:
    tree = make_tree(
        {
            "usr/lib/modules/6.8.5/vmlinuz": 100,
            "usr/lib/modules/6.8.5/modules.dep": 10,
            "usr/lib/modules/6.8.5/modules.alias.bin": 10,
            "usr/lib/modules/6.9.0/kernel/a.ko": 10,
            "usr/lib/modules/6.9.0/modules.dep": 10,
            "usr/lib/modules/7.0/modules.dep": 10,
        }
    )
    core = pkg("kernel-core", "kernel", "6.8.5")
    core2 = pkg("kernel-modules", "kernel-next", "6.9.0")
    own = ownership(
        {core: ["usr/lib/modules/6.8.5/vmlinuz"], core2: ["usr/lib/modules/6.9.0/kernel/a.ko"]}
    )
    where = check_partition(tree, build_groups(tree, own, parse_rules("version: 1\n", "r")))
    assert where["usr/lib/modules/6.8.5/modules.dep"] == "src/kernel"
    assert where["usr/lib/modules/6.8.5/modules.alias.bin"] == "src/kernel"
    assert where["usr/lib/modules/6.8.5"] == "src/kernel"
    # no vmlinuz in 6.9.0: any owned file in that tree names the kernel
    assert where["usr/lib/modules/6.9.0/modules.dep"] == "src/kernel-next"
    # nobody owns anything under 7.0: the catch-all
    assert where["usr/lib/modules/7.0/modules.dep"] == "bucket/unowned"


def test_pyc_files_follow_their_source() -> None:
    d = "usr/lib/python3/dist-packages/requests"
    tree = make_tree(
        {
            f"{d}/api.py": 10,
            f"{d}/__pycache__/api.cpython-311.pyc": 20,
            f"{d}/__pycache__/api.cpython-311.opt-1.pyc": 20,
            f"{d}/__pycache__/gone.cpython-311.pyc": 20,
            "usr/lib/python2.7/os.py": 10,
            "usr/lib/python2.7/os.pyc": 20,
            "__pycache__/x.cpython-311.pyc": 5,
            "x.py": 5,
        }
    )
    own = ownership(
        {
            pkg("python3-requests", "requests"): [d, f"{d}/api.py"],
            pkg("python2.7-minimal", "python2.7"): ["usr/lib/python2.7/os.py"],
            pkg("x"): ["x.py"],
        }
    )
    where = check_partition(tree, build_groups(tree, own, parse_rules("version: 1\n", "r")))
    assert where[f"{d}/__pycache__/api.cpython-311.pyc"] == "src/requests"
    assert where[f"{d}/__pycache__/api.cpython-311.opt-1.pyc"] == "src/requests"
    assert where[f"{d}/__pycache__"] == "src/requests"  # the directory follows its parent
    assert where[f"{d}/__pycache__/gone.cpython-311.pyc"] == "bucket/unowned"
    assert where["usr/lib/python2.7/os.pyc"] == "src/python2.7"
    assert where["__pycache__/x.cpython-311.pyc"] == "src/x"


def test_derived_files_can_form_one_separate_group() -> None:
    d = "usr/lib/python3/dist-packages/requests"
    files: dict[str, Spec] = {
        f"{d}/api.py": 10,
        f"{d}/__pycache__/api.cpython-311.pyc": 20,
        "usr/lib/modules/6.1/vmlinuz": 100,
        "usr/lib/modules/6.1/modules.dep": 10,
        "etc/hostname": 5,
    }
    tree = make_tree(files)
    req, kern = pkg("python3-requests", "requests"), pkg("linux-image-6.1", "linux")
    own = ownership({req: [d, f"{d}/api.py"], kern: ["usr/lib/modules/6.1/vmlinuz"]})
    rules = parse_rules("version: 1\n", "r")
    groups = build_groups(tree, own, rules, derived="separate")
    where = check_partition(tree, groups)
    derived = {p for p, k in where.items() if k == "derived"}
    assert derived == set(derived_owners(tree, own))
    assert {x.key: x.kind for x in groups}["derived"] == "bucket"
    follow = check_partition(tree, build_groups(tree, own, rules))
    assert follow[f"{d}/__pycache__/api.cpython-311.pyc"] == "src/requests"
    assert follow["usr/lib/modules/6.1/modules.dep"] == "src/linux"


def test_derived_owners_name_the_origin_packages_for_the_mtime_policy() -> None:
    d = "usr/lib/python3/dist-packages/requests"
    tree = make_tree(
        {
            f"{d}/api.py": 10,
            f"{d}/__pycache__/api.cpython-311.pyc": 20,
            f"{d}/__pycache__/orphan.cpython-311.pyc": 20,
            "usr/lib/modules/6.1/vmlinuz": 100,
            "usr/lib/modules/6.1/modules.dep": 10,
            "var/lib/dpkg/status": 10,
            "etc/hostname": 5,
        }
    )
    req, kern = pkg("python3-requests", "requests"), pkg("linux-image-6.1", "linux")
    own = ownership(
        {req: [d, f"{d}/api.py"], kern: ["usr/lib/modules/6.1/vmlinuz"]},
        pkgdb=["var/lib/dpkg/status"],
    )
    assert derived_owners(tree, own) == {
        f"{d}/__pycache__": (req.key,),
        f"{d}/__pycache__/api.cpython-311.pyc": (req.key,),
        "usr/lib/modules/6.1": (kern.key,),
        "usr/lib/modules/6.1/modules.dep": (kern.key,),
    }


def test_pkgdb_buckets_and_big_files() -> None:
    tree = make_tree(
        {
            "var/lib/dpkg/status": 600,
            "var/lib/dpkg/info/bash.list": 30,
            "var/lib/dpkg/lock": 0,
            "etc/ld.so.cache": 4000,  # big, but in an explicit bucket
            "etc/bash.bashrc": 10,
            "var/log/dpkg.log": 50,
            "opt/model.bin": 5000,  # big and unowned: its own group
            "opt/small.bin": 1000,  # not above the threshold
            "usr/bin/bash": 2000,  # big but owned
        }
    )
    bash = pkg("bash")
    own = ownership(
        {bash: ["usr/bin/bash", "etc/bash.bashrc", "var/lib/dpkg/info/bash.list"]},
        pkgdb=["var/lib/dpkg/status"],
    )
    groups = build_groups(tree, own, RULES)
    where = check_partition(tree, groups)
    g = {x.key: x for x in groups}
    assert where["var/lib/dpkg/status"] == "pkgdb"
    assert g["pkgdb"].kind == "pkgdb" and g["pkgdb"].paths == ("var/lib/dpkg/status",)
    assert where["var/lib/dpkg/info/bash.list"] == where["etc/bash.bashrc"] == "src/bash"
    assert where["usr/bin/bash"] == "src/bash"
    assert where["etc/ld.so.cache"] == where["etc"] == "bucket/etc"
    assert g["bucket/etc"].frequency == "low"
    assert where["var/lib/dpkg/lock"] == where["var/log/dpkg.log"] == "bucket/var"
    assert where["opt/model.bin"] == "big/opt/model.bin"
    big = g["big/opt/model.bin"]
    assert (big.kind, big.bytes, big.paths) == ("bigfile", 5000, ("opt/model.bin",))
    assert where["opt/small.bin"] == where["opt"] == "bucket/unowned"

    no_big = parse_rules("version: 1\nbig_file_threshold: 0\n", "r")
    where = check_partition(tree, build_groups(tree, own, no_big))
    assert where["opt/model.bin"] == where["etc/ld.so.cache"] == "bucket/unowned"


def test_hardlinks_end_in_the_group_of_their_first_path() -> None:
    tree = make_tree(
        {
            "usr/bin/perl": 3000,
            "usr/bin/perl5.36.0": 3000,  # same inode as usr/bin/perl
            "usr/bin/a-tool": 10,
            "usr/share/z-tool": 10,  # hardlinked to a-tool, owned by someone else
            "opt/x": 99,
            "opt/y": 99,
        },
        links={
            "usr/bin/perl": 1,
            "usr/bin/perl5.36.0": 1,
            "usr/bin/a-tool": 2,
            "usr/share/z-tool": 2,
            "opt/x": 3,
            "opt/y": 3,
        },
    )
    perl, other, z = pkg("perl-base", "perl"), pkg("other"), pkg("zed")
    own = ownership({perl: ["usr/bin/perl"], other: ["usr/bin/a-tool"], z: ["usr/share/z-tool"]})
    groups = build_groups(tree, own, parse_rules("version: 1\nbig_file_threshold: 50\n", "r"))
    where = check_partition(tree, groups)
    assert where["usr/bin/perl5.36.0"] == where["usr/bin/perl"] == "src/perl"
    assert where["usr/share/z-tool"] == where["usr/bin/a-tool"] == "src/other"
    assert "src/zed" not in where.values()  # its only path moved away: no empty group
    g = {x.key: x for x in groups}
    assert g["src/perl"].bytes == 3000  # one inode, counted once
    # a hardlinked big unowned file: both names in the group of the first one
    assert where["opt/x"] == where["opt/y"] == "big/opt/x"
    assert g["big/opt/x"].bytes == 99


def test_shared_paths_go_to_the_smallest_group_key() -> None:
    tree = make_tree({"usr/share/doc": "dir", "usr/share/doc/x": 1, "usr/bin/sh": "->dash"})
    a, b = pkg("zsh", "zsh"), pkg("bash", "bash")
    own = ownership({a: ["usr/share/doc", "usr/bin/sh"], b: ["usr/share/doc", "usr/bin/sh"]})
    where = check_partition(tree, build_groups(tree, own, parse_rules("version: 1\n", "r")))
    assert where["usr/share/doc"] == where["usr/bin/sh"] == "src/bash"


def test_grouping_does_not_depend_on_input_order() -> None:
    files: dict[str, Spec] = {f"usr/lib/p{i}/f{j}": i * 10 + j for i in range(8) for j in range(4)}
    owned = {pkg(f"p{i}", f"s{i % 3}"): [f"usr/lib/p{i}/f{j}" for j in range(3)] for i in range(8)}
    a = build_groups(make_tree(files), ownership(owned), RULES)
    rev_files = dict(reversed(list(files.items())))
    rev_owned = dict(reversed(list(owned.items())))
    b = build_groups(make_tree(rev_files), ownership(rev_owned), RULES)
    assert a == b


def test_version_string_is_short() -> None:
    assert version_string(["bash=5.2"]) == "bash=5.2"
    long = version_string([f"libfoo{i}=1.2.3-4" for i in range(20)])
    assert long.startswith("~") and len(long) == 13
    assert long != version_string([f"libfoo{i}=1.2.3-5" for i in range(20)])


# --------------------------------------------------------------------------- real data


def debian_tree(admindir: Path) -> tuple[FileTree, dict[str, list[str]]]:
    """A merged-/usr tree holding every path dpkg lists for the fixture, and the
    fixture's own database files (read in place), with dpkg-query's owners."""
    owners: dict[str, list[str]] = {}
    for line in (admindir / "owners.tsv").read_text().splitlines()[1:]:
        path, who = line.split("\t")
        owners[path] = who.split(",")
    merged = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}

    def real(path: str) -> str:
        head, _, rest = path.lstrip("/").partition("/")
        return f"{merged[head]}/{rest}" if head in merged and rest else path.lstrip("/")

    tree = FileTree(label="debian-fixture")
    db_files = {
        f"var/lib/dpkg/{f.relative_to(admindir)}": f
        for f in [admindir / "status", admindir / "diversions", *(admindir / "info").iterdir()]
    }
    listed = {real(p) for p in owners if p.lstrip("/") not in merged} | set(db_files)
    dirs = {a for p in listed for a in ancestors(p)}
    for p in sorted(listed | dirs):
        if p in dirs:
            tree.entries[p] = Entry(p, "dir", 0o755)
        elif p in db_files:
            size = db_files[p].stat().st_size
            tree.entries[p] = Entry(p, "reg", 0o644, size=size, data=DataRef(str(db_files[p])))
        else:
            tree.entries[p] = Entry(p, "reg", 0o644, size=len(p))
    for name, target in merged.items():
        tree.entries[name] = Entry(name, "sym", 0o777, target=target)
    return tree, owners


def test_real_debian_database_groups() -> None:
    from pkgchunk.pkgdb.ownership import collect

    admin = shared_fixtures() / "dpkg" / "debian-12-bookworm-minbase"
    expected = json.loads((admin / "expected.json").read_text())
    tree, _ = debian_tree(admin)
    own = collect(tree)
    rules: Rules = load_rules("debian")
    groups = build_groups(tree, own, rules)
    where = check_partition(tree, groups)
    g = {x.key: x for x in groups}

    assert "var/lib/dpkg/status" in g["pkgdb"].paths
    # Every installed package is in the group of its source (or its rules group), and
    # that group holds exactly the packages dpkg-query says come from that source.
    sources: dict[str, set[str]] = {}
    for p in expected["packages"]:
        sources.setdefault(p["source_package"], set()).add(p["package"])
    perl = sources["perl"]
    assert "perl-base" in perl
    assert {p.rpartition("=")[0] for p in g["rule/perl"].versions} == perl
    for source, names in sources.items():
        if source in ("perl", "gcc-12", "python3.11"):
            continue
        key = f"src/{source}"
        if key in g:
            assert {v.rpartition("=")[0] for v in g[key].versions} == names, source
    # dpkg's per-package files go with their package
    assert where["var/lib/dpkg/info/bash.list"] == where["usr/bin/bash"] == "src/bash"
    assert where["usr/lib/x86_64-linux-gnu/libapt-pkg.so.6.0.0"] == "src/apt"
