"""Wall time of the laptop config (config/paper-published-cpu.yaml: the paper's 18 frozen
ImageNet-backbone experiments x 3 seeds on the published crops) from the crops to the tables,
on this machine's cores. Goal: <= 30 min on 2 cores.

    python workflow/bench/bench_paper_cpu.py [--data ../shared/data/mammo_dp] [--cores 2]

Offline, the backbone is ``pretrained: none``: the same compute as the ImageNet weights (users
with network get the real ones). The published crops are read from --data in place.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data" / "mammo_dp"


def laptop_config(data: Path, pretrained: str) -> dict:
    config = yaml.safe_load((REPO / "config" / "paper-published-cpu.yaml").read_text())
    config["data"]["processed"]["path"] = str(data / "dataset16062024")
    config["synthesis"]["published"]["path"] = str(data / "synthetic" / "c-dcgan")
    config["classifier"]["model"]["pretrained"] = pretrained
    return config


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SHARED, help="the study's published data folder")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--pretrained", default="none", help="imagenet needs network or a cache")
    p.add_argument("--keep", type=Path, help="run in this folder and keep it")
    a = p.parse_args(argv)
    work = a.keep or Path(tempfile.mkdtemp(prefix="paper-cpu-"))
    (work / "config").mkdir(parents=True, exist_ok=True)
    (work / "resources").mkdir(exist_ok=True)
    shutil.copy(REPO / "config" / "experiments.tsv", work / "config")
    shutil.copy(REPO / "resources" / "mammo_dp.sha256", work / "resources")
    cfg = work / "config" / "laptop.yaml"
    cfg.write_text(yaml.safe_dump(laptop_config(a.data, a.pretrained), sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile")]
    cmd += ["-d", str(work), "--configfile", str(cfg), "--cores", str(a.cores)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"the laptop config failed:\n{r.stderr[-4000:]}")
    runs = len(list((work / "results" / "classify").glob("*/seed*/metrics.json")))
    out = {"seconds": seconds, "runs": runs, "cores": a.cores}
    print(f"laptop config: {runs} runs to the tables in {seconds / 60:.1f} min on {a.cores} cores")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
