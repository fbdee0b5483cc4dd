"""A package-blind layering for writer tests: by top-level directory, split by size, at
most N layers, every path in exactly one layer and hardlink groups never split.

The product plans by package (``pkgchunk.plan``); the writer tests need a correct plan of
any image, with or without package databases, and this one is simple enough to trust.
"""

from __future__ import annotations

from dataclasses import dataclass

from pkgchunk.image import LayerSpec
from pkgchunk.tree import ENC, ERRORS, FileTree, encode_path

#: Bytes a tar member costs beyond its content (its header), so many small
#: files weigh something.
MEMBER_OVERHEAD = 512
#: Directories are not split into layers smaller than this (a layer has a cost too).
MIN_LAYER_SIZE = 1 << 20


@dataclass
class _Chunk:
    units: list[str]
    first: int
    last: int
    parts: int
    paths: list[str]
    size: int


def _printable(name: str) -> str:
    return name.encode(ENC, ERRORS).decode(ENC, "backslashreplace")


def by_top_dir(
    tree: FileTree, max_layers: int, *, min_layer_size: int = MIN_LAYER_SIZE
) -> list[LayerSpec]:
    """Layers of whole top-level directories, big ones split, neighbours merged to fit."""
    if max_layers < 1:
        raise ValueError("max_layers must be at least 1")
    # Atoms: a path, or a whole hardlink group placed where its first path sorts.
    units: dict[str, list[tuple[list[str], int]]] = {}
    groups: dict[int, list[str]] = {}
    for path in tree.paths():
        entry = tree.entries[path]
        if entry.link:
            group = groups.get(entry.link)
            if group is not None:
                group.append(path)
                continue
            groups[entry.link] = group = [path]
            atom_paths = group
        else:
            atom_paths = [path]
        weight = MEMBER_OVERHEAD + (entry.size if entry.kind == "reg" else 0)
        units.setdefault(path.split("/", 1)[0], []).append((atom_paths, weight))
    total = sum(w for atoms in units.values() for _, w in atoms)
    if not units:
        return []
    target = max(1, min_layer_size, -(-total // max_layers))
    chunks: list[_Chunk] = []
    for unit in sorted(units, key=lambda u: u.encode(ENC, ERRORS)):
        pieces: list[tuple[list[str], int]] = []
        cur: list[str] = []
        size = 0
        for atom_paths, weight in units[unit]:
            if cur and size + weight > target:
                pieces.append((cur, size))
                cur, size = [], 0
            cur.extend(atom_paths)
            size += weight
        pieces.append((cur, size))
        for i, (paths, sz) in enumerate(pieces, 1):
            chunks.append(_Chunk([unit], i, i, len(pieces), paths, sz))
    while len(chunks) > max_layers:
        best = min(range(len(chunks) - 1), key=lambda i: chunks[i].size + chunks[i + 1].size)
        a, b = chunks[best], chunks[best + 1]
        merged_units = a.units + [u for u in b.units if u not in a.units]
        single = len(merged_units) == 1
        chunks[best : best + 2] = [
            _Chunk(
                merged_units,
                a.first if single else 1,
                b.last if single else 1,
                a.parts if single else 1,
                a.paths + b.paths,
                a.size + b.size,
            )
        ]
    return [_spec(c) for c in chunks]


def _spec(chunk: _Chunk) -> LayerSpec:
    names = [_printable(u) for u in chunk.units]
    if len(names) == 1:
        name = names[0]
        comment = f"pkgchunk: /{name}"
        if chunk.parts > 1 and not (chunk.first == 1 and chunk.last == chunk.parts):
            part = str(chunk.first)
            if chunk.last != chunk.first:
                part += f"-{chunk.last}"
            name = f"{name}.{part}"
            comment += f" (part {part} of {chunk.parts})"
    else:
        name = "+".join(names) if len(names) <= 3 else f"{names[0]}+{len(names) - 1}-more"
        comment = "pkgchunk: " + " ".join("/" + n for n in names)
    paths = tuple(sorted(chunk.paths, key=encode_path))
    return LayerSpec(name=name, paths=paths, comment=comment)
