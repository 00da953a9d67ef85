"""Classifier speed, measured side by side in one run (CPU, 1 thread by default):

1. head training on cached backbone features vs the original loop, which runs the frozen
   Swin-T forward at every step (per epoch; goal: >= 50x faster);
2. a DP head run (book-keeping clipping) vs its non-DP run, the study's head 768 -> 384 -> 2,
   batch 128, at N = 1104 (real crops) and N = 4104 (real + synthetic): whole runs of the real
   training loop (setup, sigma, every epoch, validation, selection; goal: <= 1.3x), and Opacus'
   per-sample path per epoch at N = 1104;
3. two head runs at once on two cores vs one alone (each process sized like a rule's job,
   ``--threads 1`` through the launcher's thread settings): oversubscription shows as a
   slowdown above 1;
4. the DP noise draw of one step (N(0, 1) for each of the head's 296k parameters) by torch's
   CPU generator, the one Opacus' DPOptimizer uses, against numpy's bit generators: the fastest
   correct draw, and what it costs against a non-DP step.

    python workflow/bench/bench_classify.py [--threads 1] [--epochs 300]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from mammodp import classify
from mammodp.classify import models
from mammodp.config import Experiment

F = 768  # Swin-T's pooled features


def _job(eps, epochs, clipping="bookkeeping", spec=None):
    exp = Experiment("bench", "-", "real", "real", "head", "mlp", "backbone", eps)
    train = classify.TrainSpec(epochs=epochs, batch_size=128, lr=1e-5, checkpoint_every=10**6)
    dp = classify.DPSpec(clipping=clipping)
    return classify.Job(exp, 42, spec or models.ModelSpec(pretrained="none"), train, dp)


def _data(n: int):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(n, 4, F, generator=g)  # cached features: 4 flip variants per image
    y = torch.randint(0, 2, (n,), generator=g)
    return feats, y, torch.randn(240, F, generator=g), torch.randint(0, 2, (240,), generator=g)


def head_run(job, n: int, epoch_seconds: list | None = None) -> float:
    """Wall time of one whole head run of the real training loop (``train_head``)."""
    feats, y, val, val_y = _data(n)
    head = models.make_head("mlp", F)
    classify.dp._sigma.cache_clear()  # a rule's job is a fresh process: its σ search included
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        classify.train_head(
            job, head, feats, y, val, val_y, Path(tmp) / "state", epoch_seconds=epoch_seconds
        )
        return time.perf_counter() - t


def dp_over_nodp(n: int, epochs: int, repeats: int) -> dict:
    """Median whole-run times, DP and non-DP alternating (the same machine state)."""
    runs = {"nodp": [], "dp": []}
    for _ in range(repeats):
        runs["nodp"].append(head_run(_job(None, epochs), n))
        runs["dp"].append(head_run(_job(6.0, epochs), n))
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {"nodp_s": med["nodp"], "dp_s": med["dp"], "ratio": med["dp"] / med["nodp"]}


def noise_draw_ms(repeats: int = 300) -> dict:
    """Milliseconds per step to draw the noise of the study's head (768 -> 384 -> 2) with each
    generator: torch ``normal_`` per parameter (book-keeping's and Opacus' draw) and numpy's
    ``standard_normal`` (float32, into a preallocated buffer) for each bit generator."""
    import numpy as np

    head = models.make_head("mlp", F)
    buffers = [torch.empty_like(p) for p in head.parameters()]
    gen = torch.Generator().manual_seed(0)

    def per_step(draw) -> float:
        draw()
        t = time.perf_counter()
        for _ in range(repeats):
            draw()
        return (time.perf_counter() - t) / repeats * 1e3

    out = {"torch": per_step(lambda: [b.normal_(0.0, 1.0, generator=gen) for b in buffers])}
    flat = np.empty(sum(b.numel() for b in buffers), dtype=np.float32)
    for bits in (np.random.PCG64, np.random.SFC64, np.random.Philox, np.random.MT19937):
        rng = np.random.Generator(bits(0))
        out[f"numpy_{bits.__name__}"] = per_step(
            lambda rng=rng: rng.standard_normal(out=flat, dtype=np.float32)
        )
    return out


def concurrent_slowdown(n: int, epochs: int) -> float:
    """Mean wall time of two DP head runs started together, over one alone."""
    cmd = [sys.executable, __file__, "--one-run", str(n), "--epochs", str(epochs)]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }

    def timed(k: int) -> float:
        procs = [
            subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(k)
        ]
        return statistics.mean(float(p.communicate()[0].split()[-1]) for p in procs)

    return timed(2) / timed(1)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", type=int, default=300, help="epochs of each whole run")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--backbone-images", type=int, default=128, help="images for the per-step loop")
    p.add_argument("--one-run", type=int, help=argparse.SUPPRESS)  # a child of (3)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.one_run:
        print(head_run(_job(6.0, a.epochs), a.one_run))
        return {}
    out = {}
    # Warm-up: the first optimiser of a process imports torch._dynamo (~2 s), which would land
    # on whichever timed run came first.
    head_run(_job(None, 1), 1104)
    head_run(_job(6.0, 1), 1104)
    for n in (1104, 4104):
        r = dp_over_nodp(n, a.epochs, a.repeats)
        out.update({f"nodp_run_s_{n}": r["nodp_s"], f"dp_run_s_{n}": r["dp_s"]})
        out[f"dp_over_nodp_{n}"] = r["ratio"]
    epochs = {"nodp": [], "opacus": []}
    head_run(_job(None, 5), 1104, epochs["nodp"])
    head_run(_job(6.0, 5, "opacus"), 1104, epochs["opacus"])
    epoch = {k: statistics.median(v) for k, v in epochs.items()}
    out["dp_opacus_over_nodp"] = epoch["opacus"] / epoch["nodp"]

    # 1. The original loop: a frozen Swin-T (224 px) forward per training step, timed on a few
    # batches, plus the cached-feature head epoch.
    swin = models.create_backbone(models.ModelSpec(pretrained="none")).train()
    images = torch.rand(a.backbone_images, 1, 224, 224) * 2 - 1
    t = time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(images), 128):
            swin(images[s : s + 128].expand(-1, 3, -1, -1))
    per_image_backbone = (time.perf_counter() - t) / len(images)
    per_step_epoch = per_image_backbone * 1104 + epoch["nodp"]
    out["cached_speedup"] = per_step_epoch / epoch["nodp"]
    out["two_heads_slowdown"] = concurrent_slowdown(1104, min(a.epochs, 100))
    draws = noise_draw_ms()
    out["noise_ms_torch"] = draws["torch"]
    out["noise_fastest"] = min(draws, key=draws.get)
    out["noise_ms_numpy_best"] = min(v for k, v in draws.items() if k != "torch")
    steps = a.epochs * math.ceil(4104 / 128)
    out["nodp_step_ms_4104"] = out["nodp_run_s_4104"] / steps * 1e3

    print(f"head 768->384->2, batch 128, {a.threads} thread(s), whole runs of {a.epochs} epochs")
    for n in (1104, 4104):
        print(
            f"  N={n}: non-DP run {out[f'nodp_run_s_{n}']:6.1f} s, DP run (book-keeping)"
            f" {out[f'dp_run_s_{n}']:6.1f} s = {out[f'dp_over_nodp_{n}']:.2f}x (goal <= 1.3x)"
        )
    print(f"  Opacus per-sample path, per epoch at N=1104: {out['dp_opacus_over_nodp']:.1f}x")
    print(f"  cached features vs original loop: {out['cached_speedup']:.0f}x faster per epoch")
    print(f"  two DP head runs at once vs one alone: {out['two_heads_slowdown']:.2f}x")
    print(
        f"  noise draw per step: torch {out['noise_ms_torch']:.2f} ms, numpy's best"
        f" {out['noise_ms_numpy_best']:.2f} ms (fastest: {out['noise_fastest']}); a non-DP step"
        f" at N=4104 {out['nodp_step_ms_4104']:.2f} ms"
    )
    return out


if __name__ == "__main__":
    main()
