"""The paper's published numbers beside ours: every published row, ours recomputed from the runs,
the verdicts, the reasons a row cannot be compared, FRD beside the paper, honest data labels."""

from __future__ import annotations

import csv
import json
import math
import statistics
from types import SimpleNamespace

import pandas as pd
import pytest

from mammodp import cli
from mammodp.errors import UserError
from mammodp.fidelity import normalisation_label
from mammodp.labels import data_labels
from mammodp.report import comparison, tables

from ..helpers.configs import REPO, demo_config
from ..helpers.runs import PAPER_FIDELITY, PAPER_RESULTS, STUDY, TABLE

METRICS = ("accuracy", "f1", "auroc", "auprc")
PREFIX = {"cbis-ddsm": "cbis", "bcdr": "bcdr"}


def _ctx(**changes) -> comparison.Context:
    return comparison.Context(**{**STUDY, **changes})


def _settings(**changes) -> dict:
    """The study's settings with some keys changed (dotted config keys)."""
    return {**STUDY["settings"], **changes}


def test_the_studys_settings_decide_per_scope(tmp_path):
    """Each scope of the study's settings makes exactly the rows it concerns not comparable:
    rebuilt crops (tcia only), training (every row), DP (rows with DP in their lineage), the
    MCGAN's recipe (rows with its crops in their lineage)."""
    chosen = [
        "real_frozen_nodp",
        "real_frozen_dp_eps6",
        "realsyn_frozen_dp_eps6",
        "realdp6_to_syn_frozen_nodp",
    ]
    paths = _study_runs(tmp_path, chosen)

    def rows(**changes):
        df = comparison.compare(paths, TABLE, chosen, _ctx(**changes), PAPER_RESULTS)
        return {pid: _row(df, pid, "cbis-ddsm", "auroc") for pid in ("dbr0", "dbr1", "dbr2")}

    centred = _settings(**{"data.crop.framing": "centred"})
    for r in rows(data_source="tcia", settings=centred).values():
        assert not r.comparable and 'data.crop.framing = "centred" (the study: "study")' in r.reason
    assert all(r.comparable for r in rows(data_source="processed", settings=centred).values())
    lr = rows(settings=_settings(**{"classifier.train.lr": 1e-4}))
    assert all("classifier.train.lr = 0.0001" in r.reason for r in lr.values())
    delta = rows(settings=_settings(**{"classifier.dp.delta": 1e-5}))
    assert delta["dbr0"].comparable
    assert "other DP settings: classifier.dp.delta = 1e-05" in delta["dbr1"].reason
    assert not delta["dbr2"].comparable
    df = comparison.compare(
        paths,
        TABLE,
        chosen,
        _ctx(settings=_settings(**{"classifier.dp.delta": 1e-5})),
        PAPER_RESULTS,
    )
    assert "other DP settings" in _row(df, "dbr3", "cbis-ddsm", "auroc").reason  # a DP source
    flips = rows(generator="mcgan", settings=_settings(**{"synthesis.mcgan.augmentation": "flips"}))
    assert flips["dbr0"].comparable and flips["dbr1"].comparable
    assert 'synthesis.mcgan.augmentation = "flips"' in flips["dbr2"].reason
    # The published generator ignores the MCGAN's settings.
    assert rows(settings=_settings(**{"synthesis.mcgan.augmentation": "flips"}))["dbr2"].comparable
    depth = rows(model={**STUDY["model"], "drop_path_rate": 0.1})
    assert all("stochastic depth 0.1 (the study: 0.2)" in r.reason for r in depth.values())
    assert rows(model={**STUDY["model"], "drop_path_rate": 0.2})["dbr0"].comparable


def test_synthetic_lineage_follows_what_is_loaded():
    """backbone: of a head-only source loads that source's own backbone origin, not what its
    head saw; from: loads the whole source; a fully trained source passes on its data."""
    from mammodp.config import Experiment

    def exp(name, train, trained, init):
        return Experiment(name, "-", "x", train, trained, "mlp", init, None)

    table = {
        e.experiment: e
        for e in (
            exp("syn_head", "synthetic", "head", "backbone"),
            exp("syn_all", "synthetic", "all", "backbone"),
            exp("real_head_on_syn_head", "real", "head", "backbone:syn_head"),
            exp("real_from_syn_head", "real", "head", "from:syn_head"),
            exp("real_head_on_syn_all", "real", "head", "backbone:syn_all"),
            exp("real_all_on_syn_all", "real", "all", "backbone:syn_all"),
            exp("chain", "real", "head", "backbone:real_head_on_syn_all"),
            exp("chain_none", "real", "head", "backbone:real_head_on_syn_head"),
        )
    }
    used = {n: comparison.uses_synthetic(table, n) for n in table}
    assert used == {
        "syn_head": True,
        "syn_all": True,
        "real_head_on_syn_head": False,
        "real_from_syn_head": True,
        "real_head_on_syn_all": True,
        "real_all_on_syn_all": True,
        "chain": True,
        "chain_none": False,
    }


def _published() -> dict[tuple[str, str, str], list[float]]:
    """(paper_id, test set, metric) -> the published per-seed values, read with csv alone."""
    out: dict = {}
    with open(PAPER_RESULTS, newline="") as f:
        for r in csv.DictReader(f):
            for ts, p in PREFIX.items():
                for m in METRICS:
                    cell = r[f"{p}_{m}"]
                    out.setdefault((r["paper_id"], ts, m), [])
                    if cell != "":
                        out[(r["paper_id"], ts, m)].append(float(cell))
    return out


def _write_runs(tmp_path, values: dict) -> list[str]:
    """values: (experiment, seed) -> {test set: {metric: value}}; returns metrics.json paths."""
    paths = []
    for (exp, seed), test in values.items():
        d = tmp_path / "runs" / exp / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"experiment": exp, "seed": seed, "test": test}))
        (d / "privacy.json").write_text(json.dumps({"dp": False, "experiment": exp, "seed": seed}))
        paths.append(str(d / "metrics.json"))
    return paths


def _row(df, paper_id, test_set, metric):
    r = df[(df.paper_id == paper_id) & (df.test_set == test_set) & (df.metric == metric)]
    assert len(r) == 1, (paper_id, test_set, metric)
    return r.iloc[0]


def test_every_published_row_with_the_published_numbers():
    df = comparison.compare([], TABLE, [], _ctx(), PAPER_RESULTS)
    published = _published()
    assert len(df) == len(published)  # each paper id maps to one of our experiments at most
    for (pid, ts, m), vals in published.items():
        r = _row(df, pid, ts, m)
        if not vals:
            assert pid == "dbr155" and r.published_n == 0 and pd.isna(r.published_mean)
            assert r.reason.startswith("no published result") and not r.comparable
            continue
        assert r.published_n == 3
        assert abs(r.published_mean - statistics.fmean(vals)) < 1e-12
        assert abs(r.published_std - statistics.pstdev(vals)) < 1e-12  # ddof 0
        assert r.published_min == min(vals) and r.published_max == max(vals)
    # Published order, the study's ids; ours are mapped through the experiment table.
    ids = list(dict.fromkeys(row[0] for row in published))
    assert list(dict.fromkeys(df["paper_id"])) == ids
    assert _row(df, "dbr0", "cbis-ddsm", "auroc").experiment == "real_frozen_nodp"


def _three(mean: float, spread: float = 1e-4) -> list[float]:
    return [mean - spread, mean, mean + spread]


def test_ours_recomputed_with_difference_and_verdicts(tmp_path):
    pub = _published()
    auroc, auprc, acc = (pub[("dbr0", "cbis-ddsm", m)] for m in ("auroc", "auprc", "accuracy"))
    mean, std = statistics.fmean, statistics.pstdev
    inside = mean(auroc)  # inside both
    # Above the published max but within 2 std (possible: max - mean < 2 std for dbr0's AUPRC).
    assert max(auprc) - mean(auprc) < 2 * std(auprc)
    range_out = (max(auprc) + mean(auprc) + 2 * std(auprc)) / 2
    far = mean(acc) - 3 * std(acc) - 0.01  # outside both
    ours = {"auroc": _three(inside), "auprc": _three(range_out), "accuracy": _three(far)}
    values = {}
    for i, seed in enumerate((42, 43, 44)):
        test = {"cbis-ddsm": {m: v[i] for m, v in ours.items()}, "bcdr": {"auroc": 0.5}}
        values[("real_frozen_nodp", seed)] = test
    paths = _write_runs(tmp_path, values)
    df = comparison.compare(paths, TABLE, ["real_frozen_nodp"], _ctx(), PAPER_RESULTS)
    expect = {"auroc": (True, True), "auprc": (True, False), "accuracy": (False, False)}
    for m, (in_2std, in_range) in expect.items():
        r = _row(df, "dbr0", "cbis-ddsm", m)
        assert r.comparable and r.reason == "" and r.ours_n == 3 and r.ours_seeds == "42 43 44"
        assert abs(r.ours_mean - mean(ours[m])) < 1e-12
        assert abs(r.ours_std - std(ours[m])) < 1e-12
        assert abs(r.difference - (mean(ours[m]) - mean(pub[("dbr0", "cbis-ddsm", m)]))) < 1e-12
        assert (bool(r.within_2std), bool(r.within_range)) == (in_2std, in_range), m
    f1 = _row(df, "dbr0", "cbis-ddsm", "f1")  # no F1 in our metrics.json files
    assert not f1.comparable and "missing runs" in f1.reason and pd.isna(f1.within_2std)
    bcdr = _row(df, "dbr0", "bcdr", "auroc")
    assert bcdr.comparable and bool(bcdr.within_2std) is False  # 0.5 vs ~0.695
    assert "not selected" in _row(df, "dbr1", "cbis-ddsm", "auroc").reason


def _study_runs(tmp_path, experiments, seeds=(42, 43, 44)) -> list[str]:
    test = {ts: dict.fromkeys(METRICS, 0.7) for ts in PREFIX}
    return _write_runs(tmp_path, {(e, s): test for e in experiments for s in seeds})


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"data_source": "phantom"}, "phantom data"),
        ({"model": {**STUDY["model"], "pretrained": "none"}}, "pretrained: none"),
        ({"model": {**STUDY["model"], "arch": "swin_tiny_patch4_window7_224"}}, "another backbone"),
        ({"model": {**STUDY["model"], "overrides": {"embed_dim": 32}}}, "overrides"),
        ({"model": {**STUDY["model"], "input_size": 64}}, "input 64 px"),
        ({"epochs": 40}, "40 epochs (the study: 300)"),
    ],
)
def test_run_wide_reasons_leave_no_verdict(tmp_path, changes, needle):
    paths = _study_runs(tmp_path, ["real_frozen_nodp"])
    df = comparison.compare(paths, TABLE, ["real_frozen_nodp"], _ctx(**changes), PAPER_RESULTS)
    assert not df["comparable"].any()
    assert df["reason"].str.contains(needle, regex=False).all()
    r = _row(df, "dbr0", "cbis-ddsm", "auroc")
    assert math.isclose(r.ours_mean, 0.7) and pd.isna(r.difference) and pd.isna(r.within_2std)


def test_experiment_reasons_ablation_seeds_and_generator(tmp_path):
    chosen = ["real_frozen_nodp", "synfrozen_to_real_dp_eps6", "realsyn_frozen_dp_eps6"]
    paths = _study_runs(tmp_path, chosen)
    df = comparison.compare(paths, TABLE, chosen, _ctx(), PAPER_RESULTS)
    ablation = _row(df, "dbr5", "cbis-ddsm", "auroc")
    assert not ablation.comparable and "intended ablation" in ablation.reason
    assert pd.isna(ablation.within_range) and ablation.ours_n == 3
    for pid in ("dbr3", "dbr11"):
        assert "intended ablation" in _row(df, pid, "bcdr", "f1").reason
    assert _row(df, "dbr2", "cbis-ddsm", "auroc").comparable  # the study's published samples
    # An MCGAN trained here with the study's recipe: comparable, flagged; only where synthetic
    # data is in the lineage.
    mcgan = comparison.compare(paths, TABLE, chosen, _ctx(generator="mcgan"), PAPER_RESULTS)
    r = _row(mcgan, "dbr2", "cbis-ddsm", "auroc")
    assert r.comparable and "another generator" in r["flags"]
    assert _row(mcgan, "dbr0", "cbis-ddsm", "auroc")["flags"] == "published crops"
    reduced = _ctx(
        generator="mcgan",
        mcgan_dp=True,
        settings=_settings(**{"synthesis.mcgan.width": 16}),
        n_per_class=64,
    )
    r = _row(comparison.compare(paths, TABLE, chosen, reduced, PAPER_RESULTS), "dbr2", "bcdr", "f1")
    assert not r.comparable
    for needle in (
        "MCGAN not trained with the study's recipe: synthesis.mcgan.width = 16 (the study: 64)",
        "DP-trained generator",
        "64 synthetic crops per class",
    ):
        assert needle in r.reason
    # Seeds: ours cover 42 and 43 only.
    two = _study_runs(tmp_path / "two", ["real_frozen_nodp"], seeds=(42, 43))
    df = comparison.compare(two, TABLE, ["real_frozen_nodp"], _ctx(seeds=(42, 43)), PAPER_RESULTS)
    r = _row(df, "dbr0", "cbis-ddsm", "auroc")
    assert not r.comparable and r.reason.startswith("seeds differ (ours: 42, 43;")


def test_context_from_json_tolerates_new_model_keys_and_rejects_bad_input():
    model = {**STUDY["model"], "drop_path_rate": None, "weights_file": None, "init_seed": 0}
    ctx = comparison.Context.from_json(json.dumps({**STUDY, "model": model}))
    assert comparison.backbone_reason(ctx.model) is None and ctx.seeds == (42, 43, 44)
    with pytest.raises(UserError, match="not valid JSON"):
        comparison.Context.from_json("{")
    with pytest.raises(UserError, match="missing key"):
        comparison.Context.from_json(json.dumps({"data_source": "phantom"}))
    with pytest.raises(UserError, match="data.source must be one of"):
        comparison.Context.from_json(json.dumps({**STUDY, "data_source": "dicom"}))


def test_bad_published_table_names_the_file(tmp_path):
    bad = tmp_path / "paper_results.csv"
    pd.read_csv(PAPER_RESULTS).drop(columns=["bcdr_auprc"]).to_csv(bad, index=False)
    with pytest.raises(UserError, match=r"paper_results.csv: missing column\(s\) \['bcdr_auprc'\]"):
        comparison.compare([], TABLE, [], _ctx(), bad)


def _paper_frd() -> dict[str, tuple[float, float]]:
    with open(PAPER_FIDELITY, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["metric"] == "frd"]
    return {r["comparison"]: (float(r["mean"]), float(r["std"])) for r in rows}


LEGACY = [  # today's frd.csv: set names only, one pair per comparison
    ("real_train_half1", "real_train_half2", 3.1),
    ("real_train", "synthetic", 17.5),
    ("synthetic_half1", "synthetic_half2", 0.6),
    ("cbis-ddsm_test", "external_test", 250.0),
]


def _frd_rows(version="v0", cls="pooled"):
    return [
        {
            "set_a": a,
            "set_b": b,
            "class": cls,
            "n_a": 100,
            "n_b": 90,
            "frd_version": version,
            "normalisation": normalisation_label(version),
            "value": v,
            "frd_score_version": "0.0.2",
        }
        for a, b, v in LEGACY
    ]


def test_frd_beside_the_paper_from_an_older_frd_csv(tmp_path):
    frd = tmp_path / "frd.csv"
    pd.DataFrame(_frd_rows() + _frd_rows(cls="benign")).to_csv(frd, index=False)
    fid = comparison.fidelity_comparison(PAPER_FIDELITY, frd, _ctx())
    paper = _paper_frd()
    assert list(fid["comparison"]) == list(comparison.FRD_COMPARISONS)
    for (a, b, v), r in zip(LEGACY, fid.to_dict("records"), strict=True):
        assert (r["published_mean"], r["published_std"]) == paper[r["comparison"]]
        assert r["ours_mean"] == v and r["ours_std"] == 0 and r["ours_pairs"] == 1
        assert r["design"] == f"{a} vs {b}" and r["set_sizes"] == "100 / 90"
        # One pair of other sets is not the sheet's three-pair design.
        assert not r["comparable"] and math.isnan(r["difference"])
        assert r["note"] == f"{a} vs {b} design (the sheet: three pairs of disjoint sets)"
    assert (
        round(paper["real_vs_real"][0], 2) == 3.48 and round(paper["cbis_vs_bcdr"][0], 1) == 277.6
    )


def test_frd_with_comparison_pair_and_design_columns(tmp_path):
    rows = []
    for version in ("v0", "v1"):
        for comp in comparison.FRD_COMPARISONS:
            for pair, v in enumerate((3.0, 3.5, 4.0), 1):
                rows.append(
                    {
                        **_frd_rows(version)[0],
                        "set_a": f"a{pair}",
                        "set_b": f"b{pair}",
                        "value": v,
                        "comparison": comp,
                        "pair": pair,
                        "design": "study",
                    }
                )
    frd = tmp_path / "frd.csv"
    pd.DataFrame(rows).to_csv(frd, index=False)
    fid = comparison.fidelity_comparison(PAPER_FIDELITY, frd, _ctx(generator="mcgan"))
    assert len(fid) == 8 and set(fid["design"]) == {"study"}
    assert (fid["ours_pairs"] == 3).all() and (fid["ours_mean"] == 3.5).all()
    assert all(abs(s - statistics.pstdev([3.0, 3.5, 4.0])) < 1e-12 for s in fid["ours_std"])
    v1 = fid[fid["frd_version"] == "v1"]
    assert not v1["comparable"].any() and v1["difference"].isna().all()
    assert v1["note"].str.contains("another feature set").all()
    rs = fid[(fid["frd_version"] == "v0") & (fid["comparison"] == "real_vs_synthetic")].iloc[0]
    assert rs["comparable"] and "another generator" in rs["note"]
    for change, needle in (
        ({"design": "halves"}, "halves design"),
        ({"normalisation": normalisation_label("v0", "d1")}, "(v0's default: joint sets)"),
    ):
        pd.DataFrame([{**r, **change} for r in rows]).to_csv(frd, index=False)
        other = comparison.fidelity_comparison(PAPER_FIDELITY, frd, _ctx())
        v0 = other[other["frd_version"] == "v0"]
        assert not v0["comparable"].any() and v0["note"].str.contains(needle, regex=False).all()
    tcia = _ctx(data_source="tcia", settings=_settings(**{"data.lesions.contours": "outer"}))
    pd.DataFrame(rows).to_csv(frd, index=False)
    rebuilt = comparison.fidelity_comparison(PAPER_FIDELITY, frd, tcia)
    assert rebuilt["note"].str.contains("data.lesions.contours").all()
    none = comparison.fidelity_comparison(PAPER_FIDELITY, None, _ctx(external="none"))
    assert (none["note"].str.startswith("not computed")).all() and "data.external" in none.iloc[
        3
    ].note


def _render_captions(source: str) -> dict[str, str]:
    import jinja2

    config = demo_config()
    config["data"]["source"] = source
    labels = data_labels(source, config["synthesis"]["generator"])
    snake = SimpleNamespace(config=config, params=SimpleNamespace(labels=labels))
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    return {
        p.name: env.from_string(p.read_text()).render(snakemake=snake)
        for p in sorted((REPO / "workflow" / "report").glob("*.rst"))
    }


def test_phantom_is_never_called_cbis_ddsm_test(tmp_path):
    chosen = ["real_frozen_nodp", "synfrozen_to_real_dp_eps6"]
    paths = _study_runs(tmp_path, chosen)
    out = tmp_path / "tables"
    ctx = _ctx(data_source="phantom")
    tables.write_tables(paths, TABLE, chosen, [42, 43, 44], None, out, source="phantom")
    comparison.write_comparison(paths, TABLE, chosen, ctx, PAPER_RESULTS, PAPER_FIDELITY, None, out)
    main = (out / "main.md").read_text()
    paper = (out / "paper_comparison.md").read_text()
    assert (
        "Phantom test (CBIS-DDSM format) AUROC" in main and "Phantom external (BCDR format)" in main
    )
    assert "| dbr5† |" in main and "† The intended ablation" in main and "dbr5 results" in main
    assert "## Ours on Phantom test (CBIS-DDSM format)" in paper
    assert "Not comparable in this run: phantom data" in paper  # named once, then referred to
    assert "| intended ablation: our run loads the source model's head" in paper
    assert "Fréchet Radiomics Distance beside the paper" in paper
    captions = _render_captions("phantom")
    for name, text in {"main.md": main, "paper_comparison.md": paper, **captions}.items():
        assert "CBIS-DDSM test" not in text, name
    assert "phantom" in captions["workflow.rst"] and "phantom" in captions["main_table.rst"]
    assert "rebuilt from DICOM" in _render_captions("tcia")["main_table.rst"]
    assert "phantom" not in _render_captions("processed")["workflow.rst"]


def test_tables_cli_writes_the_comparison(tmp_path):
    paths = _study_runs(tmp_path, ["real_frozen_nodp"])
    frd = tmp_path / "frd.csv"
    pd.DataFrame([{**r, "design": "study"} for r in _frd_rows()]).to_csv(frd, index=False)
    args = ["tables", "--metrics", *paths, "--experiments-table", str(TABLE)]
    args += ["--select", "real_frozen_nodp", "--seeds", "42", "43", "44", "--frd", str(frd)]
    args += ["--paper-results", str(PAPER_RESULTS), "--paper-fidelity", str(PAPER_FIDELITY)]
    context = ["--context", json.dumps({**STUDY, "data_source": "tcia"})]
    names = ["paper_comparison.csv", "paper_comparison.md", "paper_comparison_fidelity.csv"]
    names += ["main.csv", "main.md", "main.tex", "privacy.csv", "privacy.md"]
    names += ["fidelity.csv", "fidelity.md"]
    outputs = ["--outputs", *(f"{n}={tmp_path / 't' / n}" for n in names)]
    assert cli.main([*args, *context, *outputs]) == 0
    df = pd.read_csv(tmp_path / "t" / "paper_comparison.csv")
    r = _row(df, "dbr0", "cbis-ddsm", "auroc")
    assert r.comparable and r["flags"] == "rebuilt from DICOM"
    assert r.our_data == "CBIS-DDSM test (rebuilt from DICOM)"
    assert math.isclose(r.difference, 0.7 - r.published_mean)
    fid = pd.read_csv(tmp_path / "t" / "paper_comparison_fidelity.csv")
    assert len(fid) == 4 and fid["comparable"].all()
    assert cli.main([*args, "--context", "{", *outputs]) == 2


@pytest.mark.parametrize("name", ["paper.yaml", "paper-published.yaml"])
def test_paper_configs_hold_every_setting_of_the_study(name):
    """The paper configs use the study's settings in every scope (so only data, generator and
    seeds decide their rows); the demo config's centred window is named."""
    import yaml

    def settings(cfg):
        out = {}
        for key in comparison.SETTING_KEYS:
            value = cfg
            for part in key.split("."):
                value = value[part]
            out[key] = value
        return out

    cfg = yaml.safe_load((REPO / "config" / name).read_text())
    ctx = _ctx(data_source=cfg["data"]["source"], settings=settings(cfg))
    # The published crops are the study's own: their making is not checked (split from folders).
    scopes = [s for s in comparison.STUDY_SETTINGS if s != "data" or ctx.data_source == "tcia"]
    assert len(scopes) == (4 if name == "paper.yaml" else 3)
    assert [comparison.settings_reason(ctx, s, s) for s in scopes] == [None] * len(scopes)
    assert comparison.config_reasons(ctx) == []
    demo = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    reason = comparison.settings_reason(_ctx(settings=settings(demo)), "data", "crops")
    assert 'data.crop.framing = "centred"' in reason
