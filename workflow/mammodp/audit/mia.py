"""Membership-inference audit of a classifier run: the likelihood-ratio attack (LiRA) of Carlini
et al. 2022, "Membership Inference Attacks From First Principles" (IEEE S&P), with shadow heads
on the cached backbone features, and an empirical lower bound on epsilon from the attack's
errors (Jagielski et al. 2020, "Auditing Differentially Private Machine Learning"; Nasr et al.
2021, "Adversary Instantiation").

Implemented here, not taken from a library: privacy-meter's release on PyPI (1.0.1, 2023) has
population, shadow and reference attacks but no LiRA, and its newer code is not released.

The audit trains ``K`` shadow heads with the experiment's own settings (DP or not, the same
target epsilon, epochs, selection), each on a random half of the real training crops (each crop
in exactly K/2 of them, Carlini's construction; synthetic crops, when the experiment trains on
them, are in every shadow). Two attacks:

- **shadow (leave-one-out, online)**: each shadow in turn is the target, attacked with the other
  K - 1: for every real crop, Gaussians of the logit-scaled confidence when it was in and when it
  was out, one per flip variant, and the likelihood ratio of the target's confidence. Members
  and non-members are balanced and drawn alike, so AUC, TPR at low FPR and the epsilon bound
  measure the training procedure the accountant's epsilon is about.
- **target (offline)**: the run's own model; members are its real training crops, non-members
  the CBIS-DDSM test crops (never trained on by anything), each scored against its
  out-distribution over the shadows (Carlini's offline attack, unflipped view).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from mammodp.errors import UserError

log = logging.getLogger(__name__)

FPR_POINTS = (0.001, 0.01)  # the TPRs reported


@dataclass(frozen=True)
class AuditSpec:
    shadow_models: int = 8
    canaries: int = 0  # real training rows made canaries in the audit's pool
    canary_kind: str = "crafted"  # crafted (ClipBKD, in feature space) | mislabelled
    confidence: float = 0.95  # of the empirical epsilon lower bound (Clopper-Pearson)
    seed: int = 0
    # Per-example variances need many shadows; below this count one pooled variance per side
    # (Carlini et al.'s "fixed variance" variant for few shadow models).
    per_example_variance_from: int = 64


# ----------------------------------------------------------------------------- pool


def inclusion_matrix(n: int, k: int, seed: int) -> np.ndarray:
    """(k, n) bool: which rows each shadow trains on. Every row is in exactly k // 2 shadows
    (Carlini et al.'s construction: a random rank per row across the shadows)."""
    if k < 6 or k % 2:  # two models a side besides the target and its partner (a variance)
        raise UserError(f"audit.shadow_models must be an even number >= 6, not {k}")
    rng = np.random.default_rng(seed)
    order = rng.uniform(size=(k, n)).argsort(0)
    return order < k // 2


def row_inclusion(units, n: int, spec: AuditSpec) -> np.ndarray:
    """(K, n) which real rows each shadow trains on: ``inclusion_matrix`` over the rows, or,
    with ``units`` (a unit id per row, ``dp.unit: patient``), over the units, a patient's crops
    in or out together: the membership the patient-level epsilon is about."""
    if units is None:
        return inclusion_matrix(n, spec.shadow_models, spec.seed)
    _, unit = np.unique(units, return_inverse=True)
    return inclusion_matrix(int(unit.max()) + 1, spec.shadow_models, spec.seed)[:, unit]


def plant_canaries(x: torch.Tensor, y: torch.Tensor, real_rows, count: int, kind: str, seed: int):
    """Turn ``count`` random real training rows into canaries, the records an audit plants to
    measure what a model reveals about the worst case. ``mislabelled``: the crop with its label
    flipped. ``crafted``: Jagielski et al.'s ClipBKD in feature space, a point twice the data's
    radius out along one of the directions in which the training features vary least (a new
    direction per canary), label flipped; DP-SGD's guarantee holds for any record, so this is a
    valid neighbour for the audit, and one no other row explains. Returns features, labels and
    the canary mask."""
    if count > len(real_rows):
        raise UserError(
            f"audit.canaries: {count} > the {len(real_rows)} real training crops; plant fewer"
        )
    rng = np.random.default_rng(seed + 1)
    picked = np.sort(rng.choice(real_rows, size=count, replace=False))
    x, y = x.clone(), y.clone()
    y[picked] = 1 - y[picked]
    if kind == "crafted" and count:
        f = x[real_rows, 0].double()
        mu = f.mean(0)
        _, _, vh = torch.linalg.svd(f - mu, full_matrices=False)
        radius = (f - mu).norm(dim=1).max()
        if count > vh.shape[0]:
            raise UserError(
                f"audit.canaries: {count} crafted canaries > {vh.shape[0]} feature directions; "
                "plant fewer"
            )
        points = mu + 2 * radius * vh.flip(0)[:count]
        x[picked] = points.to(x.dtype)[:, None].expand(-1, x.shape[1], -1)
    elif kind != "mislabelled" and count:
        raise UserError(f"audit.canary_kind: {kind!r} is not mislabelled or crafted")
    mask = np.zeros(len(y), bool)
    mask[picked] = True
    return x, y, mask


def logit_confidence(head: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Carlini et al.'s per-example statistic: log p_y - log(1 - p_y) of the label, which for
    two classes is exactly the logit difference z_y - z_other (no rounding at p near 1).
    ``x``: (n, V, F) features, V flip variants; returns (n, V)."""
    n, v, f = x.shape
    with torch.no_grad():
        z = head(x.reshape(n * v, f)).reshape(n, v, 2).double()
    yi = y.long()[:, None].expand(n, v)
    picked = z.gather(2, yi[..., None])[..., 0]
    other = z.gather(2, (1 - yi)[..., None])[..., 0]
    return (picked - other).numpy()


# ----------------------------------------------------------------------------- shadows


def train_shadows(job, make_head, x, y, val_x, val_y, keep, always, units=None):
    """Train one head per row of ``keep`` (the real rows it holds, plus ``always``: synthetic
    rows) with the job's settings, from the run's initial head, with training randomness
    (sampling, flips, noise) of its own; each keeps its selected epoch, as the run does.
    Returns the heads and their privacy records (None when not DP)."""
    from mammodp import classify

    heads, privacy = [], []
    quiet = dataclasses.replace(job.train, checkpoint_every=10**9)
    for k, rows in enumerate(keep):
        idx = torch.from_numpy(np.flatnonzero(rows | always))
        shadow_job = dataclasses.replace(job, seed=job.seed * 1000 + k + 1, train=quiet)
        # The run's own initial head (seeded by the run's seed, as classify.run does): the shadows
        # differ in their data half and training randomness only. A known initialisation is the
        # stronger adversary of DP auditing (Nasr et al. 2021); DP holds for any fixed one.
        torch.manual_seed(job.seed)
        head = make_head()
        with tempfile.TemporaryDirectory() as tmp:
            tr = classify.train_head(
                shadow_job,
                head,
                x[idx],
                y[idx],
                val_x,
                val_y,
                Path(tmp) / "state",
                units=None if units is None else units[idx],
            )
        head.load_state_dict(tr.best_state)
        head.eval()
        heads.append(head)
        privacy.append(tr.privacy())
        log.info(
            "shadow %d/%d: %d rows, chosen epoch %d", k + 1, len(keep), len(idx), tr.best["epoch"]
        )
    return heads, privacy


# ----------------------------------------------------------------------------- attacks


def partners(keep: np.ndarray) -> np.ndarray:
    """(K, n) model indices: for each model and row, a model on the other side of that row (in
    vs out), paired one to one. Leaving the target and its partner out keeps K/2 - 1 models on
    each side: with the target alone left out, its own side would have one model fewer, fit its
    own confidence worse and bias the attack below chance (measured: AUC 0.47 with 8 shadows)."""
    k = len(keep)
    order = np.argsort(~keep, axis=0, kind="stable")  # per row: the in-models, then the out
    pair = np.empty_like(order)
    cols = np.arange(keep.shape[1])
    pair[order[: k // 2], cols] = order[k // 2 :]
    pair[order[k // 2 :], cols] = order[: k // 2]
    return pair


def _gaussians(phi: np.ndarray, mask: np.ndarray, pair: np.ndarray, pooled: bool):
    """Mean and std per (target model, row, variant) over the models whose ``mask`` entry is
    set, the target and its partner (``partners``) left out. ``phi``: (K, n, V); ``mask``:
    (K, n). With ``pooled``, one std per target model (the mean of the rows' variances)."""
    m = mask[..., None].astype(float)
    s, ss, c = (phi * m).sum(0), (phi**2 * m).sum(0), m.sum(0)
    cols = np.arange(phi.shape[1])
    p_phi, p_m = phi[pair, cols], m[pair, cols]  # each target's partner
    s_k = s[None] - phi * m - p_phi * p_m
    ss_k = ss[None] - phi**2 * m - p_phi**2 * p_m
    c_k = c[None] - m - p_m
    c_safe = np.maximum(c_k, 1)
    mean = s_k / c_safe
    var = np.maximum(ss_k / c_safe - mean**2, 0.0) * c_safe / np.maximum(c_safe - 1, 1)
    if pooled:  # over the entries with at least two models to estimate a variance from
        ok = np.broadcast_to(c_k >= 2, var.shape)
        pooled_var = (var * ok).sum(axis=(1, 2), keepdims=True) / np.maximum(
            ok.sum(axis=(1, 2), keepdims=True), 1
        )
        var = np.broadcast_to(pooled_var, var.shape)
    return mean, np.sqrt(var) + 1e-6


def lira_online(phi: np.ndarray, keep: np.ndarray, pooled: bool) -> np.ndarray:
    """(K, n) leave-one-out LiRA scores: for model k as target and row i, the log-likelihood
    ratio of phi[k, i] under the in- and out-Gaussians of the other models (K/2 - 1 a side),
    summed over the flip variants. Higher: more likely a member."""
    pair = partners(keep)
    mu_in, sd_in = _gaussians(phi, keep, pair, pooled)
    mu_out, sd_out = _gaussians(phi, ~keep, pair, pooled)
    ll_in = stats.norm.logpdf(phi, mu_in, sd_in)
    ll_out = stats.norm.logpdf(phi, mu_out, sd_out)
    return (ll_in - ll_out).sum(-1)


def lira_offline(phi_target: np.ndarray, phi_shadow: np.ndarray, out_mask: np.ndarray, pooled):
    """Offline LiRA against a model outside the shadows: per row, how far the target's
    confidence lies above the row's out-Gaussian over the shadows (one-sided, as a z-score
    averaged over variants). ``phi_target``: (n, V); ``phi_shadow``: (K, n, V); ``out_mask``:
    (K, n), the shadows in which each row was out."""
    m = out_mask[..., None].astype(float)
    c = np.maximum(m.sum(0), 1)
    mean = (phi_shadow * m).sum(0) / c
    var = ((phi_shadow - mean) ** 2 * m).sum(0) / np.maximum(c - 1, 1)
    if pooled:
        var = np.full_like(var, var.mean())
    return ((phi_target - mean) / (np.sqrt(var) + 1e-6)).mean(-1)


# ----------------------------------------------------------------------------- statistics


def attack_metrics(scores: np.ndarray, member: np.ndarray) -> dict:
    """AUC and the TPR at each of ``FPR_POINTS`` (the largest TPR whose FPR is at most it)."""
    scores, member = np.asarray(scores, float), np.asarray(member, bool)
    if member.all() or not member.any():
        return {"auc": None, **{f"tpr_at_fpr_{p:g}": None for p in FPR_POINTS}, "n": len(member)}
    fpr, tpr, _ = roc_curve(member, scores)
    out = {"auc": float(roc_auc_score(member, scores)), "n": int(len(member))}
    for p in FPR_POINTS:
        out[f"tpr_at_fpr_{p:g}"] = float(tpr[fpr <= p].max())
    return out


def _upper(k: np.ndarray, n: int, level: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound on a binomial rate: k errors in n trials."""
    k = np.asarray(k, float)
    return np.where(k >= n, 1.0, stats.beta.ppf(level, k + 1, np.maximum(n - k, 1e-12)))


def _epsilon_bounds(scores, member, thresholds, delta, level):
    """For each threshold t and each test direction (guess member iff score >= t, or the
    reverse), the epsilon lower bound from the error rates' upper confidence bounds: for an
    (eps, delta)-DP mechanism every test has FPR + e^eps FNR >= 1 - delta and FNR + e^eps FPR
    >= 1 - delta. Returns (2, len(thresholds)): row 0 forward, row 1 reversed."""
    s_in, s_out = np.sort(scores[member]), np.sort(scores[~member])
    n_in, n_out = len(s_in), len(s_out)
    fn = np.searchsorted(s_in, thresholds, side="left")  # members scored below t
    fp = n_out - np.searchsorted(s_out, thresholds, side="left")  # non-members at or above t
    rows = []
    for f_p, f_n in ((fp, fn), (n_out - fp, n_in - fn)):  # the reversed test swaps the errors
        fpr_hi, fnr_hi = _upper(f_p, n_out, level), _upper(f_n, n_in, level)
        with np.errstate(divide="ignore", invalid="ignore"):
            pair = np.stack(
                [np.log((1 - delta - fpr_hi) / fnr_hi), np.log((1 - delta - fnr_hi) / fpr_hi)]
            )
        rows.append(np.nan_to_num(pair, nan=0.0, neginf=0.0).max(0))
    return np.stack(rows)


def empirical_epsilon(scores, member, delta: float, confidence: float, seed: int) -> dict:
    """A lower bound on epsilon at ``confidence``: the trials are split at random in two; the
    test (threshold and direction) is chosen on the first half, the one with the largest bound
    there, and the bound computed on the second, so that choosing does not inflate it. The
    test's two error rates are bounded at (1 + confidence) / 2 each (jointly at ``confidence``).
    The bound treats each (model, crop) guess as an independent trial (see the README's audit
    section)."""
    scores, member = np.asarray(scores, float), np.asarray(member, bool)
    rng = np.random.default_rng(seed + 2)
    half = rng.permutation(len(scores)) < len(scores) // 2
    level = (1 + confidence) / 2
    a, b = ~half, half
    if member[a].all() or not member[a].any() or member[b].all() or not member[b].any():
        return {"epsilon_lower_bound": 0.0, "confidence": confidence, "n_trials": int(b.sum())}
    grid = np.unique(scores[a])
    eps_a = _epsilon_bounds(scores[a], member[a], grid, delta, level)
    direction, i = np.unravel_index(int(np.argmax(eps_a)), eps_a.shape)
    t = grid[i]
    eps_b = float(_epsilon_bounds(scores[b], member[b], np.array([t]), delta, level)[direction, 0])
    return {
        "epsilon_lower_bound": max(eps_b, 0.0),
        "confidence": confidence,
        "threshold": float(t),
        "direction": "member if score >= threshold" if direction == 0 else "member if below",
        "n_trials": int(b.sum()),
    }


# ----------------------------------------------------------------------------- the audit


def audit(job, spec: AuditSpec, make_head, pool: dict, target_head=None) -> tuple[dict, dict]:
    """The audit of one run. ``pool``: x (N, 4, F) training features, y labels, real (N,) bool,
    val_x, val_y, and for the target attack test_x (M, F) and test_y. Returns the summary and
    the per-trial scores (for the ROC figure)."""
    real = pool["real"]
    real_rows = np.flatnonzero(real)
    x, y, canary = plant_canaries(
        pool["x"], pool["y"], real_rows, spec.canaries, spec.canary_kind, spec.seed
    )
    units = pool.get("units")
    keep_real = row_inclusion(
        None if units is None else np.asarray(units)[real_rows], len(real_rows), spec
    )
    keep = np.zeros((spec.shadow_models, len(y)), bool)
    keep[:, real_rows] = keep_real
    heads, privacy = train_shadows(
        job, make_head, x, y, pool["val_x"], pool["val_y"], keep, ~real, pool.get("units")
    )
    pooled = spec.shadow_models < spec.per_example_variance_from
    phi = np.stack([logit_confidence(h, x[real_rows], y[real_rows]) for h in heads])
    online = lira_online(phi, keep_real, pooled)
    member = keep_real.ravel()
    is_canary = np.broadcast_to(canary[real_rows], keep_real.shape).ravel()
    scores = {"shadow": {"score": online.ravel(), "member": member, "canary": is_canary}}
    summary = {
        "attack": "LiRA (Carlini et al. 2022), online, leave-one-out over the shadow models",
        "shadow_models": spec.shadow_models,
        "variance": "pooled" if pooled else "per example",
        "n_real_crops": int(len(real_rows)),
        "canaries": int(spec.canaries),
        "canary_kind": spec.canary_kind if spec.canaries else None,
        # The real crops' own leakage: canaries apart (they have their own row).
        "shadow": attack_metrics(online.ravel()[~is_canary], member[~is_canary]),
        "shadow_epsilon": None,
        "delta": job.dp.delta,
    }
    if spec.canaries:
        summary["canary"] = attack_metrics(online.ravel()[is_canary], member[is_canary])
    if privacy[0] is not None:  # DP shadows: the accountant's epsilon of what was attacked
        summary["shadow_epsilon"] = max(p["epsilon_final"] for p in privacy)
        summary["shadow_noise_multiplier"] = privacy[0]["noise_multiplier"]
    summary["empirical"] = empirical_epsilon(
        online.ravel(), member, job.dp.delta, spec.confidence, spec.seed
    )
    if target_head is not None:  # the run never saw the canaries: its real crops as they are
        clean = ~canary[real_rows]
        rows = real_rows[clean]
        summary["target"], scores["target"] = _target_attack(
            target_head, heads, pool["x"][rows], pool["y"][rows], pool, keep_real[:, clean], pooled
        )
    return summary, scores


def _target_attack(target_head, heads, x_members, y_members, pool, keep_real, pooled):
    """Offline LiRA on the run's own model: its real training crops (members) against the
    CBIS-DDSM test crops (non-members), on the unflipped view (the test crops' only one)."""
    xm, xt = x_members[:, :1], pool["test_x"][:, None]

    def phi(head):
        members = logit_confidence(head, xm, y_members)
        return np.concatenate([members, logit_confidence(head, xt, pool["test_y"])])

    phi_s = np.stack([phi(h) for h in heads])
    out = np.concatenate([~keep_real, np.ones((len(heads), len(xt)), bool)], axis=1)
    score = lira_offline(phi(target_head), phi_s, out, pooled)
    member = np.r_[np.ones(len(xm), bool), np.zeros(len(xt), bool)]
    trials = {"score": score, "member": member, "canary": np.zeros_like(member)}
    return attack_metrics(score, member), trials


def accountant_epsilon(privacy: dict) -> float | None:
    """The run's proven bound (privacy.json): the epsilon spent by the end of training, which
    covers the released checkpoint whichever epoch selection chose."""
    if not privacy.get("dp"):
        return None
    eps = privacy.get("epsilon_final")
    return None if eps is None or not math.isfinite(eps) else float(eps)


def run_audit(job, spec: AuditSpec, manifest, synthetic, features, run_model, source_model=None):
    """The audit of one (experiment, seed) run from the rule's inputs: the run's training set
    as ``classify.run`` selects it, its cached features, its model (the target) and, for a
    ``from:`` experiment, the source model whose head every shadow starts from, as the run did."""
    from mammodp import classify
    from mammodp.classify import models

    exp = job.experiment
    train, val, tests = classify.select_data(manifest, synthetic, exp.train_data)
    cache = classify.load_feature_cache(features)
    x = classify.features_for(cache, list(train["path"]), "training")
    test = tests.get("cbis-ddsm")
    source_head = models.load_checkpoint(source_model)["head"] if exp.loads_source_head else None

    def make_head():
        head = models.make_head(exp.head, x.shape[-1])
        if source_head is not None:
            head.load_state_dict(source_head)
        return head

    pool = {
        "x": x,
        "y": torch.tensor(train["label"].astype(int).values),
        "real": (train["source"] == "real").to_numpy(),
        "val_x": classify.features_for(cache, list(val["path"]), "evaluation")[:, 0],
        "val_y": torch.tensor(val["label"].astype(int).values),
    }
    if exp.dp_epsilon is not None and job.dp.unit == "patient":
        pool["units"] = classify.row_units(train, job.dp.unit)
    target = None
    if run_model is not None and test is not None and len(test):
        pool["test_x"] = classify.features_for(cache, list(test["path"]), "evaluation")[:, 0]
        pool["test_y"] = torch.tensor(test["label"].astype(int).values)
        target = make_head()
        target.load_state_dict(models.load_checkpoint(run_model)["head"])
        target.eval()
    return audit(job, spec, make_head, pool, target)


def scores_frame(scores: dict):
    """The per-trial scores as one table (attack, score, member, canary)."""
    import pandas as pd

    return pd.concat(
        [
            pd.DataFrame({"attack": name, **{k: np.asarray(v) for k, v in s.items()}})
            for name, s in scores.items()
        ],
        ignore_index=True,
    )
