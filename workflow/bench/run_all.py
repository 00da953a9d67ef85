"""Every benchmark of the project in one run, and one table of what they measured (ratios are
measured side by side within each benchmark; these machines are noisy).

    make bench            # or: python workflow/bench/run_all.py [--skip-demo]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "workflow"))


def _snakemake(workdir: Path, *args: str) -> float:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "workflow" / "Snakefile"),
        "-d",
        str(workdir),
        *args,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t


def dry_run_seconds(repeats: int = 3) -> float:
    """Wall time of `snakemake -n --configfile config/paper.yaml` (the full study's DAG)."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(REPO / "config", Path(tmp) / "config")
        return statistics.median(
            _snakemake(Path(tmp), "-n", "--configfile", "config/paper.yaml", "--cores", "2")
            for _ in range(repeats)
        )


def demo_seconds() -> float:
    """Wall time of the demo DAG (the default config) from scratch on 2 cores."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(REPO / "config", Path(tmp) / "config")
        return _snakemake(Path(tmp), "--cores", "2")


def run_bench(name: str) -> dict:
    """One benchmark in a fresh interpreter (no state shared between benchmarks); its report is
    shown, its results returned."""
    code = f"import json, {name}; print('RESULT ' + json.dumps({name}.main([])))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=HERE, check=True, text=True, capture_output=True
    ).stdout
    print(out.rsplit("RESULT ", 1)[0], end="")
    return json.loads(out.rsplit("RESULT ", 1)[1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-demo", action="store_true", help="skip the demo run (~6 min)")
    a = p.parse_args(argv)
    rows = []
    c = run_bench("bench_classify")
    rows.append(
        (
            "head training: cached features vs Swin-T forward per step (per epoch)",
            f"{c['cached_speedup']:.0f}x faster",
            ">= 50x",
        )
    )
    rows.append(
        (
            "DP vs non-DP head epoch, book-keeping clipping",
            f"{c['dp_bookkeeping_over_nodp']:.2f}x",
            "<= 1.3x",
        )
    )
    rows.append(
        ("DP vs non-DP head epoch, Opacus per-sample path", f"{c['dp_opacus_over_nodp']:.1f}x", "")
    )
    k = run_bench("bench_crop")
    rows.append(
        (
            "cropping vs bare DICOM decoding (same files)",
            f"{k['crop_over_decode']:.2f}x ({k['crops_per_s']:.0f} crops/s)",
            "<= 1.3x",
        )
    )
    f = run_bench("bench_frd")
    rows.append(
        (
            "FRD radiomics extraction, 1 -> 2 workers",
            f"{f['images_per_s_1']:.0f} -> {f['images_per_s_2']:.0f} images/s "
            f"({f['speedup']:.2f}x)",
            "",
        )
    )
    rows.append(
        ("dry-run of the full study (config/paper.yaml)", f"{dry_run_seconds():.1f} s", "<= 5 s")
    )
    if not a.skip_demo:
        rows.append(
            (
                "demo DAG wall time (default config, 2 cores)",
                f"{demo_seconds() / 60:.1f} min",
                "<= 10 min",
            )
        )
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    width = max(len(r[0]) for r in rows)
    print(f"\nBenchmarks ({machine})")
    print(f"{'measure':<{width}}  {'result':<36}  goal")
    for name, result, goal in rows:
        print(f"{name:<{width}}  {result:<36}  {goal}")


if __name__ == "__main__":
    main()
