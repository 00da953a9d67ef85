"""GPU device assignment on one machine: no two concurrent jobs hold one device."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from mammodp import gpu
from mammodp.errors import UserError

from .helpers.configs import REPO

JOB = """
import json, os, sys, time
sys.path.insert(0, {workflow!r})
os.environ.pop("CUDA_VISIBLE_DEVICES", None)
import pytest

from mammodp import gpu
from mammodp.errors import UserError
device = gpu.assign({locks!r}, devices=[0, 1])
start = time.time()
time.sleep(0.6)
print(json.dumps({{"device": int(os.environ["CUDA_VISIBLE_DEVICES"]), "start": start,
                  "end": time.time()}}))
"""


def test_two_devices_four_concurrent_jobs(tmp_path):
    locks = tmp_path / "locks"
    code = JOB.format(workflow=str(REPO / "workflow"), locks=str(locks))
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(4)
    ]
    runs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert {r["device"] for r in runs} == {0, 1}
    for i, a in enumerate(runs):
        for b in runs[i + 1 :]:
            if a["device"] == b["device"]:  # the same device: never at the same time
                assert a["end"] <= b["start"] or b["end"] <= a["start"], (a, b)
    assert not list(locks.glob("gpu*.lock"))  # released at exit


def test_stale_lock_of_a_killed_job_is_reclaimed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gpu.lock_path(tmp_path, "gpu", 0).write_text(f"{socket.gethostname()} {dead.pid}")
    gpu.lock_path(tmp_path, "gpu", 1).write_text(f"{socket.gethostname()} {os.getpid()}")  # alive
    assert gpu.claim([0, 1], tmp_path, timeout=5) == 0


def test_another_hosts_gpu_locks_do_not_block_this_host(tmp_path):
    """A lock folder shared by machines: their GPU 0 is not ours."""
    (tmp_path / "gpu0@node7.lock").write_text("node7 1")
    (tmp_path / "gpu1@node7.lock").write_text("node7 2")
    assert gpu.claim([0, 1], tmp_path, timeout=0.3, poll=0.1) == 0
    assert (tmp_path / "gpu0@node7.lock").exists()  # never reclaimed: its holder is unknown


def test_a_slot_held_on_another_host_is_reported_not_reclaimed(tmp_path, caplog):
    lock = gpu.lock_path(tmp_path, "tcia", 0)
    lock.write_text("node7 4242")
    with caplog.at_level("WARNING", logger="mammodp.gpu"), pytest.raises(UserError) as e:
        gpu.claim([0], tmp_path, timeout=0.3, poll=0.1, kind="tcia")
    assert "held on other hosts: tcia0.lock (node7 pid 4242)" in str(e.value)
    assert "cannot be checked from here: tcia0.lock (node7 pid 4242)" in caplog.text
    assert caplog.text.count("waiting for tcia slots") == 1  # reported once, not every poll
    assert lock.read_text() == "node7 4242"


def test_a_scheduler_assigned_device_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert gpu.assign(tmp_path, devices=[0, 1]) is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3" and not list(tmp_path.iterdir())


def test_no_free_device_is_a_clear_error(tmp_path):
    gpu.lock_path(tmp_path, "gpu", 0).write_text(f"{socket.gethostname()} {os.getpid()}")
    start = time.monotonic()
    try:
        gpu.claim([0], tmp_path, timeout=0.3, poll=0.1)
    except Exception as e:
        assert "no free GPU among [0]" in str(e) and "--resources gpu=" in str(e)
    else:
        raise AssertionError("claimed a held device")
    assert time.monotonic() - start < 5
