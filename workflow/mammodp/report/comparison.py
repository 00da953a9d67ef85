"""The study's published numbers beside ours (``results/tables/paper_comparison.*``).

Classification: per published experiment (``resources/paper_results.csv``, the study's workbook),
test set and metric, the published mean ± population std (ddof 0) over seeds 42/43/44 and its
min–max; ours, recomputed from the runs' metrics.json files; the difference and two verdicts:
ours within the published mean ± 2 std, ours within the published min–max. A row that cannot be
compared gives the reason instead of a verdict. The reasons follow from the config (``Context``,
passed by the tables rule) and the experiment table, never from the numbers.

Fidelity: the paper's FRD per comparison (``resources/paper_fidelity.csv``) beside ours (mean ±
population std over the pairs of ``results/fidelity/frd.csv``, pooled classes, per FRD version).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mammodp.config import load_experiments
from mammodp.errors import UserError
from mammodp.fidelity import normalisation_label
from mammodp.fileio import as_outputs, atomic_path, read_csv, write_csv
from mammodp.labels import DATA_NAME, set_titles
from mammodp.study_settings import SETTING_KEYS, STUDY_SETTINGS

from .tables import METRIC_TITLE, TABLE_METRICS, TEST_SETS

STUDY_SEEDS = (42, 43, 44)
STUDY_EPOCHS = 300
STUDY_ARCH = "swin_t"  # torchvision's Swin-T, as the study's code
STUDY_INPUT_SIZE = 224
STUDY_DROP_PATH = 0.2  # torchvision swin_t's default stochastic depth, which the study kept
STUDY_MEDIGAN = "00008_C-DCGAN_MMG_MASSES"
STUDY_SYNTHETIC_PER_CLASS = 1500  # the study's 3000 synthetic crops
STUDY_FRD_VERSION = "v0"
STUDY_FRD_DESIGN = "study"  # fidelity.design: the sheet's three pairs of disjoint sets
PAPER_PREFIX = {"cbis-ddsm": "cbis", "bcdr": "bcdr"}
PUBLISHED_COLUMNS = ["paper_id", "description", "seed"] + [
    f"{p}_{m}" for p in PAPER_PREFIX.values() for m in TABLE_METRICS
]
# Deliberately not "CBIS-DDSM test": that title belongs to our own real-data runs only.
PAPER_SET_TITLE = {"cbis-ddsm": "the study's CBIS-DDSM results", "bcdr": "the study's BCDR results"}
DATA_FLAG = {"processed": "published crops", "tcia": "rebuilt from DICOM"}
ABLATION_REASON = (
    "intended ablation: our run loads the source model's head, which the study's code silently "
    "discarded"
)
RUN_WIDE = "this run's setting (above)"
TOL = 1e-12  # float slack for a value equal to a bound

COLUMNS = [
    "paper_id",
    "description",
    "experiment",
    "test_set",
    "our_data",
    "metric",
    "published_mean",
    "published_std",
    "published_min",
    "published_max",
    "published_n",
    "ours_mean",
    "ours_std",
    "ours_n",
    "ours_seeds",
    "difference",
    "within_2std",
    "within_range",
    "comparable",
    "reason",
    "flags",
]


CONTEXT_KEYS = (
    "data_source",
    "external",
    "generator",
    "medigan_model",
    "n_per_class",
    "mcgan_dp",
    "settings",
    "model",
    "epochs",
    "seeds",
)


@dataclass(frozen=True)
class Context:
    """What decides comparability: data and synthetic source, the study's settings
    (``SETTING_KEYS``), backbone, epochs, seeds."""

    data_source: str
    external: str
    generator: str
    medigan_model: str
    n_per_class: int
    mcgan_dp: bool  # synthesis.mcgan.dp.enabled
    settings: dict  # SETTING_KEYS -> this run's value
    model: dict  # classifier.model
    epochs: int
    seeds: tuple[int, ...]

    @classmethod
    def from_json(cls, text: str) -> Context:
        where = "--context (written by the tables rule: comparison_context in common.smk)"
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: not valid JSON ({e}); pass a JSON object") from e
        missing = [k for k in CONTEXT_KEYS if not isinstance(d, dict) or k not in d]
        if missing:
            raise UserError(f"{where}: missing key(s) {missing}; pass all of {list(CONTEXT_KEYS)}")
        set_titles(d["data_source"])  # an unknown source is an error, not "comparable"
        unset = [k for k in SETTING_KEYS if k not in (d.get("settings") or {})]
        if unset:
            raise UserError(f"{where}: settings lack {unset}; pass every key of SETTING_KEYS")
        values = {k: d[k] for k in CONTEXT_KEYS}
        values["seeds"] = tuple(int(s) for s in d["seeds"])
        return cls(**values)


# ----------------------------------------------------------------------------- reasons


def _same(ours, study) -> bool:
    if isinstance(study, list):
        return (
            isinstance(ours, list | tuple)
            and len(ours) == len(study)
            and all(_same(o, s) for o, s in zip(ours, study, strict=True))
        )
    if isinstance(study, float) and isinstance(ours, int | float) and not isinstance(ours, bool):
        return math.isclose(ours, study, rel_tol=1e-9)
    return ours == study


def settings_reason(ctx: Context, scope: str, what: str) -> str | None:
    """Why this run's settings of one scope of STUDY_SETTINGS are not the study's, or None."""
    diffs = [
        f"{k} = {json.dumps(ctx.settings[k])} (the study: {json.dumps(v)})"
        for k, v in STUDY_SETTINGS[scope].items()
        if not _same(ctx.settings[k], v)
    ]
    return f"{what}: " + ", ".join(diffs) if diffs else None


def backbone_reason(model: dict) -> str | None:
    """Why classifier.model is not the study's Swin-T, or None."""
    diffs = []
    if model.get("drop_path_rate") not in (None, STUDY_DROP_PATH):
        diffs.append(
            f"stochastic depth {model.get('drop_path_rate')} (the study: {STUDY_DROP_PATH})"
        )
    if model.get("arch") != STUDY_ARCH:
        diffs.append(f"arch {model.get('arch')} (the study: torchvision {STUDY_ARCH})")
    if model.get("pretrained") != "imagenet":
        diffs.append(f"pretrained: {model.get('pretrained')} (the study: ImageNet)")
    if model.get("overrides"):
        diffs.append("overrides " + json.dumps(model["overrides"], sort_keys=True))
    if model.get("input_size") != STUDY_INPUT_SIZE:
        diffs.append(f"input {model.get('input_size')} px (the study: {STUDY_INPUT_SIZE})")
    return "another backbone: " + ", ".join(diffs) if diffs else None


def config_reasons(ctx: Context) -> list[str]:
    """Reasons that make every row of this run not comparable."""
    reasons = []
    if ctx.data_source == "phantom":
        reasons.append("phantom data (generated), not the study's patients")
    if reason := backbone_reason(ctx.model):
        reasons.append(reason)
    if ctx.epochs != STUDY_EPOCHS:
        reasons.append(f"{ctx.epochs} epochs (the study: {STUDY_EPOCHS})")
    if reason := settings_reason(ctx, "training", "other training settings"):
        reasons.append(reason)
    if ctx.data_source == "tcia":
        if reason := settings_reason(ctx, "data", "crops not made as the study's"):
            reasons.append(reason)
    return reasons


def synthetic_terms(ctx: Context) -> tuple[list[str], list[str]]:
    """(reasons, flags) for experiments whose training lineage holds synthetic crops.

    The study's samples (``published``) and its MCGAN through medigan (model 00008) are the
    study's generator. An MCGAN trained here with the study's recipe (every key of
    ``STUDY_SETTINGS["mcgan"]``, not DP) is comparable, flagged "another generator": the verdict
    then covers the whole pipeline, generator training included. Any other MCGAN, another
    medigan model or another number of synthetic crops is not comparable.
    """
    reasons, flags = [], []
    g = ctx.generator
    if g == "published":
        return reasons, flags  # the study's 3000 crops, whatever n_per_class says
    if g == "medigan" and ctx.medigan_model != STUDY_MEDIGAN:
        reasons.append(
            f"another generator (medigan {ctx.medigan_model}; the study: {STUDY_MEDIGAN})"
        )
    elif g == "mcgan":
        flags.append("another generator (MCGAN trained here)")
        if ctx.mcgan_dp:
            reasons.append("DP-trained generator (the study's MCGAN is not private)")
        if reason := settings_reason(ctx, "mcgan", "MCGAN not trained with the study's recipe"):
            reasons.append(reason)
    elif g != "medigan":
        reasons.append(f"another generator ({g})")
    if ctx.n_per_class != STUDY_SYNTHETIC_PER_CLASS:
        reasons.append(
            f"{ctx.n_per_class} synthetic crops per class (the study: {STUDY_SYNTHETIC_PER_CLASS})"
        )
    return reasons, flags


def uses_synthetic(table: dict, name: str) -> bool:
    """Synthetic crops in this experiment's training or in what it loads of its source."""
    exp = table[name]
    return "synthetic" in exp.train_data or _loads_synthetic(table, exp)


def _loads_synthetic(table: dict, exp) -> bool:
    """Whether what ``exp`` loads from its source saw synthetic crops: ``from:`` loads the whole
    source model; ``backbone:`` its backbone, which a head-only source took unchanged from its
    own origin (as lineage.read_source_privacy follows it)."""
    if not exp.source:
        return False
    src = table[exp.source]
    if exp.loads_source_head or src.trained == "all":
        return uses_synthetic(table, src.experiment)
    return _loads_synthetic(table, src)


def _lineage_is_private(table: dict, name: str) -> bool:
    """DP training in this experiment or in any model it starts from."""
    exp = table[name]
    return exp.dp_epsilon is not None or bool(exp.source and _lineage_is_private(table, exp.source))


def experiment_terms(ctx: Context, table: dict, name: str | None) -> tuple[list[str], list[str]]:
    """(reasons, flags) of one experiment that hold for every test set and metric."""
    reasons = config_reasons(ctx)
    flags = [DATA_FLAG[ctx.data_source]] if ctx.data_source in DATA_FLAG else []
    if name is None:
        return reasons + ["not in our experiment table"], flags
    if table[name].group == "ablation":
        reasons.append(ABLATION_REASON)
    if _lineage_is_private(table, name):
        if reason := settings_reason(ctx, "dp", "other DP settings"):
            reasons.append(reason)
    if uses_synthetic(table, name):
        r, f = synthetic_terms(ctx)
        reasons, flags = reasons + r, flags + f
    return reasons, flags


def seed_reasons(ctx: Context, test_set: str, selected: bool, seeds: list[int]) -> list[str]:
    """Why our values of one (experiment, test set, metric) do not cover the study's seeds."""
    if not selected:
        return ["not run (experiment not selected in this config)"]
    if not seeds:
        if test_set != "cbis-ddsm" and ctx.external == "none":
            return ["no external test set in this run (data.external: none)"]
        return ["missing runs (no seed finished)"]
    if tuple(sorted(seeds)) != STUDY_SEEDS:
        ours = ", ".join(map(str, sorted(seeds)))
        return [f"seeds differ (ours: {ours}; the study: {', '.join(map(str, STUDY_SEEDS))})"]
    return []


# ----------------------------------------------------------------------------- values


def load_published(path) -> pd.DataFrame:
    """The study's per-seed results; one error naming the file when it is not that table."""
    df = read_csv(path, required=PUBLISHED_COLUMNS)
    dup = df[df.duplicated(["paper_id", "seed"], keep=False)]
    if len(dup):
        raise UserError(
            f"{path}: rows {sorted(set(dup['paper_id']))} appear twice for one seed; restore the "
            "shipped copy (resources/paper_results.csv from the study's workbook)."
        )
    for c in PUBLISHED_COLUMNS[3:]:
        if not pd.api.types.is_numeric_dtype(df[c]):
            raise UserError(f"{path}: column {c} is not numeric; restore the shipped copy.")
    return df


def _stats(values: list[float]) -> dict:
    if not values:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    v = np.asarray(values, float)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=0)),
        "min": float(v.min()),
        "max": float(v.max()),
        "n": len(v),
    }


def our_values(metric_paths, seeds) -> dict[str, dict[tuple[str, str], dict[int, float]]]:
    """experiment -> (test set, metric) -> seed -> value, from the metrics.json files."""
    out: dict = {}
    seen = set()
    for p in metric_paths:
        try:
            m = json.loads(Path(p).read_text())
            exp, seed, test = m["experiment"], int(m["seed"]), m["test"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise UserError(f"{p}: not a metrics.json of this workflow ({e}); rerun its job") from e
        if seed not in seeds:
            continue
        if (exp, seed) in seen:
            raise UserError(f"{p}: a second metrics.json for {exp} seed {seed}; pass each once")
        seen.add((exp, seed))
        per = out.setdefault(exp, {})
        for ts in TEST_SETS:
            for metric in TABLE_METRICS:
                v = test.get(ts, {}).get(metric)
                if v is not None and math.isfinite(v):
                    per.setdefault((ts, metric), {})[seed] = float(v)
    return out


def _verdicts(pub: dict, ours: dict, reasons: list[str]) -> dict:
    if reasons:
        return {"difference": math.nan, "within_2std": None, "within_range": None}
    diff = ours["mean"] - pub["mean"]
    return {
        "difference": diff,
        "within_2std": bool(abs(diff) <= 2 * pub["std"] + TOL),
        "within_range": bool(pub["min"] - TOL <= ours["mean"] <= pub["max"] + TOL),
    }


def _row(key: dict, pub: dict, seeds: dict[int, float], reasons: list[str], flags: list[str]):
    ours = _stats(list(seeds.values()))
    if pub["n"] == 0:
        reasons = ["no published result", *reasons]
    return {
        **key,
        **{f"published_{k}": v for k, v in pub.items()},
        "ours_mean": ours["mean"],
        "ours_std": ours["std"],
        "ours_n": ours["n"],
        "ours_seeds": " ".join(map(str, sorted(seeds))),
        **_verdicts(pub, ours, reasons),
        "comparable": not reasons,
        "reason": "; ".join(reasons),
        "flags": "; ".join(flags),
    }


def compare(metric_paths, experiments_table, selected, ctx: Context, published_csv):
    """One row per published experiment (and our experiment of that paper_id), test set and
    metric; every published row appears, also those without a published result."""
    table = load_experiments(experiments_table)
    pub = load_published(published_csv)
    runs = our_values(metric_paths, ctx.seeds)
    titles = set_titles(ctx.data_source)
    by_paper: dict[str, list[str]] = {}
    for name, exp in table.items():
        by_paper.setdefault(exp.paper_id, []).append(name)
    rows = []
    descriptions = dict(zip(pub["paper_id"], pub["description"], strict=False))
    for pid in pd.unique(pub["paper_id"]):
        seeds_rows = pub[pub["paper_id"] == pid]
        for name in by_paper.get(pid) or [None]:
            reasons, flags = experiment_terms(ctx, table, name)
            for ts in TEST_SETS:
                for metric in TABLE_METRICS:
                    col = seeds_rows[f"{PAPER_PREFIX[ts]}_{metric}"].dropna()
                    seeds = runs.get(name, {}).get((ts, metric), {})
                    key = {
                        "paper_id": pid,
                        "description": " ".join(str(descriptions[pid]).split()),
                        "experiment": name or "",
                        "test_set": ts,
                        "our_data": titles[ts],
                        "metric": metric,
                    }
                    extra = [] if name is None else seed_reasons(ctx, ts, name in selected, seeds)
                    rows.append(_row(key, _stats(col.tolist()), seeds, reasons + extra, flags))
    df = pd.DataFrame(rows, columns=COLUMNS)
    for c in ("within_2std", "within_range"):
        df[c] = df[c].astype("boolean")
    return df


# ----------------------------------------------------------------------------- FRD

FRD_COMPARISONS = ("real_vs_real", "real_vs_synthetic", "synthetic_vs_synthetic", "cbis_vs_bcdr")
LEGACY_SETS = {  # frd.csv before the comparison/pair/design columns: one pair per comparison
    ("real_train_half1", "real_train_half2"): "real_vs_real",
    ("real_train", "synthetic"): "real_vs_synthetic",
    ("synthetic_half1", "synthetic_half2"): "synthetic_vs_synthetic",
    ("cbis-ddsm_test", "external_test"): "cbis_vs_bcdr",
}
FRD_REQUIRED = ["set_a", "set_b", "class", "n_a", "n_b", "frd_version", "value"]
FIDELITY_COLUMNS = [
    "comparison",
    "published_sets",
    "published_values",
    "published_mean",
    "published_std",
    "frd_version",
    "design",
    "normalisation",
    "ours_pairs",
    "ours_mean",
    "ours_std",
    "set_sizes",
    "difference",
    "comparable",
    "note",
]


def frd_pairs(frd: pd.DataFrame) -> pd.DataFrame:
    """The pooled rows of frd.csv with ``comparison``, ``pair`` and ``design``, derived from the
    set names when an older frd.csv lacks them."""
    pooled = frd[frd["class"] == "pooled"].copy()
    if "comparison" not in pooled.columns:
        pooled["comparison"] = [
            LEGACY_SETS.get((a, b)) for a, b in zip(pooled["set_a"], pooled["set_b"], strict=True)
        ]
    pooled = pooled[pooled["comparison"].isin(FRD_COMPARISONS)]
    if "normalisation" not in pooled.columns:  # an older frd.csv: frd-score's defaults
        pooled["normalisation"] = [normalisation_label(v) for v in pooled["frd_version"]]
    names = pooled["set_a"].astype(str) + " vs " + pooled["set_b"].astype(str)
    if "design" not in pooled.columns:
        pooled["design"] = names
    pooled["design"] = pooled["design"].fillna(names)
    if "pair" not in pooled.columns:
        pooled["pair"] = pooled.groupby(["frd_version", "comparison", "design"]).cumcount() + 1
    return pooled


def _span(values) -> str:
    lo, hi = int(min(values)), int(max(values))
    return str(lo) if lo == hi else f"{lo}–{hi}"


def our_frd(frd: pd.DataFrame) -> pd.DataFrame:
    """Mean ± population std over pairs per (FRD version, comparison, design, normalisation)."""
    rows = []
    pooled = frd_pairs(frd)
    for (version, comp, design, norm), g in pooled.groupby(
        ["frd_version", "comparison", "design", "normalisation"], sort=False
    ):
        s = _stats(g["value"].astype(float).tolist())
        rows.append(
            {
                "frd_version": version,
                "comparison": comp,
                "design": design,
                "normalisation": norm,
                "ours_pairs": s["n"],
                "ours_mean": s["mean"],
                "ours_std": s["std"],
                "set_sizes": f"{_span(g['n_a'])} / {_span(g['n_b'])}",
            }
        )
    return pd.DataFrame(rows)


def frd_note(ctx: Context, comparison: str, ours: dict) -> tuple[list[str], list[str]]:
    """(reasons, flags) of one FRD comparison; ``ours``: a row of our_frd. The set sizes are
    shown, not judged: the sheet does not give its own."""
    reasons, flags = [], []
    if ctx.data_source == "phantom":
        reasons.append("phantom data (generated), not the study's patients")
    elif ctx.data_source in DATA_FLAG:
        flags.append(DATA_FLAG[ctx.data_source])
    if ctx.data_source == "tcia":
        if reason := settings_reason(ctx, "data", "crops not made as the study's"):
            reasons.append(reason)
    version = ours["frd_version"]
    if version != STUDY_FRD_VERSION:
        reasons.append(f"frd-score {version}: another feature set and normalisation")
    elif ours["normalisation"] != normalisation_label(STUDY_FRD_VERSION):
        reasons.append(f"normalisation {ours['normalisation']} (v0's default: joint sets)")
    if ours["design"] != STUDY_FRD_DESIGN:
        reasons.append(f"{ours['design']} design (the sheet: three pairs of disjoint sets)")
    if "synthetic" in comparison:
        r, f = synthetic_terms(ctx)
        # How many synthetic crops exist changes only the set sizes, which are shown.
        reasons += [x for x in r if "synthetic crops per class" not in x]
        flags += f
    return reasons, flags


def load_paper_fidelity(path) -> pd.DataFrame:
    required = ["comparison", "sets", "metric", "set_1", "set_2", "set_3", "mean", "std"]
    df = read_csv(path, required=required)
    frd = df[df["metric"] == "frd"]
    missing = [c for c in FRD_COMPARISONS if c not in set(frd["comparison"])]
    if missing:
        raise UserError(
            f"{path}: no frd row for {missing}; restore the shipped copy "
            "(resources/paper_fidelity.csv from the study's workbook)."
        )
    return frd


def fidelity_comparison(paper_fidelity_csv, frd_csv, ctx: Context) -> pd.DataFrame:
    """The paper's FRD per comparison beside ours, one row per FRD version and set design."""
    paper = load_paper_fidelity(paper_fidelity_csv)
    ours = pd.DataFrame()
    if frd_csv:
        ours = our_frd(read_csv(frd_csv, required=FRD_REQUIRED))
    rows = []
    for comp in FRD_COMPARISONS:
        p = paper[paper["comparison"] == comp].iloc[0]
        key = {
            "comparison": comp,
            "published_sets": p["sets"],
            "published_values": ", ".join(f"{p[f'set_{i}']:.4g}" for i in (1, 2, 3)),
            "published_mean": float(p["mean"]),
            "published_std": float(p["std"]),
        }
        mine = ours[ours["comparison"] == comp] if len(ours) else ours
        if not len(mine):
            why = "not computed in this run"
            if comp == "cbis_vs_bcdr" and ctx.external == "none":
                why += " (data.external: none)"
            rows.append({**key, "comparable": False, "note": why})
            continue
        for r in mine.to_dict("records"):
            reasons, flags = frd_note(ctx, comp, r)
            diff = r["ours_mean"] - key["published_mean"] if not reasons else math.nan
            note = "; ".join(reasons or flags)
            rows.append({**key, **r, "difference": diff, "comparable": not reasons, "note": note})
    return pd.DataFrame(rows, columns=FIDELITY_COLUMNS)


# ----------------------------------------------------------------------------- rendering


def _num(v, digits: int = 3, sign: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _md(cell) -> str:
    return str(cell).replace("|", "\\|")


def _yes_no(v) -> str:
    return "–" if v is None or pd.isna(v) else ("yes" if v else "no")


def _md_note(row: dict, run_wide: list[str]) -> str:
    """The reason (or the flags); the reasons shared by every row are named once, above."""
    if row["comparable"]:
        return row["flags"]
    reasons = row["reason"].split("; ")
    own = [r for r in reasons if r not in run_wide]
    return "; ".join(own + ([RUN_WIDE] if len(own) < len(reasons) else []))


def _classification_lines(df: pd.DataFrame, ts: str, run_wide: list[str]) -> list[str]:
    head = [
        "Paper",
        "Experiment",
        "Metric",
        "Published (mean ± std)",
        "Published min–max",
        "Ours (mean ± std)",
        "Our seeds",
        "Ours − published",
        "Within ± 2 std",
        "Within min–max",
        "Note",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in df[df["test_set"] == ts].to_dict("records"):
        if r["published_n"]:
            published = f"{_num(r['published_mean'])} ± {_num(r['published_std'])}"
            span = f"{_num(r['published_min'])}–{_num(r['published_max'])}"
        else:
            published, span = "no published result", "–"
        ours = "–" if not r["ours_n"] else f"{_num(r['ours_mean'])} ± {_num(r['ours_std'])}"
        note = _md_note(r, run_wide)
        cells = [
            r["paper_id"],
            r["experiment"] or "–",
            METRIC_TITLE[r["metric"]],
            published,
            span,
            ours,
            r["ours_seeds"] or "–",
            _num(r["difference"], sign=True),
            _yes_no(r["within_2std"]),
            _yes_no(r["within_range"]),
            note or "",
        ]
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    return lines


def _preamble(df: pd.DataFrame, ctx: Context) -> list[str]:
    per_experiment = df.groupby(["paper_id", "experiment"], sort=False)["comparable"].any()
    counts = f"{int(per_experiment.sum())} of {len(per_experiment)}"
    run_wide = config_reasons(ctx)
    return [
        "# The study's published results beside ours",
        "",
        f"Ours: {DATA_NAME[ctx.data_source]}; seeds {', '.join(map(str, ctx.seeds))}. "
        "Published: `resources/paper_results.csv`, the study's workbook "
        "(`gan_compare/configs/swin/dbr_experiment_description.xlsx`, sheet DeepBreath24, "
        "github.com/RichardObi/mammo_dp at commit 20caed7, Apache-2.0), seeds 42, 43, 44. "
        "Both as mean ± population standard deviation (ddof 0) over the seeds; benign is the "
        "positive class.",
        "",
        "*Ours − published* is our mean minus the published mean. *Within ± 2 std*: our mean "
        "lies within the published mean ± 2 published standard deviations; *within min–max*: "
        "within the smallest and largest of the three published seeds. Three seeds make a "
        'narrow spread: "no" flags a difference worth a look, not a failed reproduction. '
        "A row that cannot be compared shows the reason in *Note* instead of a verdict.",
        "",
        "Comparable needs the study's setting: real CBIS-DDSM/BCDR (the published crops, or "
        "rebuilt from DICOM: flagged), torchvision `swin_t` pretrained on ImageNet at 224 px "
        f"without overrides, {STUDY_EPOCHS} epochs (the experiment configs; the sheet's "
        '"epochs" column says 100), seeds 42, 43, 44 all finished, and for synthetic data the '
        "study's generator (its published samples or medigan 00008) with 1500 crops per class. "
        "An MCGAN trained here with the study's recipe is comparable but flagged *another "
        "generator*: its verdict covers the whole pipeline, generator training included, and "
        "the FRD table below shows how close its samples are. dbr3, dbr5 and dbr11 are never "
        "comparable: our runs are the intended ablation (the source model's head is loaded), "
        "which the study's code silently skipped.",
        "",
        f"Comparable here (in at least one cell): {counts} published experiments."
        + (f" Not comparable in this run: {'; '.join(run_wide)}." if run_wide else ""),
    ]


def _fidelity_lines(fid: pd.DataFrame) -> list[str]:
    head = [
        "Comparison",
        "Published sets",
        "Published FRD (mean ± std)",
        "FRD version",
        "Our set design",
        "Ours (mean ± std)",
        "Our pairs",
        "Set sizes (a / b)",
        "Ours − published",
        "Note",
    ]
    lines = [
        "## Fréchet Radiomics Distance beside the paper",
        "",
        "Published: `resources/paper_fidelity.csv` (the same sheet's FRD, three pairs of sets per "
        "comparison; the sheet does not say how large the sets were or how they were drawn). "
        "Ours: `results/fidelity/frd.csv`, pooled classes, mean ± population std over our pairs. "
        "Lower is closer.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in fid.to_dict("records"):
        has = bool(r.get("ours_pairs")) and not pd.isna(r.get("ours_pairs"))
        cells = [
            r["comparison"],
            r["published_sets"],
            f"{_num(r['published_mean'], 2)} ± {_num(r['published_std'], 2)}",
            r["frd_version"] if has else "–",
            r["design"] if has else "–",
            f"{_num(r['ours_mean'], 2)} ± {_num(r['ours_std'], 2)}" if has else "–",
            int(r["ours_pairs"]) if has else "–",
            r["set_sizes"] if has else "–",
            _num(r["difference"], 2, sign=True),
            r["note"] or "",
        ]
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    return lines


def comparison_markdown(df: pd.DataFrame, fid: pd.DataFrame, ctx: Context) -> str:
    lines = _preamble(df, ctx)
    for ts in TEST_SETS:
        if (df["test_set"] == ts).any():
            title = set_titles(ctx.data_source)[ts]
            lines += ["", f"## Ours on {title} against {PAPER_SET_TITLE[ts]}", ""]
            lines += _classification_lines(df, ts, config_reasons(ctx))
    lines += [""] + _fidelity_lines(fid)
    return "\n".join(lines) + "\n"


def write_comparison(
    metric_paths,
    experiments_table,
    selected,
    ctx: Context,
    published_csv,
    fidelity_csv,
    frd_csv,
    out_dir,
) -> None:
    """paper_comparison.{csv,md} and paper_comparison_fidelity.csv under ``out_dir``."""
    out_dir = as_outputs(out_dir)
    df = compare(metric_paths, experiments_table, selected, ctx, published_csv)
    fid = fidelity_comparison(fidelity_csv, frd_csv, ctx)
    write_csv(out_dir / "paper_comparison.csv", df)
    write_csv(out_dir / "paper_comparison_fidelity.csv", fid)
    with atomic_path(out_dir / "paper_comparison.md") as tmp:
        tmp.write_text(comparison_markdown(df, fid, ctx))
