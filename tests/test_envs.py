"""The conda environments of the rule families agree with the pip lock, the source of truth."""

from __future__ import annotations

import re

import yaml

from .conftest import REPO


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "envs" / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_env_files_pin_the_lock_versions():
    lock = _lock()
    envs = sorted((REPO / "envs").glob("*.yaml"))
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
        envs = re.findall(r'conda:\n\s+"\.\./\.\./envs/(\w+)\.yaml"', text)
        assert len(envs) == len(rules), smk.name
        for env in envs:
            assert (REPO / "envs" / f"{env}.yaml").is_file()
