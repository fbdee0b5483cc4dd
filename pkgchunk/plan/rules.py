"""The rules file: which packages and paths form groups, validated before any work.

A rules file is small, hand-written YAML. Every problem is reported as
``FILE:LINE:COL: problem`` (1-based, from pyyaml's node marks), so the file is
walked as a node graph (``yaml.compose``) rather than loaded into plain Python
objects, which would lose the positions. Anchors and aliases are refused: the
schema never needs them, and refusing them removes the alias-bomb problem.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pkgchunk.errors import RulesError
from pkgchunk.pkgdb.model import Ownership
from pkgchunk.safeopen import open_regular

Frequency = Literal["high", "medium", "low"]
GroupBy = Literal["source", "name"]
FREQUENCIES: tuple[Frequency, ...] = ("high", "medium", "low")

#: Refuse rules files larger than this: they are hand-written.
MAX_RULES_BYTES = 1 << 20
#: Bound on YAML events (nodes) and on list lengths: parsing stays cheap.
MAX_EVENTS = 200_000
MAX_ITEMS = 10_000
#: Digits an integer or size may have (Python refuses to convert > 4300).
MAX_INT_CHARS = 30
#: The one default and upper bound of the layer budget, for the rules file and the CLI alike.
MAX_LAYERS_LIMIT = 500
DEFAULT_MAX_LAYERS = 64
DEFAULT_BIG_FILE_THRESHOLD = 16 << 20
#: Name of the bucket appended when the last bucket is not a catch-all.
IMPLIED_CATCH_ALL = "unowned"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}\Z")
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\Z", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

_TAG_NAMES = {
    "tag:yaml.org,2002:str": "a string",
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:seq": "a list",
    "tag:yaml.org,2002:map": "a mapping",
}


@dataclass(frozen=True, slots=True)
class Glob:
    """Compiled glob patterns: fnmatch syntax, case-sensitive, ``*`` also crosses '/'."""

    patterns: tuple[str, ...]
    regex: re.Pattern[str] | None

    @staticmethod
    def of(patterns: Sequence[str]) -> Glob:
        if not patterns:
            return Glob((), None)
        return Glob(
            tuple(patterns),
            re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)),
        )

    def __call__(self, text: str) -> bool:
        return self.regex is not None and self.regex.match(text) is not None


def _path_globs(patterns: Sequence[str]) -> Glob:
    """Path globs: a pattern ``D/*`` also matches the directory ``D`` itself."""
    extra = [p[:-2] for p in patterns if p.endswith("/*") and len(p) > 2]
    return Glob.of([*patterns, *extra]) if patterns else Glob.of(())


@dataclass(frozen=True, slots=True)
class GroupRule:
    """Packages (by name or source glob, or most of their bytes under ``paths``) that
    form one group; its unowned files under ``paths`` join it too."""

    name: str
    packages: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    dedicated: bool = False
    frequency: Frequency | None = None

    def package_glob(self) -> Glob:
        return Glob.of(self.packages)

    def source_glob(self) -> Glob:
        return Glob.of(self.sources)

    def path_glob(self) -> Glob:
        return _path_globs(self.paths)


@dataclass(frozen=True, slots=True)
class BucketRule:
    """Where unowned files go; empty ``paths`` is the catch-all (always last)."""

    name: str
    paths: tuple[str, ...] = ()
    dedicated: bool = False
    frequency: Frequency | None = None

    @property
    def catch_all(self) -> bool:
        return not self.paths

    def path_glob(self) -> Glob:
        return _path_globs(self.paths)


@dataclass(frozen=True, slots=True)
class Rules:
    """A validated rules file. ``buckets`` always ends with a catch-all bucket."""

    source: str
    max_layers: int = DEFAULT_MAX_LAYERS
    group_by: GroupBy = "source"
    groups: tuple[GroupRule, ...] = ()
    buckets: tuple[BucketRule, ...] = (BucketRule(IMPLIED_CATCH_ALL),)
    big_file_threshold: int = DEFAULT_BIG_FILE_THRESHOLD


# --------------------------------------------------------------------------- parsing


class _Ctx:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: object, problem: str) -> RulesError:
        """``where`` is a Node or a pyyaml Mark (either implementation), or None."""
        mark = where.start_mark if isinstance(where, Node) else where
        line, col = getattr(mark, "line", None), getattr(mark, "column", None)
        if not isinstance(line, int) or not isinstance(col, int):
            return RulesError(f"{self.source}: {problem}")
        return RulesError(f"{self.source}:{line + 1}:{col + 1}: {problem}")


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return _TAG_NAMES.get(node.tag, f"a {node.tag} value")


def _mapping(ctx: _Ctx, node: Node, what: str, allowed: Sequence[str]) -> dict[str, Node]:
    if not isinstance(node, MappingNode):
        raise ctx.fail(node, f"{what} must be a mapping, not {_kind(node)}")
    out: dict[str, Node] = {}
    for knode, vnode in node.value:
        if not isinstance(knode, ScalarNode) or knode.tag != "tag:yaml.org,2002:str":
            raise ctx.fail(knode, f"{what}: keys must be strings, not {_kind(knode)}")
        key = str(knode.value)
        if key not in allowed:
            raise ctx.fail(knode, f"{what}: unknown key {key!r} (allowed: {', '.join(allowed)})")
        if key in out:
            raise ctx.fail(knode, f"{what}: duplicate key {key!r}")
        out[key] = vnode
    return out


def _str(ctx: _Ctx, node: Node, what: str) -> str:
    if not isinstance(node, ScalarNode) or node.tag != "tag:yaml.org,2002:str":
        raise ctx.fail(node, f"{what} must be a string, not {_kind(node)} (quote it)")
    value = str(node.value)
    if not value:
        raise ctx.fail(node, f"{what} must not be empty")
    return value


def _int(ctx: _Ctx, node: Node, what: str) -> int:
    if not isinstance(node, ScalarNode) or node.tag != "tag:yaml.org,2002:int":
        raise ctx.fail(node, f"{what} must be an integer, not {_kind(node)}")
    if len(str(node.value)) > MAX_INT_CHARS:
        raise ctx.fail(node, f"{what} is out of range")
    return yaml.SafeLoader("").construct_yaml_int(node)


def _bool(ctx: _Ctx, node: Node, what: str) -> bool:
    if not isinstance(node, ScalarNode) or node.tag != "tag:yaml.org,2002:bool":
        raise ctx.fail(node, f"{what} must be true or false, not {_kind(node)}")
    return bool(yaml.SafeLoader("").construct_yaml_bool(node))


def _choice(ctx: _Ctx, node: Node, what: str, choices: Sequence[str]) -> str:
    if not isinstance(node, ScalarNode) or node.tag != "tag:yaml.org,2002:str":
        raise ctx.fail(node, f"{what} must be one of {', '.join(choices)}, not {_kind(node)}")
    value = str(node.value)
    if value not in choices:
        raise ctx.fail(node, f"{what} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _list(ctx: _Ctx, node: Node, what: str) -> list[Node]:
    if not isinstance(node, SequenceNode):
        raise ctx.fail(node, f"{what} must be a list, not {_kind(node)}")
    if len(node.value) > MAX_ITEMS:
        raise ctx.fail(node, f"{what}: more than {MAX_ITEMS} items")
    return list(node.value)


def _name(ctx: _Ctx, node: Node, what: str) -> str:
    value = _str(ctx, node, what)
    if not _NAME_RE.match(value):
        raise ctx.fail(
            node,
            f"{what} {value!r} must be 1-64 characters of letters, digits, '.', '_', '+', '-'",
        )
    return value


def _globs(ctx: _Ctx, node: Node, what: str, *, paths: bool = False) -> tuple[str, ...]:
    out: list[str] = []
    for item in _list(ctx, node, what):
        pat = _str(ctx, item, f"{what} item")
        if paths:
            pat = pat.lstrip("/")
            parts = pat.split("/")
            if not pat or ".." in parts or "" in parts[:-1]:
                raise ctx.fail(item, f"{what} item {pat!r} is not a relative path glob")
        out.append(pat)
    return tuple(out)


def parse_size(text: str) -> int | None:
    """'16M' -> 16 MiB, '1.5G', '4096', '512KiB'; None when malformed. Units are binary."""
    m = _SIZE_RE.match(text.strip())
    if m is None or len(m.group(1)) > MAX_INT_CHARS:
        return None
    value = float(m.group(1)) * _UNITS[m.group(2).upper()]
    return int(value) if math.isfinite(value) else None


def _size(ctx: _Ctx, node: Node, what: str) -> int:
    if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:int":
        value = _int(ctx, node, what)
    elif isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:str":
        parsed = parse_size(str(node.value))
        if parsed is None:
            raise ctx.fail(node, f"{what} {node.value!r} is not a size (like 16M, 512K, 1G)")
        value = parsed
    else:
        raise ctx.fail(node, f"{what} must be a size in bytes or like '16M', not {_kind(node)}")
    if value < 0:
        raise ctx.fail(node, f"{what} must not be negative")
    return value


_GROUP_KEYS = ("name", "packages", "sources", "paths", "dedicated", "frequency")
_BUCKET_KEYS = ("name", "paths", "dedicated", "frequency")
_TOP_KEYS = ("version", "max_layers", "group_by", "groups", "buckets", "big_file_threshold")


def _group(ctx: _Ctx, node: Node, index: int) -> GroupRule:
    m = _mapping(ctx, node, f"groups[{index}]", _GROUP_KEYS)
    if "name" not in m:
        raise ctx.fail(node, f"groups[{index}]: missing 'name'")
    name = _name(ctx, m["name"], f"groups[{index}].name")
    what = f"group {name!r}"
    rule = GroupRule(
        name=name,
        packages=_globs(ctx, m["packages"], f"{what}: packages") if "packages" in m else (),
        sources=_globs(ctx, m["sources"], f"{what}: sources") if "sources" in m else (),
        paths=_globs(ctx, m["paths"], f"{what}: paths", paths=True) if "paths" in m else (),
        dedicated=_bool(ctx, m["dedicated"], f"{what}: dedicated") if "dedicated" in m else False,
        frequency=cast(Frequency, _choice(ctx, m["frequency"], f"{what}: frequency", FREQUENCIES))
        if "frequency" in m
        else None,
    )
    if not (rule.packages or rule.sources or rule.paths):
        raise ctx.fail(node, f"{what} matches nothing: give packages, sources or paths")
    return rule


def _bucket(ctx: _Ctx, node: Node, index: int, last: bool) -> BucketRule:
    m = _mapping(ctx, node, f"buckets[{index}]", _BUCKET_KEYS)
    if "name" not in m:
        raise ctx.fail(node, f"buckets[{index}]: missing 'name'")
    name = _name(ctx, m["name"], f"buckets[{index}].name")
    what = f"bucket {name!r}"
    paths = _globs(ctx, m["paths"], f"{what}: paths", paths=True) if "paths" in m else ()
    if "*" in paths:
        if len(paths) > 1:
            raise ctx.fail(m["paths"], f"{what}: '*' already matches every path")
        paths = ()
    if not paths and not last:
        raise ctx.fail(node, f"{what}: only the last bucket may be a catch-all (no paths)")
    return BucketRule(
        name=name,
        paths=paths,
        dedicated=_bool(ctx, m["dedicated"], f"{what}: dedicated") if "dedicated" in m else False,
        frequency=cast(Frequency, _choice(ctx, m["frequency"], f"{what}: frequency", FREQUENCIES))
        if "frequency" in m
        else None,
    )


def _yaml_problem(err: yaml.MarkedYAMLError) -> str:
    problem = str(err.problem or "not valid YAML")
    return f"{err.context}: {problem}" if err.context else problem


def _check_plain(ctx: _Ctx, text: str) -> None:
    """Refuse anchors, aliases and oversized documents before building any node graph."""
    count = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            count += 1
            if count > MAX_EVENTS:
                raise ctx.fail(event.start_mark, f"more than {MAX_EVENTS} YAML nodes")
            if isinstance(event, yaml.AliasEvent):
                raise ctx.fail(
                    event.start_mark,
                    "YAML aliases are not allowed (quote globs that start with '*')",
                )
            if getattr(event, "anchor", None) is not None:
                raise ctx.fail(
                    event.start_mark,
                    "YAML anchors are not allowed (quote globs that start with '&')",
                )
    except yaml.MarkedYAMLError as err:
        raise ctx.fail(err.problem_mark, _yaml_problem(err)) from None
    except yaml.YAMLError as err:
        raise ctx.fail(None, f"not valid YAML: {err}") from None


def _name_node(node: Node) -> Node:
    """The value node of a validated item's 'name' key (for pointing at duplicates)."""
    found: Node = next(v for k, v in node.value if k.value == "name")
    return found


def parse_rules(text: str, source: str) -> Rules:
    """Validate rules text; ``source`` names the file in messages."""
    ctx = _Ctx(source)
    _check_plain(ctx, text)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise RulesError(f"{source}: nested too deeply; not a rules file") from None
    except yaml.MarkedYAMLError as err:
        raise ctx.fail(err.problem_mark, _yaml_problem(err)) from None
    except yaml.YAMLError as err:
        raise ctx.fail(None, f"not valid YAML: {err}") from None
    if root is None:
        raise RulesError(f"{source}:1:1: empty rules file (it needs at least 'version: 1')")
    top = _mapping(ctx, root, "rules file", _TOP_KEYS)
    if "version" not in top:
        raise ctx.fail(root, "missing 'version' (this pkgchunk reads version: 1)")
    version = _int(ctx, top["version"], "version")
    if version != 1:
        raise ctx.fail(top["version"], f"unsupported version {version} (this pkgchunk reads 1)")

    max_layers = DEFAULT_MAX_LAYERS
    if "max_layers" in top:
        max_layers = _int(ctx, top["max_layers"], "max_layers")
        if not 1 <= max_layers <= MAX_LAYERS_LIMIT:
            raise ctx.fail(
                top["max_layers"], f"max_layers must be between 1 and {MAX_LAYERS_LIMIT}"
            )
    group_by: GroupBy = "source"
    if "group_by" in top:
        group_by = cast(GroupBy, _choice(ctx, top["group_by"], "group_by", ("source", "name")))
    threshold = DEFAULT_BIG_FILE_THRESHOLD
    if "big_file_threshold" in top:
        threshold = _size(ctx, top["big_file_threshold"], "big_file_threshold")

    seen: dict[str, Node] = {}

    def unique(name: str, node: Node) -> None:
        if name in seen:
            first = seen[name].start_mark
            raise ctx.fail(node, f"name {name!r} is already used at line {first.line + 1}")
        seen[name] = node

    groups: list[GroupRule] = []
    if "groups" in top:
        for i, gnode in enumerate(_list(ctx, top["groups"], "groups")):
            rule = _group(ctx, gnode, i)
            unique(rule.name, _name_node(gnode))
            groups.append(rule)
    buckets: list[BucketRule] = []
    if "buckets" in top:
        items = _list(ctx, top["buckets"], "buckets")
        for i, bnode in enumerate(items):
            bucket = _bucket(ctx, bnode, i, last=i == len(items) - 1)
            unique(bucket.name, _name_node(bnode))
            buckets.append(bucket)
    if not buckets or not buckets[-1].catch_all:
        if IMPLIED_CATCH_ALL in seen:
            raise ctx.fail(
                seen[IMPLIED_CATCH_ALL],
                f"name {IMPLIED_CATCH_ALL!r} is reserved for the implied catch-all bucket",
            )
        buckets.append(BucketRule(IMPLIED_CATCH_ALL))
    return Rules(
        source=source,
        max_layers=max_layers,
        group_by=group_by,
        groups=tuple(groups),
        buckets=tuple(buckets),
        big_file_threshold=threshold,
    )


def _decode(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        col = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise RulesError(f"{source}:{line}:{col}: not UTF-8 text") from None


# --------------------------------------------------------------------------- shipped rules


def _shipped_dirs() -> list[Path]:
    """Where shipped rules live: the repo's ``rules/`` in a source checkout, else the
    copy setuptools installs as package data (``pkgchunk/rules_data``)."""
    package = Path(__file__).resolve().parent.parent
    out: list[Path] = []
    repo = package.parent
    if (repo / "pyproject.toml").is_file() and (repo / "rules").is_dir():
        out.append(repo / "rules")
    out.append(package / "rules_data")
    return out


def shipped_rules() -> list[str]:
    """Names accepted by ``load_rules`` besides paths (e.g. 'debian')."""
    names: set[str] = set()
    for d in _shipped_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def _shipped_path(name: str) -> Path | None:
    for d in _shipped_dirs():
        candidate = d / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    return None


def _read(path: Path, label: str) -> Rules:
    try:
        with open_regular(os.fspath(path)) as f:
            raw = f.read(MAX_RULES_BYTES + 1)
    except OSError as err:
        raise RulesError(f"{label}: cannot read: {err.strerror or err}") from None
    if len(raw) > MAX_RULES_BYTES:
        raise RulesError(f"{label}: larger than {MAX_RULES_BYTES} bytes; not a rules file")
    return parse_rules(_decode(raw, label), label)


def load_rules(name_or_path: str | os.PathLike[str]) -> Rules:
    """Load a rules file by path, or a shipped one by name ('debian', 'fedora-bootc', ...).

    An argument with a '/' or a .yaml/.yml suffix, or naming an existing file, is a path.
    """
    text = os.fspath(name_or_path)
    path = Path(text)
    if "/" in text or text.endswith((".yaml", ".yml")) or path.is_file():
        return _read(path, text)
    shipped = _shipped_path(text)
    if shipped is None:
        names = ", ".join(shipped_rules()) or "none found"
        raise RulesError(f"{text}: no such rules file or shipped rules (shipped: {names})")
    return _read(shipped, f"{shipped}")


_RPM_FAMILY = (
    "fedora-release*",
    "fedora-repos*",
    "redhat-release*",
    "centos-stream-release*",
    "centos-release*",
    "almalinux-release*",
    "rocky-release*",
    "bootc",
    "rpm-ostree",
)


def default_rules_name(ownership: Ownership) -> str:
    """Which shipped rules fit the image: fedora-bootc for Fedora/RHEL-family rpm
    images, debian for dpkg images, generic otherwise."""
    formats = {db.format for db in ownership.dbs}
    if any(f.startswith("rpm") for f in formats):
        family = Glob.of(_RPM_FAMILY)
        if any(family(p.name) for p in ownership.packages.values()):
            return "fedora-bootc"
        return "generic"
    if any(f.startswith("dpkg") for f in formats):
        return "debian"
    return "generic"
