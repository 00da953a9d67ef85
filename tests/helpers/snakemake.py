"""Running the workflow's Snakefile in a scratch directory, offline."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .configs import REPO

SNAKEFILE = REPO / "workflow" / "Snakefile"


def snakemake_cmd(workdir: Path, *args: str, snakefile: Path = SNAKEFILE) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir), *args]


def snakemake(
    workdir: Path, *args: str, timeout: int = 1800, snakefile: Path = SNAKEFILE
) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = snakemake_cmd(workdir, *args, snakefile=snakefile)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def job_counts(stdout: str) -> dict[str, int]:
    """Jobs per rule from the "Job stats:" block of a (dry) run."""
    block = stdout[stdout.index("Job stats:") :]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)}
