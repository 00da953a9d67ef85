"""Classifier jobs: cached features are exact, DP is accounted honestly, selection as the study."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mammodp import classify, models

from .test_models import TINY


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
        {"val_auprc": 0.7, "val_loss": 0.4, "eligible": True},
    ]

    def choose(dp):
        best = None
        for i, row in enumerate(h):
            if classify._better(row, None if best is None else h[best], dp):
                best = i
        return best

    assert choose(dp=True) == 2  # best AUPRC among eligible, tie -> lower loss, then earlier
    assert choose(dp=False) == 0


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


def test_bookkeeping_clipping_equals_opacus_per_sample_path():
    """The clipped, summed gradient (before noise) and the noise scale are Opacus' own."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    from mammodp.bookkeeping import BookKeepingDP

    torch.manual_seed(0)
    head = models.make_head("mlp", 32)
    ref = models.make_head("mlp", 32)
    ref.load_state_dict(head.state_dict())
    x, y = torch.randn(24, 32) * 3, torch.randint(0, 2, (24,))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1, reduction="sum")
    bk = BookKeepingDP(head, max_grad_norm=1.0, noise_multiplier=0.0, expected_batch_size=1)
    norms = bk.clipped_sum(loss_fn(head(x), y))
    assert (norms > 1.0).any() and (norms < 1.0).any()  # both clipped and unclipped samples
    gsm = GradSampleModule(ref, loss_reduction="sum")
    opt = DPOptimizer(
        torch.optim.SGD(ref.parameters(), lr=0.1),
        noise_multiplier=0.0,
        max_grad_norm=1.0,
        expected_batch_size=1,
        loss_reduction="sum",
    )
    loss_fn(gsm(x), y).backward()
    opt.pre_step()  # Opacus: per-sample clipping, sum, (zero) noise, scaling
    for p_bk, p_ref in zip(head.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p_bk.grad, p_ref.grad, atol=1e-5, rtol=1e-4)
    # Noise: N(0, (sigma C)^2) per coordinate, then / expected batch size, like Opacus.
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    bk2 = BookKeepingDP(
        head, max_grad_norm=2.0, noise_multiplier=1.5, expected_batch_size=8, generator=gen_a
    )
    bk2.empty_step()
    bk2.add_noise_and_scale()
    expected = torch.normal(0.0, 3.0, size=head[0].weight.shape, generator=gen_b) / 8
    assert torch.equal(head[0].weight.grad, expected)


def test_noise_multipliers_for_the_study_settings_are_opacus_own():
    """N = 1104, batch 128, 300 epochs, delta 1e-4: sigma as make_private_with_epsilon has it."""
    from opacus import PrivacyEngine

    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.zeros(1104, 2)), batch_size=128
    )
    for eps in (1, 6, 12, 20, 60):
        job = _job("x", eps=float(eps), epochs=300)
        engine = PrivacyEngine(accountant="rdp")  # the study's accountant
        module = torch.nn.Linear(2, 2)
        _, opt, _ = engine.make_private_with_epsilon(
            module=module,
            optimizer=torch.optim.SGD(module.parameters(), lr=1.0),
            data_loader=loader,
            target_epsilon=eps,
            target_delta=1e-4,
            epochs=300,
            max_grad_norm=1.0,
        )
        assert classify.noise_multiplier(job, 1 / len(loader)) == opt.noise_multiplier


@pytest.mark.parametrize(
    ("eps", "trained", "head", "clipping"),
    [
        (6.0, "head", "mlp", "bookkeeping"),
        (6.0, "head", "mlp", "opacus"),
        (None, "all", "linear", "bookkeeping"),
    ],
)
def test_kill_and_resume_gives_the_same_result(
    tmp_path, tiny_manifest, eps, trained, head, clipping
):
    import dataclasses

    def job():
        j = _job("k", eps=eps, trained=trained, head=head, epochs=4)
        j.train = dataclasses.replace(j.train, checkpoint_every=1)
        j.dp = dataclasses.replace(j.dp, clipping=clipping)
        return j

    full = classify.run(job(), tiny_manifest, None, None, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        classify.run(job(), tiny_manifest, None, None, tmp_path / "b", stop_after=2)
    assert (tmp_path / "b" / ".state" / "state.pt").exists()
    assert not (tmp_path / "b" / "metrics.json").exists()
    resumed = classify.run(job(), tiny_manifest, None, None, tmp_path / "b")
    assert resumed["test"] == full["test"] and resumed["chosen_epoch"] == full["chosen_epoch"]
    for name in ("predictions.csv", "history.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert not (tmp_path / "b" / ".state").exists()  # finished: nothing left to resume


def test_cached_feature_files_give_the_same_run(tmp_path, tiny_manifest):
    backbone = models.create_backbone(TINY)
    paths = sorted(tiny_manifest["path"])
    feats = models.backbone_features(backbone, models.load_images(paths, TINY.input_size))
    torch.save(
        {"paths": paths, "features": feats, "variants": list(models.FLIPS)}, tmp_path / "real.pt"
    )
    a = classify.run(_job("c", eps=6.0), tiny_manifest, None, None, tmp_path / "a")
    b = classify.run(
        _job("c", eps=6.0),
        tiny_manifest,
        None,
        None,
        tmp_path / "b",
        features=[str(tmp_path / "real.pt")],
    )
    assert a["test"] == b["test"]
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    lo, hi = metrics["test"]["cbis-ddsm"]["ci95"]["auroc"]
    assert lo <= metrics["test"]["cbis-ddsm"]["auroc"] <= hi


def test_faithful_loop_runs_the_backbone_in_train_mode(tmp_path, tiny_manifest):
    import dataclasses

    j = _job("f", eps=6.0, epochs=2)
    j.train = dataclasses.replace(j.train, faithful=True)
    j.model = dataclasses.replace(TINY, drop_path_rate=0.5)
    faithful = classify.run(j, tiny_manifest, None, None, tmp_path / "f")
    cached = classify.run(_job("f", eps=6.0, epochs=2), tiny_manifest, None, None, tmp_path / "c")
    assert faithful["chosen_epoch"] >= 1 and cached["chosen_epoch"] >= 1
    pf = pd.read_csv(tmp_path / "f" / "predictions.csv")["p_benign"]
    pc = pd.read_csv(tmp_path / "c" / "predictions.csv")["p_benign"]
    assert not np.allclose(pf, pc)  # stochastic depth changed what the head was trained on
    h = pd.read_csv(tmp_path / "f" / "history.csv")
    assert len(h) == 2 and h["epsilon"].notna().all()
