"""The SLURM profile, without a cluster: fake sbatch/squeue/sacct/scontrol/srun on PATH record
their arguments and run the jobs here. The command is the README's (plus faster status polling)."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from .helpers.configs import REPO, tiny_config
from .helpers.snakemake import snakemake

TOOLS = ["sbatch", "squeue", "sacct", "scontrol", "sinfo", "sacctmgr", "sshare", "srun", "scancel"]
README_COMMAND = "snakemake --workflow-profile workflow/profiles/slurm --configfile"
GPU_RULES = {"train_mcgan", "backbone_features"}


@pytest.fixture
def fake_cluster(tmp_path, monkeypatch):
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm-state"
    bin_dir.mkdir()
    state.mkdir()
    for tool in TOOLS:
        (bin_dir / tool).symlink_to(REPO / "tests" / "fake_slurm" / "fake_slurm.py")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(state))
    return state


def _submissions(state):
    subs = []
    for line in (state / "calls.jsonl").read_text().splitlines():
        call = json.loads(line)
        if call["tool"] == "sbatch":
            rule = re.search(r"rule_(\w+)", " ".join(call["argv"]))[1]
            subs.append((rule, call["argv"]))
    return subs


def test_readme_shows_the_command_this_test_runs():
    assert README_COMMAND in (REPO / "README.md").read_text()


@pytest.mark.workflow
def test_demo_dag_through_the_fake_cluster(tmp_path, fake_cluster, write_config):
    work = tmp_path / "work"
    shutil.copytree(REPO / "config", work / "config")
    cfg = write_config(tiny_config(device="auto"), "tiny.yaml")
    profile = REPO / "workflow" / "profiles" / "slurm"
    r = snakemake(
        work,
        "--workflow-profile",
        str(profile),
        "--configfile",
        str(cfg),
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--seconds-between-status-checks",
        "2",
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (work / "results" / "tables" / "main.md").exists()
    subs = _submissions(fake_cluster)
    rules = {rule for rule, _ in subs}
    assert {"phantom", "lesions", "crop", "split", "classify", "tables", "figures"} <= rules
    for rule, argv in subs:
        text = " ".join(argv)
        asks_gpu = "--gpus=1" in text
        # Classifier jobs that run the backbone (full fine-tuning) need one; cached-feature
        # heads train on the CPU.
        full = rule == "classify" and "rule_classify/syn_full_nodp_" in text
        assert asks_gpu == (rule in GPU_RULES or full), (rule, text)
        assert "-p your_partition" in text and "-A your_account" in text, text
    classify_runtimes = {a[a.index("-t") + 1] for r, a in subs if r == "classify"}
    assert classify_runtimes == {"720"}  # set-resources of the profile reached sbatch


def test_default_workflow_profile_does_not_override_the_slurm_resources(tmp_path, write_config):
    """With --profile (not --workflow-profile), Snakemake also applies workflow/profiles/default
    and lets it win key by key: it must hold nothing the SLURM profile sets."""
    work = tmp_path / "work"
    shutil.copytree(REPO / "config", work / "config")
    cfg = write_config(tiny_config(device="auto"), "tiny.yaml")
    r = snakemake(
        work,
        "-n",
        "--profile",
        str(REPO / "workflow" / "profiles" / "slurm"),
        "--configfile",
        str(cfg),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "workflow specific profile" in r.stderr + r.stdout  # both profiles applied
    blocks = r.stdout.split("\nrule ")[1:]
    train = next(b for b in blocks if b.startswith("train_mcgan:"))
    assert "slurm_partition=your_partition" in train and "runtime=2880" in train
    assert "gpu=1" in train
