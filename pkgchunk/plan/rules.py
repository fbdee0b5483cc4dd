"""The rules file: which packages and paths form groups, validated before any work.

A rules file is small, hand-written YAML. Every problem is reported as
``FILE:LINE:COL: problem`` (1-based, from pyyaml's node marks), so the file is
walked as a node graph (``yaml.compose``) rather than loaded into plain Python
objects, which would lose the positions. Anchors and aliases are refused: the
schema never needs them, and refusing them removes the alias-bomb problem.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
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
#: Package groups at least this big are split into parts by file behaviour; 0 disables (the
#: default: on the measured real updates splitting cost more than it saved, docs/rules.md).
DEFAULT_SPLIT_THRESHOLD = 0
#: Name of the bucket appended when the last bucket is not a catch-all.
IMPLIED_CATCH_ALL = "unowned"
#: How deep ``extends`` chains may go (a chain is a few files; deeper is a mistake).
MAX_EXTENDS_DEPTH = 8
#: Errors of one file reported at once; the rest are counted.
MAX_ERRORS = 20

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}\Z")
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([KMGTkmgt])(?:iB)?)?\Z")
#: '16MB', '1 GB': decimal-looking units, refused rather than silently read as binary.
_DECIMAL_SIZE_RE = re.compile(r"\d+(?:\.\d+)?\s*[KMGTkmgt][Bb]\Z")
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
    #: ``FILE:LINE`` of the group's entry (for warnings); not part of its identity.
    origin: str = field(default="", compare=False)
    #: From a shipped file: written for a whole image family, so matching nothing in
    #: one image is expected, not a typo.
    shipped: bool = field(default=False, compare=False)

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
    origin: str = field(default="", compare=False)

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
    #: The chain of files this one extends, nearest first (``extends:``).
    extends: tuple[str, ...] = ()
    #: Package groups at least this big are split by how their files behave (plan/split.py).
    split_threshold: int = DEFAULT_SPLIT_THRESHOLD
    #: Layers of ``max_layers`` kept for patch layers (plan/patch.py; ``--patch-layers``).
    patch_layers: int = 0


# --------------------------------------------------------------------------- parsing


class _Ctx:
    """Where messages point, and the errors gathered so far: independent problems (two
    bad groups, an unknown key and a bad value) are all reported at once."""

    def __init__(self, source: str, shipped: bool = False) -> None:
        self.source = source
        self.shipped = shipped
        self.errors: list[str] = []

    def origin(self, node: Node) -> str:
        return f"{self.source}:{node.start_mark.line + 1}"

    @contextlib.contextmanager
    def collect(self) -> Iterator[None]:
        """Record a RulesError raised inside and go on with the next independent part."""
        try:
            yield
        except RulesError as err:
            self.errors.extend(str(err).splitlines())

    def check(self) -> None:
        """Raise every gathered error as one RulesError, one problem per line."""
        if not self.errors:
            return
        shown = self.errors[:MAX_ERRORS]
        if len(self.errors) > MAX_ERRORS:
            shown.append(f"{self.source}: {len(self.errors) - MAX_ERRORS} more errors")
        raise RulesError("\n".join(shown))

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
    """The known keys; unknown and duplicate keys are recorded as errors, not fatal."""
    if not isinstance(node, MappingNode):
        hint = ""
        if isinstance(node, ScalarNode) and ":" in str(node.value):
            hint = " (put a space after ':')"
        raise ctx.fail(node, f"{what} must be a mapping, not {_kind(node)}{hint}")
    out: dict[str, Node] = {}
    for knode, vnode in node.value:
        with ctx.collect():
            if not isinstance(knode, ScalarNode) or knode.tag != "tag:yaml.org,2002:str":
                raise ctx.fail(knode, f"{what}: keys must be strings, not {_kind(knode)}")
            key = str(knode.value)
            if key not in allowed:
                raise ctx.fail(
                    knode, f"{what}: unknown key {key!r} (allowed: {', '.join(allowed)})"
                )
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


_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False,
          "FALSE": False}


def _bool(ctx: _Ctx, node: Node, what: str) -> bool:
    """Only true/false: YAML 1.1's yes/no/on/off (which pyyaml reads as booleans) are
    refused, so a file means the same to every YAML reader."""
    if not isinstance(node, ScalarNode) or node.tag != "tag:yaml.org,2002:bool":
        raise ctx.fail(node, f"{what} must be true or false, not {_kind(node)}")
    value = _BOOLS.get(str(node.value))
    if value is None:
        raise ctx.fail(node, f"{what} must be true or false, not {str(node.value)!r}")
    return value


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
    """'16M' -> 16 MiB, '1.5G', '4096', '512KiB'; None when malformed. Units are binary;
    '16MB' is refused (None): it reads as decimal megabytes to most people."""
    m = _SIZE_RE.match(text.strip())
    if m is None or len(m.group(1)) > MAX_INT_CHARS:
        return None
    value = float(m.group(1)) * _UNITS[(m.group(2) or "").upper()]
    return int(value) if math.isfinite(value) else None


def _size(ctx: _Ctx, node: Node, what: str) -> int:
    if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:int":
        value = _int(ctx, node, what)
    elif isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:str":
        parsed = parse_size(str(node.value))
        if parsed is None and _DECIMAL_SIZE_RE.match(str(node.value).strip()):
            unit = str(node.value).strip()[-2].upper()
            raise ctx.fail(
                node, f"{what} {node.value!r} is ambiguous: write {unit} or {unit}iB"
                " (units are binary: 1M = 1024 KiB)",
            )
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
_TOP_KEYS = (
    "version", "extends", "max_layers", "group_by", "groups", "buckets", "big_file_threshold",
    "split_threshold", "patch_layers",
)


def _group(ctx: _Ctx, node: Node, index: int) -> GroupRule:
    m = _mapping(ctx, node, f"groups[{index}]", _GROUP_KEYS)
    if "name" not in m:
        raise ctx.fail(node, f"groups[{index}]: missing 'name'")
    name = _name(ctx, m["name"], f"groups[{index}].name")
    what = f"group {name!r}"
    before = len(ctx.errors)
    packages: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    dedicated, freq = False, None
    with ctx.collect():
        packages = _globs(ctx, m["packages"], f"{what}: packages") if "packages" in m else ()
    with ctx.collect():
        sources = _globs(ctx, m["sources"], f"{what}: sources") if "sources" in m else ()
    with ctx.collect():
        paths = _globs(ctx, m["paths"], f"{what}: paths", paths=True) if "paths" in m else ()
    with ctx.collect():
        dedicated = _bool(ctx, m["dedicated"], f"{what}: dedicated") if "dedicated" in m else False
    with ctx.collect():
        if "frequency" in m:
            freq = cast(Frequency, _choice(ctx, m["frequency"], f"{what}: frequency", FREQUENCIES))
    if len(ctx.errors) > before:
        raise _Reported()
    if not (packages or sources or paths):
        raise ctx.fail(node, f"{what} matches nothing: give packages, sources or paths")
    return GroupRule(
        name, packages, sources, paths, dedicated, freq, origin=ctx.origin(node),
        shipped=ctx.shipped,
    )


def _bucket(ctx: _Ctx, node: Node, index: int, last: bool) -> BucketRule:
    m = _mapping(ctx, node, f"buckets[{index}]", _BUCKET_KEYS)
    if "name" not in m:
        raise ctx.fail(node, f"buckets[{index}]: missing 'name'")
    name = _name(ctx, m["name"], f"buckets[{index}].name")
    what = f"bucket {name!r}"
    before = len(ctx.errors)
    paths: tuple[str, ...] = ()
    dedicated, freq = False, None
    with ctx.collect():
        paths = _globs(ctx, m["paths"], f"{what}: paths", paths=True) if "paths" in m else ()
        if "*" in paths:
            if len(paths) > 1:
                raise ctx.fail(m["paths"], f"{what}: '*' already matches every path")
            paths = ()
        if not paths and not last:
            raise ctx.fail(node, f"{what}: only the last bucket may be a catch-all (no paths)")
    with ctx.collect():
        dedicated = _bool(ctx, m["dedicated"], f"{what}: dedicated") if "dedicated" in m else False
    with ctx.collect():
        if "frequency" in m:
            freq = cast(Frequency, _choice(ctx, m["frequency"], f"{what}: frequency", FREQUENCIES))
    if len(ctx.errors) > before:
        raise _Reported()
    return BucketRule(name, paths, dedicated, freq, origin=ctx.origin(node))


class _Reported(Exception):
    """An item whose errors are already in ``_Ctx.errors``: skip it, keep checking."""


#: pyyaml's words for the common slips in hand-written rules -> what to do about them.
_YAML_HINTS: tuple[tuple[str, str], ...] = (
    ("while scanning an alias", "a glob that starts with '*' must be quoted: '*lib*'"),
    ("while scanning an anchor", "a glob that starts with '&' must be quoted"),
    ("found character '\\t'", "a tab: indent with spaces"),
    ("that cannot start any token", "{char} cannot start a plain YAML value: quote it"),
    ("expected <block end>", "bad indentation: keys of one item must line up"),
    ("mapping values are not allowed here",
     "bad indentation, or an unquoted ': ' in a value (quote it)"),
    ("could not find expected ':'", "a key without ':', or a line continued without quotes"),
    ("did not find expected key", "bad indentation: keys of one item must line up"),
    ("did not find expected '-' indicator", "bad indentation: list items must line up"),
    ("expected ',' or ']'", "unclosed '[' or an unquoted ':' in a list item (quote it)"),
    ("expected ',' or '}'", "unclosed '{' (a list is written [a, b])"),
    ("while scanning a quoted scalar", "unclosed quote"),
    ("expected a single document", "one document only: remove the '---'"),
)


def _yaml_problem(err: yaml.MarkedYAMLError) -> str:
    problem = str(err.problem or "not valid YAML")
    text = f"{err.context}: {problem}" if err.context else problem
    for words, hint in _YAML_HINTS:
        if words in text:
            char = re.search(r"found character ('.*?')", text)
            return hint.format(char=char.group(1) if char else "this character")
    return text


def _yaml_mark(err: yaml.MarkedYAMLError) -> object:
    """Where to point: an unquoted ``*glob*`` at its start, not at the second '*'."""
    if err.context in ("while scanning an alias", "while scanning an anchor"):
        return err.context_mark or err.problem_mark
    return err.problem_mark


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
        raise ctx.fail(_yaml_mark(err), _yaml_problem(err)) from None
    except yaml.YAMLError as err:
        raise ctx.fail(None, f"not valid YAML: {err}") from None


def _name_node(node: Node) -> Node:
    """The value node of a validated item's 'name' key (for pointing at duplicates)."""
    found: Node = next(v for k, v in node.value if k.value == "name")
    return found


def parse_rules(
    text: str,
    source: str,
    *,
    base_dir: str | None = None,
    shipped: bool = False,
    _chain: tuple[str, ...] = (),
) -> Rules:
    """Validate rules text; ``source`` names the file in messages. Every independent
    problem is reported (one per line of the RulesError), not only the first.

    ``extends: NAME|PATH`` loads that file first (a relative path is relative to
    ``base_dir``, the extending file's directory); see :func:`_merge` for how this file's
    groups and buckets combine with it.
    """
    ctx = _Ctx(source, shipped)
    _check_plain(ctx, text)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise RulesError(f"{source}: nested too deeply; not a rules file") from None
    except yaml.MarkedYAMLError as err:
        raise ctx.fail(_yaml_mark(err), _yaml_problem(err)) from None
    except yaml.YAMLError as err:
        raise ctx.fail(None, f"not valid YAML: {err}") from None
    if root is None:
        raise RulesError(f"{source}:1:1: empty rules file (it needs at least 'version: 1')")
    top = _mapping(ctx, root, "rules file", _TOP_KEYS)
    with ctx.collect():
        if "version" not in top:
            raise ctx.fail(root, "missing 'version' (this pkgchunk reads version: 1)")
        version = _int(ctx, top["version"], "version")
        if version != 1:
            raise ctx.fail(top["version"], f"unsupported version {version} (this pkgchunk reads 1)")

    base: Rules | None = None
    if "extends" in top:
        with ctx.collect():
            target = _str(ctx, top["extends"], "extends")
            base = _load_base(ctx, top["extends"], target, base_dir, (*_chain, source))

    max_layers = base.max_layers if base else DEFAULT_MAX_LAYERS
    if "max_layers" in top:
        with ctx.collect():
            max_layers = _int(ctx, top["max_layers"], "max_layers")
            if not 1 <= max_layers <= MAX_LAYERS_LIMIT:
                raise ctx.fail(
                    top["max_layers"], f"max_layers must be between 1 and {MAX_LAYERS_LIMIT}"
                )
    group_by: GroupBy = base.group_by if base else "source"
    if "group_by" in top:
        with ctx.collect():
            group_by = cast(
                GroupBy, _choice(ctx, top["group_by"], "group_by", ("source", "name"))
            )
    threshold = base.big_file_threshold if base else DEFAULT_BIG_FILE_THRESHOLD
    if "big_file_threshold" in top:
        with ctx.collect():
            threshold = _size(ctx, top["big_file_threshold"], "big_file_threshold")
    split = base.split_threshold if base else DEFAULT_SPLIT_THRESHOLD
    if "split_threshold" in top:
        with ctx.collect():
            split = _size(ctx, top["split_threshold"], "split_threshold")
    patch_layers = base.patch_layers if base else 0
    if "patch_layers" in top:
        with ctx.collect():
            patch_layers = _int(ctx, top["patch_layers"], "patch_layers")
            if not 0 <= patch_layers < max_layers:
                raise ctx.fail(
                    top["patch_layers"],
                    f"patch_layers must be between 0 and {max_layers - 1} (max_layers - 1)",
                )

    seen: dict[str, Node] = {}

    def unique(name: str, node: Node) -> None:
        if name in seen:
            first = seen[name].start_mark
            raise ctx.fail(node, f"name {name!r} is already used at line {first.line + 1}")
        seen[name] = node

    groups: list[GroupRule] = []
    if "groups" in top:
        with ctx.collect():
            for i, gnode in enumerate(_list(ctx, top["groups"], "groups")):
                with ctx.collect(), contextlib.suppress(_Reported):
                    rule = _group(ctx, gnode, i)
                    unique(rule.name, _name_node(gnode))
                    groups.append(rule)
    buckets: list[BucketRule] = []
    if "buckets" in top:
        with ctx.collect():
            items = _list(ctx, top["buckets"], "buckets")
            for i, bnode in enumerate(items):
                with ctx.collect(), contextlib.suppress(_Reported):
                    bucket = _bucket(ctx, bnode, i, last=i == len(items) - 1)
                    unique(bucket.name, _name_node(bnode))
                    buckets.append(bucket)
    ctx.check()
    if base is not None:
        groups, buckets = _merge(ctx, base, groups, buckets, seen)
        ctx.check()
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
        extends=(base.source, *base.extends) if base is not None else (),
        split_threshold=split,
        patch_layers=patch_layers,
    )


def _load_base(
    ctx: _Ctx, node: Node, target: str, base_dir: str | None, chain: tuple[str, ...]
) -> Rules:
    if len(chain) > MAX_EXTENDS_DEPTH:
        raise ctx.fail(node, f"extends: more than {MAX_EXTENDS_DEPTH} files deep")
    try:
        path = resolve_rules(target, base_dir)
    except RulesError as err:
        raise ctx.fail(node, f"extends: {err}") from None
    if os.path.realpath(path) in {os.path.realpath(c) for c in chain}:
        raise ctx.fail(node, f"extends: {target!r} extends this file again (a cycle)")
    try:
        return _read(Path(path), path, _chain=chain)
    except RulesError as err:
        if not os.path.exists(path):
            raise ctx.fail(node, f"extends: {err}") from None
        raise


def _merge(
    ctx: _Ctx,
    base: Rules,
    groups: list[GroupRule],
    buckets: list[BucketRule],
    seen: Mapping[str, Node],
) -> tuple[list[GroupRule], list[BucketRule]]:
    """This file's groups and buckets on top of ``base``'s.

    An item named like one of the base's replaces it in place (same rank in first match
    wins). A new group or bucket with paths goes before all of the base's, so an added
    rule wins over a broader base rule. This file's catch-all bucket replaces the base's.
    """
    base_groups = {g.name for g in base.groups}
    base_buckets = {b.name for b in base.buckets}
    for name, node in seen.items():
        mine_is_group = any(g.name == name for g in groups)
        if mine_is_group and name in base_buckets:
            raise ctx.fail(node, f"name {name!r} is a bucket in {base.source}, not a group")
        if not mine_is_group and name in base_groups:
            raise ctx.fail(node, f"name {name!r} is a group in {base.source}, not a bucket")
    mine_g = {g.name: g for g in groups}
    merged_g = [g for g in groups if g.name not in base_groups]
    merged_g += [mine_g.get(g.name, g) for g in base.groups]
    mine_b = {b.name: b for b in buckets}
    catch = buckets[-1] if buckets and buckets[-1].catch_all else None
    old_catch = base.buckets[-1]
    merged_b = [b for b in buckets if b.name not in base_buckets and b is not catch]
    merged_b += [mine_b.get(b.name, b) for b in base.buckets if b is not old_catch]
    if catch is not None:
        merged_b.append(catch)
    elif old_catch.name in mine_b:
        merged_b.append(mine_b[old_catch.name])  # given paths: the implied catch-all follows
    else:
        merged_b.append(old_catch)
    return merged_g, merged_b


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


def _read(path: Path, label: str, *, _chain: tuple[str, ...] = ()) -> Rules:
    try:
        with open_regular(os.fspath(path)) as f:
            raw = f.read(MAX_RULES_BYTES + 1)
    except OSError as err:
        raise RulesError(f"{label}: cannot read: {err.strerror or err}") from None
    if len(raw) > MAX_RULES_BYTES:
        raise RulesError(f"{label}: larger than {MAX_RULES_BYTES} bytes; not a rules file")
    shipped = any(path.resolve().parent == d.resolve() for d in _shipped_dirs())
    return parse_rules(
        _decode(raw, label), label, base_dir=os.path.dirname(os.fspath(path)),
        shipped=shipped, _chain=_chain,
    )


def resolve_rules(name_or_path: str, base_dir: str | None = None) -> str:
    """The file a ``--rules``/``extends:`` argument names: a path (with a '/', a
    .yaml/.yml suffix, or naming an existing file; relative to ``base_dir`` when given),
    else a shipped file by name. RulesError when it is neither."""
    text = name_or_path
    path = text if base_dir is None else os.path.join(base_dir, text)
    if "/" in text or text.endswith((".yaml", ".yml")) or os.path.isfile(path):
        return path
    shipped = _shipped_path(text)
    if shipped is None:
        names = ", ".join(shipped_rules()) or "none found"
        raise RulesError(f"{text}: no such rules file or shipped rules (shipped: {names})")
    return os.fspath(shipped)


def rules_text(name_or_path: str) -> tuple[str, str]:
    """(path, text) of a rules file or shipped name, for ``pkgchunk rules show``."""
    path = resolve_rules(name_or_path)
    try:
        with open_regular(path) as f:
            raw = f.read(MAX_RULES_BYTES + 1)
    except OSError as err:
        raise RulesError(f"{path}: cannot read: {err.strerror or err}") from None
    if len(raw) > MAX_RULES_BYTES:
        raise RulesError(f"{path}: larger than {MAX_RULES_BYTES} bytes; not a rules file")
    return path, _decode(raw, path)


def load_rules(name_or_path: str | os.PathLike[str]) -> Rules:
    """Load a rules file by path, or a shipped one by name ('debian', 'fedora-bootc', ...).

    An argument with a '/' or a .yaml/.yml suffix, or naming an existing file, is a path.
    """
    path = resolve_rules(os.fspath(name_or_path))
    return _read(Path(path), path)


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
