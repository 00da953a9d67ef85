"""The paper's figures (PNG and PDF, matplotlib, readable in greyscale print), computed from the
per-run files: privacy-utility curves, ROC and precision-recall curves per regime, a sample grid
of real vs synthetic crops, ours against the study's published AUROC.
Titles and legends name the data (``labels``): a phantom run is never called CBIS-DDSM."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from sklearn import metrics as skm

from mammodp.config import load_experiments
from mammodp.errors import UserError
from mammodp.fileio import read_csv, read_manifest
from mammodp.labels import DATA_NAME, GENERATOR_TITLE, TRAIN_TITLE, set_titles
from mammodp.plotting import pyplot, save

from .comparison import PAPER_SET_TITLE
from .tables import GROUP_ORDER, GROUP_TITLE, METRIC_TITLE, TEST_SETS, summarise

MARKERS = {
    "real": "o",
    "real+synthetic": "s",
    "synthetic": "^",
    "synthetic-pretrained": "D",
    "ablation": "v",
    "extra": "x",
}
LINESTYLES = {
    "real": "-",
    "real+synthetic": "--",
    "synthetic": ":",
    "synthetic-pretrained": "-.",
    "ablation": (0, (1, 1)),
    "extra": (0, (3, 1, 1, 1)),
}
GREYS = {
    "real": "0.0",
    "real+synthetic": "0.35",
    "synthetic": "0.55",
    "synthetic-pretrained": "0.2",
    "ablation": "0.5",
    "extra": "0.6",
}


def privacy_utility(
    metric_paths, experiments_table, selected, out, test_set="cbis-ddsm", *, source: str
):
    """AUROC and AUPRC vs epsilon per training regime; non-DP runs as horizontal references;
    error bars are the population std over seeds."""
    plt = pyplot()
    title = set_titles(source)[test_set]
    from matplotlib.ticker import NullFormatter

    seeds = sorted({json.loads(Path(p).read_text())["seed"] for p in metric_paths}) or [0]
    df = summarise(metric_paths, experiments_table, selected, seeds)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    dp_eps = sorted({e for e in df["dp_epsilon"] if e is not None and not pd.isna(e)})
    for ax, metric in zip(axes, ("auroc", "auprc"), strict=True):
        for group in GROUP_ORDER:
            g = df[df["group"] == group]
            if g.empty:
                continue
            style = dict(color=GREYS[group], marker=MARKERS[group], linestyle=LINESTYLES[group])
            dp = g[g["dp_epsilon"].notna()].sort_values("dp_epsilon")
            dp = dp[dp[f"{test_set}_{metric}_n"] > 0]
            if len(dp):
                # A small per-regime offset keeps overlapping error bars apart on the log axis.
                offset = 1 + 0.04 * (GROUP_ORDER.index(group) - 2)
                ax.errorbar(
                    dp["dp_epsilon"] * offset,
                    dp[f"{test_set}_{metric}_mean"],
                    yerr=dp[f"{test_set}_{metric}_std"],
                    capsize=3,
                    label=f"{GROUP_TITLE[group]} (DP)",
                    **style,
                )
            nodp = g[g["dp_epsilon"].isna() & (g[f"{test_set}_{metric}_n"] > 0)]
            for _, r in nodp.iterrows():
                ax.axhline(
                    r[f"{test_set}_{metric}_mean"],
                    color=GREYS[group],
                    linewidth=1,
                    linestyle=LINESTYLES[group],
                    alpha=0.8,
                    label=f"{GROUP_TITLE[group]}: {r['experiment']} (non-DP)",
                )
        if dp_eps:
            ax.set_xscale("log")
            ax.set_xticks(dp_eps, [f"{e:g}" for e in dp_eps])
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("privacy budget ε (δ fixed)")
        ax.set_ylabel(f"{METRIC_TITLE[metric]} ({title})")
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=7, frameon=False)
    fig.suptitle(f"Privacy–utility trade-off on {title} (mean ± std over seeds)", fontsize=10)
    save(fig, out)


def curves(
    metric_paths,
    experiments_table,
    selected,
    out,
    epsilon: float = 6.0,
    *,
    source: str,
    prediction_paths=None,
):
    """ROC and precision-recall curves on both test sets for every selected experiment that is
    non-DP or at ``epsilon``, from the predictions of all its seeds (pooled). ``prediction_paths``:
    each run's predictions.csv, in the order of ``metric_paths`` (default: beside each)."""
    if prediction_paths is None:
        prediction_paths = [Path(p).with_name("predictions.csv") for p in metric_paths]
    plt = pyplot()
    titles = set_titles(source)
    table = load_experiments(experiments_table)
    chosen = [e for e in selected if table[e].dp_epsilon in (None, epsilon)]
    preds = _predictions_by_experiment(metric_paths, prediction_paths, chosen)
    sets = [
        ts for ts in TEST_SETS if any((ts == f["dataset"]).any() for v in preds.values() for f in v)
    ]
    fig, axes = plt.subplots(
        2,
        max(len(sets), 1),
        figsize=(4.2 * max(len(sets), 1), 7.4),
        squeeze=False,
        constrained_layout=True,
    )
    for col, ts in enumerate(sets):
        roc_ax, pr_ax = axes[0, col], axes[1, col]
        for exp in chosen:
            if exp in preds:
                _plot_curves(roc_ax, pr_ax, exp, table[exp], pd.concat(preds[exp]), ts)
        _label_curve_axes(roc_ax, pr_ax, titles[ts])
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=7, frameon=False)
    save(fig, out)


def _predictions_by_experiment(metric_paths, prediction_paths, chosen) -> dict:
    """Each chosen experiment's predictions tables, one per run, in the order of the runs."""
    preds = {}
    for p, pred in zip(metric_paths, prediction_paths, strict=True):
        exp = json.loads(Path(p).read_text())["experiment"]
        if exp in chosen:
            preds.setdefault(exp, []).append(pd.read_csv(pred))
    return preds


def _plot_curves(roc_ax, pr_ax, exp: str, e, df: pd.DataFrame, test_set: str) -> None:
    """One experiment's ROC and precision-recall curves on ``test_set`` (none without both
    classes)."""
    df = df[df["dataset"] == test_set]
    if df["label"].nunique() < 2:
        return
    # Regime: grey level and dash pattern; DP runs thinner, with markers.
    style = dict(color=GREYS[e.group], linestyle=LINESTYLES[e.group], linewidth=2.0)
    if e.dp_epsilon is not None:
        style.update(linewidth=1.0, marker=MARKERS[e.group], markersize=3, markevery=0.1)
    eps = "non-DP" if e.dp_epsilon is None else f"ε={e.dp_epsilon:g}"
    label = f"{exp} ({eps})"
    fpr, tpr, _ = skm.roc_curve(df["label"], df["p_benign"])
    roc_ax.plot(fpr, tpr, label=label, **style)
    prec, rec, _ = skm.precision_recall_curve(df["label"], df["p_benign"])
    pr_ax.plot(rec, prec, label=label, **style)


def _label_curve_axes(roc_ax, pr_ax, set_title: str) -> None:
    """The chance diagonal, axis labels, titles and grids of one test set's two panels."""
    roc_ax.plot([0, 1], [0, 1], color="0.8", linewidth=0.8)
    roc_ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate (benign)",
        title=f"ROC, {set_title}",
    )
    pr_ax.set(
        xlabel="recall (benign)",
        ylabel="precision (benign)",
        title=f"Precision-recall, {set_title}",
    )
    for ax in (roc_ax, pr_ax):
        ax.title.set_fontsize(9)
        ax.grid(True, alpha=0.3)


def sample_grid(
    manifest_csv,
    synthetic_csv,
    out,
    per_row: int = 8,
    seed: int = 0,
    *,
    source: str,
    generator: str,
    images: str | Path,
    synthetic_images: str | Path,
):
    """Rows: real benign, real malignant, synthetic benign, synthetic malignant (seeded picks
    of real training crops and synthetic crops), each titled with the data it shows. ``images``,
    ``synthetic_images``: the folders the two manifests describe (``fileio.read_manifest``)."""
    plt = pyplot()
    set_titles(source)  # an unknown source: one clear error
    what = {"real": TRAIN_TITLE[source], "synthetic": GENERATOR_TITLE.get(generator, generator)}
    manifest = read_manifest(manifest_csv, images)
    real = manifest[(manifest["split"] == "train") & (manifest["dataset"] == "cbis-ddsm")]
    synthetic = read_manifest(synthetic_csv, synthetic_images)
    rng = np.random.default_rng(seed)
    rows, titles = [], []
    for name, df in (("real", real), ("synthetic", synthetic)):
        for label, cls in ((1, "benign"), (0, "malignant")):
            part = df[df["label"].astype(int) == label]["path"].tolist()
            picks = (
                [
                    part[i]
                    for i in sorted(rng.choice(len(part), min(per_row, len(part)), replace=False))
                ]
                if part
                else []
            )
            imgs = [_tile(p) for p in picks]
            imgs += [np.full((128, 128), 255, np.uint8)] * (per_row - len(imgs))
            rows.append(np.hstack(imgs))
            titles.append(f"{name} {cls} ({what[name]})")
    fig, axes = plt.subplots(
        len(rows), 1, figsize=(per_row * 1.1, len(rows) * 1.25), constrained_layout=True
    )
    for ax, row, title in zip(np.atleast_1d(axes), rows, titles, strict=True):
        ax.imshow(row, cmap="gray", vmin=0, vmax=255)
        ax.set_axis_off()
        ax.set_title(title, fontsize=8, loc="left")
    save(fig, out)


def _tile(path: str, size: int = 128) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise UserError(f"{path}: image missing or unreadable; rebuild the crops or samples.")
    if img.shape != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


COMPARISON_COLUMNS = [
    "paper_id",
    "experiment",
    "test_set",
    "metric",
    "published_mean",
    "published_std",
    "published_n",
    "ours_mean",
    "ours_std",
    "ours_n",
    "comparable",
]


def _row_label(rows: pd.DataFrame) -> str:
    r = rows.iloc[0]
    label = f"{r['paper_id']} {r['experiment']}".strip()
    if not rows["published_n"].any():
        return label + " (no published result)"
    if not rows["ours_n"].any():
        return label + " (not run)"
    return label if rows["comparable"].any() else label + " (not comparable)"


def _comparison_legend(fig) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Line2D([], [], color="0.0", marker="o", linestyle="", label="published (3 seeds)"),
        Line2D([], [], color="0.35", marker="s", linestyle="", label="ours, comparable"),
        Line2D(
            [], [], color="0.5", marker="s", mfc="white", linestyle="", label="ours, not comparable"
        ),
        Patch(color="0.9", label="not comparable: reason in paper_comparison.md"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=7, frameon=False)


def _comparison_panel(ax, part: pd.DataFrame, y: dict) -> None:
    """Published (filled circles) and ours (squares: filled comparable, hollow not) per row."""
    for r in part.to_dict("records"):
        yi, ok = y[(r["paper_id"], r["experiment"])], bool(r["comparable"])
        if not ok:
            ax.axhspan(yi - 0.5, yi + 0.5, color="0.9", zorder=0, linewidth=0)
        if r["published_n"]:
            ax.errorbar(
                r["published_mean"],
                yi - 0.17,
                xerr=r["published_std"],
                fmt="o",
                ms=4,
                color="0.0",
                capsize=2,
            )
        if r["ours_n"]:
            ax.errorbar(
                r["ours_mean"],
                yi + 0.17,
                xerr=r["ours_std"],
                fmt="s",
                ms=4,
                capsize=2,
                color="0.35" if ok else "0.5",
                mfc="0.35" if ok else "white",
            )


def paper_comparison(comparison_csv, out, *, source: str, metric: str = "auroc") -> None:
    """Ours against the study's published values (AUROC) per experiment, one panel per test set;
    error bars: population std over seeds. Rows that cannot be compared lie on a grey band,
    with hollow markers for ours and "(not comparable)" in their label."""
    plt = pyplot()
    df = read_csv(comparison_csv, required=COMPARISON_COLUMNS)
    df = df[df["metric"] == metric].assign(experiment=lambda d: d["experiment"].fillna(""))
    titles = set_titles(source)
    sets = [ts for ts in TEST_SETS if (df["test_set"] == ts).any()] or ["cbis-ddsm"]
    keys = list(dict.fromkeys(zip(df["paper_id"], df["experiment"], strict=True)))
    y = {k: i for i, k in enumerate(keys)}
    fig, axes = plt.subplots(
        1,
        len(sets),
        figsize=(4.2 * len(sets) + 2.4, 0.26 * len(keys) + 2.2),
        sharey=True,
        squeeze=False,
        constrained_layout=True,
    )
    for ax, ts in zip(axes[0], sets, strict=True):
        _comparison_panel(ax, df[df["test_set"] == ts], y)
        ax.set_title(f"{METRIC_TITLE[metric]}: ours on {titles[ts]}\nvs {PAPER_SET_TITLE[ts]}")
        ax.title.set_fontsize(9)
        ax.set_xlabel(f"{METRIC_TITLE[metric]} (benign positive), mean ± std over seeds")
        ax.grid(True, axis="x", alpha=0.3)
    ax = axes[0, 0]
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels(
        [_row_label(df[(df["paper_id"] == p) & (df["experiment"] == e)]) for p, e in keys],
        fontsize=7,
    )
    ax.set_ylim(len(keys) - 0.5, -0.5)
    _comparison_legend(fig)
    fig.suptitle(f"Ours on {DATA_NAME[source]}, against the published results", fontsize=9)
    save(fig, out)
