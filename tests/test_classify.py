"""Classifier jobs: cached features are exact, DP is accounted honestly, selection as the study."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from mammodp import classify, models

from .test_models import TINY


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory):
    """Crops with a learnable signal (a bright disc = benign, a bright cross = malignant)."""
    d = tmp_path_factory.mktemp("crops")
    rng = np.random.default_rng(0)
    rows = []
    for split, n in (("train", 48), ("val", 16), ("test", 16)):
        for i in range(n):
            label = i % 2
            img = rng.normal(100, 20, (128, 128)).clip(0, 255).astype(np.uint8)
            cx, cy = rng.integers(40, 88, 2)
            if label:
                cv2.circle(img, (int(cx), int(cy)), 18, 220, -1)
            else:
                cv2.line(img, (int(cx) - 25, int(cy)), (int(cx) + 25, int(cy)), 220, 4)
                cv2.line(img, (int(cx), int(cy) - 25), (int(cx), int(cy) + 25), 220, 4)
            path = d / f"{split}{i}.png"
            cv2.imwrite(str(path), img)
            dataset = "bcdr" if split == "test" and i >= 12 else "cbis-ddsm"
            rows.append(
                {
                    "path": str(path),
                    "lesion_id": f"{split}{i}",
                    "patient_id": f"p{split}{i}",
                    "dataset": dataset,
                    "split": split,
                    "label": label,
                    "sha256": "",
                }
            )
    return pd.DataFrame(rows)


def _job(name, eps=None, trained="head", head="mlp", init="backbone", epochs=3, seed=1):
    exp = classify.Experiment(name, "-", "real", "real", trained, head, init, eps)
    return classify.Job(
        exp,
        seed,
        TINY,
        classify.TrainSpec(epochs=epochs, batch_size=16, lr=1e-3),
        classify.DPSpec(),
    )


def test_cached_features_are_exact():
    """Head loss and gradients on cached features equal those through the eval-mode backbone."""
    torch.manual_seed(0)
    backbone = models.create_backbone(TINY)
    x = torch.rand(6, 1, 32, 32) * 2 - 1
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    feats = models.backbone_features(backbone, x)  # (N, 4 flips, F)
    variants = torch.tensor([0, 1, 2, 3, 1, 3])
    head_a = models.make_head("mlp", backbone.num_features)
    head_b = models.make_head("mlp", backbone.num_features)
    head_b.load_state_dict(head_a.state_dict())
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    loss_a = loss_fn(head_a(feats[torch.arange(6), variants]), y)
    loss_a.backward()
    backbone.eval()
    flipped = torch.cat(
        [models.flip(x[i : i + 1], models.FLIPS[v]) for i, v in enumerate(variants)]
    )
    loss_b = loss_fn(models.Classifier(backbone, head_b)(flipped), y)
    loss_b.backward()
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    for pa, pb in zip(head_a.parameters(), head_b.parameters(), strict=True):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-6)


def test_selection_rule():
    h = [
        {"val_auprc": 0.8, "val_loss": 0.5, "eligible": False},
        {"val_auprc": 0.7, "val_loss": 0.5, "eligible": True},
        {"val_auprc": 0.7, "val_loss": 0.4, "eligible": True},
        {"val_auprc": float("nan"), "val_loss": 0.1, "eligible": True},
    ]
    assert classify._choose(h, dp=True) == 2  # best AUPRC among eligible, tie -> lower loss
    assert classify._choose(h, dp=False) == 0


def test_dp_run_and_privacy_report(tmp_path, tiny_manifest):
    job = _job("dp", eps=6.0, epochs=4)
    m = classify.run(job, tiny_manifest, None, None, tmp_path)
    privacy = json.loads((tmp_path / "privacy.json").read_text())
    assert privacy["dp"] and privacy["accountant"] == "rdp" and privacy["delta"] == 1e-4
    assert privacy["epsilon_final"] <= 6.0 + 1e-9  # never above target
    # Independent recomputation with Opacus' accountant from (sigma, q, steps, delta).
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(privacy["noise_multiplier"], privacy["sample_rate"], privacy["steps"])]
    assert acc.get_epsilon(privacy["delta"]) == pytest.approx(privacy["epsilon_final"], rel=1e-6)
    acc.history = [
        (privacy["noise_multiplier"], privacy["sample_rate"], privacy["steps_at_chosen_epoch"])
    ]
    assert acc.get_epsilon(privacy["delta"]) == pytest.approx(
        privacy["epsilon_at_chosen_epoch"], rel=1e-6
    )
    assert privacy["sample_rate"] == pytest.approx(1 / 3)  # 1 / batches per epoch (48 / 16)
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["epsilon"].is_monotonic_increasing and len(history) == 4
    assert set(m["test"]) == {"cbis-ddsm", "bcdr"}
    preds = pd.read_csv(tmp_path / "predictions.csv")
    assert len(preds) == 16 and preds["p_benign"].between(0, 1).all()


def test_study_noise_multipliers():
    """With the study's settings (N=1104, batch 128, 300 epochs, delta 1e-4) sigma is what
    Opacus computes."""
    from opacus.accountants.utils import get_noise_multiplier

    q, steps = 128 / 1104, 300 * int(1104 / 128)
    sigmas = {
        e: get_noise_multiplier(
            target_epsilon=e, target_delta=1e-4, sample_rate=q, steps=steps, accountant="rdp"
        )
        for e in (1, 6, 60)
    }
    assert sigmas[1] > sigmas[6] > sigmas[60] > 0
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(sigmas[6], q, steps)]
    assert acc.get_epsilon(1e-4) <= 6.0


def test_same_seed_same_numbers(tmp_path, tiny_manifest):
    a = classify.run(_job("a", eps=6.0), tiny_manifest, None, None, tmp_path / "a")
    b = classify.run(_job("a", eps=6.0), tiny_manifest, None, None, tmp_path / "b")
    c = classify.run(_job("a", eps=6.0, seed=2), tiny_manifest, None, None, tmp_path / "c")
    assert a["test"] == b["test"]
    assert (tmp_path / "a" / "predictions.csv").read_bytes() == (
        tmp_path / "b" / "predictions.csv"
    ).read_bytes()
    assert a["test"] != c["test"]


def test_pretrained_source_is_really_loaded(tmp_path, tiny_manifest):
    src = classify.run(
        _job("src", trained="all", head="linear", epochs=2),
        tiny_manifest,
        None,
        None,
        tmp_path / "src",
    )
    assert src["chosen_epoch"] in (1, 2)
    dst = _job("dst", eps=6.0, head="linear", init="from:src", epochs=2)
    classify.run(dst, tiny_manifest, None, str(tmp_path / "src" / "model.pt"), tmp_path / "dst")
    source_model, _ = models.load_model(tmp_path / "src" / "model.pt")
    tuned, ckpt = models.load_model(tmp_path / "dst" / "model.pt")
    assert ckpt["backbone_source"]["kind"] == "model"
    for k, v in source_model.backbone.state_dict().items():
        assert torch.equal(tuned.backbone.state_dict()[k], v), k  # frozen: the source's backbone
    random_init = models.create_backbone(TINY).state_dict()
    assert any(not torch.equal(random_init[k], v) for k, v in tuned.backbone.state_dict().items())
