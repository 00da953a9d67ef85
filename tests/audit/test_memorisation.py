"""The memorisation audit: a synthetic source that copies training crops is flagged, one drawn
like the real crops is not, and the study's published synthetic crops are audited."""

import cv2
import numpy as np
import pandas as pd
import pytest

from mammodp.audit import memorisation
from mammodp.fileio import read_manifest


def _crop(rng, label):
    img = rng.normal(100, 20, (128, 128)).clip(0, 255).astype(np.uint8)
    cx, cy = (int(v) for v in rng.integers(30, 98, 2))
    if label:
        cv2.circle(img, (cx, cy), int(rng.integers(10, 25)), 220, -1)
    else:
        cv2.line(img, (cx - 25, cy), (cx + 25, cy), 220, 4)
    return img


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Real crops (train, val, test) and three synthetic sources: flipped copies of training
    crops, new crops drawn like the real ones, and half of each."""
    d = tmp_path_factory.mktemp("memo")
    rng = np.random.default_rng(0)
    rows, train_imgs = [], []
    for split, n in (("train", 60), ("val", 20), ("test", 20)):
        for i in range(n):
            img = _crop(rng, i % 2)
            if split == "train":
                train_imgs.append(img)
            cv2.imwrite(str(d / f"{split}{i}.png"), img)
            rows.append(
                {"path": f"{split}{i}.png", "dataset": "cbis-ddsm", "split": split, "label": i % 2}
            )
    pd.DataFrame(rows).to_csv(d / "crops.csv", index=False)
    sources = {}
    for name in ("copies", "fresh"):
        out = d / name
        out.mkdir()
        for i in range(40):
            img = np.fliplr(train_imgs[i]) if name == "copies" else _crop(rng, i % 2)
            cv2.imwrite(str(out / f"s{i}.png"), img)
        pd.DataFrame(
            {"path": [f"s{i}.png" for i in range(40)], "label": [i % 2 for i in range(40)]}
        ).to_csv(d / f"{name}.csv", index=False)
        sources[name] = read_manifest(d / f"{name}.csv", out)
    return read_manifest(d / "crops.csv", d), sources


def test_copies_of_training_crops_are_flagged(cohort):
    manifest, sources = cohort
    r = memorisation.audit(manifest, sources["copies"], 64, seed=0, quantile=0.01)["pixel"]
    assert r["near_copies"] == 40  # every copy, flipped: found in its flipped variant
    assert r["dcr_train_median"] < 1e-6 < r["near_copy_threshold"]
    # Compared at equal halves, a copy's original is in the training half about half the time,
    # and then the copy's nearest is a training crop: the share is well above 0.5.
    assert r["share_nearest_is_train"] > 0.6 and r["share_ci95"][0] > 0.5


def test_a_source_drawn_like_the_real_crops_is_not_flagged(cohort):
    manifest, sources = cohort
    result = memorisation.audit(manifest, sources["fresh"], 64, seed=0, quantile=0.01)
    r = result["pixel"]
    assert r["near_copies"] <= 2  # about quantile x 40 expected
    lo, hi = r["share_ci95"]
    assert lo < 0.5 < hi
    assert result["n_train"] == 60 and result["n_heldout"] == 40
    per = r["_per_crop"]
    assert len(per["dcr_train"]) == 40 and (per["dcr_train"] > 0).all()


def test_flips_count_in_feature_space_too(cohort):
    """With cached features (4 flip variants for training and synthetic crops, one view for
    held-out ones), a left-right flipped copy's unflipped view is the training crop's h view:
    a near-copy at distance 0."""
    import torch

    from mammodp.fileio import sha256_file

    manifest, sources = cohort
    syn = sources["copies"]
    g = torch.Generator().manual_seed(0)
    table = {}
    for p in manifest["path"]:
        table[sha256_file(p)] = torch.randn(4, 16, generator=g)
    train = manifest[manifest["split"] == "train"].reset_index(drop=True)
    for i, p in enumerate(syn["path"]):
        real = table[sha256_file(train["path"][i])]
        table[sha256_file(p)] = real[[1, 0, 3, 2]]  # none <-> h, v <-> hv
    r = memorisation.audit(manifest, syn, 64, seed=0, quantile=0.01, features=table)["features"]
    assert r["near_copies"] == 40 and r["dcr_train_median"] < 1e-9


@pytest.mark.slow
@pytest.mark.shared_data
def test_the_published_synthetic_crops_are_audited(shared_data):
    """The study's published synthetic crops (3000) against its published real crops, pixel
    space: every crop measured, and the numbers the README reports are in range."""
    from mammodp.data import processed
    from mammodp.synthesis import published

    base = shared_data / "mammo_dp"
    root = base / "dataset16062024"
    index, _ = processed.import_processed(root)
    manifest = index.assign(
        split=[p.split("/")[1] for p in index["path"]], path=[str(root / p) for p in index["path"]]
    )
    syn_dir = base / "synthetic" / "c-dcgan"
    synthetic = published.published_manifest(syn_dir)
    synthetic["path"] = [str(syn_dir / p) for p in synthetic["path"]]
    result = memorisation.audit(manifest, synthetic, 64, seed=13, quantile=0.01)
    r = result["pixel"]
    assert result["n_synthetic"] == len(synthetic) >= 2990
    assert 0 <= r["share_nearest_is_train"] <= 1 and r["share_ci95"][0] <= r["share_ci95"][1]
    assert np.isfinite(r["dcr_train_median"]) and r["near_copy_threshold"] > 0
    assert 0 <= r["near_copies"] <= len(synthetic)
    print(
        f"published crops: {r['share_nearest_is_train']:.3f} nearest is train "
        f"{r['share_ci95']}, {r['near_copies']} near-copies ({r['near_copies_expected']:.0f} "
        f"expected), DCR medians {r['dcr_train_median']:.4f} / {r['dcr_heldout_median']:.4f}"
    )
