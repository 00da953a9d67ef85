"""The package mirrors the DAG: stage subpackages in the DAG's order, none importing a later
stage, shared helpers importing no stage, no import cycle, and functions that fit on a screen.
The import graph is static (every import statement, function bodies included)."""

from __future__ import annotations

import ast

from .helpers import rule_imports
from .helpers.configs import REPO

# The DAG's order (workflow/rules/*.smk); the CLI calls every stage and is exempt.
STAGES = ("data", "synthesis", "fidelity", "classify", "audit", "report")
EXEMPT = ("cli", "__main__")
MAX_FUNCTION_LINES = 60


def _stage(module: str) -> str | None:
    top = module.split(".")[0]
    return top if top in STAGES else None


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    """Edges where a stage imports a later stage, or a shared helper imports any stage."""
    out = []
    for module, deps in graph.items():
        if module.split(".")[0] in EXEMPT or module == "":
            continue
        for dep in sorted(deps):
            here, there = _stage(module), _stage(dep)
            if there is None or there == here:
                continue
            if here is None or STAGES.index(there) > STAGES.index(here):
                out.append(f"{module or 'mammodp'} imports {dep}")
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles (each once, as a path that returns to its start), by depth-first search.
    A package's own __init__ is left out: importing ``a.b`` runs ``a`` first, never a cycle."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if node.startswith(f"{dep}.") or dep == "":
                continue
            if state.get(dep) == "open":
                found.append(path[path.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def _graph() -> dict[str, set[str]]:
    return {m: rule_imports.all_imports(m) for m in rule_imports.package_modules()}


def test_every_stage_of_the_dag_is_a_subpackage_named_like_its_rule_file():
    rules = {p.stem for p in (REPO / "workflow" / "rules").glob("*.smk")} - {"common"}
    assert rules == set(STAGES)
    for stage in STAGES:
        path = rule_imports.module_file(stage)
        assert path is not None, stage
        assert stage == "fidelity" or path.name == "__init__.py", f"{stage} is not a package"
        assert rule_imports.module_file(f"cli.{stage}") is not None, f"no cli/{stage}.py"


def test_no_stage_imports_a_later_stage_and_helpers_import_no_stage():
    assert layering_violations(_graph()) == []


def test_the_package_has_no_import_cycle():
    assert cycles(_graph()) == []


def test_the_checks_catch_what_they_guard_against():
    graph = {
        "data.crops": {"classify.models", "errors"},  # an earlier stage importing a later one
        "fileio": {"report.tables"},  # a shared helper importing a stage
        "classify.job": {"data.split", "classify"},  # allowed: earlier stage, own package
        "cli.data": {"report"},  # exempt
        "a": {"b"},
        "b": {"c"},
        "c": {"a"},
    }
    assert layering_violations(graph) == [
        "data.crops imports classify.models",
        "fileio imports report.tables",
    ]
    assert cycles(graph) == [["a", "b", "c", "a"]]


def long_functions(limit: int = MAX_FUNCTION_LINES) -> list[str]:
    out = []
    for path in sorted((REPO / "workflow" / "mammodp").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    where = path.relative_to(REPO / "workflow").as_posix()
                    out.append(f"{where}:{node.lineno} {node.name} ({lines} lines)")
    return out


def test_no_package_function_is_longer_than_a_screen():
    assert long_functions() == []
