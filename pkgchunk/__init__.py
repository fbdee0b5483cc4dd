"""pkgchunk: rechunk OCI images along package boundaries so updates pull only what changed.

The public API is ``__all__``: the pipeline functions, their option and result
dataclasses, the errors, and the building blocks of ``compose`` for a script that plans by
hand (the mtime policy, ``plan_layers``, the rules and package types). Everything else is
internal and may move. Names load on first use (PEP 562), so ``import pkgchunk`` and the
CLI's start stay cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it (``module:name`` when it is defined under another name)
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
    "ContentHasher": "pkgchunk.tree",
    "collect": "pkgchunk.pkgdb.ownership",
    "Ownership": "pkgchunk.pkgdb.model",
    "Package": "pkgchunk.pkgdb.model",
    "PackageDb": "pkgchunk.pkgdb.model",
    "load_rules": "pkgchunk.plan.rules",
    "default_rules_name": "pkgchunk.plan.rules",
    "Rules": "pkgchunk.plan.rules",
    "apply_mtimes": "pkgchunk.plan.mtimes:apply",
    "directory_epoch": "pkgchunk.plan.mtimes",
    "compose": "pkgchunk.plan.compose",
    "plan_layers": "pkgchunk.plan.compose",
    "BuildRecord": "pkgchunk.plan.record",
    "MtimeRecord": "pkgchunk.plan.record",
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
    "ContentHasher",
    "DiffResult",
    "Entry",
    "FileTree",
    "Image",
    "InputError",
    "LayerSpec",
    "MtimeRecord",
    "OutputError",
    "Ownership",
    "Package",
    "PackageDb",
    "PkgchunkError",
    "PkgdbError",
    "PlanOptions",
    "Planned",
    "RechunkResult",
    "Rules",
    "RulesError",
    "ToolMissingError",
    "VerifyResult",
    "WriteOptions",
    "WriteResult",
    "__version__",
    "apply_mtimes",
    "collect",
    "compose",
    "default_rules_name",
    "diff",
    "directory_epoch",
    "load_rules",
    "open_image",
    "open_previous",
    "open_stack",
    "plan_layers",
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
    from pkgchunk.pkgdb.model import Ownership, Package, PackageDb
    from pkgchunk.pkgdb.ownership import collect
    from pkgchunk.plan.compose import compose, plan_layers
    from pkgchunk.plan.mtimes import apply as apply_mtimes
    from pkgchunk.plan.mtimes import directory_epoch
    from pkgchunk.plan.record import BuildRecord, MtimeRecord
    from pkgchunk.plan.rules import Rules, default_rules_name, load_rules
    from pkgchunk.previous import open_previous
    from pkgchunk.rechunk import Planned, PlanOptions, RechunkResult, plan_only, rechunk_packages
    from pkgchunk.tree import ContentHasher, Entry, FileTree
    from pkgchunk.verify import VerifyResult, verify


def __getattr__(name: str) -> Any:
    where = _API.get(name)
    if where is None:
        raise AttributeError(f"module 'pkgchunk' has no attribute {name!r}")
    module, _, defined = where.partition(":")
    value = getattr(importlib.import_module(module), defined or name)
    globals()[name] = value
    return value
