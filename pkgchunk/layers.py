"""What the writer is asked to write: an ordered list of layers, each a set of paths."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """One output layer. ``paths`` are tree paths it holds; the writer adds each
    parent directory the layer needs (with that directory's real metadata).

    ``annotations`` go on the layer descriptor; ``comment`` becomes the history
    entry's ``created_by`` (what the layer holds, for humans).
    """

    name: str
    paths: tuple[str, ...]
    annotations: tuple[tuple[str, str], ...] = ()
    comment: str = ""
