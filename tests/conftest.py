"""pytest configuration; shared helpers live in tests/helpers.py.

Every flattening any test does (crafted layers, the writer's cases, hostile inputs, built
corpus images, rechunked outputs read back) is checked against the independent reference
flattener (tests/reference_flatten.py): the production tree must equal the reference's,
path by path, content, xattrs and exact mtimes included. This runs before any test module
imports the reader, so every ``from pkgchunk.oci.flatten import flatten`` gets the checked
one. ``PKGCHUNK_REFERENCE_CHECK=0`` turns it off (for timing a test, never in CI).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import pkgchunk.oci.flatten as _flatten_mod

_production = _flatten_mod.flatten
#: Layers larger than this in total are not checked (the reference hashes every file again).
REFERENCE_MAX_BYTES = 256 << 20
#: How many flattenings were checked (tests/test_reference_flatten.py asserts it moves).
checked = [0]
#: ... and how many the reference could not read (only fuzzed headers should be here).
unreadable = [0]


def _checked_flatten(layers: Iterable[tuple[str, str]], *, label: str = "") -> object:
    seen: list[str] = []

    def record() -> Iterator[tuple[str, str]]:
        for pair in layers:
            seen.append(pair[1])
            yield pair

    tree = _production(record(), label=label)
    if os.environ.get("PKGCHUNK_REFERENCE_CHECK", "1") != "0" and (
        sum(os.path.getsize(p) for p in seen) <= REFERENCE_MAX_BYTES
    ):
        import tarfile

        from tests.reference_flatten import differences, from_production, reference_flatten

        try:
            reference = reference_flatten(seen)
        except (tarfile.TarError, UnicodeError, ValueError, EOFError):
            # Headers plain tarfile cannot parse (fuzzed pax records pkgchunk's strict parser
            # reads): nothing independent to compare with.
            unreadable[0] += 1
            return tree
        diffs = differences(reference, from_production(tree))
        assert not diffs, f"{label}: production flattening differs from the reference:\n" + (
            "\n".join(diffs)
        )
        checked[0] += 1
    return tree


_flatten_mod.flatten = _checked_flatten  # type: ignore[assignment]
