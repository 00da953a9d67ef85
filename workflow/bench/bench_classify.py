"""Classifier speed, measured side by side in one run (CPU, 1 thread by default):

1. head training on cached backbone features vs the original loop, which runs the frozen
   Swin-T forward at every step (per epoch; goal: >= 50x faster);
2. a DP head epoch (book-keeping clipping, and Opacus' per-sample path) vs a non-DP head epoch
   (goal: <= 1.3x), the study's head 768 -> 384 -> 2, N = 1104, batch 128.

    python workflow/bench/bench_classify.py [--threads 1] [--epochs 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from mammodp import classify, models  # noqa: E402


def _job(eps, epochs, clipping="bookkeeping", spec=None):
    exp = classify.Experiment("bench", "-", "real", "real", "head", "mlp", "backbone", eps)
    train = classify.TrainSpec(epochs=epochs, batch_size=128, lr=1e-5, checkpoint_every=10**6)
    dp = classify.DPSpec(clipping=clipping)
    return classify.Job(exp, 42, spec or models.ModelSpec(pretrained="none"), train, dp)


def head_epoch_seconds(job, feats, y, val, val_y, repeats: int) -> float:
    """Median wall time of one epoch of the real training loop (setup excluded)."""
    times = []
    for _ in range(repeats):
        head = models.make_head("mlp", feats.shape[-1])
        with tempfile.TemporaryDirectory() as tmp:
            classify.train_head(
                job, head, feats, y, val, val_y, Path(tmp) / "state", epoch_seconds=times
            )
    return statistics.median(times)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--n", type=int, default=1104)
    p.add_argument("--backbone-images", type=int, default=128, help="images for the per-step loop")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    n, f = a.n, 768
    feats = torch.randn(n, 4, f)  # cached features: 4 flip variants per image
    y = torch.randint(0, 2, (n,))
    val, val_y = torch.randn(192, f), torch.randint(0, 2, (192,))

    # 2. DP vs non-DP head epochs, alternating so that all see the same machine state.
    results = {"nodp": [], "bookkeeping": [], "opacus": []}
    for _ in range(a.repeats):
        results["nodp"].append(head_epoch_seconds(_job(None, a.epochs), feats, y, val, val_y, 1))
        for clip in ("bookkeeping", "opacus"):
            job = _job(6.0, a.epochs, clip)
            results[clip].append(head_epoch_seconds(job, feats, y, val, val_y, 1))
    epoch = {k: statistics.median(v) for k, v in results.items()}

    # 1. The original loop: a frozen Swin-T (224 px) forward per training step, timed on a few
    # batches; and the cached-feature head step on the same batches.
    swin = models.create_backbone(models.ModelSpec(pretrained="none")).train()
    images = torch.rand(a.backbone_images, 1, 224, 224) * 2 - 1
    t = time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(images), 128):
            swin(images[s : s + 128].expand(-1, 3, -1, -1))
    per_image_backbone = (time.perf_counter() - t) / len(images)
    per_step_epoch = per_image_backbone * n + epoch["nodp"]  # backbone forwards + the head epoch
    out = {
        "cached_epoch_s": epoch["nodp"],
        "per_step_epoch_s": per_step_epoch,
        "cached_speedup": per_step_epoch / epoch["nodp"],
        "dp_bookkeeping_over_nodp": epoch["bookkeeping"] / epoch["nodp"],
        "dp_opacus_over_nodp": epoch["opacus"] / epoch["nodp"],
    }
    print(f"head 768->384->2, N={n}, batch 128, {a.threads} thread(s), median of {a.repeats}")
    print(f"  non-DP head epoch on cached features   {epoch['nodp'] * 1000:8.1f} ms")
    print(
        f"  DP head epoch, book-keeping clipping   {epoch['bookkeeping'] * 1000:8.1f} ms"
        f"  ({out['dp_bookkeeping_over_nodp']:.2f}x non-DP; goal <= 1.3x)"
    )
    print(
        f"  DP head epoch, Opacus per-sample path  {epoch['opacus'] * 1000:8.1f} ms"
        f"  ({out['dp_opacus_over_nodp']:.2f}x non-DP)"
    )
    print(
        f"  original loop: Swin-T 224 forward per step ({a.backbone_images} images timed)"
        f" {per_step_epoch:8.1f} s per epoch"
    )
    print(
        f"  cached features vs original loop = {out['cached_speedup']:.0f}x faster per epoch"
        " (goal >= 50x)"
    )
    return out


if __name__ == "__main__":
    main()
