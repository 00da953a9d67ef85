"""Tables and figures are computed from the per-run files."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import cv2
import pandas as pd
import pytest

from mammodp import comparison, figures, tables
from mammodp.errors import UserError
from mammodp.study_settings import STUDY_SETTINGS

from .helpers.configs import REPO

TABLE = REPO / "config" / "experiments.tsv"
PAPER_RESULTS = REPO / "resources" / "paper_results.csv"
PAPER_FIDELITY = REPO / "resources" / "paper_fidelity.csv"
# The study's setting: every row it ran is comparable (with the study's generator).
STUDY = {
    "data_source": "processed",
    "external": "bcdr",
    "generator": "published",
    "medigan_model": "00008_C-DCGAN_MMG_MASSES",
    "n_per_class": 1500,
    "mcgan_dp": False,
    "settings": {k: v for scope in STUDY_SETTINGS.values() for k, v in scope.items()},
    "model": {"arch": "swin_t", "pretrained": "imagenet", "input_size": 224, "overrides": {}},
    "epochs": 300,
    "seeds": (42, 43, 44),
}


def _runs(tmp_path):
    values = {
        ("real_frozen_nodp", 1): 0.70,
        ("real_frozen_nodp", 2): 0.74,
        ("real_frozen_nodp", 3): 0.81,
        ("real_frozen_dp_eps6", 1): 0.61,
        ("real_frozen_dp_eps6", 2): 0.65,
    }
    paths = []
    for (exp, seed), auroc in values.items():
        d = tmp_path / exp / f"seed{seed}"
        d.mkdir(parents=True)
        test = {
            "cbis-ddsm": {
                "accuracy": auroc - 0.1,
                "f1": auroc - 0.2,
                "auroc": auroc,
                "auprc": auroc + 0.05,
                "precision": 0,
                "recall": 0,
                "n": 10,
            }
        }
        (d / "metrics.json").write_text(json.dumps({"experiment": exp, "seed": seed, "test": test}))
        dp = exp.endswith("eps6")
        privacy = {"dp": dp, "experiment": exp, "seed": seed}
        if dp:
            privacy.update(
                accountant="rdp",
                noise_multiplier=1.1,
                max_grad_norm=1.0,
                sample_rate=0.1,
                steps=30,
                steps_at_chosen_epoch=9,
                chosen_in_window=seed != 2,
                delta=1e-4,
                target_epsilon=6,
                epsilon_at_chosen_epoch=5.5,
                epsilon_final=5.9,
                chosen_epoch=3,
                synthetic_in_training=False,
                pretrained_from=None,
                source_dp=None,
                synthetic_in_lineage=False,
                generator_private=None,
                lineage_private=True,
                lineage_epsilon_rdp=5.9,
                lineage_epsilon_basic=5.9,
                lineage_delta=1e-4,
                lineage_unit="crop",
                lineage_patient_epsilon=17.7,
                lineage_patient_delta=1e-4 * 3 * 2.718281828**11.8,
                unit_of_privacy="crop",
                n_units=100,
                max_crops_per_patient=3,
                patient_epsilon=17.7,
                patient_delta=1e-4 * 3 * 2.718281828**11.8,
                warnings=["first caveat", "second caveat"],
            )
        (d / "privacy.json").write_text(json.dumps(privacy))
        paths.append(str(d / "metrics.json"))
    return values, paths


def test_main_table_recomputed_independently(tmp_path):
    values, paths = _runs(tmp_path)
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
    _, paths = _runs(tmp_path)
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


def test_all_figures_are_valid_images(tmp_path):
    import numpy as np

    _, paths = _runs(tmp_path)
    for p in paths:  # predictions beside each metrics.json
        pd.DataFrame(
            {
                "dataset": ["cbis-ddsm"] * 6,
                "label": [0, 1, 0, 1, 1, 0],
                "p_benign": [0.2, 0.8, 0.4, 0.6, 0.9, 0.1],
            }
        ).to_csv(Path(p).with_name("predictions.csv"), index=False)
    crops = tmp_path / "crops"
    crops.mkdir()
    rows = []
    for i in range(8):
        path = crops / f"{i}.png"
        cv2.imwrite(str(path), np.full((128, 128), 30 * i, np.uint8))
        rows.append({"path": path.name, "label": i % 2, "split": "train", "dataset": "cbis-ddsm"})
    pd.DataFrame(rows).to_csv(tmp_path / "crops.csv", index=False)
    pd.DataFrame(rows)[["path", "label"]].to_csv(tmp_path / "syn.csv", index=False)
    pd.DataFrame({"epoch": [1, 2, 3], "loss_d": [1.0, 0.8, 0.7], "loss_g": [2.0, 1.5, 1.4]}).to_csv(
        tmp_path / "losses.csv", index=False
    )
    selected = ["real_frozen_nodp", "real_frozen_dp_eps6"]
    out = tmp_path / "fig"
    figures.privacy_utility(paths, TABLE, selected, out / "privacy_utility.png", source="phantom")
    figures.curves(paths, TABLE, selected, out / "roc_pr.png", source="phantom")
    figures.sample_grid(
        tmp_path / "crops.csv",
        tmp_path / "syn.csv",
        out / "samples.png",
        source="phantom",
        generator="mcgan",
        images=crops,
        synthetic_images=crops,
    )
    figures.gan_losses(tmp_path / "losses.csv", out / "mcgan_losses.png")
    ctx = comparison.Context(**{**STUDY, "seeds": (1, 2, 3), "data_source": "phantom"})
    comparison.write_comparison(
        paths, TABLE, selected, ctx, PAPER_RESULTS, PAPER_FIDELITY, None, tmp_path / "tables"
    )
    figures.paper_comparison(
        tmp_path / "tables" / "paper_comparison.csv", out / "paper_comparison.png", source="phantom"
    )
    for name in ("privacy_utility", "roc_pr", "samples", "mcgan_losses", "paper_comparison"):
        img = cv2.imread(str(out / f"{name}.png"))
        assert img is not None and min(img.shape[:2]) > 200 and img.std() > 5, name
        pdf = (out / f"{name}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF") and len(pdf) > 2000, name
