"""The repository's paths, the study's published counts and the configs the tests run."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import yaml
from snakemake.utils import update_config

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "workflow") not in sys.path:
    sys.path.insert(0, str(REPO / "workflow"))
SHARED = REPO.parent / "shared" / "data"
TINY_CONFIG = REPO / ".test" / "config" / "config.yaml"
# Crops per (dataset, split) of the study's published dataset16062024 (its README).
PUBLISHED_COUNTS = {
    ("bcdr", "test"): 1106,
    ("cbis-ddsm", "test"): 402,
    ("cbis-ddsm", "train"): 1104,
    ("cbis-ddsm", "val"): 192,
}


def demo_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def tiny_config(**overrides) -> dict:
    """The demo config with .test/config/config.yaml merged over it as Snakemake merges two
    --configfile files, then ``overrides`` ("a.b.c": value)."""
    c = copy.deepcopy(demo_config())
    update_config(c, yaml.safe_load(TINY_CONFIG.read_text()))
    # Absolute, so that a test may run it from a directory without config/.
    c["experiments"]["table"] = str(REPO / "config" / "experiments.tsv")
    for key, value in overrides.items():
        node = c
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return c
