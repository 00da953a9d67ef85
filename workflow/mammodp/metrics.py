"""Classification metrics as the study reported them: benign (label 1) is the positive class and
the score is p(benign)."""

from __future__ import annotations

import math

import numpy as np
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
