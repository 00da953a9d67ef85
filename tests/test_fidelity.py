"""FRD with frd-score: the study's comparisons in both set designs, stable values."""

from __future__ import annotations

import math
from itertools import combinations

import cv2
import numpy as np
import pandas as pd
import pytest

from mammodp import fidelity
from mammodp.errors import UserError


def _manifest(n_train=10, n_test=4, n_ext=4):
    rows = [{"path": f"r{i}", "split": "train", "dataset": "cbis-ddsm"} for i in range(n_train)]
    rows += [{"path": f"t{i}", "split": "test", "dataset": "cbis-ddsm"} for i in range(n_test)]
    rows += [{"path": f"e{i}", "split": "test", "dataset": "bcdr"} for i in range(n_ext)]
    df = pd.DataFrame(rows)
    df["label"] = df["path"].str[1:].astype(int) % 2  # odd numbers benign (label 1)
    return df


def _synthetic(n=8):
    return pd.DataFrame({"path": [f"s{i}" for i in range(n)], "label": [0, 1] * (n // 2)})


def _pooled(pairs):
    return [p for p in pairs if p.cls == "pooled"]


def test_the_four_comparisons_real_first_pooled_and_per_class():
    comps = fidelity.comparisons(_manifest(), _synthetic(), seed=0)
    pooled = [(p.comparison, p.pair, p.set_a, p.set_b) for p in _pooled(comps)]
    assert pooled == [
        ("real_vs_real", 1, "real_train_half1", "real_train_half2"),
        ("real_vs_synthetic", 1, "real_train", "synthetic"),
        ("synthetic_vs_synthetic", 1, "synthetic_half1", "synthetic_half2"),
        ("cbis_vs_bcdr", 1, "cbis-ddsm_test", "external_test"),
    ]
    assert tuple(c for c, *_ in pooled) == fidelity.COMPARISONS
    assert {p.cls for p in comps} == {"pooled", "benign", "malignant"}
    a, b = comps[0].paths_a, comps[0].paths_b
    assert not set(a) & set(b) and len(a) + len(b) == 10
    benign = next(p for p in comps if p.cls == "benign" and p.set_a == "real_train")
    assert all(int(p[1:]) % 2 == 1 for p in benign.paths_a)  # only benign crops (label 1)
    no_ext = fidelity.comparisons(_manifest(n_ext=0), _synthetic(), 0)
    assert all(p.comparison != "cbis_vs_bcdr" for p in no_ext)


def test_study_design_three_disjoint_thirds_and_the_sheets_pairs():
    manifest, syn = _manifest(n_train=31, n_test=4, n_ext=20), _synthetic(60)
    comps = fidelity.comparisons(manifest, syn, seed=3, design="study")
    pooled = _pooled(comps)
    names = [(p.comparison, p.pair, p.set_a, p.set_b) for p in pooled]
    assert names == [
        ("real_vs_real", 1, "real_train_set1", "real_train_set2"),
        ("real_vs_real", 2, "real_train_set1", "real_train_set3"),
        ("real_vs_real", 3, "real_train_set2", "real_train_set3"),
        ("real_vs_synthetic", 1, "real_train_set1", "synthetic_set1"),
        ("real_vs_synthetic", 2, "real_train_set2", "synthetic_set2"),
        ("real_vs_synthetic", 3, "real_train_set3", "synthetic_set3"),
        ("synthetic_vs_synthetic", 1, "synthetic_set1", "synthetic_set2"),
        ("synthetic_vs_synthetic", 2, "synthetic_set1", "synthetic_set3"),
        ("synthetic_vs_synthetic", 3, "synthetic_set2", "synthetic_set3"),
        ("cbis_vs_bcdr", 1, "real_train_set1", "external_test_set1"),
        ("cbis_vs_bcdr", 2, "real_train_set2", "external_test_set2"),
        ("cbis_vs_bcdr", 3, "real_train_set3", "external_test_set3"),
    ]
    sets = {}
    for p in pooled:  # a set name is always the same paths, wherever it appears
        for name, paths in ((p.set_a, p.paths_a), (p.set_b, p.paths_b)):
            assert sets.setdefault(name, paths) == paths and paths == sorted(paths)
    sizes = {name: len(paths) for name, paths in sets.items()}
    assert sizes == {
        **{f"real_train_set{i}": 10 for i in (1, 2, 3)},  # 31 training crops: thirds of 10
        **{f"synthetic_set{i}": 20 for i in (1, 2, 3)},
        **{f"external_test_set{i}": 6 for i in (1, 2, 3)},
    }
    for pool, prefix in (("r", "real_train"), ("s", "synthetic"), ("e", "external_test")):
        three = [set(sets[f"{prefix}_set{i}"]) for i in (1, 2, 3)]
        assert all(not a & b for a, b in combinations(three, 2))  # disjoint
        assert all(x.startswith(pool) for s in three for x in s)  # from their own pool
    assert not any(x.startswith("t") for s in sets.values() for x in s)  # CBIS test unused
    for cls, label in (("benign", 1), ("malignant", 0)):
        mine = [p for p in comps if p.cls == cls]
        assert len(mine) == 12
        assert all(int(x[1:]) % 2 == label for p in mine for x in p.paths_a + p.paths_b)
    no_ext = fidelity.comparisons(_manifest(31, 4, 0), syn, 3, design="study")
    assert len(_pooled(no_ext)) == 9 and all(p.comparison != "cbis_vs_bcdr" for p in no_ext)


def test_study_sets_follow_the_seed_and_the_set_size():
    manifest, syn = _manifest(n_train=40, n_ext=30), _synthetic(60)

    def sets(seed, size=None):
        comps = fidelity.comparisons(manifest, syn, seed, design="study", set_size=size)
        return [(p.paths_a, p.paths_b) for p in _pooled(comps)]

    assert sets(5) == sets(5)  # deterministic under the seed
    assert sets(5) != sets(6)
    sized = _pooled(fidelity.comparisons(manifest, syn, 5, design="study", set_size=7))
    assert {len(p.paths_a) for p in sized} == {7} and {len(p.paths_b) for p in sized} == {7}
    big = _pooled(fidelity.comparisons(manifest, syn, 5, design="study", set_size=500))
    by_name = {p.set_a: len(p.paths_a) for p in big} | {p.set_b: len(p.paths_b) for p in big}
    assert by_name["real_train_set1"] == 13 and by_name["synthetic_set1"] == 20  # a third at most
    assert by_name["external_test_set1"] == 10
    capped = _pooled(fidelity.comparisons(manifest, syn, 5, 30, design="study"))
    assert {len(p.paths_b) for p in capped if p.comparison == "synthetic_vs_synthetic"} == {10}


def test_disjoint_sets():
    paths = [f"p{i:02d}" for i in range(20)]
    a = fidelity.disjoint_sets(paths, 3, None, 0)
    assert [len(s) for s in a] == [6, 6, 6] and len(set().union(*a)) == 18
    assert fidelity.disjoint_sets(paths, 3, None, 0) == a
    assert [len(s) for s in fidelity.disjoint_sets(paths, 3, 4, 0)] == [4, 4, 4]


def test_bad_design_and_normalisation():
    with pytest.raises(UserError, match=r"fidelity.design = 'thirds' is not allowed"):
        fidelity.comparisons(_manifest(), _synthetic(), 0, design="thirds")
    with pytest.raises(UserError, match=r"fidelity.normalisation = 'zscore' is not allowed"):
        fidelity.norm_ref_of("v0", "zscore")
    assert fidelity.norm_ref_of("v0", "default") == "joint"
    assert fidelity.norm_ref_of("v1", "default") == "d1"
    assert fidelity.normalisation_label("v0") == fidelity.NORMALISATION["v0"]
    assert "each set alone" in fidelity.normalisation_label("v0", "independent")


def test_too_few_images():
    with pytest.raises(UserError, match="at least 5 images per set"):
        fidelity.frd_value(["a"] * 3, ["b"] * 10, "v0", 1)


def _tiny_images(folder, prefix, n, rng, brightness):
    """Small textured grayscale PNGs (16x16): frd v0 extracts them in milliseconds."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = rng.normal(brightness, 30, (16, 16)).clip(0, 255).astype(np.uint8)
        img = cv2.GaussianBlur(img, (3, 3), 0)
        paths.append(str(folder / f"{prefix}{i:02d}.png"))
        cv2.imwrite(paths[-1], img)
    return paths


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    rows = []
    for split, dataset, n, bright in (
        ("train", "cbis-ddsm", 30, 120),
        ("test", "cbis-ddsm", 10, 120),
        ("test", "bcdr", 30, 90),
    ):
        for p in _tiny_images(root / f"{dataset}_{split}", f"{dataset}_{split}_", n, rng, bright):
            rows.append({"path": p, "split": split, "dataset": dataset})
    manifest = pd.DataFrame(rows)
    manifest["label"] = [i % 2 for i in range(len(manifest))]
    syn = _tiny_images(root / "synthetic", "s", 30, rng, 140)
    return manifest, pd.DataFrame({"path": syn, "label": [0, 1] * 15})


@pytest.mark.slow
def test_table_of_the_study_design(tiny):
    manifest, syn = tiny
    table = fidelity.compute_table(manifest, syn, ["v0"], 4, 1, design="study")
    assert list(table.columns) == fidelity.FRD_COLUMNS
    assert (table["design"] == "study").all() and table["value"].map(math.isfinite).all()
    pooled = table[table["class"] == "pooled"]
    counts = pooled.groupby("comparison")["pair"].apply(list).to_dict()
    assert counts == {c: [1, 2, 3] for c in fidelity.COMPARISONS}
    assert set(pooled["n_a"]) == {10} and set(pooled["n_b"]) == {10}
    for cls in ("benign", "malignant"):  # per class: thirds of 15 crops
        mine = table[table["class"] == cls]
        assert len(mine) == 12 and set(mine["n_a"]) == {5}
    assert (table["normalisation"] == fidelity.NORMALISATION["v0"]).all()
    again = fidelity.compute_table(manifest, syn, ["v0"], 4, 2, design="study")
    pd.testing.assert_frame_equal(table, again)  # same seed: same sets, same values
    first = next(p for p in fidelity.comparisons(manifest, syn, 4, design="study"))
    indep = fidelity.frd_value(first.paths_a, first.paths_b, "v0", 1, norm_ref="independent")
    assert indep != pytest.approx(pooled["value"].iloc[0])  # the normalisation reaches frd-score
    by_comp = pooled.groupby("comparison")["value"].mean()
    assert by_comp["real_vs_real"] < by_comp["real_vs_synthetic"]  # brighter synthetic crops
    assert by_comp["real_vs_real"] < by_comp["cbis_vs_bcdr"]  # darker external crops


def test_table_of_the_halves_design(tiny):
    manifest, syn = tiny
    table = fidelity.compute_table(manifest, syn, ["v0"], 4, 1)
    pooled = table[table["class"] == "pooled"]
    assert list(pooled["comparison"]) == list(fidelity.COMPARISONS)
    assert (pooled["pair"] == 1).all() and (table["design"] == "halves").all()
    assert list(pooled["n_a"]) == [15, 30, 15, 10] and list(pooled["n_b"]) == [15, 30, 15, 30]
    assert set(table["class"]) == {"pooled", "benign", "malignant"}


@pytest.mark.slow
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
    indep = fidelity.frd_value(real, syn, "v0", 2, cache, norm_ref="independent")
    assert cache.extracted == len(real) + len(syn) and indep != pytest.approx(rs)


@pytest.mark.slow
@pytest.mark.shared_data
def test_study_design_on_published_crops(shared_data):
    """A reduced study design on the published crops (every 10th training and BCDR crop, every
    30th synthetic crop): the sheet's within-pool floors are small, but the published synthetic
    crops lie far from the real ones, farther than BCDR (the sheet has it the other way round)."""
    root = shared_data / "mammo_dp"
    rows = []
    for dataset, split in (("cbis-ddsm", "train"), ("bcdr", "test")):
        crops = sorted((root / "dataset16062024" / dataset / split).rglob("*.png"))[::10]
        rows += [
            {"path": str(p), "split": split, "dataset": dataset, "label": int(p.stem[-1])}
            for p in crops
        ]
    syn = sorted((root / "synthetic" / "c-dcgan").glob("*.png"))[::30]
    synthetic = pd.DataFrame(
        {"path": [str(p) for p in syn], "label": [int(p.stem.endswith("benign")) for p in syn]}
    )
    table = fidelity.compute_table(pd.DataFrame(rows), synthetic, ["v0"], 5, 2, design="study")
    pooled = table[table["class"] == "pooled"]
    assert len(pooled) == 12 and set(table["class"]) == {"pooled", "benign", "malignant"}
    sizes = dict(zip(pooled["set_a"], pooled["n_a"], strict=True))
    sizes |= dict(zip(pooled["set_b"], pooled["n_b"], strict=True))
    assert sizes["real_train_set1"] == 37 and sizes["synthetic_set1"] == 33
    assert sizes["external_test_set1"] == 37
    mean = pooled.groupby("comparison")["value"].mean()
    assert mean["real_vs_synthetic"] > 5 * mean["real_vs_real"]
    assert mean["synthetic_vs_synthetic"] < mean["real_vs_synthetic"]
    assert mean["real_vs_real"] < mean["cbis_vs_bcdr"] < mean["real_vs_synthetic"]


def test_frd_scores_info_lines_are_one_summary(tiny, caplog):
    """frd-score logs each normalisation step on the root logger: the job's log gets one
    summary line instead; its warnings would still pass."""
    import logging

    manifest, syn = tiny
    paths = list(manifest["path"][:10])
    with caplog.at_level(logging.INFO):
        fidelity.frd_value(paths, list(syn["path"][:10]), "v0", 1)
    from_frd = [r for r in caplog.records if "frd_score" in r.pathname]
    assert not from_frd
    (summary,) = [r.getMessage() for r in caplog.records if r.name == "mammodp.fidelity"]
    assert summary.startswith("frd-score: ") and "info lines left out" in summary
    logging.getLogger().warning("after: not filtered")
    assert caplog.records[-1].getMessage() == "after: not filtered"
