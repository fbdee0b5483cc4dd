"""Apply an image's layers, in order, into one FileTree (whiteouts, hardlinks, xattrs)."""

from __future__ import annotations

import dataclasses

from .tree import Entry, encode_path


def canonical_links(entries: dict[str, Entry]) -> None:
    """Renumber hardlink groups 1.. in canonical path order; a group of one is no group.

    Two readers of the same files then give equal trees, whatever order they met them in.
    """
    groups: dict[int, list[str]] = {}
    for path, entry in entries.items():
        if entry.link:
            groups.setdefault(entry.link, []).append(path)
    ordered = sorted(groups.values(), key=lambda paths: min(map(encode_path, paths)))
    next_id = 1
    for paths in ordered:
        new = 0
        if len(paths) > 1:
            new = next_id
            next_id += 1
        for path in paths:
            if entries[path].link != new:
                entries[path] = dataclasses.replace(entries[path], link=new)
