"""Feature extraction, measured side by side in one run:

1. the extraction rule's own command (``mammodp backbone-features``: reading and decoding the
   PNGs, hashing them, every flip variant, writing the file) vs a bare inference loop of the
   same model over the same decoded images and flips, in fp32 and under bf16 autocast
   (the study's Swin-T at 224 px; goal: >= 0.9x the bare loop). The rule runs twice: its
   per-image rate is the second call's, and what a job pays once (imports, first-call set-up)
   is printed apart, with what both make of the paper configs' real-crop job;
2. what bf16 features do to a head's test AUROC on the published crops (3 seeds, the demo's
   reduced Swin, a non-DP MLP head), beside the spread over seeds.

    python workflow/bench/bench_features.py [--data ../shared/data/mammo_dp/dataset16062024]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from mammodp import classify, cli, images
from mammodp.classify import models
from mammodp.classify.metrics import classification_metrics
from mammodp.config import Experiment
from mammodp.data.processed import import_processed
from mammodp.data.split import apply_split

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data" / "mammo_dp" / "dataset16062024"
# The paper configs' real-crop feature job: 1104 training crops x 4 flips, val + test + BCDR once
REAL_PASSES = 1104 * 4 + 1700


def published(data: Path):
    index, split = import_processed(data)
    index = apply_split(index, split, str(data))
    return index[index["dataset"] == "cbis-ddsm"].reset_index(drop=True)


def _rule_seconds(crops, data: Path, spec: dict, threads: int, precision: str) -> float:
    """Wall time of one call of the rule's command (``mammodp backbone-features``)."""
    with tempfile.TemporaryDirectory() as tmp:
        crops[["path", "label"]].to_csv(Path(tmp) / "m.csv", index=False)
        argv = ["backbone-features", "--manifest", f"{tmp}/m.csv", "--images", str(data)]
        argv += ["--model", json.dumps(spec), "--batch-size", "32", "--precision", precision]
        argv += ["--threads", str(threads), "--out", f"{tmp}/f.pt"]
        t = time.perf_counter()
        assert cli.main(argv) == 0
        return time.perf_counter() - t


def rule_vs_bare(data: Path, n: int, threads: int, precision: str) -> dict:
    """Images/s of the rule's command and of a bare loop (4 flips of n crops each). The rule is
    called twice: the first call pays what a job pays once (imports, oneDNN's first-call
    set-up), the second is its per-image rate, compared with the bare loop that runs after it
    (warm, like the rule's second call); ``startup_s`` is the difference of the two calls, and
    ``ratio_real`` what both make of the real-crop job: start-up plus REAL_PASSES at the rate."""
    crops = published(data).head(n)
    spec = {"arch": "swin_t", "pretrained": "none", "input_size": 224}
    cold = _rule_seconds(crops, data, spec, threads, precision)
    warm = _rule_seconds(crops, data, spec, threads, precision)
    model = models.create_backbone(models.ModelSpec.from_dict(spec)).eval()
    x = images.load_images([data / p for p in crops["path"]], 224)
    t = time.perf_counter()
    with torch.inference_mode(), models.autocast("cpu", precision):
        for v in images.FLIPS:
            for s in range(0, n, 32):
                model(images.flip(x[s : s + 32], v).expand(-1, 3, -1, -1))
    bare = 4 * n / (time.perf_counter() - t)
    rule = 4 * n / warm
    real_job_s = cold - warm + REAL_PASSES / rule
    return {
        "rule": rule,
        "bare": bare,
        "ratio": rule / bare,
        "startup_s": cold - warm,
        "ratio_cold": 4 * n / cold / bare,
        "ratio_real": REAL_PASSES / real_job_s / bare,
    }


def bf16_auroc_effect(data: Path, seeds=(42, 43, 44), epochs: int = 100) -> dict:
    """Test AUROC of non-DP MLP heads on fp32 and on bf16 features of the demo's reduced Swin."""
    demo = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["classifier"]["model"]
    spec = models.ModelSpec.from_dict(demo)
    crops = published(data)
    parts = {s: crops[crops["split"] == s] for s in ("train", "val", "test")}
    backbone = models.create_backbone(spec)
    auroc = {"fp32": [], "bf16": []}
    for precision in auroc:
        feats = {
            s: models.backbone_features(
                backbone,
                images.load_images([data / p for p in df["path"]], spec.input_size),
                images.FLIPS if s == "train" else ("none",),
                64,
                precision=precision,
            )
            for s, df in parts.items()
        }
        labels = {s: torch.tensor(df["label"].astype(int).values) for s, df in parts.items()}
        for seed in seeds:
            exp = Experiment("b", "-", "real", "real", "head", "mlp", "backbone", None)
            train = classify.TrainSpec(
                epochs=epochs, batch_size=128, lr=1e-3, checkpoint_every=10**6
            )
            job = classify.Job(exp, seed, spec, train, classify.DPSpec())
            torch.manual_seed(seed)
            head = models.make_head("mlp", backbone.num_features)
            with tempfile.TemporaryDirectory() as tmp:
                tr = classify.train_head(
                    job, head, feats["train"], labels["train"], feats["val"][:, 0],
                    labels["val"], Path(tmp) / "s",
                )  # fmt: skip
            head.load_state_dict(tr.best_state)
            with torch.no_grad():
                p = torch.softmax(head(feats["test"][:, 0]), 1)[:, 1].numpy()
            auroc[precision].append(classification_metrics(labels["test"].numpy(), p)["auroc"])
    diffs = [b - f for f, b in zip(auroc["fp32"], auroc["bf16"], strict=True)]
    return {
        "auroc_fp32": auroc["fp32"],
        "auroc_bf16": auroc["bf16"],
        "mean_diff": statistics.mean(diffs),
        "seed_std_fp32": statistics.stdev(auroc["fp32"]),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SHARED, help="dataset16062024 folder")
    p.add_argument("--n", type=int, default=96, help="crops for the speed comparison")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = {f"{k}_{prec}": v for prec in ("fp32", "bf16") for k, v in
           rule_vs_bare(a.data, a.n, a.threads, prec).items()}  # fmt: skip
    out.update(bf16_auroc_effect(a.data))
    for prec in ("fp32", "bf16"):
        print(
            f"Swin-T 224 features, {prec}: rule {out[f'rule_{prec}']:.1f} images/s, bare loop "
            f"{out[f'bare_{prec}']:.1f} images/s = {out[f'ratio_{prec}']:.2f}x (goal >= 0.9x); "
            f"the rule's start-up {out[f'startup_s_{prec}']:.1f} s (first call "
            f"{out[f'ratio_cold_{prec}']:.2f}x at {4 * a.n} passes, "
            f"{out[f'ratio_real_{prec}']:.2f}x at the real-crop job's {REAL_PASSES})"
        )
    print(
        f"bf16 features, test AUROC (reduced Swin, 3 seeds): fp32 {out['auroc_fp32']}, bf16 "
        f"{out['auroc_bf16']}; mean difference {out['mean_diff']:+.4f}, seed std "
        f"{out['seed_std_fp32']:.4f}"
    )
    return out


if __name__ == "__main__":
    main()
