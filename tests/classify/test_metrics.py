"""Metrics as the study reported them (benign positive), and their bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np

from mammodp.classify.metrics import bootstrap_ci, classification_metrics, fast_metrics


def test_benign_is_the_positive_class():
    m = classification_metrics([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1])
    assert m["precision"] == 0.5 and m["recall"] == 0.5 and m["accuracy"] == 0.5
    assert m["auroc"] == 0.75


def test_one_class_gives_undefined_not_a_number_made_up():
    m = classification_metrics([1, 1, 1], [0.9, 0.4, 0.6])
    assert math.isnan(m["auroc"]) and math.isnan(m["auprc"])


def test_fast_metrics_equal_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(2, 80))
        y = rng.integers(0, 2, n)
        p = np.round(rng.random(n), int(rng.integers(1, 3)))  # many ties
        a, b = fast_metrics(y, p), classification_metrics(y, p)
        for k in a:
            assert (math.isnan(a[k]) and math.isnan(b[k])) or abs(a[k] - b[k]) < 1e-12, k


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.clip(y * 0.3 + rng.random(300) * 0.7, 0, 1)
    ci = bootstrap_ci(y, p, 500, seed=4)
    assert ci == bootstrap_ci(y, p, 500, seed=4)
    auroc = classification_metrics(y, p)["auroc"]
    assert ci["auroc"][0] < auroc < ci["auroc"][1]
    assert bootstrap_ci(y, p, 0) == {}
