"""The house rules of docs/architecture.md, checked on the code's own imports.

Every ``import`` in ``pkgchunk/`` (including the ones inside functions and under
TYPE_CHECKING) is read with ``ast``; a rule broken here is a module that reaches into a
stage it must not know.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pkgchunk
from tests.helpers import REPO

PACKAGE = REPO / "pkgchunk"

#: Modules every stage may use: errors, data types, references, progress reporting.
BASE = {"pkgchunk", "pkgchunk.errors", "pkgchunk.progress", "pkgchunk.tree", "pkgchunk.refs",
        "pkgchunk.image", "pkgchunk.safeopen"}

#: stage -> the stages (module prefixes) it may import besides BASE and itself.
ALLOWED = {
    "pkgchunk.oci": set(),
    "pkgchunk.pkgdb": set(),
    "pkgchunk.plan": {"pkgchunk.pkgdb.model"},
    "pkgchunk.transport": {"pkgchunk.oci.blobs", "pkgchunk.oci.read", "pkgchunk.oci.readlayout"},
    "pkgchunk.io": {"pkgchunk.oci", "pkgchunk.transport"},
}


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                # "from pkgchunk.plan import mtimes" imports the submodule
                found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level:
                raise AssertionError(f"{path}: relative import; the house uses absolute ones")
        out[module_name(path)] = {m for m in found if m == "pkgchunk" or
                                  m.startswith("pkgchunk.")}
    return out


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (REPO / rel).with_suffix(".py").is_file() or (REPO / rel / "__init__.py").is_file()


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


GRAPH = imports()


@pytest.mark.parametrize("stage", sorted(ALLOWED))
def test_stage_imports_only_what_it_may(stage: str) -> None:
    bad = []
    for mod, deps in GRAPH.items():
        if not _within(mod, stage):
            continue
        for dep in deps:
            if not _is_module(dep) or dep in BASE or _within(dep, stage):
                continue
            if any(_within(dep, ok) for ok in ALLOWED[stage]):
                continue
            bad.append(f"{mod} -> {dep}")
    assert not bad, "\n".join(sorted(bad))


def test_base_modules_import_no_stage() -> None:
    bad = [f"{m} -> {d}" for m in BASE - {"pkgchunk"} for d in GRAPH.get(m, set())
           if _is_module(d) and d not in BASE]
    assert not bad, "\n".join(bad)


def test_readers_and_writers_meet_only_in_io() -> None:
    """Opening or writing an image by transport happens in one place."""
    entry_points = {"pkgchunk.oci.read", "pkgchunk.oci.write", "pkgchunk.oci.rootfs",
                    "pkgchunk.transport.skopeo", "pkgchunk.transport.podman"}
    users = {m for m, deps in GRAPH.items() if deps & entry_points
             and not _within(m, "pkgchunk.oci") and not _within(m, "pkgchunk.transport")}
    # rechunk, previous and diff name the writer's option and result types and the
    # reader's Source; the calls themselves go through io.
    assert users <= {"pkgchunk.io", "pkgchunk.rechunk", "pkgchunk.previous", "pkgchunk.diff",
                     "pkgchunk.keepbase", "pkgchunk.patching", "pkgchunk.cli", "pkgchunk.demo",
                     "pkgchunk.render",
                     "pkgchunk.verify", "pkgchunk"}, users
    for mod in users - {"pkgchunk.io", "pkgchunk"}:
        tree = ast.parse((REPO / Path(*mod.split("."))).with_suffix(".py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in entry_points:
                names = {a.name for a in node.names}
                assert not names & {"read_image", "read_stack", "write_image", "read_rootfs",
                                    "fetch", "push", "mount"}, (mod, names)


def test_no_import_cycle_between_modules() -> None:
    graph = {m: {d for d in deps if d in GRAPH and d != "pkgchunk"} for m, deps in GRAPH.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle.extend([*stack[stack.index(dep):], dep] if dep in stack else [node, dep])
                return True
            if dep not in state and visit(dep, [*stack, dep]):
                return True
        state[node] = 2
        return False

    for mod in sorted(graph):
        if mod not in state and visit(mod, [mod]):
            break
    assert not cycle, " -> ".join(cycle)


def test_public_api_is_all_and_loads() -> None:
    for name in pkgchunk.__all__:
        assert getattr(pkgchunk, name) is not None, name
    assert pkgchunk.PkgchunkError.exit_code == 2
    with pytest.raises(AttributeError):
        _ = pkgchunk.no_such_name


def test_bench_uses_only_the_public_api() -> None:
    """The benchmark scripts pkgchunk as a user would: ``import pkgchunk`` and its ``__all__``
    (``from pkgchunk import bootc`` or ``pkgchunk.plan.mtimes`` would reach past it)."""
    public = set(pkgchunk.__all__)
    bad = []
    for path in sorted((REPO / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and (
                node.module.startswith("pkgchunk.")
            ):
                bad.append(f"{path.name}: from {node.module} import ...")
            elif isinstance(node, ast.ImportFrom) and node.module == "pkgchunk":
                bad += [f"{path.name}: from pkgchunk import {a.name}" for a in node.names
                        if a.name not in public]
            elif isinstance(node, ast.Import):
                bad += [f"{path.name}: import {a.name}" for a in node.names
                        if a.name.startswith("pkgchunk.")]
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id == "pkgchunk" and node.attr not in public):
                bad.append(f"{path.name}:{node.lineno}: pkgchunk.{node.attr}")
    assert not bad, "\n".join(bad)
