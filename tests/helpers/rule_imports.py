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

REPO = Path(__file__).resolve().parents[2]
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


def module_file(module: str) -> Path | None:
    """The file of package module ``module`` (dotted, relative to ``mammodp``; ``""`` is the
    package itself), or None when it is not a module of the package."""
    base = PACKAGE.joinpath(*module.split(".")) if module else PACKAGE
    if base.with_suffix(".py").is_file() and module:
        return base.with_suffix(".py")
    return base / "__init__.py" if (base / "__init__.py").is_file() else None


def package_modules() -> list[str]:
    """Every module of the package, dotted (``data.crops``, ``classify`` for its __init__)."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


@cache
def _tree(module: str) -> ast.Module:
    return ast.parse(module_file(module).read_text())


def _is_package(module: str) -> bool:
    return module_file(module).name == "__init__.py"


def _parents(module: str) -> set[str]:
    """Importing ``a.b.c`` runs the package __init__s ``""``, ``a`` and ``a.b`` first."""
    parts = module.split(".") if module else []
    return {".".join(parts[:i]) for i in range(len(parts))}


def _target(module: str, node: ast.ImportFrom) -> str | None:
    """The package module an ``ImportFrom`` in ``module`` reads from, or None (third party)."""
    if node.level:
        here = module.split(".") if module else []
        base = here if _is_package(module) else here[:-1]
        base = base[: len(base) - (node.level - 1)]
        return ".".join([*base, *(node.module.split(".") if node.module else [])])
    if node.module == "mammodp" or (node.module or "").startswith("mammodp."):
        return node.module.removeprefix("mammodp").removeprefix(".")
    return None


def _scan(module: str, nodes) -> tuple[set[str], set[str], dict[str, tuple[str, str | None]]]:
    """Imports in ``nodes`` of ``module`` (everything under them, nested defs included):
    third-party top-level names, package modules, and the names they bind: alias -> (package
    module, attribute or None for the module itself)."""
    other, own, names = set(), set(), {}
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.ImportFrom) and (source := _target(module, sub)) is not None:
                own.add(source)
                for alias in sub.names:
                    child = f"{source}.{alias.name}" if source else alias.name
                    if module_file(child) is not None:  # from package import module
                        own.add(child)
                        names[alias.asname or alias.name] = (child, None)
                    else:
                        names[alias.asname or alias.name] = (source, alias.name)
            elif isinstance(sub, ast.ImportFrom) and sub.module:
                other.add(sub.module.split(".")[0])
            elif isinstance(sub, ast.Import):
                for a in sub.names:
                    if a.name.split(".")[0] == "mammodp":
                        own.add(a.name.removeprefix("mammodp").removeprefix("."))
                    else:
                        other.add(a.name.split(".")[0])
    own |= {parent for dep in own for parent in _parents(dep)}
    return other - STDLIB - {"mammodp"}, own, names


def _definitions(module: str) -> dict[str, ast.AST]:
    return {
        n.name: n
        for n in _tree(module).body
        if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
    }


def lazy_exports(module: str) -> dict[str, tuple[str, str]]:
    """A package's lazy exports (``_EXPORTS = {name: "module"}`` in its __init__): name ->
    (package module, attribute)."""
    for node in _tree(module).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "_EXPORTS":
            table = ast.literal_eval(node.value)
            return {name: (f"{module}.{where}", name) for name, where in table.items()}
    return {}


def _module_level(module: str) -> list[ast.stmt]:
    return [n for n in _tree(module).body if not isinstance(n, ast.FunctionDef | ast.ClassDef)]


def module_level_imports(module: str) -> set[str]:
    """The package modules importing ``module`` imports at once (its parents included)."""
    return (_scan(module, _module_level(module))[1] | _parents(module)) - {module}


def all_imports(module: str) -> set[str]:
    """The package modules ``module`` imports anywhere, function bodies included."""
    return _scan(module, _tree(module).body)[1] - {module}


@cache
def loaded(module: str) -> frozenset[str]:
    """Third-party names importing ``module`` loads: its module-level imports and those of the
    package modules they import (parent packages included), transitively."""
    out, seen, todo = set(), set(), [module]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        out |= _scan(mod, _module_level(mod))[0]
        todo.extend(module_level_imports(mod))
    return frozenset(out)


def reached(module: str, name: str) -> set[str]:
    """Third-party names running ``module.name`` (a function, or a class: all its methods) can
    import: the module's load, the definition's own imports, and, transitively, whatever the
    package functions and classes it refers to (by name, or as ``module.attribute``, through a
    package's lazy exports too) reach."""
    out, seen, todo = set(), set(), [(module, name)]
    while todo:
        mod, nm = todo.pop()
        if (mod, nm) in seen:
            continue
        seen.add((mod, nm))
        if nm not in _definitions(mod):
            if nm in lazy_exports(mod):
                out |= loaded(mod)
                todo.append(lazy_exports(mod)[nm])
            continue
        node = _definitions(mod)[nm]
        out |= loaded(mod)
        other, own, local = _scan(mod, [node])
        out |= other
        for dep in own:
            out |= loaded(dep)
        _, _, top = _scan(mod, _module_level(mod))
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
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        text = path.read_text()
        pattern = rf'add_parser\(\s*"{re.escape(sub)}".*?set_defaults\(func=(\w+)\)'
        if m := re.search(pattern, text, re.S):
            return reached(f"cli.{path.stem}", m[1])
    raise LookupError(f"no CLI module defines the subcommand {sub}")


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
