"""Does the eval-mode feature cache change the results? The original trained frozen-backbone
heads with the backbone in train mode (stochastic depth active); the workflow's cached features
are eval-mode. This trains the real-data frozen-head experiments (non-DP, DP epsilon 6, epsilon 60)
both ways on the study's published crops, with the reduced Swin of config/processed.yaml at the
study's stochastic depth (0.2) for the CPU, and prints the test AUROC difference beside the seed
spread.

    python workflow/bench/faithful_vs_cached.py --data ../shared/data/mammo_dp/dataset16062024
    python workflow/bench/faithful_vs_cached.py --data ... --synthetic <the c-dcgan folder>

The backbone is random (``pretrained: none``, what a CPU run without ImageNet weights has) or,
with ``--synthetic``, first trained on every layer on the published synthetic crops (the study's
dbr15, reduced), so that the frozen backbone's features carry lesion information; the heads are
then new heads on that backbone (``init: backbone:syn_full_nodp``, the study's dbr155 pattern).

Both ways run the workflow's own code: the cached way through ``mammodp backbone-features`` and
``classify.run`` with the features, the faithful way through ``classify.run`` with
``train.faithful: true`` (a train-mode backbone forward at every step).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

EXPERIMENTS = ("real_frozen_nodp", "real_frozen_dp_eps6", "real_frozen_dp_eps60")
# The reduced Swin of config/processed.yaml (timm, max pooling: trained from scratch on a few
# thousand crops an average-pooled Swin learns nothing) with the study's stochastic depth, 0.2
# (torchvision swin_t's default; rising linearly over the blocks), and its CPU training settings.
MODEL = {
    "arch": "swin_tiny_patch4_window7_224",
    "pretrained": "none",
    "input_size": 64,
    "overrides": {
        "embed_dim": 32,
        "depths": [2, 2],
        "num_heads": [2, 4],
        "window_size": 4,
        "global_pool": "max",
    },
    "drop_path_rate": 0.2,
}
TRAIN = {"epochs": 40, "batch_size": 32, "lr": 5e-4, "checkpoint_every": 10**6, "bootstrap": 0}


def manifest(data: Path):
    """The published crops with the published split, CBIS-DDSM only (the AUROC compared)."""
    from mammodp.data import processed, split

    index, published = processed.import_processed(data)
    index["path"] = [str(data / p) for p in index["path"]]  # stored relative to the folder
    m = split.apply_split(index, published, str(data))
    return m[m["dataset"] == "cbis-ddsm"].reset_index(drop=True)


def feature_cache(m, out: Path, threads: int, source: Path | None) -> Path:
    from mammodp import cli

    images = out / "images.csv"
    m.to_csv(images, index=False)
    path = out / "features.pt"
    # The paths are absolute: any image folder resolves them to themselves.
    args = ["backbone-features", "--manifest", str(images), "--images", "/"]
    args += ["--model", json.dumps(MODEL)]
    args += ["--source-model", str(source)] if source else []
    code = cli.main(args + ["--threads", str(threads), "--out", str(path)])
    if code:
        raise SystemExit(f"backbone-features failed ({code})")
    return path


def experiment(name: str, source: Path | None):
    """The experiment table's row; on a pretrained source, a new head on its backbone."""
    from mammodp import config

    row = config.load_experiments(HERE.parents[1] / "config" / "experiments.tsv")[name]
    return replace(row, init="backbone:syn_full_nodp") if source else row


def job(exp, seed: int, threads: int, epochs: int, faithful: bool = False):
    from mammodp import classify
    from mammodp.classify import models

    return classify.Job(
        experiment=exp,
        seed=seed,
        model=models.ModelSpec.from_dict(MODEL),
        train=replace(classify.TrainSpec(**TRAIN), epochs=epochs, faithful=faithful),
        dp=classify.DPSpec(),
        threads=threads,
    )


def pretrain_on_synthetic(m, synthetic: Path, out: Path, threads: int, epochs: int) -> Path:
    """dbr15, reduced: every layer trained on the published synthetic crops (seed 42)."""
    from mammodp import classify
    from mammodp.synthesis import published

    syn = published.published_manifest(synthetic)
    syn["path"] = [str(Path(synthetic) / p) for p in syn["path"]]
    run = job(experiment("syn_full_nodp", None), 42, threads, epochs)
    classify.run(run, m, syn, None, out / "syn_full_nodp", None)
    return out / "syn_full_nodp" / "model.pt"


def one_run(m, name, seed, faithful, features, out: Path, a, source: Path | None):
    from mammodp import classify

    run = job(experiment(name, source), seed, a.threads, a.epochs, faithful)
    tick = time.perf_counter()
    run_dir = out / f"{name}-{seed}-{'faithful' if faithful else 'cached'}"
    src = str(source) if source else None
    metrics = classify.run(run, m, None, src, run_dir, None if faithful else [str(features)])
    return metrics, time.perf_counter() - tick


def summarise(results: list[dict]) -> list[dict]:
    rows = []
    for e in EXPERIMENTS:
        by_mode = {}
        for mode in ("cached", "faithful"):
            v = [r["auroc"] for r in results if r["experiment"] == e and r["mode"] == mode]
            by_mode[mode] = (statistics.mean(v), statistics.pstdev(v))
        (mc, sc), (mf, sf) = by_mode["cached"], by_mode["faithful"]
        rows.append(
            {
                "experiment": e,
                "cached_auroc": f"{mc:.4f} ± {sc:.4f}",
                "faithful_auroc": f"{mf:.4f} ± {sf:.4f}",
                "difference": round(mf - mc, 4),
                "seed_spread": round(max(sc, sf), 4),
                "inside_spread": abs(mf - mc) <= max(sc, sf),
            }
        )
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="the dataset16062024 folder")
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=TRAIN["epochs"])
    p.add_argument("--synthetic", type=Path, help="pretrain the backbone on these crops first")
    p.add_argument("--pretrain-epochs", type=int, default=10)
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    m = manifest(a.data)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        source = None
        if a.synthetic:
            source = pretrain_on_synthetic(m, a.synthetic, Path(tmp), a.threads, a.pretrain_epochs)
        features = feature_cache(m, Path(tmp), a.threads, source)
        for e in EXPERIMENTS:
            for seed in a.seeds:
                for faithful in (False, True):
                    metrics, secs = one_run(m, e, seed, faithful, features, Path(tmp), a, source)
                    mode = "faithful" if faithful else "cached"
                    auroc = metrics["test"]["cbis-ddsm"]["auroc"]
                    epoch = metrics["chosen_epoch"]
                    results.append(
                        {
                            "experiment": e,
                            "seed": seed,
                            "mode": mode,
                            "auroc": auroc,
                            "epoch": epoch,
                        }
                    )
                    print(f"{e} {seed} {mode}: AUROC {auroc:.4f}, epoch {epoch} ({secs:.0f} s)")
    train = {**TRAIN, "epochs": a.epochs}
    backbone = (
        f"pretrained on {a.synthetic} ({a.pretrain_epochs} epochs)" if a.synthetic else "random"
    )
    out = {"model": MODEL, "backbone": backbone, "train": train, "runs": results}
    out["summary"] = summarise(results)
    for row in out["summary"]:
        print(json.dumps(row, ensure_ascii=False))
    if a.out:
        a.out.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    return out


if __name__ == "__main__":
    main()
