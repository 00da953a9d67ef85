"""Classification metrics as the study reported them: benign (label 1) is the positive class and
the score is p(benign)."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata
from sklearn import metrics as skm

METRICS = ("accuracy", "precision", "recall", "f1", "auroc", "auprc")


def classification_metrics(labels, p_benign, threshold: float = 0.5) -> dict[str, float]:
    y = np.asarray(labels, dtype=int)
    p = np.asarray(p_benign, dtype=float)
    pred = (p >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    return {
        "n": int(len(y)),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "precision": float(skm.precision_score(y, pred, pos_label=1, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, pos_label=1, zero_division=0)),
        "f1": float(skm.f1_score(y, pred, pos_label=1, zero_division=0)),
        # Undefined with one class: NaN, never a made-up number.
        "auroc": float(skm.roc_auc_score(y, p)) if both else math.nan,
        "auprc": float(skm.average_precision_score(y, p, pos_label=1)) if both else math.nan,
    }


def fast_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """The same numbers as ``classification_metrics`` (ties in scores handled as scikit-learn
    does), in plain numpy: fast enough for thousands of bootstrap resamples."""
    pred = p >= threshold
    tp = float(np.sum(pred & (y == 1)))
    fp = float(np.sum(pred & (y == 0)))
    fn = float(np.sum(~pred & (y == 1)))
    n_pos = tp + fn
    n_neg = len(y) - n_pos
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / n_pos if n_pos else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    out = {
        "accuracy": float(np.mean(pred == (y == 1))),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "auroc": math.nan,
        "auprc": math.nan,
    }
    if n_pos and n_neg:
        ranks = rankdata(p)  # average ranks for ties: the Mann-Whitney form of AUROC
        out["auroc"] = float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
        order = np.argsort(-p, kind="mergesort")
        ps, ys = p[order], y[order]
        last = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]  # end of each tied group
        tps = np.cumsum(ys)[last]
        fps = (last + 1) - tps
        prec = tps / (tps + fps)
        rec = tps / n_pos
        out["auprc"] = float(np.sum(np.diff(np.r_[0.0, rec]) * prec))
    return out


def bootstrap_ci(
    labels, p_benign, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, list[float] | None]:
    """Percentile bootstrap confidence intervals of every metric (test images resampled with
    replacement, seeded); None where no resample defines the metric."""
    if n_resamples <= 0 or len(labels) == 0:
        return {}
    y = np.asarray(labels, dtype=int)
    p = np.asarray(p_benign, dtype=float)
    rng = np.random.default_rng(seed)
    draws = {m: [] for m in METRICS}
    for _ in range(n_resamples):
        idx = rng.integers(0, len(y), len(y))
        values = fast_metrics(y[idx], p[idx])
        for m in METRICS:
            if not math.isnan(values[m]):
                draws[m].append(values[m])
    alpha = (1 - level) / 2
    return {
        m: [float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))] if v else None
        for m, v in draws.items()
    }
