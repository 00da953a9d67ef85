"""The paper's tables, computed from the per-run files (nothing typed in by hand).

Main table: one row per experiment, grouped as the study (real, real + synthetic, synthetic,
synthetic pretraining, ablations), non-DP first then ascending epsilon; per test set accuracy, F1,
AUROC and AUPRC as mean +/- population std over the seeds that finished. Missing runs show as
missing, never as zero. Titles name the data the numbers were computed on (``labels``): a phantom
run is never called CBIS-DDSM; the intended ablations (their source model is loaded, which the
study's code silently did not do) carry a footnote.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from mammodp.classify import privacy_notes
from mammodp.config import load_experiments
from mammodp.errors import UserError
from mammodp.fileio import as_outputs, atomic_path, read_csv, write_csv
from mammodp.labels import DATA_NAME, set_titles

GROUP_ORDER = ["real", "real+synthetic", "synthetic", "synthetic-pretrained", "ablation", "extra"]
GROUP_TITLE = {
    "real": "Real only",
    "real+synthetic": "Real + synthetic",
    "synthetic": "Synthetic only",
    "synthetic-pretrained": "Synthetic pretraining, DP fine-tuning on real",
    "ablation": "Pretraining ablations",
    "extra": "Not in the paper",
}
TABLE_METRICS = ("accuracy", "f1", "auroc", "auprc")
METRIC_TITLE = {"accuracy": "Acc", "f1": "F1", "auroc": "AUROC", "auprc": "AUPRC"}
TEST_SETS = ("cbis-ddsm", "bcdr")
ABLATION_MARK = "†"


def ablation_note(paper_ids) -> str:
    ids = "/".join(sorted(set(paper_ids), key=lambda p: (len(p), p)))
    return (
        f"{ABLATION_MARK} The intended ablation: our run starts from its source model's head; the "
        f"study's code silently discarded it, so the paper's {ids} results are not comparable "
        "with these rows."
    )


def _load_runs(metric_paths) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for p in metric_paths:
        m = json.loads(Path(p).read_text())
        runs.setdefault(m["experiment"], []).append(m)
    return runs


def _order(table, selected):
    def key(e):
        exp = table[e]
        eps = -1.0 if exp.dp_epsilon is None else exp.dp_epsilon
        return (GROUP_ORDER.index(exp.group), eps, e)

    return sorted(selected, key=key)


def summarise(metric_paths, experiments_table, selected, seeds) -> pd.DataFrame:
    """Numeric main table: mean and population std (ddof=0) per experiment, test set, metric."""
    table = load_experiments(experiments_table)
    runs = _load_runs(metric_paths)
    rows = []
    for e in _order(table, selected):
        exp = table[e]
        done = [r for r in runs.get(e, []) if r["seed"] in seeds]
        row = {
            "group": exp.group,
            "experiment": e,
            "paper_id": exp.paper_id,
            "dp_epsilon": exp.dp_epsilon,
            "seeds_finished": len(done),
            "seeds_planned": len(seeds),
        }
        for ts in TEST_SETS:
            for m in TABLE_METRICS:
                vals = [r["test"].get(ts, {}).get(m) for r in done]
                vals = [v for v in vals if v is not None and not math.isnan(v)]
                row[f"{ts}_{m}_mean"] = float(np.mean(vals)) if vals else math.nan
                row[f"{ts}_{m}_std"] = float(np.std(vals, ddof=0)) if vals else math.nan
                row[f"{ts}_{m}_n"] = len(vals)
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(mean, std, digits=3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _eps(v) -> str:
    return "non-DP" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:g}"


def _present_sets(df: pd.DataFrame) -> list[str]:
    return [ts for ts in TEST_SETS if df[[f"{ts}_{m}_n" for m in TABLE_METRICS]].to_numpy().sum()]


def _row_cells(r: dict, sets: list[str]) -> list[str]:
    """One experiment's cells, the same in the Markdown and the LaTeX table."""
    ablation = r["group"] == "ablation" and r["paper_id"] != "-"
    cells = [
        r["experiment"],
        r["paper_id"] + (ABLATION_MARK if ablation else ""),
        _eps(r["dp_epsilon"]),
        f"{r['seeds_finished']}/{r['seeds_planned']}",
    ]
    return cells + [
        _cell(r[f"{ts}_{m}_mean"], r[f"{ts}_{m}_std"]) for ts in sets for m in TABLE_METRICS
    ]


def _ablation_ids(df: pd.DataFrame) -> list[str]:
    return [p for g, p in zip(df["group"], df["paper_id"], strict=True) if g == "ablation"]


def main_markdown(df: pd.DataFrame, *, source: str) -> str:
    sets = _present_sets(df) or ["cbis-ddsm"]
    titles = set_titles(source)
    head = ["Experiment", "Paper", "ε", "Seeds"] + [
        f"{titles[ts]} {METRIC_TITLE[m]}" for ts in sets for m in TABLE_METRICS
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    group = None
    for r in df.to_dict("records"):
        if r["group"] != group:
            group = r["group"]
            lines.append(f"| **{GROUP_TITLE[group]}** |" + " |" * (len(head) - 1))
        cells = _row_cells(r, sets)
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        f"\nData: {DATA_NAME[source]}. Mean ± population standard deviation over the seeds "
        "that finished (Seeds column); – marks a missing value. Benign is the positive class.\n"
    )
    if ablations := _ablation_ids(df):
        note += "\n" + ablation_note(ablations) + "\n"
    return "\n".join(lines) + "\n" + note


def _tex_escape(s: str) -> str:
    for a, b in (
        ("\\", r"\textbackslash{}"),
        ("_", r"\_"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("#", r"\#"),
        ("±", r"$\pm$"),
        ("–", "--"),
        (ABLATION_MARK, r"$^\dagger$"),
    ):
        s = s.replace(a, b)
    return s


def main_latex(df: pd.DataFrame, *, source: str) -> str:
    sets = _present_sets(df) or ["cbis-ddsm"]
    titles = set_titles(source)
    ncol = 4 + len(sets) * len(TABLE_METRICS)
    spec = "llrr" + "c" * (len(sets) * len(TABLE_METRICS))
    out = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
    ]
    top = [" ", " ", " ", " "] + [
        rf"\multicolumn{{{len(TABLE_METRICS)}}}{{c}}{{{_tex_escape(titles[ts])}}}" for ts in sets
    ]
    out.append(" & ".join(top) + r" \\")
    rules = []
    for i in range(len(sets)):
        a = 5 + i * len(TABLE_METRICS)
        rules.append(rf"\cmidrule(lr){{{a}-{a + len(TABLE_METRICS) - 1}}}")
    out.append(" ".join(rules))
    sub = ["Experiment", "Paper", r"$\varepsilon$", "Seeds"] + [
        METRIC_TITLE[m] for _ in sets for m in TABLE_METRICS
    ]
    out.append(" & ".join(sub) + r" \\")
    out.append(r"\midrule")
    group = None
    for r in df.to_dict("records"):
        if r["group"] != group:
            if group is not None:
                out.append(r"\midrule")
            group = r["group"]
            out.append(
                rf"\multicolumn{{{ncol}}}{{l}}{{\textit{{{_tex_escape(GROUP_TITLE[group])}}}}} \\"
            )
        cells = _row_cells(r, sets)
        out.append(" & ".join(_tex_escape(str(c)) for c in cells) + r" \\")
    caption = (
        f"Classification on {DATA_NAME[source]}: mean ± population standard deviation over "
        "seeds (benign positive). – marks a missing value."
    )
    if ablations := _ablation_ids(df):
        caption += " " + ablation_note(ablations)
    out += [
        r"\bottomrule",
        r"\end{tabular}",
        rf"\caption{{{_tex_escape(caption)}}}",
        r"\label{tab:main}",
        r"\end{table}",
    ]
    return "\n".join(out) + "\n"


PRIVACY_COLUMNS = [
    "experiment",
    "seed",
    "dp",
    "unit_of_privacy",
    "n_units",
    "accountant",
    "noise_multiplier",
    "max_grad_norm",
    "sample_rate",
    "steps",
    "steps_at_chosen_epoch",
    "delta",
    "target_epsilon",
    "epsilon_at_chosen_epoch",
    "epsilon_final",
    "chosen_epoch",
    "chosen_in_window",
    "synthetic_in_training",
    "pretrained_from",
    "source_dp",
    "synthetic_in_lineage",
    "generator_private",
    "lineage_private",
    "lineage_epsilon_rdp",
    "lineage_epsilon_basic",
    "lineage_delta",
    "lineage_unit",
    "lineage_patient_epsilon",
    "lineage_patient_delta",
    "max_crops_per_patient",
    "patient_epsilon",
    "patient_delta",
    "warnings",
]
# What a non-DP run trained only on a private generator's crops has: its lineage's guarantee.
LINEAGE_COLUMNS = [
    c for c in PRIVACY_COLUMNS if c.startswith("lineage_") or c in ("experiment", "seed", "dp")
] + ["synthetic_in_training", "generator_private", "warnings"]


def privacy_table(privacy_paths) -> pd.DataFrame:
    """One row per run with a guarantee: a DP run (what a privacy auditor needs to recompute
    its epsilon) or a non-DP run whose whole lineage was private (its lineage's epsilon; the
    DP-SGD columns stay empty)."""
    rows = []
    for p in privacy_paths:
        d = json.loads(Path(p).read_text())
        if not (d.get("dp") or d.get("lineage_private")):
            continue
        needed = PRIVACY_COLUMNS if d["dp"] else LINEAGE_COLUMNS
        missing = [c for c in needed if c not in d]
        if missing:
            raise UserError(
                f"{p}: missing {missing}; written by an older version: rerun that job "
                "(snakemake --forcerun classify)."
            )
        row = {c: d.get(c) for c in PRIVACY_COLUMNS}
        row["warnings"] = "; ".join(d["warnings"])
        rows.append(row)
    return pd.DataFrame(rows, columns=PRIVACY_COLUMNS).sort_values(["experiment", "seed"])


def _markdown(df: pd.DataFrame, floatfmt=".4g") -> str:
    def fmt(v):
        if isinstance(v, float):
            return "–" if math.isnan(v) else format(v, floatfmt)
        return "–" if v is None else str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _not_covered_md(priv: pd.DataFrame) -> str:
    """What the guarantees do not cover (privacy_notes), under the table."""
    lines = []
    if priv["dp"].astype(bool).any():
        lines += ["", "Not covered by the DP runs' guarantees:", ""]
        lines += [f"- {x}" for x in privacy_notes.NOT_COVERED]
    if (~priv["dp"].astype(bool)).any():
        lines += ["", "Not covered by the lineage guarantees of runs with dp = False:", ""]
        lines += [f"- {x}" for x in privacy_notes.LINEAGE_NOT_COVERED]
    return "\n".join(lines) + "\n" if lines else ""


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_tables(
    metric_paths,
    experiments_table,
    selected,
    seeds,
    frd_csv,
    out_dir,
    *,
    source: str,
    privacy_paths=None,
) -> None:
    """main.{csv,md,tex}, privacy.{csv,md}, fidelity.{csv,md}; ``source`` (data.source) names
    the data in the titles and in main.csv's ``data_source`` column. ``out_dir``: a folder or
    ``fileio.Outputs``; ``privacy_paths``: the runs' privacy.json files (default: beside their
    metrics.json)."""
    if privacy_paths is None:
        privacy_paths = [Path(p).with_name("privacy.json") for p in metric_paths]
    out_dir = as_outputs(out_dir)
    df = summarise(metric_paths, experiments_table, selected, seeds)
    write_csv(out_dir / "main.csv", df.assign(data_source=source))
    _write_text(out_dir / "main.md", main_markdown(df, source=source))
    _write_text(out_dir / "main.tex", main_latex(df, source=source))
    priv = privacy_table(privacy_paths)
    write_csv(out_dir / "privacy.csv", priv)
    _write_text(out_dir / "privacy.md", _markdown(priv) + _not_covered_md(priv))
    if frd_csv:
        frd = read_csv(frd_csv)
        write_csv(out_dir / "fidelity.csv", frd)
        fidelity = _markdown(frd.drop(columns=["frd_score_version"]))
        _write_text(out_dir / "fidelity.md", fidelity + f"\nData: {DATA_NAME[source]}.\n")
