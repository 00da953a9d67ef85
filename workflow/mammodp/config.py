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


def validate(instance, schema: dict, source: str) -> None:
    error = best_match(Draft202012Validator(schema).iter_errors(instance))
    if error is not None:
        desc = error.schema.get("description") if isinstance(error.schema, dict) else None
        hint = f" ({desc})" if desc else ""
        raise ConfigError(f"invalid config in {source}: {_describe(error)}{hint}")


def validate_config(config: dict, source: str = "config", schema_dir=SCHEMA_DIR) -> None:
    """Schema validation plus the cross-field checks a schema cannot express."""
    validate(config, load_schema("config.schema.yaml", schema_dir), source)
    lo, hi = config["classifier"]["dp"]["epsilon_window"]
    if not lo < hi:
        raise ConfigError(
            f"invalid config in {source}: classifier.dp.epsilon_window = [{lo}, {hi}]: "
            "the lower bound must be below the upper bound"
        )
    m = config["synthesis"]["mcgan"]
    if not m["real_label_low"] < m["real_label_high"]:
        raise ConfigError(
            f"invalid config in {source}: synthesis.mcgan.real_label_low must be below "
            "real_label_high"
        )
    dp = config["classifier"]["dp"]
    if dp["secure_mode"]:
        raise ConfigError(SECURE_MODE_UNAVAILABLE.format(source=source))
    if dp["unit"] == "patient" and dp["clipping"] != "bookkeeping":
        raise ConfigError(
            f"invalid config in {source}: classifier.dp.unit = patient clips each patient's "
            "summed gradient, which only clipping: bookkeeping does; set clipping: bookkeeping"
        )
    split_file = config["data"]["split"]["file"]
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
