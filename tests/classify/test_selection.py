"""Checkpoint selection as the study: the best eligible epoch, eligibility by the epsilon window."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mammodp import classify
from mammodp.classify import selection

from ..helpers.jobs import make_job


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
            if selection.is_better(row, None if best is None else h[best], dp):
                best = i
        return best

    assert choose(dp=True) == 2  # best AUPRC among eligible, tie -> lower loss, then earlier
    assert choose(dp=False) == 0


def test_no_epoch_in_the_epsilon_window_is_flagged(tmp_path, tiny_manifest, caplog):
    import dataclasses

    job = make_job("dp", eps=6.0, epochs=2)
    job.dp = dataclasses.replace(job.dp, epsilon_window=(1.04, 1.05))  # unreachable in 2 epochs
    with caplog.at_level("WARNING", logger="mammodp.classify"):
        classify.run(job, tiny_manifest, None, None, tmp_path)
    privacy = json.loads((tmp_path / "privacy.json").read_text())
    assert privacy["chosen_in_window"] is False
    assert "no epoch spent an epsilon within (1.04, 1.05) x 6" in caplog.text


def test_the_chosen_epoch_is_the_best_eligible_one(tmp_path, tiny_manifest):
    """The window is reached: the chosen epoch spent an epsilon inside it and has the best
    validation AUPRC (then loss) of the eligible epochs, not of all epochs."""
    import dataclasses

    job = make_job("w", eps=6.0, epochs=6)
    job.dp = dataclasses.replace(job.dp, epsilon_window=(0.8, 1.05))
    classify.run(job, tiny_manifest, None, None, tmp_path)
    privacy = json.loads((tmp_path / "privacy.json").read_text())
    h = pd.read_csv(tmp_path / "history.csv")
    inside = h[(h["epsilon"] > 0.8 * 6.0) & (h["epsilon"] < 1.05 * 6.0)]
    assert 0 < len(inside) < len(h)
    assert h["eligible"].tolist() == h.index.isin(inside.index).tolist()
    best = inside.sort_values(["val_auprc", "val_loss"], ascending=[False, True]).iloc[0]
    assert privacy["chosen_in_window"] is True
    assert privacy["chosen_epoch"] == best["epoch"]
    assert privacy["epsilon_at_chosen_epoch"] == pytest.approx(best["epsilon"])
