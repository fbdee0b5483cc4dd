"""The compact spelling of the org.pkgchunk.plan label: the same JSON, gzipped and base64'd.

It must mean exactly what the JSON means (every earlier label still reads), stay
deterministic (the label is in the config, so in the image digest), be decodable with
standard shell tools, and refuse hostile values (bombs, garbage) in one line."""

from __future__ import annotations

import base64
import gzip
import subprocess

import pytest

from pkgchunk.errors import InputError
from pkgchunk.plan.groups import Group
from pkgchunk.plan.planner import plan
from pkgchunk.plan.record import (
    COMPACT_PREFIX,
    LABEL,
    MAX_LABEL_CHARS,
    BuildRecord,
    compact,
    decode,
    encode,
    expand,
)
from tests.helpers import require_tool


def debian_like(n: int) -> list[Group]:
    """Groups shaped like a Debian image's: source keys, name=version strings."""
    names = ["libfoo", "barbaz-utils", "qux", "python3-x", "perl-modules"]
    return [
        Group(f"src/{names[i % 5]}{i}", "package", (f"k{i}",),
              tuple(f"{names[i % 5]}{i}-{j}=1.{i}.{j}-{i % 7}+deb12u{j}"
                    for j in range(1 + i % 3)),
              (f"p{i}",), 1000 + 37 * i)
        for i in range(n)
    ]


def label_of(groups: list[Group]) -> str:
    return encode(plan(groups, {g.key: (i % 10) / 10 for i, g in enumerate(groups)}, 64),
                  groups, None)


def test_compact_means_exactly_the_json() -> None:
    text = label_of(debian_like(300))
    small = compact(text)
    assert small.startswith(COMPACT_PREFIX) and small.isascii() and '"' not in small
    assert expand(small) == text and expand(text) == text
    assert decode(small) == decode(text)
    assert BuildRecord.from_labels({LABEL: small}) == BuildRecord.from_labels({LABEL: text})
    assert compact(text) == small  # deterministic: no gzip name, mtime 0
    # About half the characters for a realistic label (measured: see the commit message).
    assert len(small) < 0.6 * len(text), (len(small), len(text))


def test_shell_tools_read_it() -> None:
    require_tool("base64")
    gunzip = require_tool("gunzip")
    text = label_of(debian_like(40))
    shown = subprocess.run(
        f"cut -c{len(COMPACT_PREFIX) + 1}- | base64 -d | {gunzip}",
        input=compact(text), shell=True, capture_output=True, text=True, check=True,
    ).stdout
    assert shown == text


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (COMPACT_PREFIX + "not base64!", "compact value is not base64"),
        (COMPACT_PREFIX + base64.b64encode(b"plain bytes").decode(), "compact value is not gzip"),
        (COMPACT_PREFIX + base64.b64encode(gzip.compress(b'{"v":1}', mtime=0)[:-6]).decode(),
         "truncated"),
        (COMPACT_PREFIX + base64.b64encode(gzip.compress(b"\xff" * 9, mtime=0)).decode(),
         "does not hold ASCII JSON"),
        (COMPACT_PREFIX + base64.b64encode(gzip.compress(b" " * (MAX_LABEL_CHARS + 2),
                                                         mtime=0)).decode(),
         f"expands beyond {MAX_LABEL_CHARS} characters"),
    ],
    ids=["base64", "gzip", "truncated", "ascii", "bomb"],
)
def test_hostile_compact_values_are_one_line_errors(value: str, words: str) -> None:
    with pytest.raises(InputError) as info:
        decode(value)
    msg = str(info.value)
    assert msg.startswith(f"{LABEL} label: ") and words in msg and "\n" not in msg
    record = BuildRecord.from_labels({LABEL: value})
    assert record.plan is None and words in record.warnings[0]
