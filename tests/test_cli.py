"""The CLI: one subcommand per rule, one clear line on error, nothing partial left behind."""

from __future__ import annotations

import subprocess
import sys

from mammodp.cli import build_parser


def _run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "mammodp", *args], capture_output=True, text=True, cwd=cwd
    )


def test_one_subcommand_per_rule():
    import re

    from .conftest import REPO

    sub = set(build_parser()._subparsers._group_actions[0].choices)
    used = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        used |= set(re.findall(r'"mammodp ([a-z-]+)', smk.read_text()))
    assert used == sub  # every rule calls a subcommand, every subcommand serves a rule


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
