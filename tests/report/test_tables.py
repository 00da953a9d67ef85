"""The paper's tables are computed from the per-run files."""

from __future__ import annotations

import json
import re
import statistics

import pandas as pd
import pytest

from mammodp.errors import UserError
from mammodp.report import tables

from ..helpers.runs import TABLE, write_runs


def test_main_table_recomputed_independently(tmp_path):
    values, paths = write_runs(tmp_path)
    selected = ["real_frozen_nodp", "real_frozen_dp_eps6", "syn_full_nodp"]
    tables.write_tables(
        paths, TABLE, selected, [1, 2, 3], None, tmp_path / "tables", source="processed"
    )
    df = pd.read_csv(tmp_path / "tables" / "main.csv")
    for exp in ("real_frozen_nodp", "real_frozen_dp_eps6"):
        vals = [v for (e, _), v in values.items() if e == exp]
        row = df[df["experiment"] == exp].iloc[0]
        assert row["cbis-ddsm_auroc_mean"] == statistics.fmean(vals)
        assert abs(row["cbis-ddsm_auroc_std"] - statistics.pstdev(vals)) < 1e-12  # population std
        assert row["seeds_finished"] == len(vals)
    missing = df[df["experiment"] == "syn_full_nodp"].iloc[0]
    assert missing["seeds_finished"] == 0 and pd.isna(missing["cbis-ddsm_auroc_mean"])
    md = (tmp_path / "tables" / "main.md").read_text()
    assert "| syn_full_nodp | dbr15 | non-DP | 0/3 | – |" in md  # missing, never zero
    assert "0.750 ± 0.045" in md  # 0.70, 0.74, 0.81
    assert "| CBIS-DDSM test (published crops) AUROC |" in md and "published crops" in md
    assert set(df["data_source"]) == {"processed"}
    # Order: non-DP first, then ascending epsilon, within the study's groups.
    assert (
        md.index("real_frozen_nodp") < md.index("real_frozen_dp_eps6") < md.index("syn_full_nodp")
    )
    privacy = pd.read_csv(tmp_path / "tables" / "privacy.csv")
    assert list(privacy["experiment"]) == ["real_frozen_dp_eps6"] * 2
    assert list(privacy["seed"]) == [1, 2] and list(privacy["chosen_in_window"]) == [True, False]
    assert (privacy["max_grad_norm"] == 1.0).all() and (privacy["steps_at_chosen_epoch"] == 9).all()
    assert (privacy["warnings"] == "first caveat; second caveat").all()
    assert (privacy["max_crops_per_patient"] == 3).all()
    md = (tmp_path / "tables" / "privacy.md").read_text()
    assert "Not covered by the DP runs' guarantees:" in md and "checkpoint selection" in md
    assert "dp = False" not in md  # no lineage-only row


def test_privacy_table_has_a_row_for_a_run_private_only_through_its_lineage(tmp_path):
    """A non-DP classifier on a DP-MCGAN's crops: a row with the lineage's guarantee and empty
    DP-SGD columns; one written before these columns existed is refused with the fix."""
    record = {"dp": False, "experiment": "syn", "seed": 1, "lineage_private": True}
    record |= {"lineage_epsilon_rdp": 2.0, "lineage_epsilon_basic": 2.0, "lineage_delta": 1e-5}
    record |= {"lineage_unit": "crop", "lineage_patient_epsilon": 6.0}
    record |= {"lineage_patient_delta": 3e-3, "synthetic_in_training": True}
    record |= {"generator_private": True, "warnings": ["not trained privately"]}
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "privacy.json").write_text(json.dumps(record))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "privacy.json").write_text(json.dumps(record | {"lineage_private": False}))
    table = tables.privacy_table([tmp_path / "a" / "privacy.json", tmp_path / "b" / "privacy.json"])
    (row,) = table.to_dict("records")
    assert row["experiment"] == "syn" and row["lineage_patient_epsilon"] == 6.0
    assert row["noise_multiplier"] is None and row["warnings"] == "not trained privately"
    del record["lineage_patient_epsilon"]
    (tmp_path / "a" / "privacy.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="lineage_patient_epsilon.*--forcerun classify"):
        tables.privacy_table([tmp_path / "a" / "privacy.json"])


def test_latex_is_balanced_booktabs(tmp_path):
    _, paths = write_runs(tmp_path)
    tables.write_tables(
        paths,
        TABLE,
        ["real_frozen_nodp", "real_frozen_dp_eps6", "synfrozen_to_real_dp_eps6"],
        [1, 2, 3],
        None,
        tmp_path / "t",
        source="phantom",
    )
    tex = (tmp_path / "t" / "main.tex").read_text()
    assert tex.count(r"\begin{") == tex.count(r"\end{")
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert rule in tex
    body = tex[tex.index(r"\midrule") : tex.index(r"\bottomrule")]
    ncols = len(re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1))
    for line in body.splitlines():
        if line.endswith(r"\\") and "multicolumn" not in line:
            assert line.count("&") == ncols - 1, line
    assert "_" not in re.sub(r"\\_", "", body)  # escaped underscores
    assert r"dbr5$^\dagger$" in body and "phantom" in tex  # the ablation marker; the data named
    assert "CBIS-DDSM test" not in tex
