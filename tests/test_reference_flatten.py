"""The reference check of tests/conftest.py is on, and it can fail: a production reader that
drops what a layer says (here: the root's metadata, a sub-second mtime) is caught on the very
flattening that read it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pkgchunk.io import open_image
from pkgchunk.oci import flatten as flatten_mod
from tests import conftest
from tests.imagebuild import build_image, directory, file, write_layout
from tests.oci.writecases import make_source

T = 1_700_000_000


def test_every_flattening_is_checked(tmp_path: Path) -> None:
    before = conftest.checked[0]
    with open_image(make_source(tmp_path / "src")) as image:
        assert len(image.tree) > 10
    assert conftest.checked[0] == before + 1


@pytest.mark.parametrize("bug", ["root dropped", "mtime floored"])
def test_a_reader_bug_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bug: str
) -> None:
    members = [directory("./", mode=0o750, uid=5, gid=6),
               file("f", b"x", pax={"mtime": f"{T}.25"})]
    write_layout(tmp_path / "src", {"t": build_image([members])})
    real = flatten_mod._Flattener._member

    def buggy(self: flatten_mod._Flattener, *args: object) -> None:
        real(self, *args)  # type: ignore[arg-type]
        if bug == "root dropped":
            self.root = None
        elif "f" in self.entries:
            self.entries["f"] = dataclasses.replace(self.entries["f"], mtime_ns=0)

    monkeypatch.setattr(flatten_mod._Flattener, "_member", buggy)
    with pytest.raises(AssertionError, match="differs from the reference"):
        open_image(f"oci:{tmp_path / 'src'}:t").close()
