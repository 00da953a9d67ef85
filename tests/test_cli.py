"""The CLI: one subcommand per rule, one clear line on error, nothing partial left behind."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mammodp.cli import build_parser


def _run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "mammodp", *args], capture_output=True, text=True, cwd=cwd
    )


def test_one_subcommand_per_rule():
    import re

    from .helpers.configs import REPO

    sub = set(build_parser()._subparsers._group_actions[0].choices)
    used = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        used |= set(re.findall(r'"\$MAMMODP" ([a-z-]+)', smk.read_text()))
    # Every rule calls a subcommand, every subcommand serves a rule, but for study-split, which
    # rebuilds a shipped file (resources/study_split.json) rather than a step of the DAG.
    assert used == sub - {"study-split"}


def test_missing_input_is_one_line_and_leaves_nothing(tmp_path):
    r = _run(
        "split",
        "--index",
        str(tmp_path / "nope.csv"),
        "--out-split",
        str(tmp_path / "s.json"),
        "--out-manifest",
        str(tmp_path / "m.csv"),
    )
    assert r.returncode == 2
    assert r.stderr.strip() == f"mammodp split: error: {tmp_path / 'nope.csv'}: file not found"
    assert list(tmp_path.iterdir()) == []


def test_bad_csv_columns(tmp_path):
    (tmp_path / "idx.csv").write_text("path,label\na.png,1\n")
    r = _run(
        "split",
        "--index",
        str(tmp_path / "idx.csv"),
        "--out-split",
        str(tmp_path / "s.json"),
        "--out-manifest",
        str(tmp_path / "m.csv"),
    )
    assert r.returncode == 2 and "missing column(s) ['lesion_id'" in r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx.csv"]


def _bad_image_manifest(tmp):
    (tmp / "bad.png").write_bytes(b"not a png")
    (tmp / "m.csv").write_text("path,label,split,dataset\nbad.png,1,train,cbis-ddsm\n")
    (tmp / "s.csv").write_text("path,label\nbad.png,1\n")
    images = ["--images", str(tmp), "--synthetic-images", str(tmp)]
    return ["--manifest", str(tmp / "m.csv"), "--synthetic", str(tmp / "s.csv"), *images]


CASES = {
    "sample-gan without a checkpoint": (
        lambda t: (
            ["sample-gan", "--model-dir", str(t / "model"), "--n-per-class", "2"]
            + ["--seed", "1", "--out-dir", str(t / "o"), "--manifest", str(t / "o.csv")]
        ),
        "no such MCGAN checkpoint (saved: none); train the MCGAN first",
    ),
    "lesions without inputs": (
        lambda t: ["lesions", "--out", str(t / "l.csv")],
        "no inputs: give --mass-train and --mass-test",
    ),
    "lesions with a missing patient list": (
        lambda t: (
            ["lesions", "--mass-train", str(t / "a.csv"), "--mass-test", str(t / "b.csv")]
            + [
                "--dicom-root",
                str(t),
                "--patients-file",
                str(t / "p.txt"),
                "--out",
                str(t / "l.csv"),
            ]
        ),
        "p.txt: patient list not found; rerun the tcia_series rule",
    ),
    "lesions with one mass CSV": (
        lambda t: (
            ["lesions", "--mass-train", str(t / "a.csv"), "--bcdr", str(t)]
            + ["--out", str(t / "l.csv")]
        ),
        "give --mass-train, --mass-test and --dicom-root together",
    ),
    "figures with an unreadable image": (
        lambda t: (
            ["figures", "--experiments-table", "config/experiments.tsv"]
            + ["--select", "real_frozen_nodp", "--seed", "1"]
            + ["--outputs"]
            + [
                f"{n}.{ext}={t / 'f' / f'{n}.{ext}'}"
                for n in ("privacy_utility", "roc_pr", "samples", "paper_comparison")
                for ext in ("png", "pdf")
            ]
            + ["--comparison", str(t / "c.csv"), "--data-source", "phantom"]
            + ["--generator", "mcgan"]
            + _bad_image_manifest(t)
        ),
        "bad.png: image missing or unreadable",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_user_errors_are_one_line_not_a_traceback(case, tmp_path, repo):
    args, message = CASES[case]
    r = _run(*args(tmp_path), cwd=repo)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "l.csv").exists()
    # Per file atomic: the failing figure is not written (Snakemake removes the job's others).
    assert not (tmp_path / "f" / "samples.png").exists()


def test_sigterm_releases_the_jobs_slot_lock(tmp_path):
    """SLURM's time limit sends SIGTERM: the job exits and its download slot is free again."""
    import signal
    import socket
    import time

    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    (tmp_path / "series.csv").write_text("series_uid,image_count,batch\n1.2.3,1,0\n")
    cmd = [sys.executable, "-m", "mammodp", "tcia-batch", "--api-url"]
    cmd += [f"http://127.0.0.1:{silent.getsockname()[1]}/", "--series", "series.csv"]
    cmd += ["--batch", "0", "--root", "dl", "--out", "b0.tsv", "--connections", "1"]
    job = subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / ".snakemake" / "tcia-locks" / "tcia0.lock"
    deadline = time.monotonic() + 60
    while not lock.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert lock.exists(), "the job never took its slot"
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=60) == 128 + signal.SIGTERM
    silent.close()
    assert not lock.exists() and not (tmp_path / "b0.tsv").exists()


def test_forked_workers_die_on_sigterm_while_the_job_exits_through_python():
    """A job exits through Python on SIGTERM (its locks are released); the workers it forks
    (process pools, frd-score's) keep the default action, so a pool can terminate them."""
    import os
    import signal

    from mammodp import cli

    before = signal.getsignal(signal.SIGTERM)
    try:
        cli._exit_through_python_on_sigterm()
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
        pid = os.fork()
        if pid == 0:  # the child: report whether SIGTERM has its default action
            os._exit(0 if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        signal.signal(signal.SIGTERM, before)
