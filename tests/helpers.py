"""Shared test helpers: where the shared fixtures are, and real tools that tests need."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: Real package databases captured from real distributions; absent on a user's fresh clone.
#: ``PKGCHUNK_FIXTURES`` names the directory; default ``../shared/fixtures`` next to the clone.
SHARED_FIXTURES = Path(
    os.environ.get("PKGCHUNK_FIXTURES") or REPO.parent / "shared" / "fixtures"
).absolute()

#: CI sets this so a missing tool (or fixture directory) fails the run instead of
#: silently skipping tests.
REQUIRE_TOOLS = os.environ.get("PKGCHUNK_REQUIRE_TOOLS") == "1"


def shared_fixtures() -> Path:
    """The shared fixture directory; skip with the reason when it is absent (fail under
    PKGCHUNK_REQUIRE_TOOLS=1: CI must not pass by skipping every real-database test)."""
    if not SHARED_FIXTURES.is_dir():
        msg = (
            f"fixture directory {SHARED_FIXTURES} is absent (set PKGCHUNK_FIXTURES to it;"
            " only the project's CI and developers have it)"
        )
        if REQUIRE_TOOLS:
            pytest.fail(msg)
        pytest.skip(msg)
    return SHARED_FIXTURES


def require_tool(name: str) -> str:
    """Path of an external tool; skip (or fail under PKGCHUNK_REQUIRE_TOOLS=1) when missing."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not installed (apt-get install {name}; .ci/run installs it)"
        if REQUIRE_TOOLS:
            pytest.fail(msg)
        pytest.skip(msg)
    return path
