"""Golden outputs: the tiny config's crops, split and tables, pinned by sha256 in
tests/golden/tiny.sha256, so a refactor provably changes no number.

The config is .test/config/config.yaml over the demo config, run as its header says. The
crop index holds every crop's sha256, so it pins the pixels too; the tables are the rendered
Markdown (what a reader sees). Regenerate only with a stated reason in the commit:
MAMMODP_UPDATE_GOLDEN=1 pytest tests/test_golden.py
"""

from __future__ import annotations

import os
import shutil

import pytest

from mammodp.fileio import sha256_file

from .helpers.configs import REPO, TINY_CONFIG
from .helpers.snakemake import snakemake

GOLDEN = REPO / "tests" / "golden" / "tiny.sha256"
PINNED = [
    "results/data/lesions.csv",
    "results/data/crop_index.csv",
    "results/data/split.json",
    "results/data/crops.csv",
    "results/tables/main.md",
    "results/tables/privacy.md",
    "results/tables/fidelity.md",
]


def _read_golden() -> dict[str, str]:
    rows = (line.split() for line in GOLDEN.read_text().splitlines() if line.strip())
    return {path: digest for digest, path in rows}


@pytest.mark.workflow
def test_the_tiny_configs_crops_split_and_tables_are_unchanged(tmp_path):
    shutil.copytree(REPO / "config", tmp_path / "config")
    configs = ("--configfile", str(REPO / "config" / "config.yaml"), str(TINY_CONFIG))
    r = snakemake(tmp_path, *configs, "--cores", "2", *PINNED)
    assert r.returncode == 0, r.stderr[-4000:]
    got = {p: sha256_file(tmp_path / p) for p in PINNED}
    if os.environ.get("MAMMODP_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text("".join(f"{d}  {p}\n" for p, d in got.items()))
        pytest.skip(f"rewrote {GOLDEN.relative_to(REPO)}: state why in the commit")
    golden = _read_golden()
    changed = {p: d for p, d in got.items() if golden.get(p) != d}
    assert not changed, (
        f"outputs differ from {GOLDEN.relative_to(REPO)}: {sorted(changed)}; if intended, "
        "rerun with MAMMODP_UPDATE_GOLDEN=1 and say why in the commit"
    )
