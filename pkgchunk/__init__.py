"""pkgchunk: rechunk OCI images along package boundaries so updates pull only what changed.

The public API is ``__all__``: the pipeline functions, their option and result
dataclasses, and the errors. Everything else is internal and may move. Names load on
first use (PEP 562), so ``import pkgchunk`` and the CLI's start stay cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it
_API = {
    "rechunk_packages": "pkgchunk.rechunk",
    "plan_only": "pkgchunk.rechunk",
    "PlanOptions": "pkgchunk.rechunk",
    "Planned": "pkgchunk.rechunk",
    "RechunkResult": "pkgchunk.rechunk",
    "WriteOptions": "pkgchunk.oci.write",
    "WriteResult": "pkgchunk.oci.write",
    "open_image": "pkgchunk.io",
    "open_stack": "pkgchunk.io",
    "write_image": "pkgchunk.io",
    "Image": "pkgchunk.image",
    "LayerSpec": "pkgchunk.image",
    "FileTree": "pkgchunk.tree",
    "Entry": "pkgchunk.tree",
    "collect": "pkgchunk.pkgdb.ownership",
    "Ownership": "pkgchunk.pkgdb.model",
    "load_rules": "pkgchunk.plan.rules",
    "compose": "pkgchunk.plan.compose",
    "BuildRecord": "pkgchunk.plan.record",
    "open_previous": "pkgchunk.previous",
    "diff": "pkgchunk.diff",
    "DiffResult": "pkgchunk.diff",
    "verify": "pkgchunk.verify",
    "VerifyResult": "pkgchunk.verify",
    "PkgchunkError": "pkgchunk.errors",
    "InputError": "pkgchunk.errors",
    "OutputError": "pkgchunk.errors",
    "PkgdbError": "pkgchunk.errors",
    "RulesError": "pkgchunk.errors",
    "ToolMissingError": "pkgchunk.errors",
}

__all__ = [
    "BuildRecord",
    "DiffResult",
    "Entry",
    "FileTree",
    "Image",
    "InputError",
    "LayerSpec",
    "OutputError",
    "Ownership",
    "PkgchunkError",
    "PkgdbError",
    "PlanOptions",
    "Planned",
    "RechunkResult",
    "RulesError",
    "ToolMissingError",
    "VerifyResult",
    "WriteOptions",
    "WriteResult",
    "__version__",
    "collect",
    "compose",
    "diff",
    "load_rules",
    "open_image",
    "open_previous",
    "open_stack",
    "plan_only",
    "rechunk_packages",
    "verify",
    "write_image",
]

if TYPE_CHECKING:
    from pkgchunk.diff import DiffResult, diff
    from pkgchunk.errors import (
        InputError,
        OutputError,
        PkgchunkError,
        PkgdbError,
        RulesError,
        ToolMissingError,
    )
    from pkgchunk.image import Image, LayerSpec
    from pkgchunk.io import open_image, open_stack, write_image
    from pkgchunk.oci.write import WriteOptions, WriteResult
    from pkgchunk.pkgdb.model import Ownership
    from pkgchunk.pkgdb.ownership import collect
    from pkgchunk.plan.compose import compose
    from pkgchunk.plan.record import BuildRecord
    from pkgchunk.plan.rules import load_rules
    from pkgchunk.previous import open_previous
    from pkgchunk.rechunk import Planned, PlanOptions, RechunkResult, plan_only, rechunk_packages
    from pkgchunk.tree import Entry, FileTree
    from pkgchunk.verify import VerifyResult, verify


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'pkgchunk' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
