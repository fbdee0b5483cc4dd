"""dpkg databases: ``/var/lib/dpkg`` (status + info/*.list) and distroless ``status.d``.

Only the image's files are read (never the host's dpkg). The status file is parsed with
python-debian after every line has been checked, because deb822 parsing silently drops
lines it does not understand and a corrupt database must not pass for a small one.

``PkgFile.path`` is where the file really is: a path that another package diverts
(``/var/lib/dpkg/diversions``) is reported at its diverted-to name. dpkg's per-package
files (``info/PKG.list``, ``info/PKG:ARCH.postinst``, distroless ``status.d/PKG``) are
added to the package's files: they change exactly when the package does. Everything else
under the admin directory is the database itself (``PackageDb.paths``).
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from debian.deb822 import Deb822

from pkgchunk.errors import PkgchunkError, PkgdbError, PkgdbWarning
from pkgchunk.pkgdb.changelog import package_times
from pkgchunk.pkgdb.model import (
    FLAG_CONFIG,
    MAX_DB_FILES,
    MAX_DB_PATH_BYTES,
    Format,
    Package,
    PackageDb,
    PackageDbReader,
    PkgFile,
)
from pkgchunk.tree import FileTree, decode_path, parent

ADMINDIR = "var/lib/dpkg"

#: Bounds on what is read into memory from one database file.
MAX_STATUS_BYTES = 256 << 20
MAX_LIST_BYTES = 64 << 20
#: Paragraphs in one status file (all of Debian is ~65k packages per architecture): each
#: costs ~2 KiB of memory, so 256 MiB of "Package: x" lines would otherwise need ~50 GiB.
MAX_PARAGRAPHS = 100_000

#: dpkg states in which the package's files are on disk (``not-installed`` and
#: ``config-files`` packages are not installed: only leftover conffiles remain).
INSTALLED_STATES = frozenset(
    {"installed", "triggers-pending", "triggers-awaited", "half-configured", "unpacked"}
)

_FIELD = re.compile(r"[!\"$-,.-9;-~][!-9;-~]*:")
_EPOCH = re.compile(r"(\d+):(.+)")
#: dpkg's rule for package names (lib/dpkg/parsehelp.c): alphanumeric first, then "+-._".
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9+._-]*")
_SOURCE = re.compile(r"\s*(\S+?)\s*(?:\((\S*)\)\s*)?$")


@dataclass(frozen=True, slots=True)
class Diversion:
    """``path`` of every package but ``by`` lives at ``to`` (``by`` '' = a local diversion)."""

    to: str
    by: str


def read_bytes(tree: FileTree, path: str, limit: int) -> bytes:
    """A database file's content (through the image's symlinks), at most ``limit`` bytes."""
    real = tree.resolve(path)
    entry = tree.entries.get(real) if real is not None else None
    if entry is None or entry.kind != "reg" or entry.data is None:
        raise PkgdbError(f"{path}: not a regular file")
    if entry.size > limit:
        raise PkgdbError(f"{path}: {entry.size} bytes, more than the {limit} allowed")
    try:
        with tree.open(real or path) as f:
            data = f.read()
    except OSError as err:
        raise PkgdbError(f"{path}: cannot read: {err.strerror or err}") from err
    if len(data) != entry.size:
        raise PkgdbError(f"{path}: truncated ({len(data)} of {entry.size} bytes)")
    return data


def parse_stanzas(data: bytes, label: str) -> list[Deb822]:
    """The deb822 paragraphs of a status-like file that carry a ``Package`` field.

    Raises PkgdbError for binary junk, non-UTF-8 text, or more than one malformed
    paragraph (or only malformed ones); a single odd paragraph among good ones is
    skipped with a PkgdbWarning.
    """
    nul = data.find(b"\0")
    if nul >= 0:
        raise PkgdbError(f"{label}: binary data (NUL byte at offset {nul}), not a dpkg status file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PkgdbError(f"{label}: not valid UTF-8 (byte offset {err.start})") from None
    good: list[Deb822] = []
    odd: list[str] = []
    for count, (lineno, lines) in enumerate(_paragraphs(text), 1):
        if count > MAX_PARAGRAPHS:
            raise PkgdbError(f"{label}: more than {MAX_PARAGRAPHS} paragraphs")
        problem = _check_paragraph(lines)
        para = Deb822(lines) if not problem else None
        name = para.get("Package", "").strip() if para is not None else ""
        if para is not None and not name:
            problem = "paragraph without a Package field"
        elif para is not None and not _NAME.fullmatch(name):
            problem = f"bad package name {name[:40]!r}"  # it becomes paths and messages
        if problem or para is None:
            odd.append(f"{label}: line {lineno}: {problem}")
            continue
        good.append(para)
    if len(odd) > 1 or (odd and not good):
        more = f" (and {len(odd) - 1} more bad paragraphs)" if len(odd) > 1 else ""
        raise PkgdbError(f"{odd[0]}{more}; not a dpkg status file")
    for msg in odd:
        warnings.warn(f"{msg}; skipped", PkgdbWarning, stacklevel=2)
    return good


def _paragraphs(text: str) -> Iterator[tuple[int, list[str]]]:
    """(first line number, lines) of each blank-line separated paragraph."""
    cur: list[str] = []
    start = 0
    for n, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            if cur:
                yield start, cur
                cur = []
            continue
        if not cur:
            start = n
        cur.append(line)
    if cur:
        yield start, cur


def _check_paragraph(lines: list[str]) -> str:
    seen: set[str] = set()
    for i, line in enumerate(lines):
        if line[0] in " \t":
            if i == 0:
                return "continuation line without a field"
            continue
        m = _FIELD.match(line)
        if not m:
            return f"not a 'Field: value' line: {line[:40]!r}"
        field = m.group().lower()
        if field in seen:  # deb822 would silently keep the last one
            return f"duplicate field {m.group()[:-1]!r}"
        seen.add(field)
    return ""


def is_installed(para: Deb822) -> bool:
    """True when the package's files are on disk (no Status field: distroless, installed)."""
    status = para.get("Status")
    if status is None:
        return True
    words = status.split()
    return len(words) == 3 and words[2] in INSTALLED_STATES


def split_source(field: str, name: str) -> str:
    """'util-linux (2.38.1-5)' -> 'util-linux'; an absent Source means the package itself."""
    m = _SOURCE.match(field)
    return m.group(1) if m and field.strip() else name


def split_epoch(version: str) -> tuple[int | None, str]:
    m = _EPOCH.fullmatch(version)
    if m is None:
        return None, version
    return int(m.group(1)), m.group(2)


def package_from(para: Deb822, label: str, fmt: Format) -> Package:
    """Package fields of one stanza (files are attached later)."""
    name = para["Package"].strip()
    version = para.get("Version", "").strip()
    epoch, upstream = split_epoch(version)
    try:
        kib = int(para.get("Installed-Size", "0").strip() or "0")
    except ValueError:
        warnings.warn(f"{label}: {name}: bad Installed-Size", PkgdbWarning, stacklevel=2)
        kib = 0
    return Package(
        name=name,
        version=upstream,
        epoch=epoch,
        arch=para.get("Architecture", "").strip(),
        source=split_source(para.get("Source", ""), name),
        size=max(kib, 0) * 1024,
        db=fmt,
    )


def read_diversions(tree: FileTree, admindir: str) -> dict[str, Diversion]:
    """Diverted path -> where it goes and which package may still use it."""
    path = f"{admindir}/diversions"
    if tree.resolve(path) is None:
        return {}
    data = read_bytes(tree, path, MAX_LIST_BYTES)
    lines = decode_path(data).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 3:
        raise PkgdbError(f"{path}: {len(lines)} lines, not triples of (path, divert-to, package)")
    out: dict[str, Diversion] = {}
    for i in range(0, len(lines), 3):
        src, dst, by = lines[i : i + 3]
        if not src.startswith("/") or not dst.startswith("/"):
            raise PkgdbError(f"{path}: line {i + 1}: diversion paths must be absolute")
        out[src] = Diversion(to=dst, by="" if by == ":" else by)
    return out


def read_list(tree: FileTree, path: str) -> list[str]:
    """The absolute paths of a ``.list`` file (the root '/.' left out)."""
    data = read_bytes(tree, path, MAX_LIST_BYTES)
    if b"\0" in data:
        raise PkgdbError(f"{path}: binary data, not a file list")
    out: list[str] = []
    for n, line in enumerate(decode_path(data).split("\n"), 1):
        if not line or line == "/.":
            continue
        if not line.startswith("/"):
            raise PkgdbError(f"{path}: line {n}: not an absolute path: {line[:60]!r}")
        out.append(line)
    return out


def read_md5sums(tree: FileTree, path: str) -> dict[str, str]:
    """Absolute path -> md5 hex; malformed lines are ignored (they are only a checksum)."""
    out: dict[str, str] = {}
    for line in decode_path(read_bytes(tree, path, MAX_LIST_BYTES)).split("\n"):
        digest, _, rel = line.partition("  ")
        if len(digest) == 32 and rel:
            out["/" + rel.lstrip("/")] = digest.lower()
    return out


def read_conffiles(tree: FileTree, path: str) -> set[str]:
    """Conffile paths ('remove-on-upgrade /etc/x' style flags are dropped)."""
    out: set[str] = set()
    for line in decode_path(read_bytes(tree, path, MAX_LIST_BYTES)).split("\n"):
        line = line.strip()
        if not line.startswith("/"):
            line = line.partition(" ")[2].strip()
        if line.startswith("/"):
            out.add(line)
    return out


def _files(
    listed: list[str], md5: dict[str, str], conf: set[str], extra: list[str]
) -> tuple[PkgFile, ...]:
    seen: set[str] = set()
    out: list[PkgFile] = []
    for p in [*listed, *extra]:
        if p in seen:
            continue
        seen.add(p)
        out.append(PkgFile(path=p, digest=md5.get(p, ""), flags=FLAG_CONFIG if p in conf else 0))
    return tuple(out)


def _divert(paths: list[str], name: str, diversions: dict[str, Diversion]) -> list[str]:
    if not diversions:
        return paths
    out = []
    for p in paths:
        d = diversions.get(p)
        out.append(d.to if d is not None and d.by != name else p)
    return out


def _under(tree: FileTree, directory: str) -> list[str]:
    prefix = directory + "/"
    return [p for p in tree.entries if p.startswith(prefix)]


def _resolved_admindir(tree: FileTree) -> str | None:
    admin = tree.resolve(ADMINDIR)
    if admin is None:
        return None
    entry = tree.entries.get(admin)
    return admin if entry is not None and entry.kind == "dir" else None


class DpkgReader:
    """``var/lib/dpkg/status`` plus ``info/PKG[:ARCH].{list,md5sums,conffiles}`` and diversions."""

    format: Format = "dpkg"

    def detect(self, tree: FileTree) -> list[str]:
        admin = _resolved_admindir(tree)
        if admin is None or f"{admin}/status" not in tree.entries:
            return []
        return [f"{admin}/status"]

    def read(self, tree: FileTree, path: str) -> PackageDb:
        try:
            return self._read(tree, path)
        except PkgchunkError as err:
            raise PkgdbError(f"{tree.label or 'image'}: {err}") from err

    def _read(self, tree: FileTree, path: str) -> PackageDb:
        admin = parent(path)
        info = f"{admin}/info"
        stanzas = parse_stanzas(read_bytes(tree, path, MAX_STATUS_BYTES), path)
        diversions = read_diversions(tree, admin)
        under = _under(tree, admin)
        info_files: dict[str, list[str]] = {}  # 'pkg' or 'pkg:arch' -> its info/ paths
        for p in under:
            if parent(p) == info:
                stem, dot, _ext = p[len(info) + 1 :].rpartition(".")
                if dot and stem:
                    info_files.setdefault(stem, []).append(p)
        packages: dict[str, Package] = {}
        listed_files = listed_bytes = 0
        for para in stanzas:
            if not is_installed(para):
                continue
            pkg = package_from(para, path, self.format)
            if pkg.key in packages:
                warnings.warn(f"{path}: {pkg.key} listed twice", PkgdbWarning, stacklevel=2)
                continue
            qualified = f"{pkg.name}:{pkg.arch}"
            stem = qualified if qualified in info_files else pkg.name
            mine = sorted(info_files.get(stem, []))
            base = f"{info}/{stem}"
            has = tree.entries.__contains__
            listed = read_list(tree, f"{base}.list") if has(f"{base}.list") else []
            listed_files += len(listed)
            listed_bytes += sum(map(len, listed))
            if listed_files > MAX_DB_FILES or listed_bytes > MAX_DB_PATH_BYTES:
                raise PkgdbError(f"{info}: the .list files name more than {MAX_DB_FILES}"
                                 f" files or {MAX_DB_PATH_BYTES} bytes of paths")
            md5 = read_md5sums(tree, f"{base}.md5sums") if has(f"{base}.md5sums") else {}
            conf = read_conffiles(tree, f"{base}.conffiles") if has(f"{base}.conffiles") else set()
            listed = _divert(listed, pkg.name, diversions)
            conf = set(_divert(sorted(conf), pkg.name, diversions))
            moved = _divert(list(md5), pkg.name, diversions)
            md5 = {d: md5[p] for p, d in zip(md5, moved, strict=True)}
            files = _files(listed, md5, conf, ["/" + p for p in mine])
            packages[pkg.key] = _with(pkg, tree, files)
        # What a package ships (dpkg's own directories, its info files) is not the database.
        shipped = {f.path[1:] for pkg in packages.values() for f in pkg.files}
        paths = tuple(sorted(p for p in [admin, *under] if p not in shipped))
        return PackageDb(
            format=self.format, path=path, packages=tuple(packages.values()), paths=paths
        )


class StatusDReader:
    """Distroless ``var/lib/dpkg/status.d/NAME`` (+ ``NAME.md5sums``, relative paths)."""

    format: Format = "dpkg-status.d"

    def detect(self, tree: FileTree) -> list[str]:
        admin = _resolved_admindir(tree)
        if admin is None:
            return []
        path = tree.resolve(f"{admin}/status.d")
        entry = tree.entries.get(path) if path is not None else None
        return [path] if path is not None and entry is not None and entry.kind == "dir" else []

    def read(self, tree: FileTree, path: str) -> PackageDb:
        try:
            return self._read(tree, path)
        except PkgchunkError as err:
            raise PkgdbError(f"{tree.label or 'image'}: {err}") from err

    def _read(self, tree: FileTree, path: str) -> PackageDb:
        names = sorted(p for p in tree.entries if parent(p) == path)
        packages: dict[str, Package] = {}
        for p in names:
            if p.endswith(".md5sums") or tree.entries[p].kind == "dir":
                continue
            stanzas = parse_stanzas(read_bytes(tree, p, MAX_STATUS_BYTES), p)
            base = p.rpartition("/")[2]
            installed = [para for para in stanzas if is_installed(para)]
            # The stanza file and its .md5sums belong to the package named like the file
            # (else to the file's first package).
            names_here = [para["Package"].strip() for para in installed]
            owner = base if base in names_here else (names_here[0] if names_here else "")
            for para in installed:
                pkg = package_from(para, p, self.format)
                if pkg.key in packages:
                    warnings.warn(f"{p}: {pkg.key} listed twice", PkgdbWarning, stacklevel=2)
                    continue
                md5: dict[str, str] = {}
                extra: list[str] = []
                if pkg.name == owner:
                    owner = ""
                    extra = ["/" + p]
                    if f"{p}.md5sums" in tree.entries:
                        md5 = read_md5sums(tree, f"{p}.md5sums")
                        extra.append(f"/{p}.md5sums")
                files = _files(sorted(md5), md5, set(), extra)
                packages[pkg.key] = _with(pkg, tree, files)
        owned = {f.path[1:] for pkg in packages.values() for f in pkg.files}
        paths = tuple(sorted({path, *(p for p in names if p not in owned)}))
        return PackageDb(
            format=self.format, path=path, packages=tuple(packages.values()), paths=paths
        )


def _with(pkg: Package, tree: FileTree, files: tuple[PkgFile, ...]) -> Package:
    return dataclasses.replace(pkg, files=files, changelog_times=package_times(tree, pkg.name))


READERS: list[PackageDbReader] = [DpkgReader(), StatusDReader()]
