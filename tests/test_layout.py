"""The shape of the library: stages import one way, no module is over 500 lines, and the docs list every module.

Stages, from the bottom up (a module may import its own stage or an earlier one, never a later one):
base (errors, schema, config, io, jdbc, compat, timer) < features < sources < prepare < model < segments < recommend < report < publish
< top
(manifest, pipeline, score) < stream < dashboard (it reads published output only). Inside a stage, modules import each other without cycles, and no import of the
library hides inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import REPO

PACKAGE = REPO / "segmentation"
STAGES = [
    "base",
    "features",
    "sources",
    "prepare",
    "model",
    "segments",
    "recommend",
    "report",
    "publish",
    "top",
    "stream",
    "dashboard",
]
TOP_LEVEL = {
    "errors": "base",
    "config": "base",
    "io": "base",
    "jdbc": "base",
    "compat": "base",
    "timer": "base",
    "schema": "base",
    "prepare": "prepare",
    "manifest": "top",
    "pipeline": "top",
    "score": "top",
}


def modules() -> dict[str, Path]:
    """Every module of the library by dotted name; a package by its name (its `__init__.py`)."""
    found = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = p.relative_to(REPO).with_suffix("").parts
        found[".".join(parts[:-1] if p.name == "__init__.py" else parts)] = p
    return found


def stage_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "top"
    return TOP_LEVEL[parts[1]] if len(parts) == 2 and parts[1] in TOP_LEVEL else parts[1]


def imports(path: Path) -> tuple[set[str], list[str]]:
    """The library modules a file imports at its top level, and those it imports inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    known = modules()
    top, hidden = set(), []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("segmentation")):
            continue
        # `from segmentation.model import engine` imports the module engine; `from x.y import name`, x.y
        targets = {f"{node.module}.{a.name}" for a in node.names} & set(known) or {node.module}
        if node in tree.body:
            top |= targets - {"segmentation"}
        else:
            hidden.append(node.module)
    return top, hidden


def test_every_stage_imports_only_its_own_or_earlier_stages():
    upward = []
    for module, path in modules().items():
        top, _ = imports(path)
        for target in top:
            if STAGES.index(stage_of(target)) > STAGES.index(stage_of(module)):
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_no_import_cycles_and_none_hidden_in_a_function():
    graph = {m: imports(p)[0] for m, p in modules().items()}
    hidden = {m: imports(p)[1] for m, p in modules().items() if imports(p)[1]}
    assert hidden == {}
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycles.append(" -> ".join([*trail[trail.index(t) :], t]) if t in trail else f"{m} -> {t}")
            elif t not in state:
                visit(t, [*trail, t])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_no_module_is_over_500_lines():
    lines = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in modules().items()}
    assert {m: n for m, n in lines.items() if n > 500} == {}


def test_the_pipeline_doc_lists_every_module_with_a_docstring():
    doc = (REPO / "docs" / "pipeline.md").read_text(encoding="utf-8")
    rooms = [p for p in modules().values() if p.name != "__init__.py" and p.parent.name != "engine"]
    # the engine is one room of the model stage, listed as `model/engine/`
    assert [p for p in rooms if f"`{p.relative_to(PACKAGE).as_posix()}`" not in doc] == []
    assert "`model/engine/`" in doc
    undocumented = [m for m, p in modules().items() if not ast.get_docstring(ast.parse(p.read_text()))]
    assert undocumented == []
