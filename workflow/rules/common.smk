import json
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# The package lives beside the rules. What the Snakefile imports needs only Snakemake's own
# dependencies (tests/test_config.py checks), so that conda users can parse the workflow.
sys.path.insert(0, str(Path(workflow.basedir)))
from mammodp.config import (  # noqa: E402
    CASE_CSVS,
    STUDY_SPLIT,
    ConfigError,
    coerce_strings,
    config_origins,
    load_experiments,
    load_schema,
    select_experiments,
    validate_config,
)
from mammodp.labels import data_labels  # noqa: E402
from mammodp.provenance import git_commit  # noqa: E402
from mammodp.study_settings import SETTING_KEYS as STUDY_SETTING_KEYS  # noqa: E402

CONFIG_SOURCE = (
    ", ".join(map(str, workflow.config_settings.configfiles)) or "config/config.yaml"
)
try:
    # --config values come as strings; each error names the layer its value came from.
    config.update(coerce_strings(config, load_schema("config.schema.yaml")))
    validate_config(config, source=CONFIG_SOURCE, origins=config_origins(workflow))
    EXPERIMENTS = load_experiments(config["experiments"]["table"])
    SELECTED = select_experiments(EXPERIMENTS, config["experiments"]["select"])
except ConfigError as e:
    raise WorkflowError(str(e)) from None

# Rules call `mammodp`: workflow/scripts/mammodp runs this checkout's package with the Python
# running Snakemake, or, under --software-deployment-method conda, with the rule's environment.
USES_CONDA = any(
    m.name == "CONDA" for m in workflow.deployment_settings.deployment_method
)
JOB_PYTHON = "python" if USES_CONDA else sys.executable
shell.prefix(
    "set -euo pipefail; "
    f'export PATH="{Path(workflow.basedir) / "scripts"}:$PATH"; '
    # Quadruple braces: Snakemake formats the prefix once more, as every shell command.
    f'export PYTHONPATH="{workflow.basedir}${{{{PYTHONPATH:+:$PYTHONPATH}}}}"; '
    f'export MAMMODP_PYTHON="{JOB_PYTHON}"; '
)

SEEDS = [int(s) for s in config["seeds"]]
DATA = "results/data"
GENERATOR = config["synthesis"]["generator"]


# GPU rules request one GPU (Snakemake --resources gpu=N locally, --gpus on SLURM) unless the
# config says cpu; with auto, a job that finds no GPU at run time falls back to the CPU.
GPU_JOBS = config["device"] in ("cuda", "auto")


# Experiments of the sheet only, longest first (a name may extend another): an unknown one is
# Snakemake's one-line "No rule to produce", not a KeyError in an input function.
wildcard_constraints:
    experiment="|".join(
        re.escape(e) for e in sorted(EXPERIMENTS, key=len, reverse=True)
    ),
    seed=r"\d+",
    backbone=r"pretrained|[a-z0-9_]+-seed\d+",
    imageset="real|synthetic",


def as_json(obj):
    """Compact, key-sorted JSON for a shell argument (stable, so params changes are real)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


SOURCE_ROOT = {"phantom": "results/phantom", "tcia": "resources/tcia"}


def lesion_inputs(wildcards):
    """Case-description CSVs and the DICOM tree (or its download manifest) of the source."""
    source = config["data"]["source"]
    root = SOURCE_ROOT[source]
    inputs = {k: f"{root}/metadata/{name}" for k, name in CASE_CSVS.items()}
    if source == "phantom":
        inputs["dicom"] = f"{root}/CBIS-DDSM"
        if config["data"]["external"] == "bcdr":
            inputs["bcdr"] = f"{root}/BCDR"
    else:
        inputs["dicom"] = f"{root}/CBIS-DDSM.complete"
        inputs["patients"] = f"{root}/patients.txt"
    return inputs


def tcia_subset_args(wildcards):
    tcia = config["data"]["tcia"]
    if tcia["patients"]:
        return "--patients " + ",".join(tcia["patients"])
    return f"--max-patients {tcia['max_patients']}" if tcia["max_patients"] else ""


def tcia_batch_markers(wildcards):
    """One marker per download batch; the batches are known once the series are listed.
    Read with the csv module: parsing needs only Snakemake's own dependencies."""
    import csv

    with open(checkpoints.tcia_series.get().output.series, newline="") as f:
        batches = {int(row["batch"]) for row in csv.DictReader(f)}
    return [f"resources/tcia/batches/{b}.tsv" for b in sorted(batches)]


def crop_inputs(wildcards):
    """The lesion table and the image sources it refers to."""
    inputs = lesion_inputs(wildcards)
    return {
        "lesions": f"{DATA}/lesions.csv",
        **{k: v for k, v in inputs.items() if k in ("dicom", "bcdr")},
    }


def lesion_args(wildcards, input):
    """Source options (--dicom-root, --bcdr, --patients-file) of `mammodp lesions` and
    `mammodp crop` for the configured source."""
    source = config["data"]["source"]
    args = [f"--dicom-root {SOURCE_ROOT[source]}/CBIS-DDSM"]
    if "patients" in input.keys():
        args.append(f"--patients-file {input.patients}")
    if config["data"]["external"] == "bcdr":
        bcdr = input.bcdr if "bcdr" in input.keys() else config["data"]["bcdr"]["path"]
        args.append(f"--bcdr {bcdr}")
    return " ".join(args)


def published_folders(wildcards):
    """Which published folders this config reads (and so fetches or verifies)."""
    args = []
    if config["data"]["source"] == "processed":
        args.append(f"--dataset {config['data']['processed']['path']!r}")
    if GENERATOR == "published":
        args.append(f"--synthetic {config['synthesis']['published']['path']!r}")
    if not config["data"]["processed"]["verify"]:
        args.append("--no-verify")
    return " ".join(args)


def crop_index():
    if config["data"]["source"] == "processed":
        return f"{DATA}/processed/crop_index.csv"
    return f"{DATA}/crop_index.csv"


def split_file_input():
    if config["data"]["split"]["file"] == STUDY_SPLIT:
        return workflow.source_path("../../resources/study_split.json")
    if config["data"]["split"]["file"]:
        return config["data"]["split"]["file"]
    if config["data"]["source"] == "processed":
        return f"{DATA}/processed/published_split.json"
    return []


def synthetic_manifest():
    return f"results/synthesis/{GENERATOR}/manifest.csv"


def run_dir(experiment, seed):
    return f"results/classify/{experiment}/seed{seed}"


def backbone_key(experiment, seed):
    """Which backbone weights an experiment's frozen backbone has: the configured pretrained
    ones, or those of the experiment in its pretraining chain (from: and backbone: links alike:
    a frozen source passes on the backbone it was given) that trained every layer.
    """
    exp = EXPERIMENTS[experiment]
    while exp.source:
        source = EXPERIMENTS[exp.source]
        if source.trained == "all":
            return f"{source.experiment}-seed{seed}"
        exp = source
    return "pretrained"


def uses_feature_cache(exp):
    return exp.trained == "head" and not config["classifier"]["train"]["faithful"]


def classify_inputs(wildcards):
    exp = EXPERIMENTS[wildcards.experiment]
    inputs = {"manifest": f"{DATA}/crops.csv"}
    if "synthetic" in exp.train_data:
        inputs["synthetic"] = synthetic_manifest()
        if GENERATOR == "mcgan" and config["synthesis"]["mcgan"]["dp"]["enabled"]:
            # Its privacy.json: the generator's epsilon enters the lineage's.
            inputs["generator_model"] = rules.train_mcgan.output[0]
    if exp.source:
        # Pretraining (from: and backbone:) is a DAG edge: the source experiment, same seed.
        inputs["source_model"] = f"{run_dir(exp.source, wildcards.seed)}/model.pt"
    if uses_feature_cache(exp):
        key = backbone_key(wildcards.experiment, wildcards.seed)
        inputs["features"] = [f"results/features/{key}/real.pt"]
        if "synthetic" in exp.train_data:
            inputs["features"].append(f"results/features/{key}/synthetic.pt")
    return inputs


def feature_inputs(wildcards):
    images = (
        f"{DATA}/crops.csv" if wildcards.imageset == "real" else synthetic_manifest()
    )
    inputs = {"images": images}
    if wildcards.backbone != "pretrained":
        experiment, seed = wildcards.backbone.rsplit("-seed", 1)
        inputs["source_model"] = f"{run_dir(experiment, seed)}/model.pt"
    return inputs


def classify_gpu(wildcards):
    """Only full fine-tuning and the faithful loop run the backbone in a classifier job."""
    exp = EXPERIMENTS[wildcards.experiment]
    return 1 if GPU_JOBS and not uses_feature_cache(exp) else 0


def optional_flag(inputs, name, flag):
    return f"{flag} {inputs[name]}" if name in inputs.keys() else ""


def job_json(wildcards):
    exp = EXPERIMENTS[wildcards.experiment]
    c = config["classifier"]
    return as_json(
        {
            "experiment": {**exp.__dict__},
            "seed": int(wildcards.seed),
            "model": c["model"],
            "train": c["train"],
            "dp": c["dp"],
            # Cached-feature heads train on the CPU; only backbone work needs the GPU.
            "device": "cpu" if uses_feature_cache(exp) else config["device"],
            # Only a DP-trained MCGAN keeps the real patients' privacy end to end.
            "synthetic_generator_private": GENERATOR == "mcgan"
            and config["synthesis"]["mcgan"]["dp"]["enabled"],
        }
    )


def run_files(name):
    return [f"{run_dir(e, s)}/{name}" for e in SELECTED for s in SEEDS]


def figure_inputs(wildcards):
    inputs = {
        "metrics": run_files("metrics.json"),
        "predictions": run_files("predictions.csv"),
        "experiments": config["experiments"]["table"],
        "manifest": f"{DATA}/crops.csv",
        "synthetic": synthetic_manifest(),
        "comparison": rules.tables.output.comparison,
    }
    if GENERATOR == "mcgan":
        inputs["losses"] = "results/synthesis/mcgan/model"
    return inputs


def config_value(dotted):
    """The config's value at a dotted key such as "data.crop.framing"."""
    value = config
    for part in dotted.split("."):
        value = value[part]
    return value


def comparison_context():
    """What decides whether our results are comparable with the study's published ones
    (results/tables/paper_comparison.*): data and synthetic source, the study's settings,
    backbone, epochs, seeds.
    """
    s = config["synthesis"]
    return as_json(
        {
            "data_source": config["data"]["source"],
            "external": config["data"]["external"],
            "generator": GENERATOR,
            "medigan_model": s["medigan"]["model_id"],
            "n_per_class": s["n_per_class"],
            "mcgan_dp": s["mcgan"]["dp"]["enabled"],
            "settings": {k: config_value(k) for k in STUDY_SETTING_KEYS},
            "model": config["classifier"]["model"],
            "epochs": config["classifier"]["train"]["epochs"],
            "seeds": SEEDS,
        }
    )


# The names of the data in the report captions (snakemake.params.labels): a phantom run is
# never called CBIS-DDSM.
REPORT_LABELS = data_labels(config["data"]["source"], GENERATOR)


def gan_loss_figures():
    if GENERATOR != "mcgan":
        return []
    png = report(
        "results/figures/mcgan_losses.png",
        caption="../report/mcgan_losses.rst",
        category="2. Figures",
        labels={"figure": "MCGAN losses"},
    )
    return [png, "results/figures/mcgan_losses.pdf"]
