import json
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.sourcecache import LocalSourceFile


# The package lives beside the rules: this workflow's own copy, whether it is a checkout, a local
# module (workflow.basedir is then the host's folder) or a remote one (github(), a URL: then its
# files are fetched into Snakemake's source cache first). What the Snakefile imports needs only
# Snakemake's own dependencies (tests/test_config.py checks), so that conda users can parse it.
def _workflow_dir():
    """This workflow's workflow/ folder on this machine, and where it came from."""
    rules_dir = workflow.current_basedir
    origin = rules_dir.get_basedir().get_path_or_uri(secret_free=True)
    if isinstance(rules_dir, LocalSourceFile):
        return Path(rules_dir.get_path_or_uri(secret_free=False)).parent, origin
    listed = workflow.source_path("../package_files.txt")
    for rel in Path(listed).read_text().split():
        cached = Path(workflow.source_path(f"../{rel}"))
    return cached.parents[len(Path(rel).parts) - 1], origin


WORKFLOW_DIR, WORKFLOW_SOURCE = _workflow_dir()
sys.path.insert(0, str(WORKFLOW_DIR))
from mammodp.config import (  # noqa: E402
    CASE_CSVS,
    audit_exclusion,
    STUDY_SPLIT,
    RUN_FILES,
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

# Rules run `"$MAMMODP_PYTHON" "$MAMMODP" <command>`: this workflow's own package (the launcher
# workflow/scripts/mammodp.py puts it first on sys.path) with the Python running Snakemake, or,
# under --software-deployment-method conda, the rule's environment's. Environment variables, set
# wherever the workflow is parsed (cluster and cloud jobs parse it too): a module's globals do
# not reach its shell commands, a shell.prefix would leak into a host workflow's rules, and a
# param (or a path in the command) would rerun everything when a remote module's cache moves.
USES_CONDA = any(
    m.name == "CONDA" for m in workflow.deployment_settings.deployment_method
)
os.environ.update(
    MAMMODP_PYTHON="python" if USES_CONDA else sys.executable,
    MAMMODP=str(WORKFLOW_DIR / "scripts" / "mammodp.py"),
)

# The rule families' conda environments (workflow/envs/<name>.yaml).
ENVIRONMENTS = ["data", "synthesis", "fidelity", "classify", "report"]
SEEDS = [int(s) for s in config["seeds"]]
# Read wherever the workflow is parsed (every cluster or cloud job parses it), like the config
# file: it travels with the config, not through a storage plugin.
EXPERIMENT_SHEET = local(config["experiments"]["table"])
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
    env="|".join(ENVIRONMENTS),


def as_json(obj):
    """Compact, key-sorted JSON for a shell argument (stable, so params changes are real)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def case_csv_paths(folder):
    """The four case-description CSVs in ``folder``, named by key (an output per CSV)."""
    return {key: f"{folder}/{name}" for key, name in CASE_CSVS.items()}


def case_csv_args(wildcards, output):
    return " ".join(f"{key}={output[key]}" for key in CASE_CSVS)


# Patterns that rules and expand() share: expand() takes patterns, not a rule's outputs (which a
# storage plugin has already turned into storage objects).
TCIA_BATCH = {
    "dicom": "resources/tcia/CBIS-DDSM/batch{batch}",  # one folder per download batch
    "marker": "resources/tcia/batches/{batch}.tsv",
}
SOFTWARE = "results/provenance/software/{env}.csv"


def tcia_subset_args(wildcards):
    tcia = config["data"]["tcia"]
    if tcia["patients"]:
        return "--patients " + ",".join(tcia["patients"])
    return f"--max-patients {tcia['max_patients']}" if tcia["max_patients"] else ""


def tcia_batches():
    """The download batches; known once the series are listed. Read with the csv module:
    parsing needs only Snakemake's own dependencies."""
    import csv

    with open(checkpoints.tcia_series.get().output.series, newline="") as f:
        return sorted({int(row["batch"]) for row in csv.DictReader(f)})


def tcia_batch_markers(wildcards):
    return expand(TCIA_BATCH["marker"], batch=tcia_batches())


def lesion_inputs(wildcards):
    """Case-description CSVs and the DICOM folders (the TCIA download's: one per batch)."""
    source = config["data"]["source"]
    if source == "phantom":
        inputs = {k: rules.phantom.output[k] for k in CASE_CSVS}
        inputs["dicom"] = rules.phantom.output.dicom
        if config["data"]["external"] == "bcdr":
            inputs["bcdr"] = rules.phantom.output.bcdr
        return inputs
    inputs = {k: rules.tcia_metadata.output[k] for k in CASE_CSVS}
    inputs["dicom"] = expand(TCIA_BATCH["dicom"], batch=tcia_batches())
    inputs["complete"] = rules.tcia_complete.output[0]
    inputs["patients"] = rules.tcia_series.output.patients
    if config["data"]["external"] == "bcdr":
        inputs["bcdr"] = local(
            config["data"]["bcdr"]["path"]
        )  # the user's: read in place
    return inputs


def crop_inputs(wildcards):
    """The lesion table and the image folders it refers to."""
    inputs = lesion_inputs(wildcards)
    return {
        "lesions": rules.lesions.output[0],
        **{k: v for k, v in inputs.items() if k in ("dicom", "bcdr")},
    }


def lesion_args(wildcards, input):
    """The inputs of `mammodp lesions` (case CSVs) and `mammodp crop` (the lesion table) and
    their sources (--dicom-root, --bcdr, --patients-file). Arguments, not named inputs in the
    command: before the TCIA listing exists, a dry run prints a placeholder job without them.
    """
    if "dicom" not in input.keys():
        return ""
    if "lesions" in input.keys():
        args = [f"--lesions {input.lesions}"]
    else:
        args = [f"--mass-train {input.mass_train} --mass-test {input.mass_test}"]
        args.append(f"--calc {input.calc_train} {input.calc_test}")
    args.append(f"--dicom-root {input.dicom}")
    if "patients" in input.keys():
        args.append(f"--patients-file {input.patients}")
    if "bcdr" in input.keys():
        args.append(f"--bcdr {input.bcdr}")
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
        return local(config["data"]["split"]["file"])  # the user's: read in place
    if config["data"]["source"] == "processed":
        return f"{DATA}/processed/published_split.json"
    return []


def synthetic_manifest():
    return f"results/synthesis/{GENERATOR}/manifest.csv"


def made_images(kind):
    """The image folder a manifest (kind: real, synthetic) describes where a rule of this
    workflow makes it (an input then), else []."""
    if kind == "real":
        return [] if config["data"]["source"] == "processed" else f"{DATA}/crops"
    return {
        "mcgan": "results/synthesis/mcgan/images",
        "medigan": "results/synthesis/medigan/images",
    }.get(GENERATOR, [])


# The study's published folders are the user's: read in place, not moved by a storage plugin.
USER_IMAGES = {
    "real": config["data"]["processed"]["path"],
    "synthetic": config["synthesis"]["published"]["path"],
}


def images_arg(name, kind):
    """A command's image-folder argument: its rule's input ``name`` (where Snakemake, a module
    prefix or a storage plugin put it), or the user's published folder."""

    def arg(wildcards, input):
        made = getattr(input, name) if name in input.keys() else []
        return shlex.quote(made or USER_IMAGES[kind])

    return arg


def synthetic_args(wildcards, input):
    """A classifier job's synthetic manifest and its image folder, when it trains on them."""
    if "synthetic" not in input.keys():
        return ""
    folder = images_arg("synthetic_images", "synthetic")(wildcards, input)
    return f"--synthetic {input.synthetic} --synthetic-images {folder}"


def source_and_cache_args(wildcards, input):
    """The classifier job's optional inputs, as --source-model, --features and so on."""
    names = [
        "source_model",
        "source_privacy",
        "backbone_model",
        "generator_model",
        "features",
    ]
    return " ".join(optional_flag(input, n, f"--{n.replace('_', '-')}") for n in names)


def outputs_arg(wildcards, output):
    """``--outputs name=path ...``: where the rule put each file the command writes, by the
    file's name (the command's own names; the folders are the rule's)."""
    return " ".join(f"{Path(p).name}={shlex.quote(p)}" for p in output)


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


def source_inputs(exp, seed):
    """Pretraining (from: and backbone:) is a DAG edge: the source experiment's model, same seed;
    the privacy.json of the run whose training this one loads (from: the source's; backbone:
    that of the run that trained the backbone, none for pretrained weights); and the model that
    holds a frozen source's backbone."""
    inputs = {"source_model": f"{run_dir(exp.source, seed)}/model.pt"}
    key = backbone_key(exp.experiment, seed)
    origin = None if key == "pretrained" else key.rsplit("-seed", 1)[0]
    if exp.loads_source_head:
        inputs["source_privacy"] = f"{run_dir(exp.source, seed)}/privacy.json"
    elif origin:
        inputs["source_privacy"] = f"{run_dir(origin, seed)}/privacy.json"
    if origin and origin != exp.source:
        inputs["backbone_model"] = f"{run_dir(origin, seed)}/model.pt"
    return inputs


def classify_inputs(wildcards):
    exp = EXPERIMENTS[wildcards.experiment]
    inputs = {"manifest": f"{DATA}/crops.csv", "images": made_images("real")}
    if "synthetic" in exp.train_data:
        inputs["synthetic"] = synthetic_manifest()
        inputs["synthetic_images"] = made_images("synthetic")
        if GENERATOR == "mcgan" and config["synthesis"]["mcgan"]["dp"]["enabled"]:
            # Its privacy.json: the generator's epsilon enters the lineage's.
            inputs["generator_model"] = rules.train_mcgan.output[0]
    if exp.source:
        inputs.update(source_inputs(exp, wildcards.seed))
    if uses_feature_cache(exp):
        key = backbone_key(wildcards.experiment, wildcards.seed)
        inputs["features"] = [f"results/features/{key}/real.pt"]
        if "synthetic" in exp.train_data:
            inputs["features"].append(f"results/features/{key}/synthetic.pt")
    return inputs


def feature_inputs(wildcards):
    real = wildcards.imageset == "real"
    inputs = {
        "manifest": f"{DATA}/crops.csv" if real else synthetic_manifest(),
        "images": made_images(wildcards.imageset),
    }
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
        "experiments": EXPERIMENT_SHEET,
        "manifest": f"{DATA}/crops.csv",
        "images": made_images("real"),
        "synthetic": synthetic_manifest(),
        "synthetic_images": made_images("synthetic"),
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


# The privacy audit: the runs attacked with shadow heads (the others have a row saying why).
AUDITED = [
    e
    for e in SELECTED
    if audit_exclusion(EXPERIMENTS[e], config["classifier"]["train"]["faithful"])
    is None
]
AUDITED_PATTERN = (
    "|".join(re.escape(e) for e in sorted(AUDITED, key=len, reverse=True)) or "(?!)"
)


def audit_spec_json():
    a = config["audit"]
    keys = ("shadow_models", "canaries", "canary_kind", "confidence", "seed")
    return as_json({k: a[k] for k in keys})


def audit_mia_inputs(wildcards):
    """What the run trained on (as classify_inputs: manifest, synthetic crops, features, the
    source model a from: run starts from) and the run's own model and privacy.json."""
    inputs = {
        k: v
        for k, v in classify_inputs(wildcards).items()
        if k in ("manifest", "images", "synthetic", "synthetic_images", "features")
    }
    exp = EXPERIMENTS[wildcards.experiment]
    if exp.loads_source_head:
        inputs["source_model"] = f"{run_dir(exp.source, wildcards.seed)}/model.pt"
    run = run_dir(wildcards.experiment, wildcards.seed)
    inputs["run_model"] = f"{run}/{RUN_FILES['model']}"
    inputs["privacy"] = f"{run}/{RUN_FILES['privacy']}"
    return inputs


def audit_source_arg(wildcards):
    """The source experiment's row, as a param: editing another row of the table leaves the
    audit alone (the table as an input would rerun every audit)."""
    source = EXPERIMENTS[wildcards.experiment].source
    if source is None:
        return ""
    return f"--source-experiment {shlex.quote(as_json(EXPERIMENTS[source].__dict__))}"


def audit_files(name):
    return [
        f"results/audit/mia/{e}/seed{s}/{name}.{'json' if name == 'summary' else 'csv'}"
        for e in AUDITED
        for s in SEEDS
    ]


def audit_targets():
    """The audit's files in the default target when audit.enabled."""
    if not config["audit"]["enabled"]:
        return []
    return [rules.audit_report.output, rules.audit_memorisation.output]
