"""Fault injection: jobs killed with SIGKILL resume to the same result, a full disk gives one
clear error and no partial output, Snakemake reruns a job killed mid-way."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from mammodp import classify
from mammodp.config import RUN_FILES, Experiment
from mammodp.synthesis import mcgan

from .helpers.configs import REPO, tiny_config
from .helpers.models import TINY
from .helpers.snakemake import snakemake, snakemake_cmd

pytestmark = pytest.mark.faults


def _cli(*args, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    return subprocess.Popen(
        [sys.executable, "-m", "mammodp", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _state_epoch(path: Path) -> int:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)["progress"]["epoch"]
    except Exception:  # absent, or being replaced right now
        return 0


def _kill_when(proc, state: Path, epoch: int, timeout=120):
    deadline = time.monotonic() + timeout
    while _state_epoch(state) < epoch:
        assert proc.poll() is None, f"finished before the kill: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no training state appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_of_a_dp_classifier_job_then_rerun_gives_the_same_result(tmp_path, tiny_manifest):
    manifest = tmp_path / "crops.csv"
    tiny_manifest.to_csv(manifest, index=False)
    exp = Experiment("k", "-", "real", "real", "head", "mlp", "backbone", 6.0)
    job = {
        "experiment": asdict(exp),
        "seed": 3,
        "model": asdict(TINY),
        "train": asdict(
            classify.TrainSpec(epochs=60, batch_size=16, lr=1e-3, checkpoint_every=1, bootstrap=100)
        ),
        "dp": {**asdict(classify.DPSpec()), "epsilon_window": [0.75, 1.05]},
        "device": "cpu",
    }
    args = ["classify", "--job", json.dumps(job), "--manifest", str(manifest), "--images", "/"]

    def run_in(d):  # the manifest's paths are absolute: any image folder resolves them
        return _cli(*args, "--outputs", *(f"{k}={d / v}" for k, v in RUN_FILES.items()))

    assert run_in(tmp_path / "a").wait() == 0
    killed = run_in(tmp_path / "b")
    _kill_when(killed, tmp_path / "b" / ".state" / "state.pt", epoch=5)
    assert not (tmp_path / "b" / "metrics.json").exists()
    assert run_in(tmp_path / "b").wait() == 0
    for name in ("metrics.json", "predictions.csv", "history.csv", "privacy.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_sigkill_of_a_gan_job_then_rerun_gives_the_same_generator(tmp_path, tiny_manifest):
    manifest = tmp_path / "crops.csv"
    tiny_manifest.to_csv(manifest, index=False)
    spec = json.dumps(
        {
            **asdict(mcgan.GanSpec(epochs=8, width=4, checkpoint_every=1, seed=2)),
            "dp": {"enabled": False},
        }
    )
    args = ["train-gan", "--manifest", str(manifest), "--images", "/", "--spec", spec, "--out-dir"]
    assert _cli(*args, str(tmp_path / "a")).wait() == 0
    killed = _cli(*args, str(tmp_path / "b"))
    _kill_when(killed, tmp_path / ".b.state" / "state.pt", epoch=3)
    assert not (tmp_path / "b").exists()
    assert _cli(*args, str(tmp_path / "b")).wait() == 0
    a = torch.load(tmp_path / "a" / "generator.pt", weights_only=True)["generator"]
    b = torch.load(tmp_path / "b" / "generator.pt", weights_only=True)["generator"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_full_disk_gives_one_clear_error_and_no_partial_output(tmp_path, tiny_manifest):
    index = tiny_manifest.drop(columns=["split"]).assign(portion="train")
    index.loc[tiny_manifest["split"] == "test", "portion"] = "test"
    index.to_csv(tmp_path / "index.csv", index=False)
    out = tmp_path / "out"

    def small_disk():  # files above 2 KB cannot be written: the write fails as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    p = _cli(
        "split",
        "--index",
        str(tmp_path / "index.csv"),
        "--out-split",
        str(out / "s.json"),
        "--out-manifest",
        str(out / "crops.csv"),
        preexec_fn=small_disk,
    )
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2
    assert err.strip().splitlines()[-1] == (
        f"mammodp split: error: cannot write {out / 'crops.csv'}: File too large. Free disk "
        "space (or fix the folder's permissions) and rerun; nothing partial was kept."
    )
    assert not (out / "crops.csv").exists()
    assert not [f for f in out.iterdir() if f.name.endswith(".part")]


@pytest.mark.workflow
def test_snakemake_reruns_a_job_killed_mid_way(tmp_path, write_config):
    """SIGKILL of the whole Snakemake process group during a classifier job: the rerun finds the
    job incomplete, reruns it (its saved state resumes it) and completes the DAG."""
    work = tmp_path / "work"
    shutil.copytree(REPO / "config", work / "config")
    config = tiny_config()
    config["classifier"]["train"].update(epochs=40, checkpoint_every=1)
    cfg = write_config(config)
    cmd = snakemake_cmd(work, "--configfile", str(cfg), "--cores", "1")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 600
    state = None
    while state is None:
        assert proc.poll() is None and time.monotonic() < deadline
        states = [s for s in (work / "results" / "classify").glob("*/seed1/.state/state.pt")]
        state = next((s for s in states if _state_epoch(s) >= 2), None)
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run_dir = state.parent.parent
    dry = snakemake(work, "-n", "--configfile", str(cfg), "--cores", "1")
    assert dry.returncode == 0
    assert str(run_dir.relative_to(work) / "metrics.json") in dry.stdout
    # A killed Snakemake leaves its directory lock: --unlock (as the README says), then rerun.
    assert snakemake(work, "--configfile", str(cfg), "--unlock").returncode == 0
    again = snakemake(work, "--configfile", str(cfg), "--cores", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (run_dir / "metrics.json").exists() and not (run_dir / ".state").exists()
