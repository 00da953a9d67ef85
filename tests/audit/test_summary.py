"""What an audit row says it covers follows the experiment's source, read from the shipped
experiment table (the rule passes only the source's row, not the whole table)."""

import json

import pandas as pd

from mammodp.audit import summary as audit_summary
from mammodp.config import load_experiments

from ..helpers.configs import REPO

TABLE = load_experiments(REPO / "config" / "experiments.tsv")


def test_a_run_without_a_source_covers_only_its_head():
    exp = TABLE["real_frozen_dp_eps6"]
    assert exp.source is None
    assert audit_summary.covers(exp, None).startswith("the head's training on the real crops")


def test_a_synthetic_source_points_to_the_memorisation_audit():
    exp = TABLE["synbackbone_real_frozen_dp_eps6"]
    text = audit_summary.covers(exp, TABLE[exp.source])
    assert f"its backbone came from {exp.source}" in text
    assert "memorisation audit" in text


def test_the_per_run_summary_and_the_table_say_the_same(tmp_path):
    """write_mia gets the source's row alone; audit_table looks it up in the table."""
    exp = TABLE["synbackbone_real_frozen_dp_eps6"]
    out = {"summary": tmp_path / "s.json", "scores": tmp_path / "s.csv"}
    attack = {"auc": 0.5, "tpr_at_fpr_0.001": 0.0, "tpr_at_fpr_0.01": 0.01}
    summary = {
        "shadow": attack,
        "empirical": {"epsilon_lower_bound": 0.0, "confidence": 0.95},
        "shadow_models": 6,
    }
    scores = pd.DataFrame({"score": [0.1]})
    audit_summary.write_mia(summary, scores, exp, TABLE[exp.source], 6.0, out)
    df = audit_summary.audit_table(
        [out["summary"]], REPO / "config" / "experiments.tsv", [exp.experiment], False
    )
    row = df.iloc[0]
    assert row["status"] == "audited" and row["seeds"] == 1
    assert row["covers"] == json.loads(out["summary"].read_text())["covers"]
    assert "memorisation audit" in row["covers"]
    assert row["accountant_epsilon_mean"] == 6.0
