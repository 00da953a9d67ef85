"""The membership-inference audit: LiRA's scores, the empirical epsilon bound's validity against
a mechanism of known epsilon, and canaries planted in real head training (detected without DP,
hidden at epsilon 1, never above the accountant's epsilon)."""

import math

import numpy as np
import pytest
import torch

from mammodp import classify
from mammodp.audit import mia
from mammodp.classify import models
from mammodp.config import Experiment
from mammodp.errors import UserError


def test_every_row_is_in_exactly_half_the_shadows():
    keep = mia.inclusion_matrix(301, 8, seed=3)
    assert keep.shape == (8, 301) and (keep.sum(0) == 4).all()
    assert 100 < keep.sum(1).min() and keep.sum(1).max() < 200  # about half of the rows each
    assert not (keep == mia.inclusion_matrix(301, 8, seed=4)).all()
    for k in (4, 7):
        with pytest.raises(UserError, match="even number >= 6"):
            mia.inclusion_matrix(10, k, seed=0)


def test_patient_units_are_in_or_out_together():
    units = np.repeat(np.arange(30), 3)  # 30 patients, 3 crops each
    keep = mia.row_inclusion(units, 90, mia.AuditSpec(shadow_models=8, seed=1))
    assert (keep[:, 0::3] == keep[:, 1::3]).all() and (keep[:, 0::3] == keep[:, 2::3]).all()
    assert (keep.sum(0) == 4).all()


def test_the_pooled_variance_is_the_models_spread_per_entry():
    """Four flip variants must not multiply the pooled variance: its sd is the models' spread
    around each row's mean (0.3 here)."""
    phi, keep = _phi(shift=0.0, k=16, n=400)
    phi = np.concatenate([phi, phi + np.random.default_rng(1).normal(0, 0.3, phi.shape)], -1)
    _, sd = mia._gaussians(phi, keep, mia.partners(keep), pooled=True)
    assert sd.shape == phi.shape and np.allclose(sd, sd[:, :1, :1])  # one per target model
    assert 0.3 < sd.mean() < 0.45  # the spread is 0.3 and 0.42 in the two halves of the variants


def _phi(shift: float, k=16, n=400, seed=0):
    """Logit confidences of k models on n rows: a per-row level, model noise, and ``shift``
    added where the row was in the model's training set."""
    rng = np.random.default_rng(seed)
    keep = mia.inclusion_matrix(n, k, seed)
    level = rng.normal(0, 3, size=(1, n, 1))  # rows differ far more than models do
    phi = level + rng.normal(0, 0.3, size=(k, n, 2)) + shift * keep[..., None]
    return phi, keep


def test_lira_separates_members_by_their_own_out_distribution():
    phi, keep = _phi(shift=0.6)
    for pooled in (True, False):
        m = mia.attack_metrics(mia.lira_online(phi, keep, pooled).ravel(), keep.ravel())
        assert m["auc"] > 0.9, pooled
    # The same shift is invisible to a global threshold on phi: the per-row levels swamp it.
    assert mia.attack_metrics(phi.mean(-1).ravel(), keep.ravel())["auc"] < 0.6
    phi, keep = _phi(shift=0.0)
    m = mia.attack_metrics(mia.lira_online(phi, keep, True).ravel(), keep.ravel())
    assert abs(m["auc"] - 0.5) < 0.03


def test_offline_attack_scores_members_above_their_out_distribution():
    phi, keep = _phi(shift=0.6)
    target = phi[0].copy()  # model 0 as an outside target, scored against the others' outs
    score = mia.lira_offline(target, phi[1:], ~keep[1:], pooled=True)
    assert mia.attack_metrics(score, keep[0])["auc"] > 0.9


def _randomised_response(eps: float, n: int, seed: int):
    """A mechanism that is exactly eps-DP in its member bit: it reports the bit truthfully with
    probability e^eps / (1 + e^eps). The best attack reads the report."""
    rng = np.random.default_rng(seed)
    member = rng.random(n) < 0.5
    truthful = rng.random(n) < math.exp(eps) / (1 + math.exp(eps))
    return np.where(truthful, member, ~member).astype(float), member


def test_empirical_epsilon_is_a_valid_and_tight_lower_bound():
    """Against randomised response of known epsilon, the bound stays below the true epsilon
    at its confidence (at most 5% of trials above, here none of 20) and gets close to it."""
    eps = 1.0
    bounds = [
        mia.empirical_epsilon(*_randomised_response(eps, 20000, s), 1e-5, 0.95, s)[
            "epsilon_lower_bound"
        ]
        for s in range(20)
    ]
    assert sum(b > eps for b in bounds) <= 1
    assert np.median(bounds) > 0.8
    random_guess = mia.empirical_epsilon(*_randomised_response(0.0, 20000, 1), 1e-5, 0.95, 1)
    assert random_guess["epsilon_lower_bound"] < 0.1


def test_a_perfect_attack_is_bounded_by_its_sample_size():
    """Zero errors in n trials still bounds the error rates only down to ~3/n: the bound is
    finite and grows like log(n)."""
    member = np.arange(2000) % 2 == 0
    small = mia.empirical_epsilon(member.astype(float), member, 1e-5, 0.95, 0)
    member = np.arange(20000) % 2 == 0
    large = mia.empirical_epsilon(member.astype(float), member, 1e-5, 0.95, 0)
    assert 4 < small["epsilon_lower_bound"] < large["epsilon_lower_bound"] < 10


def _job(eps, epochs=40):
    exp = Experiment("real_frozen_audit", "-", "real", "real", "head", "mlp", "backbone", eps)
    train = classify.TrainSpec(epochs=epochs, batch_size=32, lr=5e-4, checkpoint_every=10**6)
    return classify.Job(exp, 7, models.ModelSpec(pretrained="none"), train, classify.DPSpec())


def _pool(n=300, f=32, seed=0):
    """Cached-feature-like data: two overlapping classes on a few dominant directions (as
    backbone features are), 4 flip variants close together."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(8, f, generator=g)

    def draw(m):
        y = torch.randint(0, 2, (m,), generator=g)
        z = torch.randn(m, 8, generator=g) + 0.8 * y[:, None]
        return z @ mix + 0.05 * torch.randn(m, f, generator=g), y

    base, y = draw(n)
    x = base[:, None] + 0.05 * torch.randn(n, 4, f, generator=g)
    vx, vy = draw(60)
    return {"x": x, "y": y, "real": np.ones(n, bool), "val_x": vx, "val_y": vy}


@pytest.mark.parametrize("kind", ["crafted", "mislabelled"])
def test_canaries_are_planted_in_the_pool_only(kind):
    pool = _pool()
    x, y, canary = mia.plant_canaries(pool["x"], pool["y"], np.arange(300), 12, kind, seed=1)
    assert canary.sum() == 12 and (y[canary] != pool["y"][canary]).all()
    assert (y[~canary] == pool["y"][~canary]).all() and torch.equal(x[~canary], pool["x"][~canary])
    assert torch.equal(x[canary], pool["x"][canary]) == (kind == "mislabelled")
    assert pool["x"].isfinite().all()  # the caller's tensors are untouched


def test_canaries_are_detected_without_dp_and_hidden_at_epsilon_1():
    """Real head training (train_head) on the shadows' halves: crafted canaries are found
    (AUC >= 0.9) without DP; at epsilon 1 their AUC is near chance, and the empirical epsilon
    stays at or below the shadows' accountant epsilon."""
    spec = mia.AuditSpec(shadow_models=8, canaries=24, seed=2)

    def make_head():
        return models.make_head("mlp", 32)

    nodp, _ = mia.audit(_job(None), spec, make_head, _pool())
    assert nodp["canary"]["auc"] >= 0.9, nodp["canary"]
    dp, _ = mia.audit(_job(1.0), spec, make_head, _pool())
    assert abs(dp["canary"]["auc"] - 0.5) < 0.15, dp["canary"]
    assert dp["shadow_epsilon"] == pytest.approx(1.0, rel=0.06)
    assert dp["empirical"]["epsilon_lower_bound"] <= dp["shadow_epsilon"]
    assert dp["empirical"]["confidence"] == 0.95 and dp["empirical"]["n_trials"] > 1000


def test_more_canaries_than_crops_is_one_clear_error():
    pool = _pool(n=20)
    with pytest.raises(UserError, match="audit.canaries: 30 > the 20 real training crops"):
        mia.plant_canaries(pool["x"], pool["y"], np.arange(20), 30, "crafted", seed=0)
