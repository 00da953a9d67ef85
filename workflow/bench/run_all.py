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


def dry_run_seconds(seeds: int = 3, repeats: int = 3) -> float:
    """Wall time of `snakemake -n --configfile config/paper.yaml` (the full study's DAG) with
    ``seeds`` classifier seeds."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(REPO / "config", Path(tmp) / "config")
        cfg = Path(tmp) / "config" / "paper.yaml"
        text = cfg.read_text().replace("seeds: [42, 43, 44]", f"seeds: {list(range(seeds))}")
        cfg.write_text(text)
        return statistics.median(
            _snakemake(Path(tmp), "-n", "--configfile", "config/paper.yaml", "--cores", "2")
            for _ in range(repeats)
        )


def feature_cache_mb_per_1000() -> float:
    """Size of a feature file (the rule's format: sha256 keys, 4 variants x 768 float32) for
    1000 images, written and measured."""
    import torch

    blob = {
        "sha256": [f"{i:064x}" for i in range(1000)],
        "features": torch.randn(1000, 4, 768),
        "variants": ["none", "h", "v", "hv"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(blob, Path(tmp) / "f.pt")
        return (Path(tmp) / "f.pt").stat().st_size / 1e6


def gan_epochs_saved() -> tuple[int, int]:
    """(epochs not trained, planned epochs) of the MCGAN at the paper's settings, where training
    stops at the sampled checkpoint (synthesis.mcgan.stop_at_sample_epoch)."""
    import yaml

    gan = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())["synthesis"]["mcgan"]
    stop = gan["sample_epoch"] if gan["stop_at_sample_epoch"] and gan["sample_epoch"] else None
    return (gan["epochs"] - stop if stop else 0), gan["epochs"]


def demo_seconds() -> float:
    """Wall time of the demo DAG (the default config) from scratch on 2 cores."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(REPO / "config", Path(tmp) / "config")
        return _snakemake(Path(tmp), "--cores", "2")


def _cpu_name() -> str:
    from gpu_check import _cpu_name as name

    return name()


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
    p.add_argument("--skip-demo", action="store_true", help="skip the demo run (~10 min)")
    p.add_argument("--skip-paper-cpu", action="store_true", help="skip the laptop config (~30 min)")
    a = p.parse_args(argv)
    rows = []
    e = run_bench("bench_features")
    for prec in ("fp32", "bf16"):
        rows.append(
            (
                f"feature extraction rule vs bare inference loop, Swin-T 224, {prec}",
                f"{e[f'ratio_{prec}']:.2f}x ({e[f'rule_{prec}']:.1f} vs "
                f"{e[f'bare_{prec}']:.1f} images/s); start-up {e[f'startup_s_{prec}']:.1f} s "
                f"a job: {e[f'ratio_real_{prec}']:.2f}x over the real-crop job",
                ">= 0.9x",
            )
        )
    rows.append(
        (
            "bf16 features: test AUROC change (reduced Swin, 3 seeds)",
            f"{e['mean_diff']:+.4f} (seed std {e['seed_std_fp32']:.4f})",
            "inside the spread",
        )
    )
    c = run_bench("bench_classify")
    for n in (1104, 4104):
        rows.append(
            (
                f"DP vs non-DP head run (300 epochs, book-keeping), N = {n}",
                f"{c[f'dp_over_nodp_{n}']:.2f}x ({c[f'dp_run_s_{n}']:.1f} vs "
                f"{c[f'nodp_run_s_{n}']:.1f} s)",
                "<= 1.3x",
            )
        )
    rows.append(
        (
            "DP noise draw per step (296k N(0,1)): torch vs numpy's fastest",
            f"{c['noise_ms_torch']:.2f} vs {c['noise_ms_numpy_best']:.2f} ms"
            f" (non-DP step {c['nodp_step_ms_4104']:.2f} ms)",
            "the fastest",
        )
    )
    rows.append(
        ("DP vs non-DP head epoch, Opacus per-sample path", f"{c['dp_opacus_over_nodp']:.1f}x", "")
    )
    rows.append(
        (
            "two head runs at once on 2 cores vs one alone",
            f"{c['two_heads_slowdown']:.2f}x",
            "~1.0x",
        )
    )
    rows.append(
        (
            "head training: cached features vs Swin-T forward per step (per epoch)",
            f"{c['cached_speedup']:.0f}x faster",
            ">= 50x",
        )
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
    u = run_bench("bench_audit")
    rows.append(
        (
            "privacy audit per experiment, demo size (8 shadows): non-DP / DP eps 6",
            f"{u['demo_nodp_s']:.1f} / {u['demo_dp6_s']:.1f} s",
            "",
        )
    )
    rows.append(
        (
            "privacy audit, study size (dbr1, N = 1104, 300 epochs), 64 shadows",
            f"{u['paper_dp6_64_shadows_min']:.0f} min "
            f"({u['paper_dp6_s_per_shadow']:.1f} s a shadow)",
            "",
        )
    )
    saved, planned = gan_epochs_saved()
    rows.append(
        (
            "MCGAN epochs not trained (stop at sample_epoch, paper.yaml)",
            f"{saved} of {planned} ({saved / planned:.0%})",
            "",
        )
    )
    for seeds in (3, 20):
        rows.append(
            (
                f"dry-run of the full study (config/paper.yaml), {seeds} seeds",
                f"{dry_run_seconds(seeds):.1f} s",
                "<= 5 s",
            )
        )
    rows.append(
        (
            "feature cache per 1000 images (4 variants x 768)",
            f"{feature_cache_mb_per_1000():.1f} MB",
            "",
        )
    )
    if not a.skip_paper_cpu:
        lap = run_bench("bench_paper_cpu")
        rows.append(
            (
                f"laptop config (paper-published-cpu.yaml, {lap['runs']} runs), 2 cores",
                f"{lap['seconds'] / 60:.1f} min",
                "<= 30 min",
            )
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
    print(f"\nBenchmarks ({_cpu_name()}; {machine})")
    print(f"{'measure':<{width}}  {'result':<36}  goal")
    for name, result, goal in rows:
        print(f"{name:<{width}}  {result:<36}  {goal}")


if __name__ == "__main__":
    main()
