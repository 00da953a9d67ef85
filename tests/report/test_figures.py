"""The paper's figures are valid images (PNG and PDF) computed from the per-run files."""

from __future__ import annotations

from pathlib import Path

import cv2
import pandas as pd

from mammodp.report import comparison, figures
from mammodp.synthesis.loss_figure import gan_losses

from ..helpers.runs import PAPER_FIDELITY, PAPER_RESULTS, STUDY, TABLE, write_runs


def test_all_figures_are_valid_images(tmp_path):
    import numpy as np

    _, paths = write_runs(tmp_path)
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
    gan_losses(tmp_path / "losses.csv", out / "mcgan_losses.png")
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
