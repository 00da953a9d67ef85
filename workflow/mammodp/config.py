"""Config and experiment-table validation, shared by the Snakefile and the tests.

Errors name the key, the bad value and what is allowed, in one line, so that a typo in a config
stops the run before any job starts.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from .errors import UserError

# What a classifier run writes: classify.run's ``outputs`` keys and the rule's named outputs.
# Why a run is not attacked with shadow heads (the privacy-audit table says which).
NOT_AUDITED = {
    "no_real": "trains on no real crop: its link to the real patients is the generator's "
    "(the memorisation audit)",
    "full": "trains its backbone too: each shadow model would be a full fine-tuning run",
    "faithful": "train.faithful: no cached features to train shadow heads on",
}


def audit_exclusion(exp, faithful: bool) -> str | None:
    """None when the membership audit attacks the run with shadow heads, else why not (a key
    of ``NOT_AUDITED``)."""
    if exp.trained != "head":
        return "full"
    if faithful:
        return "faithful"
    if "real" not in exp.train_data.split("+"):
        return "no_real"
    return None


RUN_FILES = {
    "model": "model.pt",
    "metrics": "metrics.json",
    "predictions": "predictions.csv",
    "history": "history.csv",
    "privacy": "privacy.json",
}


@dataclass(frozen=True)
class Experiment:
    """One row of config/experiments.tsv."""

    experiment: str
    paper_id: str
    group: str
    train_data: str  # real | real+synthetic | synthetic
    trained: str  # head | all
    head: str  # mlp | linear
    init: str  # backbone | from:<experiment> | backbone:<experiment>
    dp_epsilon: float | None
    description: str = ""

    @property
    def source(self) -> str | None:
        """The experiment whose model (same seed) this one starts from: ``from:`` (its backbone
        and head) or ``backbone:`` (its backbone, a new head)."""
        return self.init.split(":", 1)[1] if ":" in self.init else None

    @property
    def loads_source_head(self) -> bool:
        return self.init.startswith("from:")


# The four case-description CSVs as TCIA publishes them (key -> file name).
CASE_CSVS = {
    "mass_train": "mass_case_description_train_set.csv",
    "mass_test": "mass_case_description_test_set.csv",
    "calc_train": "calc_case_description_train_set.csv",
    "calc_test": "calc_case_description_test_set.csv",
}

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
# data.split.file: study = the study's own patient split, shipped with the workflow as
# resources/study_split.json (found from any working directory, and for the workflow as a module).
STUDY_SPLIT = "study"


# Opacus' secure mode draws noise and Poisson samples from torchcsprng, which has no build for
# torch 2.x (its last release targets torch 1.x), so the pinned stack cannot offer it.
SECURE_MODE_UNAVAILABLE = (
    "invalid config in {source}: classifier.dp.secure_mode = true is not available: Opacus' "
    "secure mode needs torchcsprng, which does not install for this torch; set it to false "
    "(noise and sampling then come from seeded generators: reproducible, but not for a "
    "deployment whose attacker could predict them)"
)


class ConfigError(UserError):
    pass


def load_schema(name: str, schema_dir: str | Path = SCHEMA_DIR) -> dict:
    with open(Path(schema_dir) / name) as f:
        return yaml.safe_load(f)


def _key_path(error: ValidationError) -> str:
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in error.absolute_path)


def _describe(error: ValidationError) -> str:
    key = _key_path(error) or "(top level)"
    value = error.instance
    v = error.validator
    if v == "enum":
        return f"{key} = {value!r} is not allowed; allowed values: {error.validator_value}"
    if v == "const":
        return f"{key} = {value!r} is not allowed; it must be {error.validator_value!r}"
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(value) - set(allowed)) if isinstance(value, dict) else []
        return f"{key}: unknown key(s) {extra}; allowed keys: {allowed}"
    if v == "required":
        return f"{key}: {error.message}"
    if v == "type":
        return f"{key} = {value!r} has the wrong type; expected {error.validator_value}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        words = {
            "minimum": ">=",
            "maximum": "<=",
            "exclusiveMinimum": ">",
            "exclusiveMaximum": "<",
        }
        return f"{key} = {value!r} is out of range; it must be {words[v]} {error.validator_value}"
    if v == "oneOf":
        options = [s.get("enum") or s.get("const") or s.get("type") for s in error.validator_value]
        return f"{key} = {value!r} is not allowed; expected one of {options}"
    return f"{key}: {error.message}"


def _defines(values: dict, path) -> bool:
    """Does a config layer set the value at ``path`` (its keys up to the first list index)?"""
    keys = []
    for p in path:
        if not isinstance(p, str):
            break
        keys.append(p)
    node = values
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return bool(keys)


def origin(origins, path, default: str) -> str:
    """Where the value at ``path`` came from: the first layer of ``origins`` ((name, values)
    pairs, highest precedence first: --config, then the config files from last to first) that
    sets it; ``default`` otherwise."""
    return next((name for name, values in origins or () if _defines(values, path)), default)


def config_origins(workflow) -> list[tuple[str, dict]]:
    """The layers of a Snakemake run's config, highest precedence first: ``--config``, then
    each ``--configfile`` from the last to the first (the default config/config.yaml is what
    none of them sets)."""
    layers = []
    settings = workflow.config_settings
    if settings.config:
        layers.append(("--config", dict(settings.config)))
    for path in reversed(list(settings.configfiles)):
        if Path(path).is_file():  # else Snakemake itself says it is missing
            with open(path) as f:
                layers.append((str(path), yaml.safe_load(f) or {}))
    return layers


def validate(instance, schema: dict, source: str, origins=None) -> None:
    error = best_match(Draft202012Validator(schema).iter_errors(instance))
    if error is not None:
        desc = error.schema.get("description") if isinstance(error.schema, dict) else None
        hint = f" ({desc})" if desc else ""
        where = origin(origins, list(error.absolute_path), source)
        raise ConfigError(f"invalid config in {where}: {_describe(error)}{hint}")


def _schema_types(schema: dict) -> set[str]:
    types = schema.get("type", [])
    out = {types} if isinstance(types, str) else set(types)
    for alt in schema.get("oneOf", []) + schema.get("anyOf", []):
        out |= _schema_types(alt)
    return out


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref", "")
    if ref.startswith("#/"):
        node = root
        for part in ref[2:].split("/"):
            node = node[part]
        return _resolve(node, root)
    return schema


def coerce_strings(value, schema: dict, root: dict | None = None):
    """``--config`` values arrive as strings (Snakemake reads nested values with YAML's
    BaseLoader: ``seeds=[1,2,3]`` gives strings): give a string the integer, number, boolean
    or null the schema expects where it spells one; anything else is left to validation."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return {k: coerce_strings(v, props.get(k, {}), root) for k, v in value.items()}
    if isinstance(value, list):
        return [coerce_strings(v, schema.get("items", {}), root) for v in value]
    if not isinstance(value, str):
        return value
    types = _schema_types(schema)
    if "string" in types or any(value == e for e in schema.get("enum", [])):
        return value
    if "null" in types and value in ("null", "~"):
        return None
    if "boolean" in types and value.lower() in ("true", "false"):
        return value.lower() == "true"
    for kind, parse in (("integer", int), ("number", float)):
        if kind in types:
            try:
                return parse(value)
            except ValueError:
                pass
    return value


def validate_config(
    config: dict, source: str = "config", schema_dir=SCHEMA_DIR, origins=None
) -> None:
    """Schema validation plus the cross-field checks a schema cannot express. ``origins``:
    the config's layers (see ``origin``), so that an error names where the bad value came
    from; ``source`` where none of them sets it."""
    validate(config, load_schema("config.schema.yaml", schema_dir), source, origins)
    default = source

    def where(*path):
        return origin(origins, path, default)

    lo, hi = config["classifier"]["dp"]["epsilon_window"]
    source = where("classifier", "dp", "epsilon_window")
    if not lo < hi:
        raise ConfigError(
            f"invalid config in {source}: classifier.dp.epsilon_window = [{lo}, {hi}]: "
            "the lower bound must be below the upper bound"
        )
    m = config["synthesis"]["mcgan"]
    source = where("synthesis", "mcgan", "real_label_low")
    if not m["real_label_low"] < m["real_label_high"]:
        raise ConfigError(
            f"invalid config in {source}: synthesis.mcgan.real_label_low must be below "
            "real_label_high"
        )
    dp = config["classifier"]["dp"]
    source = where("classifier", "dp", "secure_mode")
    if dp["secure_mode"]:
        raise ConfigError(SECURE_MODE_UNAVAILABLE.format(source=source))
    source = where("classifier", "dp", "unit")
    if dp["unit"] == "patient" and dp["clipping"] != "bookkeeping":
        raise ConfigError(
            f"invalid config in {source}: classifier.dp.unit = patient clips each patient's "
            "summed gradient, which only clipping: bookkeeping does; set clipping: bookkeeping"
        )
    split_file = config["data"]["split"]["file"]
    source = where("data", "split", "file")
    if split_file and split_file != STUDY_SPLIT and not Path(split_file).is_file():
        raise ConfigError(
            f"invalid config in {source}: data.split.file = {split_file!r} does not exist; "
            f"give a JSON file with train/val/test patient ids, {STUDY_SPLIT!r} for the study's "
            "split shipped with the workflow, or null for a seeded split"
        )


def load_experiments(path: str | Path, schema_dir=SCHEMA_DIR) -> dict[str, Experiment]:
    """Read and validate the experiment table; check that pretraining sources exist, are
    acyclic (over ``from:`` and ``backbone:`` links) and, for ``from:``, have a matching head."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiments.table: {path} not found")
    schema = load_schema("experiments.schema.yaml", schema_dir)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    table: dict[str, Experiment] = {}
    for line, row in enumerate(rows, start=2):
        eps = row.get("dp_epsilon")
        try:
            row["dp_epsilon"] = float(eps) if eps not in (None, "none") else eps
        except ValueError:
            pass  # the schema reports it
        validate(row, schema, f"{path} line {line}")
        if row["experiment"] in table:
            raise ConfigError(f"{path} line {line}: duplicate experiment id {row['experiment']}")
        row["dp_epsilon"] = None if row["dp_epsilon"] == "none" else row["dp_epsilon"]
        exp = Experiment(**row)
        if exp.dp_epsilon is not None and exp.trained != "head":
            raise ConfigError(
                f"{path} line {line}: {exp.experiment} combines DP with trained=all; DP is "
                "supported for head training only (the study's setting)"
            )
        table[exp.experiment] = exp
    for exp in table.values():
        seen = [exp.experiment]
        src = exp.source
        while src:
            if src not in table:
                raise ConfigError(f"{path}: {seen[-1]} starts from unknown experiment {src!r}")
            if src in seen:
                raise ConfigError(f"{path}: pretraining cycle {' -> '.join(seen + [src])}")
            seen.append(src)
            src = table[src].source
        if exp.loads_source_head and table[exp.source].head != exp.head:
            raise ConfigError(
                f"{path}: {exp.experiment} has head '{exp.head}' but its source "
                f"{exp.source} has '{table[exp.source].head}'; a loaded model keeps its head "
                f"(init backbone:{exp.source} takes only its backbone, with a new head)"
            )
    return table


def select_experiments(table: dict[str, Experiment], select) -> list[str]:
    if select == "all":
        return list(table)
    if select == "paper":
        return [k for k, e in table.items() if e.paper_id != "-"]
    unknown = [s for s in select if s not in table]
    if unknown:
        raise ConfigError(
            f"experiments.select: unknown experiment id(s) {unknown}; known ids are listed in "
            f"the experiments table: {sorted(table)}"
        )
    return list(select)
