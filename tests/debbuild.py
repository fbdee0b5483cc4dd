"""Build tiny .debs with dpkg-deb, install them into a scratch root with the real dpkg, and
ask dpkg-query what it thinks (the independent truth the dpkg reader is checked against).

Also builds FileTrees by hand from files read in place (the shared fixtures).
"""

from __future__ import annotations

import gzip
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from pkgchunk.tree import DataRef, Entry, FileTree, ancestors
from tests.helpers import require_tool


def build_deb(
    workdir: Path,
    name: str,
    version: str,
    *,
    arch: str = "all",
    files: Mapping[str, bytes] | None = None,
    symlinks: Mapping[str, str] | None = None,
    conffiles: Sequence[str] = (),
    fields: Mapping[str, str] | None = None,
    changelog: str | None = None,
    mtimes: Mapping[str, int] | None = None,
) -> Path:
    """A .deb holding ``files`` (absolute path -> content) and ``symlinks`` (path -> target).

    ``changelog`` becomes /usr/share/doc/NAME/changelog.Debian.gz; ``fields`` are extra
    control fields (Source, Multi-Arch, ...). ``mtimes`` (absolute path -> time) pins files'
    mtimes, as upstream files older than SOURCE_DATE_EPOCH keep theirs in a real .deb.
    """
    require_tool("dpkg-deb")
    tag = f"{name}_{version.replace(':', '%')}_{arch}"
    src = workdir / f"build-{tag}"
    (src / "DEBIAN").mkdir(parents=True)
    control = {
        "Package": name,
        "Version": version,
        "Architecture": arch,
        "Maintainer": "Test <test@example.org>",
        **(fields or {}),
        "Description": f"test package {name}",
    }
    (src / "DEBIAN" / "control").write_text("".join(f"{k}: {v}\n" for k, v in control.items()))
    if conffiles:
        (src / "DEBIAN" / "conffiles").write_text("".join(f"{c}\n" for c in conffiles))
    all_files = dict(files or {})
    if changelog is not None:
        all_files[f"/usr/share/doc/{name}/changelog.Debian.gz"] = gzip.compress(
            changelog.encode(), mtime=0
        )
    for path, data in all_files.items():
        dest = src / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        if mtimes and path in mtimes:
            os.utime(dest, (mtimes[path], mtimes[path]))
    for path, target in (symlinks or {}).items():
        dest = src / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(target)
    out = workdir / f"{tag}.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(src), str(out)],
        check=True,
        capture_output=True,
    )
    return out


def new_root(root: Path) -> Path:
    """An empty dpkg root (admindir with an empty status)."""
    admin = root / "var/lib/dpkg"
    for d in ("info", "updates", "triggers"):
        (admin / d).mkdir(parents=True, exist_ok=True)
    (admin / "status").touch()
    return root


def dpkg(root: Path, *args: str) -> str:
    """Run the real dpkg on ``root`` (not chrooted; maintainer scripts would run on the host)."""
    require_tool("dpkg")
    cmd = ["dpkg", f"--root={root}", "--force-not-root", "--force-script-chrootless", *args]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed: {res.stderr.strip()}")
    return res.stdout


def install(root: Path, *debs: Path) -> None:
    dpkg(root, "-i", *map(str, debs))


def divert(root: Path, *args: str) -> None:
    require_tool("dpkg-divert")
    subprocess.run(["dpkg-divert", f"--root={root}", *args], check=True, capture_output=True)


def native_arch() -> str:
    require_tool("dpkg")
    return subprocess.run(
        ["dpkg", "--print-architecture"], check=True, capture_output=True, text=True
    ).stdout.strip()


def query_packages(admindir: Path) -> set[tuple[str, str, str, str]]:
    """(name, version, arch, source) of every installed package, from dpkg-query."""
    require_tool("dpkg-query")
    fmt = "${db:Status-Status}\t${Package}\t${Version}\t${Architecture}\t${source:Package}\n"
    out = subprocess.run(
        ["dpkg-query", f"--admindir={admindir}", "-W", "-f", fmt],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = set()
    for line in out.splitlines():
        state, name, version, arch, source = line.split("\t")
        if state == "installed":
            rows.add((name, version, arch, source))
    return rows


def query_owners(admindir: Path, paths: Sequence[str]) -> dict[str, set[str]]:
    """Absolute path -> owners ('pkg' or 'pkg:arch' as dpkg-query -S prints them)."""
    require_tool("dpkg-query")
    raw = subprocess.run(
        ["dpkg-query", f"--admindir={admindir}", "-S", *paths],
        capture_output=True,
        check=False,
    ).stdout
    owners: dict[str, set[str]] = {}
    for line in os.fsdecode(raw).splitlines():
        if line.startswith("diversion by "):
            continue
        names, _, rest = line.partition(": /")
        owners.setdefault("/" + rest, set()).update(n.strip() for n in names.split(","))
    return owners


def query_listed(admindir: Path) -> dict[str, list[str]]:
    """'pkg:arch' -> the absolute paths dpkg-query -L prints for it (no diversion notes)."""
    out: dict[str, list[str]] = {}
    for name, _version, arch, _source in query_packages(admindir):
        key = f"{name}:{arch}"
        text = subprocess.run(
            ["dpkg-query", f"--admindir={admindir}", "-L", key],
            check=True,
            capture_output=True,
        ).stdout
        out[key] = [os.fsdecode(line) for line in text.split(b"\n") if line.startswith(b"/")]
    return out


def hand_tree(
    files: Mapping[str, Path],
    *,
    dirs: Sequence[str] = (),
    symlinks: Mapping[str, str] | None = None,
    label: str = "hand",
) -> FileTree:
    """A FileTree whose regular files are host files read in place; parents are added."""
    tree = FileTree(label=label)

    def add_parents(path: str) -> None:
        for a in ancestors(path):
            if a not in tree.entries:
                tree.entries[a] = Entry(a, "dir", 0o755)

    for d in dirs:
        add_parents(d)
        tree.entries.setdefault(d, Entry(d, "dir", 0o755))
    for path, target in (symlinks or {}).items():
        add_parents(path)
        tree.entries[path] = Entry(path, "sym", 0o777, target=target)
    for path, host in files.items():
        add_parents(path)
        size = host.stat().st_size
        tree.entries[path] = Entry(path, "reg", 0o644, size=size, data=DataRef(str(host)))
    return tree


def admindir_files(admindir: Path, under: str = "var/lib/dpkg") -> dict[str, Path]:
    """Tree path -> host file for every file of a dpkg admindir read in place."""
    out: dict[str, Path] = {}
    for dirpath, _dirs, names in os.walk(admindir):
        for n in names:
            host = Path(dirpath) / n
            out[f"{under}/{host.relative_to(admindir).as_posix()}"] = host
    return out
