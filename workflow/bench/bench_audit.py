"""The privacy audit's cost (membership inference with shadow heads), measured on this machine:
per experiment at the demo's size and settings (301 real training crops, the reduced Swin's 64
features, 40 epochs, 8 shadows), and at the study's for one experiment (1104 published training
crops, Swin-T's 768 features, 300 epochs, batch 128; dbr1, DP epsilon 6) with 6 shadows, scaled
to the paper configs' 64. Features are random tensors of the cached features' shape: the cost of
head training does not depend on their values.

    python workflow/bench/bench_audit.py [--threads 1] [--paper-shadows 6]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mammodp import classify
from mammodp.audit import mia
from mammodp.classify import models
from mammodp.config import Experiment


def _pool(n: int, f: int) -> dict:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (n,), generator=g)
    vy = torch.randint(0, 2, (max(n // 5, 20),), generator=g)
    return {
        "x": torch.randn(n, 4, f, generator=g),
        "y": y,
        "real": np.ones(n, bool),
        "val_x": torch.randn(len(vy), f, generator=g),
        "val_y": vy,
    }


def audit_seconds(eps, n, f, epochs, batch, lr, shadows) -> float:
    exp = Experiment("bench", "-", "real", "real", "head", "mlp", "backbone", eps)
    train = classify.TrainSpec(epochs=epochs, batch_size=batch, lr=lr)
    job = classify.Job(exp, 42, models.ModelSpec(pretrained="none"), train, classify.DPSpec())
    spec = mia.AuditSpec(shadow_models=shadows, canaries=0, seed=1)
    t = time.perf_counter()
    mia.audit(job, spec, lambda: models.make_head("mlp", f), _pool(n, f))
    return time.perf_counter() - t


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--paper-shadows", type=int, default=6)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    audit_seconds(None, 100, 64, 2, 32, 5e-4, 6)  # warm-up (first-call imports)
    out = {}
    for name, eps in (("nodp", None), ("dp6", 6.0), ("dp60", 60.0)):
        out[f"demo_{name}_s"] = audit_seconds(eps, 301, 64, 40, 32, 5e-4, 8)
    s = audit_seconds(6.0, 1104, 768, 300, 128, 1e-5, a.paper_shadows)
    out["paper_dp6_s_per_shadow"] = s / a.paper_shadows
    out["paper_dp6_64_shadows_min"] = s / a.paper_shadows * 64 / 60
    print(f"privacy audit (LiRA shadow heads), {a.threads} thread(s)")
    print(
        "  demo size, 8 shadows, per experiment: non-DP {demo_nodp_s:.1f} s, DP eps 6 "
        "{demo_dp6_s:.1f} s, DP eps 60 {demo_dp60_s:.1f} s".format(**out)
    )
    print(
        f"  study size (N=1104, 300 epochs), dbr1: {out['paper_dp6_s_per_shadow']:.1f} s per "
        f"shadow, {out['paper_dp6_64_shadows_min']:.0f} min for 64 shadows"
    )
    return out


if __name__ == "__main__":
    main()
