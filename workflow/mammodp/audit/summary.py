"""The privacy audit's outputs: the per-run membership-inference summary and scores, the
memorisation audit's summary, per-crop distances and figure, and the privacy-audit table and
figures over the experiments (mean and population std over seeds)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from mammodp.config import NOT_AUDITED, audit_exclusion, load_experiments
from mammodp.fileio import json_safe, write_csv, write_json
from mammodp.plotting import pyplot, save


def covers(exp, src) -> str:
    """What the membership audit of a head run covers (``src``: the experiment it starts from,
    or None)."""
    text = "the head's training on the real crops (the backbone is fixed)"
    if src is None:
        return text
    part = "backbone" if src.trained == "all" else "start"
    if "real" not in src.train_data.split("+"):
        return text + (
            f"; its {part} came from {exp.source}, trained on synthetic crops only (their link "
            "to the real patients: the memorisation audit)"
        )
    return text + f"; its {part} came from {exp.source}, audited in its own row"


# ----------------------------------------------------------------------------- per-run files


def write_mia(summary: dict, scores_df, exp, source, accountant_eps, out: dict) -> None:
    summary = {
        "experiment": exp.experiment,
        "accountant_epsilon": accountant_eps,
        "covers": covers(exp, source),
        **summary,
    }
    write_json(out["summary"], json_safe(summary))
    write_csv(out["scores"], scores_df.assign(experiment=exp.experiment))


def write_memorisation(result: dict, out: dict) -> None:
    summary = {
        k: (
            {kk: vv for kk, vv in v.items() if not kk.startswith("_")} if isinstance(v, dict) else v
        )
        for k, v in result.items()
        if not k.startswith("_")
    }
    write_json(out["summary"], json_safe(summary))
    syn, train = result["_synthetic"], result["_train"]
    rows = {"synthetic": [Path(p).name for p in syn["path"]]}
    for space in ("pixel", "features"):
        if space not in result:
            continue
        per = result[space]["_per_crop"]
        rows[f"{space}_dcr_train"] = per["dcr_train"]
        rows[f"{space}_dcr_heldout"] = per["dcr_heldout"]
        rows[f"{space}_nearest_train"] = [Path(train["path"][i]).name for i in per["nearest_train"]]
    write_csv(out["distances"], pd.DataFrame(rows))


def memorisation_figure(result: dict, pairs: int, out, generator_title: str) -> None:
    """DCR histograms per space (synthetic -> train, synthetic -> held-out, held-out -> train)
    and the ``pairs`` closest synthetic-training pairs in pixel space, side by side."""
    import cv2

    plt = pyplot()
    spaces = [s for s in ("pixel", "features") if s in result]
    fig = plt.figure(figsize=(3.2 * max(len(spaces), 2) + 1, 6.4))
    grid = fig.add_gridspec(2, max(len(spaces), 2), height_ratios=[1, 1])
    for j, space in enumerate(spaces):
        ax = fig.add_subplot(grid[0, j])
        r = result[space]
        per = r["_per_crop"]
        for data, label, ls in (
            (per["dcr_train"], "synthetic → train", "-"),
            (per["dcr_heldout"], "synthetic → held-out", "--"),
            (r["_baseline"], "held-out → train (real)", ":"),
        ):
            ax.hist(
                data, bins=30, histtype="step", linestyle=ls, color="0.1", density=True, label=label
            )
        ax.axvline(r["near_copy_threshold"], color="0.5", lw=0.8)
        unit = "RMS pixel difference" if space == "pixel" else "cosine distance"
        ax.set_xlabel(f"distance to closest ({unit})")
        ax.set_title(f"{space}: {r['share_nearest_is_train']:.2f} nearest is train", fontsize=9)
        if j == 0:
            ax.legend(fontsize=7)
    per = result["pixel"]["_per_crop"]
    order = np.argsort(per["dcr_train"])[:pairs]
    inner = grid[1, :].subgridspec(2, max(len(order), 1), hspace=0.05, wspace=0.05)
    syn, train = result["_synthetic"], result["_train"]
    for k, i in enumerate(order):
        for row, path in ((0, syn["path"][i]), (1, train["path"][per["nearest_train"][i]])):
            ax = fig.add_subplot(inner[row, k])
            ax.imshow(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 0:
                ax.set_ylabel("synthetic" if row == 0 else "closest train", fontsize=8)
            if row == 0:
                ax.set_title(f"{per['dcr_train'][i]:.3f}", fontsize=7)
    fig.suptitle(f"Memorisation audit: {generator_title}", fontsize=10)
    save(fig, out)


# ----------------------------------------------------------------------------- across runs


def _mean_std(values):
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return math.nan, math.nan, 0
    return float(np.mean(vals)), float(np.std(vals, ddof=0)), len(vals)


def audit_table(summary_paths, experiments_table, selected, faithful: bool) -> pd.DataFrame:
    """One row per selected experiment: the accountant's epsilon, the empirical lower bound,
    the attacks' AUC and TPRs (mean and std over seeds), or why it is not audited."""
    table = load_experiments(experiments_table)
    runs: dict[str, list[dict]] = {}
    for p in summary_paths:
        s = json.loads(Path(p).read_text())
        runs.setdefault(s["experiment"], []).append(s)
    rows = []
    for e in selected:
        exp = table[e]
        reason = audit_exclusion(exp, faithful)
        row = {"experiment": e, "paper_id": exp.paper_id, "dp_epsilon": exp.dp_epsilon}
        done = runs.get(e, [])
        row["seeds"] = len(done)
        row["status"] = "audited" if reason is None else "not audited"
        source = table.get(exp.source)
        row["covers"] = covers(exp, source) if reason is None else NOT_AUDITED[reason]
        values = {
            "accountant_epsilon": [r["accountant_epsilon"] for r in done],
            "shadow_epsilon": [r.get("shadow_epsilon") for r in done],
            "empirical_epsilon_lb": [r["empirical"]["epsilon_lower_bound"] for r in done],
            "shadow_auc": [r["shadow"]["auc"] for r in done],
            "shadow_tpr_at_fpr_0.001": [r["shadow"]["tpr_at_fpr_0.001"] for r in done],
            "shadow_tpr_at_fpr_0.01": [r["shadow"]["tpr_at_fpr_0.01"] for r in done],
            "target_auc": [r.get("target", {}).get("auc") for r in done],
            "canary_auc": [r.get("canary", {}).get("auc") for r in done],
        }
        for k, v in values.items():
            row[f"{k}_mean"], row[f"{k}_std"], _ = _mean_std(v)
        row["shadow_models"] = done[0]["shadow_models"] if done else None
        row["confidence"] = done[0]["empirical"]["confidence"] if done else None
        rows.append(row)
    return pd.DataFrame(rows)


def audit_markdown(df: pd.DataFrame) -> str:
    def ms(r, k, digits=3):
        m, s = r[f"{k}_mean"], r[f"{k}_std"]
        return "–" if pd.isna(m) else f"{m:.{digits}f} ± {s:.{digits}f}"

    head = (
        "| experiment | paper id | ε (accountant, the run) | ε (accountant, the shadows) | "
        "ε lower bound (empirical) | attack AUC | TPR @ 0.1% FPR | TPR @ 1% FPR | "
        "AUC vs the run's model | canary AUC | seeds |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for _, r in df.iterrows():
        if r["status"] != "audited":
            lines.append(
                f"| {r['experiment']} | {r['paper_id']} | not audited: {r['covers']} "
                "| | | | | | | | |"
            )
            continue
        lines.append(
            f"| {r['experiment']} | {r['paper_id']} | {ms(r, 'accountant_epsilon', 2)} | "
            f"{ms(r, 'shadow_epsilon', 2)} | {ms(r, 'empirical_epsilon_lb', 2)} | "
            f"{ms(r, 'shadow_auc')} | "
            f"{ms(r, 'shadow_tpr_at_fpr_0.001')} | {ms(r, 'shadow_tpr_at_fpr_0.01')} | "
            f"{ms(r, 'target_auc')} | {ms(r, 'canary_auc')} | {r['seeds']} |"
        )
    conf = df["confidence"].dropna()
    note = (
        "\nLiRA (Carlini et al. 2022) with shadow heads trained as each experiment; the attack's "
        "columns are the leave-one-out attack on the shadows (canaries apart). The empirical ε "
        f"is a lower bound at {conf.iloc[0] if len(conf) else 0.95:g} confidence "
        "(Clopper-Pearson), canaries included; non-DP runs have no accountant ε.\n"
    )
    return head + "\n".join(lines) + "\n" + note


def roc_figure(score_paths, experiments_table, out) -> None:
    """The leave-one-out attack's ROC curves per experiment (seeds pooled), log-log axes."""
    plt = pyplot()
    table = load_experiments(experiments_table)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    by_exp: dict[str, list[pd.DataFrame]] = {}
    for p in score_paths:
        df = pd.read_csv(p)
        if len(df):
            by_exp.setdefault(df["experiment"].iloc[0], []).append(df)
    styles = ["-", "--", ":", "-.", (0, (1, 1)), (0, (3, 1, 1, 1))]
    for k, (e, frames) in enumerate(sorted(by_exp.items())):
        df = pd.concat(frames)
        df = df[(df["attack"] == "shadow") & ~df["canary"].astype(bool)]
        if df["member"].nunique() < 2:
            continue
        fpr, tpr, _ = roc_curve(df["member"].astype(bool), df["score"])
        eps = table[e].dp_epsilon
        label = f"{e} (ε={eps:g})" if eps is not None else f"{e} (non-DP)"
        ax.plot(fpr, tpr, color="0.1", ls=styles[k % len(styles)], lw=1, label=label)
    grid = np.logspace(-4, 0, 50)
    ax.plot(grid, grid, color="0.6", lw=0.8, label="chance")
    ax.set(
        xscale="log",
        yscale="log",
        xlim=(1e-3, 1),
        ylim=(1e-3, 1),
        xlabel="false positive rate",
        ylabel="true positive rate",
    )
    ax.set_title("Membership inference (LiRA) on the shadow heads", fontsize=9)
    ax.legend(fontsize=6, loc="lower right")
    save(fig, out)


def epsilon_figure(df: pd.DataFrame, out) -> None:
    """Empirical ε lower bound against the accountant's ε, per audited DP experiment."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    # The shadows' epsilon: that of the training attacked.
    dp = df[(df["status"] == "audited") & df["shadow_epsilon_mean"].notna()]
    ax.errorbar(
        dp["shadow_epsilon_mean"],
        dp["empirical_epsilon_lb_mean"],
        yerr=dp["empirical_epsilon_lb_std"],
        fmt="o",
        color="0.1",
        ms=4,
        capsize=2,
    )
    top = max([1.0, *dp["shadow_epsilon_mean"].tolist()]) * 1.1
    ax.plot([0, top], [0, top], color="0.6", lw=0.8, label="lower bound = accountant's ε")
    ax.set(
        xscale="symlog",
        yscale="symlog",
        xlabel="accountant's ε (the shadows', spent)",
        ylabel="empirical ε lower bound",
    )
    ax.legend(fontsize=7)
    ax.set_title("Measured against proven privacy", fontsize=9)
    save(fig, out)
