"""What each rule's command imports, statically: the ``mammodp`` subcommand a rule's shell runs,
the package modules its command function reaches (module-level and function-level imports,
transitively), the third-party distributions those import, and the distributions a conda
environment file installs (its pins and, through the installed metadata, their requirements)."""

from __future__ import annotations

import ast
import re
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

import yaml
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "workflow" / "mammodp"
STDLIB = set(sys.stdlib_module_names)


def rules() -> dict[str, tuple[str, str]]:
    """rule name -> (conda environment file, mammodp subcommand), from the rule files."""
    out = {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        blocks = re.split(r"^(?=(?:rule|checkpoint) \w+:)", text, flags=re.M)[1:]
        for block in blocks:
            name = re.match(r"(?:rule|checkpoint) (\w+):", block)[1]
            env = re.search(r'conda:\n\s+"([^"]+)"', block)[1]
            sub = re.search(r'"\$MAMMODP" ([\w-]+)', block)[1]
            if "{env}" in env:  # one job per environment (the software rule)
                for path in sorted((smk.parent / env).parent.glob("*.yaml")):
                    out[f"{name}[{path.stem}]"] = (path.resolve(), sub)
            else:
                out[name] = ((smk.parent / env).resolve(), sub)
    return out


@cache
def _tree(module: str) -> ast.Module:
    return ast.parse((PACKAGE / f"{module}.py").read_text())


def _own_module(node: ast.ImportFrom) -> str | None:
    return node.module.split(".")[0] if node.level and node.module else None


def _scan(nodes) -> tuple[set[str], set[str], dict[str, tuple[str, str | None]]]:
    """Imports in ``nodes`` (not inside nested defs' own analysis: everything under them):
    third-party top-level names, package modules, and the names they bind: alias -> (package
    module, attribute or None for the module itself)."""
    other, own, names = set(), set(), {}
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.ImportFrom) and sub.level:
                module = _own_module(sub)
                for alias in sub.names:
                    if module is None and (PACKAGE / f"{alias.name}.py").is_file():
                        own.add(alias.name)  # from . import x: the module x
                        names[alias.asname or alias.name] = (alias.name, None)
                    elif module is None:  # from . import name: a name of the package itself
                        own.add("__init__")
                        names[alias.asname or alias.name] = ("__init__", alias.name)
                    else:
                        own.add(module)
                        names[alias.asname or alias.name] = (module, alias.name)
            elif isinstance(sub, ast.ImportFrom) and sub.module:
                other.add(sub.module.split(".")[0])
            elif isinstance(sub, ast.Import):
                other |= {a.name.split(".")[0] for a in sub.names}
    return other - STDLIB - {"mammodp"}, own, names


def _definitions(module: str) -> dict[str, ast.AST]:
    return {
        n.name: n
        for n in _tree(module).body
        if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
    }


def _module_level(module: str) -> list[ast.stmt]:
    return [n for n in _tree(module).body if not isinstance(n, ast.FunctionDef | ast.ClassDef)]


@cache
def loaded(module: str) -> frozenset[str]:
    """Third-party names importing ``module`` loads: its module-level imports and those of the
    package modules they import, transitively."""
    other, own, _ = _scan(_module_level(module))
    for dep in own - {module}:
        other |= loaded(dep)
    return frozenset(other)


def reached(module: str, name: str) -> set[str]:
    """Third-party names running ``module.name`` (a function, or a class: all its methods) can
    import: the module's load, the definition's own imports, and, transitively, whatever the
    package functions and classes it refers to (by name, or as ``module.attribute``) reach."""
    out, seen, todo = set(), set(), [(module, name)]
    while todo:
        mod, nm = todo.pop()
        if (mod, nm) in seen or nm not in _definitions(mod):
            continue
        seen.add((mod, nm))
        node = _definitions(mod)[nm]
        out |= loaded(mod)
        other, own, local = _scan([node])
        out |= other
        for dep in own:
            out |= loaded(dep)
        _, _, top = _scan(_module_level(mod))
        bound = {**top, **local}
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and sub.id in _definitions(mod):
                todo.append((mod, sub.id))
            elif isinstance(sub, ast.Name) and bound.get(sub.id, (None, None))[1]:
                todo.append(bound[sub.id])
            elif isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name):
                target = bound.get(sub.value.id)
                if target is not None and target[1] is None:  # module.attribute
                    todo.append((target[0], sub.attr))
    return out


def command_imports(sub: str) -> set[str]:
    """Third-party names the CLI subcommand ``sub`` can import."""
    text = (PACKAGE / "cli.py").read_text()
    m = re.search(rf'add_parser\(\s*"{re.escape(sub)}".*?set_defaults\(func=(\w+)\)', text, re.S)
    return reached("cli", m[1])


@cache
def _top_level_to_distribution() -> dict[str, str]:
    names = {}
    for top, dists in metadata.packages_distributions().items():
        names[top] = canonicalize_name(dists[0])
    return names


def distributions(top_level: set[str]) -> set[str]:
    table = _top_level_to_distribution()
    missing = sorted(t for t in top_level if t not in table)
    if missing:
        raise LookupError(f"no installed distribution provides {missing}")
    return {table[t] for t in top_level}


@cache
def pin_envs():
    """envs/pin_envs.py, the tool that pins the environment files (one requirement closure)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("pin_envs", REPO / "envs" / "pin_envs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def env_pins(env_file: Path) -> set[str]:
    spec = yaml.safe_load(env_file.read_text())
    pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
    return {canonicalize_name(re.split(r"[=<>\[ ]", p)[0]) for p in pip}


def env_provides(pins: set[str]) -> set[str]:
    """The pins and everything pip installs for them."""
    return set(pins) | pin_envs().closure(set(pins))


def missing_from_env(sub: str, pins: set[str]) -> set[str]:
    return distributions(command_imports(sub)) - env_provides(pins)
