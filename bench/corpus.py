#!/usr/bin/env python3
"""Build the real Debian benchmark corpus: Containerfile-like builds at two archive states.

    python3 bench/corpus.py --out bench/work                       # the original pair
    python3 bench/corpus.py --out bench/work --pair bookworm-desktop
    python3 bench/corpus.py --out bench/work --pair all

A *pair* is one package set on one Debian release (``PAIRS``). The original pair,
``bookworm-vm``, lives in ``--out`` itself (as before pairs existed); every other pair in
``--out/pairs/NAME`` (``pair_dir``), with the same file names inside.

Each state is built like ``FROM debian:RELEASE`` + ``RUN apt-get install ...``: layer 1 is an
``mmdebstrap --variant=apt`` base, layer 2 is what ``apt-get install`` of the pair's package set
changed on top of it (with whiteouts). "old" uses the ``RELEASE`` suite only (its last point
release); "new" adds ``RELEASE-updates`` and ``RELEASE-security``, so old -> new is a real
stable update.
Outputs (all idempotent, skipped when present):

    debian-{old,new}.base/     layer-1 tree           debian-{old,new}.rootfs/  final tree
    debian-{old,new}/          OCI layout, tag latest (2 gzip layers)
    update.json                package version diff old -> new

Needs root (mmdebstrap --mode=root, chroot, mount of /proc) and network access to the Debian mirror.
"""

from __future__ import annotations

import argparse
import email.utils
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ocitar

MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
COMPONENTS = "main non-free-firmware"


def suites(release: str, state: str) -> list[tuple[str, str]]:
    """The archive suites of a state: the point release, or it + -updates + -security."""
    if state == "old":
        return [(MIRROR, release)]
    return [(MIRROR, release), (MIRROR, f"{release}-updates"), (SECURITY, f"{release}-security")]


#: A realistic bare-metal/VM server image: kernel + firmware/microcode, systemd, ssh, admin tools.
VM_PACKAGES = [
    "linux-image-amd64", "initramfs-tools", "firmware-linux-free", "intel-microcode",
    "amd64-microcode", "systemd", "systemd-sysv", "systemd-timesyncd", "dbus", "udev",
    "libpam-systemd", "apparmor", "kmod", "openssh-server", "openssh-client", "sudo", "cron",
    "logrotate", "unattended-upgrades", "python3", "python3-yaml", "python3-requests", "perl",
    "curl", "wget", "ca-certificates", "gnupg", "openssl", "rsync", "git", "vim", "less",
    "bash-completion", "locales", "man-db", "manpages", "file", "jq", "tmux", "htop", "procps",
    "psmisc", "lsof", "strace", "tcpdump", "sysstat", "pciutils", "usbutils", "dmidecode",
    "smartmontools", "iproute2", "iputils-ping", "nftables", "netbase", "ifupdown",
    "isc-dhcp-client", "bind9-dnsutils", "ethtool", "xz-utils", "zstd", "bzip2", "unzip", "lvm2",
    "e2fsprogs", "xfsprogs", "dosfstools", "parted", "fdisk", "grub-efi-amd64-bin", "efibootmgr",
    "zram-tools",
]

#: A containerised application server, as most server images on a registry are: no kernel (the
#: host's is used), one web server/reverse proxy, one relational database, one cache, the two
#: most common server language runtimes (Python, Java) with the libraries applications load,
#: TLS, and the debugging/admin tools such images carry. Chosen as "what a typical service image
#: installs", not from any update's contents.
SERVER_PACKAGES = [
    "nginx", "postgresql", "redis-server", "python3", "python3-venv", "python3-pip",
    "python3-psycopg2", "python3-yaml", "python3-requests", "openjdk-17-jre-headless",
    "ca-certificates", "curl", "wget", "openssl", "gnupg", "tzdata", "locales", "procps",
    "iproute2", "iputils-ping", "netcat-openbsd", "less", "vim-tiny", "jq", "git", "rsync",
    "supervisor", "cron", "logrotate", "tini", "gosu", "unzip", "xz-utils", "zstd", "sqlite3",
]

#: A typical lightweight GUI desktop (the core of Debian's Xfce task): X server, display manager,
#: desktop environment, web browser, PDF/image viewers, media player, archive manager, network
#: manager applet, PipeWire audio, fonts and icon themes. No kernel, to keep the image moderate
#: on a 2-core machine (``bookworm-vm`` and ``trixie-vm`` carry kernels); no office suite.
DESKTOP_PACKAGES = [
    "xorg", "xfce4", "xfce4-terminal", "lightdm", "lightdm-gtk-greeter", "firefox-esr",
    "network-manager-gnome", "pipewire-pulse", "wireplumber", "pavucontrol", "evince",
    "ristretto", "mousepad", "mpv", "file-roller", "thunar-archive-plugin", "gvfs", "udisks2",
    "fonts-dejavu", "fonts-liberation2", "adwaita-icon-theme", "dbus-x11", "xdg-utils", "sudo",
    "locales",
]


@dataclass(frozen=True)
class Pair:
    """One package set on one release, built at two archive states."""

    name: str
    release: str
    packages: tuple[str, ...]


DEFAULT_PAIR = "bookworm-vm"

PAIRS = {
    p.name: p
    for p in (
        Pair("bookworm-vm", "bookworm", tuple(VM_PACKAGES)),
        Pair("bookworm-server", "bookworm", tuple(SERVER_PACKAGES)),
        Pair("bookworm-desktop", "bookworm", tuple(DESKTOP_PACKAGES)),
        Pair("trixie-vm", "trixie", tuple(VM_PACKAGES)),
    )
}

#: Kept for callers of the original single-pair corpus.
PACKAGES = VM_PACKAGES


def pair_dir(work: Path, name: str) -> Path:
    """Where a pair's trees and images live: the original pair keeps ``work`` itself."""
    return work if name == DEFAULT_PAIR else work / "pairs" / name

#: Device nodes a chroot'ed apt/dpkg needs (on a private tmpfs, never the host's /dev).
DEVICES = [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
           ("urandom", 1, 9), ("tty", 5, 0)]

#: Like Debian's official container images: services are never started during a build.
POLICY_RC_D = "#!/bin/sh\nexit 101\n"


def log(msg: str) -> None:
    print(f"[corpus {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sources(pair: Pair, state: str) -> str:
    return "".join(f"deb {m} {s} {COMPONENTS}\n" for m, s in suites(pair.release, state))


def suite_date(mirror: str, suite: str) -> int:
    """The archive's own Date of a suite: a SOURCE_DATE_EPOCH that names the package set."""
    with urllib.request.urlopen(f"{mirror}/dists/{suite}/InRelease", timeout=60) as r:
        for raw in r:
            line = raw.decode("utf-8", "replace")
            if line.startswith("Date:"):
                return int(email.utils.parsedate_to_datetime(line[5:].strip()).timestamp())
    raise RuntimeError(f"{mirror}/dists/{suite}/InRelease: no Date field")


def run(cmd: list[str], **kw: object) -> None:
    log("$ " + " ".join(cmd)[:300])
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]


def build_base(pair: Pair, state: str, base: Path, sde: int) -> None:
    tmp = base.with_name(base.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(sde))
    run(
        [
            "mmdebstrap", "--variant=apt", "--mode=root", "--format=directory",
            f"--components={COMPONENTS.replace(' ', ',')}",
            # host-specific files would make the two states differ for no package reason
            "--customize-hook=rm -f \"$1\"/etc/resolv.conf \"$1\"/etc/hostname",
            pair.release, str(tmp), sources(pair, state),
        ],
        env=env,
    )
    pol = tmp / "usr/sbin/policy-rc.d"
    pol.write_text(POLICY_RC_D)
    pol.chmod(0o755)
    os.utime(pol, (sde, sde))
    for d in ("dev",):  # image layers carry no device nodes
        for child in (tmp / d).iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    tmp.rename(base)


def _mounts_below(root: Path) -> list[str]:
    r = os.path.realpath(root)
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            mp = line.split()[1].replace("\\040", " ")
            if mp == r or mp.startswith(r + "/"):
                out.append(mp)
    return sorted(out, reverse=True)


def install_layer(pair: Pair, base: Path, rootfs: Path, sde: int) -> None:
    """``RUN apt-get update && apt-get install ... && rm -rf /var/lib/apt/lists/*`` in a copy."""
    tmp = rootfs.with_name(rootfs.name + ".tmp")
    if tmp.exists():
        for mp in _mounts_below(tmp):
            subprocess.run(["umount", "-l", mp], check=False)
        if _mounts_below(tmp):
            raise RuntimeError(f"{tmp}: still mounted, refusing to delete it")
        shutil.rmtree(tmp)
    run(["cp", "-a", str(base), str(tmp)])
    (tmp / "etc/resolv.conf").write_text(Path("/etc/resolv.conf").read_text())
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LC_ALL": "C.UTF-8",
        "SOURCE_DATE_EPOCH": str(sde),
        "HOME": "/root",
    }
    mounted: list[str] = []
    try:
        for fs, where in (("proc", "proc"), ("sysfs", "sys")):
            run(["mount", "-t", fs, fs, str(tmp / where)])
            mounted.append(str(tmp / where))
        dev = tmp / "dev"
        run(["mount", "-t", "tmpfs", "-o", "mode=755,size=64m", "tmpfs", str(dev)])
        mounted.append(str(dev))
        for name, major, minor in DEVICES:
            os.mknod(dev / name, 0o20666, os.makedev(major, minor))
            os.chmod(dev / name, 0o666)
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                             ("ptmx", "pts/ptmx")):
            os.symlink(target, dev / name)
        (dev / "pts").mkdir()
        (dev / "shm").mkdir()
        pts = str(dev / "pts")
        run(["mount", "-t", "devpts", "-o", "newinstance,ptmxmode=0666", "devpts", pts])
        mounted.append(str(dev / "pts"))
        run(["chroot", str(tmp), "apt-get", "update"], env=env)
        run(
            ["chroot", str(tmp), "apt-get", "install", "-y", "--no-install-recommends",
             *pair.packages],
            env=env,
        )
        run(["chroot", str(tmp), "apt-get", "clean"], env=env)
    finally:
        for mp in reversed(mounted):
            subprocess.run(["umount", "-l", mp], check=False)
    left = _mounts_below(tmp)
    if left:
        raise RuntimeError(f"{tmp}: still mounted: {left}")
    for p in (tmp / "var/lib/apt/lists").iterdir():
        if p.is_file():
            p.unlink()
    (tmp / "etc/resolv.conf").unlink()
    tmp.rename(rootfs)


def write_image(
    pair: Pair, state: str, base: Path, rootfs: Path, out: Path, sde: int
) -> None:
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    blobs = tmp / "blobs" / "sha256"
    t0 = time.time()
    l1 = ocitar.write_layer(base, list(ocitar.walk(base)), [], blobs, sde)
    log(f"{state}: layer 1 {l1.size / 1e6:.1f} MB gz in {time.time() - t0:.0f}s")
    t0 = time.time()
    changed, deleted = ocitar.diff_trees(base, rootfs)
    l2 = ocitar.write_layer(rootfs, changed, deleted, blobs, sde)
    log(
        f"{state}: layer 2 {l2.size / 1e6:.1f} MB gz, {len(changed)} paths, "
        f"{len(deleted)} whiteouts in {time.time() - t0:.0f}s"
    )
    history = [
        f"mmdebstrap --variant=apt {pair.release}  # "
        + ", ".join(s for _, s in suites(pair.release, state)),
        "RUN apt-get update && apt-get install -y --no-install-recommends "
        + " ".join(pair.packages) + " && apt-get clean && rm -rf /var/lib/apt/lists/*",
    ]
    ocitar.write_oci_layout(tmp, [l1, l2], sde, history)
    (tmp / "bench-layers.json").write_text(
        json.dumps({"layer2_paths": changed, "layer2_whiteouts": deleted}) + "\n"
    )
    tmp.rename(out)


def dpkg_versions(rootfs: Path) -> dict[str, dict[str, str]]:
    fmt = (
        "${binary:Package}\t${Version}\t${source:Package}\t${source:Version}\t"
        "${db:Status-Abbrev}\n"
    )
    res = subprocess.run(
        ["dpkg-query", f"--admindir={rootfs}/var/lib/dpkg", "-W", f"-f={fmt}"],
        check=True, capture_output=True, text=True,
    )
    out = {}
    for line in res.stdout.splitlines():
        name, ver, src, srcver, st = line.split("\t")
        if st.strip() == "ii":
            out[name.split(":")[0]] = {"version": ver, "source": src, "source_version": srcver}
    return out


def write_update(work: Path) -> None:
    old = dpkg_versions(work / "debian-old.rootfs")
    new = dpkg_versions(work / "debian-new.rootfs")
    upgraded = {
        p: {"old": old[p]["version"], "new": new[p]["version"], "source": new[p]["source"]}
        for p in sorted(old.keys() & new.keys())
        if old[p]["version"] != new[p]["version"]
    }
    added = {p: new[p]["version"] for p in sorted(new.keys() - old.keys())}
    removed = {p: old[p]["version"] for p in sorted(old.keys() - new.keys())}
    kernels = {
        "old": sorted(p for p in old if p.startswith("linux-image-") and p[12].isdigit()),
        "new": sorted(p for p in new if p.startswith("linux-image-") and p[12].isdigit()),
    }
    srcs = {v["source"] for v in upgraded.values()} | {new[p]["source"] for p in added}
    doc = {
        "old_packages": len(old),
        "new_packages": len(new),
        "upgraded": upgraded,
        "added": added,
        "removed": removed,
        "changed_source_packages": sorted(srcs),
        "kernel_packages": kernels,
        "kernel_abi_changed": kernels["old"] != kernels["new"],
    }
    (work / "update.json").write_text(json.dumps(doc, indent=1) + "\n")
    log(
        f"update.json: {len(upgraded)} upgraded, {len(added)} added, {len(removed)} removed; "
        f"kernel {kernels['old']} -> {kernels['new']}"
    )


def build_state(pair: Pair, state: str, work: Path) -> None:
    base = work / f"debian-{state}.base"
    rootfs = work / f"debian-{state}.rootfs"
    image = work / f"debian-{state}"
    sde_file = work / f"debian-{state}.sde"
    if not sde_file.exists():
        sde = max(suite_date(m, s) for m, s in suites(pair.release, state))
        sde_file.write_text(f"{sde}\n")
    sde = int(sde_file.read_text())
    if not base.exists():
        t0 = time.time()
        build_base(pair, state, base, sde)
        log(f"{state}: base in {time.time() - t0:.0f}s")
    if not rootfs.exists():
        t0 = time.time()
        install_layer(pair, base, rootfs, sde)
        log(f"{state}: install in {time.time() - t0:.0f}s")
    if not (image / "index.json").exists():
        write_image(pair, state, base, rootfs, image, sde)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "work")
    ap.add_argument("--state", choices=["old", "new"], action="append")
    ap.add_argument("--pair", default=DEFAULT_PAIR, choices=[*PAIRS, "all"],
                    help=f"which package set and release (default {DEFAULT_PAIR})")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("corpus.py: needs root (mmdebstrap --mode=root, chroot, mount)", file=sys.stderr)
        return 2
    for name in PAIRS if a.pair == "all" else [a.pair]:
        work = pair_dir(a.out, name)
        work.mkdir(parents=True, exist_ok=True)
        for state in a.state or ["old", "new"]:
            build_state(PAIRS[name], state, work)
        if (work / "debian-old.rootfs").exists() and (work / "debian-new.rootfs").exists():
            write_update(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
