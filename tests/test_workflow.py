"""The Snakemake workflow end to end: full-study dry-run, a tiny real run, clear failures."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from .helpers.configs import PUBLISHED_COUNTS, REPO, tiny_config
from .helpers.snakemake import job_counts, snakemake


@pytest.fixture
def workdir(tmp_path):
    shutil.copytree(REPO / "config", tmp_path / "config")
    return tmp_path


def _classify_jobs(stdout: str) -> dict[tuple[str, str], list[str]]:
    """(experiment, seed) -> input files, from the job blocks of a dry run."""
    jobs = {}
    for block in stdout.split("\nrule ")[1:]:
        if not block.startswith("classify:"):
            continue
        inputs = re.search(r"^\s+input: (.*)$", block, re.M)[1].split(", ")
        output = re.search(r"^\s+output: (.*)$", block, re.M)[1]
        out = re.search(r"results/classify/(\w+)/seed(\d+)/model.pt", output)
        jobs[(out[1], out[2])] = inputs
    return jobs


@pytest.mark.parametrize("name", ["paper.yaml", "paper-published.yaml"])
def test_paper_dry_run_has_the_full_matrix_and_pretraining_edges(workdir, name):
    from mammodp.config import load_experiments

    r = snakemake(workdir, "-n", "--configfile", f"config/{name}", "--cores", "4")
    assert r.returncode == 0, r.stderr
    counts = job_counts(r.stdout)
    assert counts["classify"] == 25 * 3  # every paper experiment x seeds 42, 43, 44
    # Without data present, the download rules are the leaves; the inputs are the study's.
    if name == "paper.yaml":
        assert counts["tcia_metadata"] == 1 and counts["tcia_series"] == 1
        assert counts["medigan_samples"] == 1 and "fetch_published" not in counts
        assert "resources/study_split.json" in r.stdout  # the shipped split, found by Snakemake
    else:
        assert counts["fetch_published"] == 1 and counts["published_samples"] == 1
        assert counts["import_processed"] == 1 and "tcia_metadata" not in counts
    assert "phantom" not in counts and "train_mcgan" not in counts
    jobs = _classify_jobs(r.stdout)
    assert len(jobs) == 75
    table = load_experiments(REPO / "config" / "experiments.tsv")
    edges = 0
    for (exp, seed), inputs in jobs.items():
        models = [i for i in inputs if i.endswith("model.pt")]
        source = table[exp].source
        if source:
            # The source experiment of the same seed is an input, built by a job of this DAG.
            assert models == [f"results/classify/{source}/seed{seed}/model.pt"], (exp, seed)
            assert (source, seed) in jobs
            edges += 1
        else:
            assert models == []
    assert edges == 9 * 3  # dbr157, dbr156, dbr158-160, dbr155, dbr5, dbr11, dbr3 for each seed
    for seed in ("42", "43", "44"):
        # dbr155: dbr15's model is an input and dbr15's backbone's cached features are read.
        dbr155 = jobs[("synbackbone_real_frozen_dp_eps6", seed)]
        assert f"results/classify/syn_full_nodp/seed{seed}/model.pt" in dbr155
        assert f"results/features/syn_full_nodp-seed{seed}/real.pt" in dbr155
        assert (
            f"results/features/syn_full_nodp-seed{seed}/real.pt"
            in jobs[("synpre_real_frozen_dp_eps6", seed)]
        )


def test_broken_config_value_stops_with_one_message(workdir, write_config):
    cfg = write_config(tiny_config(**{"classifier.dp.delta": 2}))
    r = snakemake(workdir, "-n", "--configfile", str(cfg), "--cores", "1")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "classifier.dp.delta = 2 is out of range; it must be < 1" in out
    assert "Traceback" not in out


def test_config_values_from_the_command_line(workdir, write_config):
    """--config seeds=[1,2,3] works (Snakemake hands the numbers over as strings); a bad
    value is blamed on --config, or on the --configfile that set it."""
    cfg = write_config(tiny_config())
    r = snakemake(
        workdir, "-n", "--configfile", str(cfg), "--cores", "1", "--config", "seeds=[1,2,3]"
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert job_counts(r.stdout)["classify"] == 3 * 4
    r = snakemake(workdir, "-n", "--configfile", str(cfg), "--config", "seeds=[1,x]")
    assert "invalid config in --config: seeds.[1] = 'x' has the wrong type" in r.stdout + r.stderr
    extra = workdir / "extra.yaml"
    extra.write_text("classifier:\n  dp:\n    delta: 3\n")
    r = snakemake(workdir, "-n", "--configfile", str(cfg), str(extra))
    assert r.returncode != 0
    assert (
        f"invalid config in {extra}: classifier.dp.delta = 3 is out of range" in r.stdout + r.stderr
    )


def test_missing_split_file_stops_with_one_message(workdir, write_config):
    cfg = write_config(tiny_config(**{"data.split.file": "nowhere/split.json"}))
    r = snakemake(workdir, "-n", "--configfile", str(cfg), "--cores", "1")
    assert r.returncode != 0
    assert "data.split.file = 'nowhere/split.json' does not exist" in r.stdout + r.stderr


@pytest.mark.workflow
def test_tiny_run_end_to_end_then_rerun_is_a_no_op(workdir, write_config):
    config = tiny_config()
    cfg = write_config(config)
    r = snakemake(workdir, "--configfile", str(cfg), "--cores", "2")
    assert r.returncode == 0, r.stderr[-4000:]
    res = workdir / "results"
    main = pd.read_csv(res / "tables" / "main.csv")
    assert list(main["experiment"]) == [
        "real_frozen_nodp",
        "real_frozen_dp_eps6",
        "syn_full_nodp",
        "synpre_real_frozen_dp_eps6",
    ]
    assert (main["seeds_finished"] == 1).all() and main["cbis-ddsm_auroc_mean"].notna().all()
    assert main["bcdr_auroc_mean"].notna().all()
    md = (res / "tables" / "main.md").read_text()
    assert md.count("| 1/1 |") == 4
    privacy = json.loads(
        (res / "classify" / "real_frozen_dp_eps6" / "seed1" / "privacy.json").read_text()
    )
    for key in (
        "noise_multiplier",
        "sample_rate",
        "steps",
        "delta",
        "epsilon_final",
        "chosen_epoch",
    ):
        assert privacy[key] is not None
    frd = pd.read_csv(res / "fidelity" / "frd.csv")
    assert (frd["class"] == "pooled").sum() == 4 and frd["value"].notna().all()
    assert set(frd["class"]) == {"pooled", "benign", "malignant"}
    for fig in ("privacy_utility", "roc_pr", "samples", "mcgan_losses"):
        assert (res / "figures" / f"{fig}.png").stat().st_size > 10_000
        assert (res / "figures" / f"{fig}.pdf").stat().st_size > 2_000
    run = json.loads((res / "provenance" / "run.json").read_text())
    assert len(run["config_sha256"]) == 64
    import mammodp

    assert run["mammodp_version"] == mammodp.__version__  # the version that ran, and from where
    assert Path(run["mammodp_package"]) == REPO / "workflow" / "mammodp"
    again = snakemake(workdir, "--configfile", str(cfg), "--cores", "2")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    # Threads are the job's {threads}: changing them reruns nothing and reaches torch.
    two = ("--set-threads", "classify=2")
    again = snakemake(workdir, "--configfile", str(cfg), "--cores", "2", "-n", *two)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    target = "results/classify/real_frozen_dp_eps6/seed1/metrics.json"
    r = snakemake(workdir, "--configfile", str(cfg), "--cores", "2", target, "-f", *two)
    assert r.returncode == 0, r.stderr[-3000:]
    log = (res / "logs" / "classify" / "real_frozen_dp_eps6" / "seed1.log").read_text()
    assert "torch threads: 2" in log
    # The self-contained HTML report: tables, figures, provenance with their captions.
    rep = snakemake(workdir, "--configfile", str(cfg), "--report", "results/report.html")
    assert rep.returncode == 0, rep.stderr[-2000:]
    html = (res / "report.html").read_text()
    for text in ("main results", "privacy-utility", "software versions", "Osuala"):
        assert text in html, text
    # The privacy audit: a row per experiment, the attacked ones with numbers.
    audit = pd.read_csv(res / "tables" / "privacy_audit.csv").set_index("experiment")
    assert list(audit.index) == list(main["experiment"])
    attacked = ["real_frozen_nodp", "real_frozen_dp_eps6", "synpre_real_frozen_dp_eps6"]
    assert (audit.loc[attacked, "status"] == "audited").all()
    assert audit.loc["syn_full_nodp", "status"] == "not audited"
    assert audit.loc[attacked, "shadow_auc_mean"].between(0, 1).all()
    for text in ("privacy audit", "attack ROC", "memorisation audit"):
        assert text in html, text


@pytest.mark.workflow
def test_dp_mcgan_lineage_in_the_privacy_table(workdir, write_config):
    """With a DP-MCGAN: a DP classifier trained on real and its crops reports the real
    patients' epsilon over both trainings (RDP-composed and basic), the patient-level pair and
    its warnings; a non-DP classifier on its crops alone has a row with the generator's
    guarantee; the GAN's losses.csv holds no loss on real crops. Then dp.unit: patient: the
    classifier's epsilon is per patient and the lineage adds the patient-level bounds."""
    from mammodp.classify import privacy_notes

    config = tiny_config(**{"experiments.select": ["realsyn_frozen_dp_eps6", "syn_frozen_nodp"]})
    config["synthesis"]["mcgan"]["dp"]["enabled"] = True
    r = snakemake(workdir, "--configfile", str(write_config(config)), "--cores", "2")
    assert r.returncode == 0, r.stderr[-4000:]
    res = workdir / "results"
    gan = json.loads((res / "synthesis" / "mcgan" / "model" / "privacy.json").read_text())
    losses = pd.read_csv(res / "synthesis" / "mcgan" / "model" / "losses.csv")
    assert "loss_d" not in losses and "loss_d_fake" in losses
    table = pd.read_csv(res / "tables" / "privacy.csv").set_index("experiment")
    row, syn = table.loc["realsyn_frozen_dp_eps6"], table.loc["syn_frozen_nodp"]
    assert row["dp"] and row["lineage_private"] and row["unit_of_privacy"] == "crop"
    assert row["lineage_delta"] == pytest.approx(row["delta"] + gan["delta"])
    assert row["lineage_epsilon_basic"] == pytest.approx(
        row["epsilon_final"] + gan["epsilon_final"]
    )
    assert max(row["epsilon_final"], gan["epsilon_final"]) < row["lineage_epsilon_basic"]
    assert row["lineage_epsilon_rdp"] < row["lineage_epsilon_basic"]
    if row["max_crops_per_patient"] > 1:
        assert "the unit of privacy is the crop" in row["warnings"]
    # Not DP itself, trained on the DP-MCGAN's crops only: the generator's guarantee.
    assert not syn["dp"] and syn["lineage_private"] and pd.isna(syn["noise_multiplier"])
    assert syn["lineage_epsilon_basic"] == pytest.approx(gan["epsilon_final"])
    assert syn["lineage_epsilon_rdp"] == pytest.approx(gan["epsilon_final"], rel=1e-6)
    assert "not trained privately" in syn["warnings"]
    md = (res / "tables" / "privacy.md").read_text()
    assert "runs with dp = False" in md and "Not covered by the DP runs' guarantees" in md

    config["classifier"]["dp"]["unit"] = "patient"
    r = snakemake(workdir, "--configfile", str(write_config(config)), "--cores", "2")
    assert r.returncode == 0, r.stderr[-4000:]
    own = json.loads(
        (res / "classify" / "realsyn_frozen_dp_eps6" / "seed1" / "privacy.json").read_text()
    )
    k = own["lineage_max_crops_per_patient"]
    row = (
        pd.read_csv(res / "tables" / "privacy.csv")
        .set_index("experiment")
        .loc["realsyn_frozen_dp_eps6"]
    )
    assert row["unit_of_privacy"] == "patient" and row["patient_epsilon"] == row["epsilon_final"]
    assert row["n_units"] < own["n_train"] or k == 1
    assert row["lineage_unit"] == "mixed" and pd.isna(row["lineage_epsilon_rdp"])
    assert "over its lineage (mixed units) a patient has epsilon" in row["warnings"]
    gan_eps, _ = privacy_notes.group_privacy(gan["epsilon_final"], gan["delta"], k)
    assert row["lineage_patient_epsilon"] == pytest.approx(row["epsilon_final"] + gan_eps)


@pytest.mark.workflow
def test_missing_dicom_fails_clearly_and_keeps_no_output(workdir, write_config):
    cfg = write_config(tiny_config())
    r = snakemake(workdir, "--configfile", str(cfg), "--cores", "2", "--until", "phantom")
    assert r.returncode == 0, r.stderr[-3000:]
    victim = next((workdir / "results" / "phantom" / "CBIS-DDSM").rglob("*full mammogram*/1-1.dcm"))
    victim.unlink()
    r = snakemake(workdir, "--configfile", str(cfg), "--cores", "2", "--until", "lesions")
    assert r.returncode != 0
    log = (workdir / "results" / "logs" / "data" / "lesions.log").read_text()
    assert "error: " in log and "full-mammogram series" in log and "download is incomplete" in log
    assert "Traceback" not in log
    assert "full-mammogram series" in r.stdout + r.stderr  # the failed log is shown
    assert not (workdir / "results" / "data" / "lesions.csv").exists()


@pytest.mark.workflow
def test_demo_config_end_to_end(workdir):
    """README command 1's job: the default config on the phantom, one row per demo experiment
    with real numbers, and a classifier trained on the phantom's real crops that learns."""
    import yaml

    r = snakemake(workdir, "--cores", "2")
    assert r.returncode == 0, r.stderr[-4000:]
    selected = yaml.safe_load((workdir / "config" / "config.yaml").read_text())["experiments"][
        "select"
    ]
    main = pd.read_csv(workdir / "results" / "tables" / "main.csv")
    assert sorted(main["experiment"]) == sorted(selected)
    assert main["cbis-ddsm_auroc_mean"].notna().all() and (main["seeds_finished"] == 2).all()
    best_non_dp_real = main[main["dp_epsilon"].isna() & main["experiment"].str.startswith("real_")]
    assert best_non_dp_real["cbis-ddsm_auroc_mean"].max() >= 0.8
    _check_demo_audit(workdir)


def _check_demo_audit(workdir):
    """The demo's privacy audit (issue 16): canaries planted in the non-DP run's shadows are
    found, every DP run's empirical epsilon stays at or below its accountant's, and at epsilon 1
    (not a demo experiment: audited here on the demo's features) the canaries hide."""
    import yaml

    from mammodp import classify, config
    from mammodp.audit import mia
    from mammodp.classify import models
    from mammodp.fileio import read_manifest

    res = workdir / "results"
    audit = pd.read_csv(res / "tables" / "privacy_audit.csv").set_index("experiment")
    assert audit.loc["real_frozen_nodp", "canary_auc_mean"] >= 0.9
    for path in (res / "audit" / "mia").glob("*/seed*/summary.json"):
        s = json.loads(path.read_text())
        if s["shadow_epsilon"] is not None:
            assert s["empirical"]["epsilon_lower_bound"] <= s["shadow_epsilon"], path
            assert s["empirical"]["epsilon_lower_bound"] <= s["accountant_epsilon"], path
    memo = json.loads((res / "audit" / "memorisation" / "summary.json").read_text())
    assert {"pixel", "features"} <= set(memo) and memo["n_synthetic"] > 0
    cfg = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    c = cfg["classifier"]
    job = classify.Job(
        config.load_experiments(workdir / "config" / "experiments.tsv")["real_frozen_dp_eps1"],
        42,
        models.ModelSpec.from_dict(c["model"]),
        classify.TrainSpec(**c["train"]),
        classify.DPSpec(**{**c["dp"], "epsilon_window": tuple(c["dp"]["epsilon_window"])}),
    )
    keys = ("shadow_models", "canaries", "canary_kind", "confidence", "seed")
    spec = mia.AuditSpec(**{k: cfg["audit"][k] for k in keys})
    manifest = read_manifest(res / "data" / "crops.csv", res / "data" / "crops")
    features = [res / "features" / "pretrained" / "real.pt"]
    s, _ = mia.run_audit(job, spec, manifest, None, features, None)
    assert abs(s["canary"]["auc"] - 0.5) < 0.15, s["canary"]
    assert s["empirical"]["epsilon_lower_bound"] <= s["shadow_epsilon"] <= 1.05


@pytest.mark.workflow
def test_processed_config_on_the_published_crops(workdir, write_config, shared_data):
    """config/processed.yaml runs the rest of the DAG on the study's published crops: the
    non-DP and DP real-only experiments complete and land in the tables."""
    import yaml

    config = yaml.safe_load((REPO / "config" / "processed.yaml").read_text())
    config["data"]["processed"]["path"] = str(shared_data / "mammo_dp" / "dataset16062024")
    config["synthesis"]["published"]["path"] = str(
        shared_data / "mammo_dp" / "synthetic" / "c-dcgan"
    )
    config["seeds"] = [1]
    config["experiments"]["select"] = ["real_frozen_nodp", "real_frozen_dp_eps6"]
    config["classifier"]["train"]["epochs"] = 3
    config["fidelity"]["max_images"] = 40
    cfg = write_config(config, "processed.yaml")
    (workdir / "resources").mkdir()
    shutil.copy(REPO / "resources" / "mammo_dp.sha256", workdir / "resources" / "mammo_dp.sha256")
    r = snakemake(workdir, "--configfile", str(cfg), "--cores", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    manifest = pd.read_csv(workdir / "results" / "data" / "crops.csv")
    counts = manifest.groupby(["dataset", "split"]).size().to_dict()
    assert counts == PUBLISHED_COUNTS
    main = pd.read_csv(workdir / "results" / "tables" / "main.csv")
    assert list(main["experiment"]) == ["real_frozen_nodp", "real_frozen_dp_eps6"]
    assert main["cbis-ddsm_auroc_mean"].notna().all() and main["bcdr_auroc_mean"].notna().all()
    privacy = pd.read_csv(workdir / "results" / "tables" / "privacy.csv")
    # Opacus' Poisson rate: 1 / batches per epoch of the original loader, 1 / ceil(1104 / 32).
    assert privacy["sample_rate"].iloc[0] == pytest.approx(1 / 35)


@pytest.mark.slow
def test_paper_published_config_uses_exactly_the_published_sets(workdir, write_config, shared_data):
    """config/paper-published.yaml up to the split: every published crop, in the split its folder
    names, and the study's split file (resources/study_split.json) describes the same patients."""
    import yaml

    published = shared_data / "mammo_dp" / "dataset16062024"
    config = yaml.safe_load((REPO / "config" / "paper-published.yaml").read_text())
    config["data"]["processed"]["path"] = str(published)
    config["synthesis"]["published"]["path"] = str(
        shared_data / "mammo_dp" / "synthetic" / "c-dcgan"
    )
    cfg = write_config(config, "paper-published.yaml")
    (workdir / "resources").mkdir()
    shutil.copy(REPO / "resources" / "mammo_dp.sha256", workdir / "resources" / "mammo_dp.sha256")
    r = snakemake(workdir, "--configfile", str(cfg), "--cores", "2", "--until", "split")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    manifest = pd.read_csv(workdir / "results" / "data" / "crops.csv")
    folders = {
        (p.parts[-4], p.name): p.parts[-3] for p in published.glob("*/*/*/*.png")
    }  # (dataset, file name) -> the split folder
    ours = {(d, Path(p).name): s for d, p, s in manifest[["dataset", "path", "split"]].values}
    assert ours == folders and len(ours) == 1104 + 192 + 402 + 1106
    split = json.loads((workdir / "results" / "data" / "split.json").read_text())
    study = json.loads((REPO / "resources" / "study_split.json").read_text())
    for name in ("train", "val", "test"):
        cbis = sorted(p for p in split[name] if p.startswith("cbis-ddsm__"))
        assert cbis == study[name]


# ----------------------------------------------------------------------------- partial reruns


def _dry(workdir, cfg, *args):
    r = snakemake(workdir, "-n", "--configfile", str(cfg), "--cores", "2", *args)
    assert r.returncode == 0, r.stderr[-3000:]
    return job_counts(r.stdout) if "Job stats:" in r.stdout else {}


def test_one_target_builds_only_its_ancestors(workdir, write_config):
    cfg = write_config(tiny_config())
    counts = _dry(workdir, cfg, "results/classify/real_frozen_nodp/seed1/metrics.json")
    assert counts == {
        "phantom": 1,
        "lesions": 1,
        "crop": 1,
        "split": 1,
        "backbone_features": 1,
        "classify": 1,
        "total": 6,
    }
    # A pretrained experiment also builds its source experiment of the same seed.
    counts = _dry(workdir, cfg, "results/classify/synpre_real_frozen_dp_eps6/seed1/metrics.json")
    assert counts["classify"] == 2 and counts["train_mcgan"] == 1
    assert counts["backbone_features"] == 1  # the source model's backbone: one feature set
    assert "tables" not in counts and "frd" not in counts


def test_until_and_omit_from_on_the_gpu_stage(workdir, write_config):
    cfg = write_config(tiny_config())
    until = _dry(workdir, cfg, "--until", "backbone_features")
    # Features of a fine-tuned backbone need that run: its classify job is an ancestor.
    # pretrained real, dbr15's real, and pretrained synthetic (the memorisation audit's features)
    assert until["classify"] == 1 and until["backbone_features"] == 3
    assert "tables" not in until and "frd" not in until
    omit = _dry(workdir, cfg, "--omit-from", "classify")
    assert "classify" not in omit and "tables" not in omit and "figures" not in omit
    assert omit["frd"] == 1 and omit["train_mcgan"] == 1


@pytest.mark.workflow
def test_changing_one_epsilon_reruns_that_experiment_and_the_tables(workdir, write_config):
    cfg = write_config(tiny_config(**{"experiments.table": "config/experiments.tsv"}))
    r = snakemake(workdir, "--configfile", str(cfg), "--cores", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    table = workdir / "config" / "experiments.tsv"
    rows = table.read_text().splitlines()
    rows = [
        r.replace(
            "\t6\tReal crops; frozen backbone, MLP head; DP-SGD epsilon 6",
            "\t8\tReal crops; frozen backbone, MLP head; DP-SGD epsilon 8",
        )
        if r.startswith("real_frozen_dp_eps6\t")
        else r
        for r in rows
    ]
    table.write_text("\n".join(rows) + "\n")
    counts = _dry(workdir, cfg)
    # The edited run's audit too, and no other (the table is not an audit input).
    assert counts == {
        "classify": 1,
        "audit_mia": 1,
        "tables": 1,
        "figures": 1,
        "audit_report": 1,
        "all": 1,
        "total": 6,
    }, counts


def test_a_frozen_chain_declares_the_checkpoint_that_holds_its_backbone(workdir, write_config):
    """backbone: of a frozen source whose backbone came from another run: that run's model and
    privacy record are inputs (the job reads them; a storage plugin must move them)."""
    rows = (REPO / "config" / "experiments.tsv").read_text().splitlines()
    keep = [r for r in rows[1:] if r.startswith(("syn_full_nodp\t", "synbackbone_real_"))]
    chain = keep[-1].replace("synbackbone_real_frozen_dp_eps6\tdbr155", "chained\t-")
    chain = chain.replace("backbone:syn_full_nodp", "backbone:synbackbone_real_frozen_dp_eps6")
    (workdir / "chain.tsv").write_text("\n".join([rows[0], *keep, chain]) + "\n")
    config = tiny_config(**{"experiments.table": str(workdir / "chain.tsv")})
    config["experiments"]["select"] = ["chained"]
    cfg = write_config(config)
    r = snakemake(workdir, "-n", "--configfile", str(cfg), "--cores", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    inputs = _classify_jobs(r.stdout)[("chained", "1")]
    run = "results/classify/{}/seed1/{}"
    assert run.format("synbackbone_real_frozen_dp_eps6", "model.pt") in inputs  # source
    assert run.format("syn_full_nodp", "model.pt") in inputs  # the backbone's checkpoint
    assert run.format("syn_full_nodp", "privacy.json") in inputs  # whose training it carries
    assert "results/features/syn_full_nodp-seed1/real.pt" in inputs


@pytest.mark.slow
def test_a_new_commit_reruns_provenance(tmp_path, write_config):
    """run.json names the commit that built the results: a new commit reruns the rule."""
    repo = tmp_path / "checkout"
    for part in ("workflow", "envs"):
        shutil.copytree(REPO / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "resources").mkdir()
    for shipped in ("mammo_dp.sha256", "paper_results.csv", "paper_fidelity.csv"):
        shutil.copy(REPO / "resources" / shipped, repo / "resources")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)

    def head() -> str:
        return subprocess.run(
            [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()

    work = tmp_path / "work"
    shutil.copytree(REPO / "config", work / "config")
    cfg = write_config(tiny_config())
    target = "results/provenance/run.json"

    def run(*args: str) -> subprocess.CompletedProcess:
        args = ("--configfile", str(cfg), "--cores", "1", *args, target)
        return snakemake(work, *args, snakefile=repo / "workflow" / "Snakefile")

    assert run().returncode == 0
    assert json.loads((work / target).read_text())["git_commit"] == head()
    assert "Nothing to be done" in (r := run("-n")).stdout + r.stderr
    (repo / "workflow" / "NOTE").write_text("a change\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "two"], check=True)
    assert "provenance" in run("-n").stdout
    assert run().returncode == 0
    assert json.loads((work / target).read_text())["git_commit"] == head()


def test_an_unknown_experiment_is_one_line(workdir, write_config):
    """Wildcard constraints from the sheet: Snakemake's missing-rule line, no KeyError."""
    cfg = write_config(tiny_config())
    target = "results/classify/real_frozen_dp_eps7/seed1/metrics.json"
    r = snakemake(workdir, "-n", "--configfile", str(cfg), "--cores", "1", target)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out and "KeyError" not in out
    assert f"No rule to produce {target}" in out
    known = snakemake(
        workdir, "-n", "--configfile", str(cfg), "--cores", "1", target.replace("eps7", "eps6")
    )
    assert known.returncode == 0, known.stderr[-2000:]
