"""The conda environments of the rule families agree with the pip lock, the source of truth."""

from __future__ import annotations

import re

import pytest
import yaml

from .helpers import rule_imports
from .helpers.configs import REPO


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "envs" / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_env_files_pin_the_lock_versions():
    lock = _lock()
    envs = sorted((REPO / "workflow" / "envs").glob("*.yaml"))
    assert {e.stem for e in envs} == {"data", "synthesis", "fidelity", "classify", "report"}
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        assert "python=3.11" in spec["dependencies"], env
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        for req in pip:
            name, version = req.split("==")
            assert lock[name.lower().replace("_", "-")] == version, (env.name, req)


def test_every_rule_names_its_environment():
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        rules = re.findall(r"^(?:rule|checkpoint) (\w+):", text, re.M)
        envs = re.findall(r'conda:\n\s+"\.\./envs/(\w+|\{env\})\.yaml"', text)
        assert len(envs) == len(rules), smk.name
        for env in set(envs) - {"{env}"}:
            assert (REPO / "workflow" / "envs" / f"{env}.yaml").is_file()


RULES = rule_imports.rules()


@pytest.mark.parametrize("rule", sorted(RULES))
def test_each_rules_environment_provides_what_its_code_imports(rule):
    """Every third-party import the rule's `mammodp` command can reach (static: the command
    function, the package functions and classes it refers to, the modules they load) is a
    distribution the rule's environment installs (its pins and their requirements)."""
    env, command = RULES[rule]
    assert rule_imports.missing_from_env(command, rule_imports.env_pins(env)) == set(), env.name


def test_the_import_check_fails_when_a_dependency_is_removed():
    env, command = RULES["lesions"]
    pins = rule_imports.env_pins(env)
    assert "pydicom" in rule_imports.distributions(rule_imports.command_imports(command))
    assert rule_imports.missing_from_env(command, pins - {"pydicom"}) == {"pydicom"}
    env, command = RULES["train_mcgan"]  # split.py's scikit-learn, the finding of issue 14
    pins = rule_imports.env_pins(env) - {"scikit-learn"}
    assert "scikit-learn" in rule_imports.missing_from_env(command, pins)


def test_the_static_analysis_sees_imports_inside_functions():
    """A command's function-level imports count (cmd_classify imports split, which loads
    crops, which loads dicomio: pydicom), a module's unused function does not (tables does not
    need opacus though privacy_notes imports it inside compose)."""
    assert "pydicom" in rule_imports.command_imports("classify")
    assert "opacus" not in rule_imports.command_imports("tables")
    assert "frd_score" in rule_imports.command_imports("frd")


def test_env_files_pin_every_requirement_of_their_packages():
    """Indirect dependencies too, at the lock's versions (envs/pin_envs.py writes them); a file
    missing one, or pinning another version, is out of date."""
    pin_envs = rule_imports.pin_envs()
    pins = pin_envs.lock_pins()
    for env in sorted((REPO / "workflow" / "envs").glob("*.yaml")):
        text = env.read_text()
        assert pin_envs.pinned(text, pins) == text, f"{env.name}: run envs/pin_envs.py"
    text = (REPO / "workflow" / "envs" / "classify.yaml").read_text()
    lines = text.splitlines(keepends=True)
    sympy = next(i for i, line in enumerate(lines) if "- sympy==" in line)  # torch's, not ours
    stale = "".join(lines[:sympy] + lines[sympy + 1 :])
    assert pin_envs.pinned(stale, pins) == text != stale
