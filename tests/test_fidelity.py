"""FRD with frd-score: the study's comparisons, stable values."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from mammodp import fidelity
from mammodp.errors import UserError


def _manifest(n_train=10, n_test=4, n_ext=4):
    rows = [{"path": f"r{i}", "split": "train", "dataset": "cbis-ddsm"} for i in range(n_train)]
    rows += [{"path": f"t{i}", "split": "test", "dataset": "cbis-ddsm"} for i in range(n_test)]
    rows += [{"path": f"e{i}", "split": "test", "dataset": "bcdr"} for i in range(n_ext)]
    df = pd.DataFrame(rows)
    df["label"] = [i % 2 for i in range(len(df))]
    return df


def test_the_four_comparisons_real_first_pooled_and_per_class():
    syn = pd.DataFrame({"path": [f"s{i}" for i in range(8)], "label": [0, 1] * 4})
    comps = fidelity.comparisons(_manifest(), syn, seed=0)
    pooled = [(a, b) for c, a, _, b, _ in comps if c == "pooled"]
    assert pooled == [
        ("real_train_half1", "real_train_half2"),
        ("real_train", "synthetic"),
        ("synthetic_half1", "synthetic_half2"),
        ("cbis-ddsm_test", "external_test"),
    ]
    assert {c for c, *_ in comps} == {"pooled", "benign", "malignant"}
    _, _, a, _, b = comps[0]
    assert not set(a) & set(b) and len(a) + len(b) == 10
    benign = next(c for c in comps if c[0] == "benign" and c[1] == "real_train")
    assert all(int(p[1:]) % 2 == 1 for p in benign[2])  # only benign crops (label 1)
    no_ext = fidelity.comparisons(_manifest(n_ext=0), syn, 0)
    assert all(c[1] != "cbis-ddsm_test" for c in no_ext)


def test_too_few_images():
    with pytest.raises(UserError, match="at least 5 images per set"):
        fidelity.frd_value(["a"] * 3, ["b"] * 10, "v0", 1)


def test_frd_on_published_crops_is_stable(shared_data):
    root = shared_data / "mammo_dp"
    real = sorted((root / "dataset16062024" / "cbis-ddsm" / "train").rglob("*.png"))
    syn = sorted((root / "synthetic" / "c-dcgan").glob("*.png"))
    real, syn = [str(p) for p in real[::20]], [str(p) for p in syn[::50]]  # 56 and 60 images
    rs = fidelity.frd_value(real, syn, "v0", workers=2)
    assert math.isfinite(rs) and rs > 0
    assert fidelity.frd_value(real, syn, "v0", workers=1) == pytest.approx(rs, rel=1e-9)
    half_a, half_b = fidelity.halves(real, seed=0)
    assert fidelity.frd_value(half_a, half_b, "v0", workers=2) < rs  # real-real is the floor
    # The feature cache: the same values, each image extracted once across comparisons.
    cache = fidelity.FeatureCache()
    assert fidelity.frd_value(real, syn, "v0", 2, cache) == pytest.approx(rs, rel=1e-9)
    assert cache.extracted == len(real) + len(syn)
    fidelity.frd_value(half_a, half_b, "v0", 2, cache)
    assert cache.extracted == len(real) + len(syn)  # the halves come from the cache
