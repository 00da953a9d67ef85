"""Checkpoint selection and validation: the best epoch by validation AUPRC (ties: lower loss),
under DP among the epochs whose spent epsilon lies in the window (``dp.epsilon_window``), as
the original's ``is_epsilon_within_target`` (gan_compare/scripts/train_test_classifier.py)."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

log = logging.getLogger(__name__)


def is_better(new: dict, best: dict | None, dp: bool) -> bool:
    """Is epoch ``new`` a better checkpoint than ``best``? Under DP only eligible epochs count
    (an ineligible best is replaced by any eligible epoch); then higher val AUPRC, then lower val
    loss; the earlier epoch on a full tie."""
    if best is None:
        return True
    if dp and new["eligible"] != best["eligible"]:
        return new["eligible"]

    def score(h):
        auprc = h["val_auprc"]
        return (auprc if auprc is not None and not math.isnan(auprc) else -1.0, -h["val_loss"])

    return score(new) > score(best)


def evaluate(fn, x: torch.Tensor, y: torch.Tensor, loss_fn, batch: int, device: str):
    """(mean loss, p_benign) of a model function over a tensor, in batches, without grads."""
    losses, probs = [], []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            logits = fn(x[start : start + batch].to(device)).float().cpu()
            losses.append(loss_fn(logits, y[start : start + batch]).item() * len(logits))
            probs.append(torch.softmax(logits, dim=1)[:, 1])
    p = torch.cat(probs).numpy() if probs else np.zeros(0)
    return float(np.sum(losses) / max(len(x), 1)), p
