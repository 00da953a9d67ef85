"""What a run's privacy guarantee covers over its lineage: the synthetic data in its training or its
source's, whether that source was private, and the sentence that says so."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mammodp.config import Experiment

from . import models
from .spec import Job

log = logging.getLogger(__name__)

# A backbone: source whose frozen chain ends at pretrained weights: no data of this study in them.
PRETRAINED_ONLY = {"dp": None, "synthetic_in_lineage": False, "pretrained_weights": True}


def read_source_privacy(
    exp: Experiment, source_model: str | None, backbone_model: str | None = None
) -> dict | None:
    """The privacy.json of the run whose training is in what this run loads: the source run
    (``from:``: its head and backbone) or, for ``backbone:``, the run that trained that backbone
    (a frozen source passes on its own source's; ``PRETRAINED_ONLY`` when that is pretrained
    weights). None when unknown (no privacy.json beside the model)."""
    if not source_model:
        return None
    path = Path(source_model)
    if not exp.loads_source_head:
        path, ckpt = models.backbone_origin(path, origin=backbone_model)
        if ckpt["backbone"] is None:
            return PRETRAINED_ONLY
    path = path.with_name("privacy.json")
    return json.loads(path.read_text()) if path.is_file() else None


def privacy_lineage(exp: Experiment, job: Job, source: dict | None) -> dict:
    """What the guarantee covers, over the whole lineage: this run's training set, the synthetic
    data in it or in its source model's training, and whether that source was private (``source``:
    ``read_source_privacy``'s record; for backbone:, of the run that trained the backbone)."""
    synthetic_here = "synthetic" in exp.train_data
    if exp.source is None:
        source_dp, synthetic_before = None, False
    elif source is None:  # a source model from elsewhere: nothing known about its training
        source_dp, synthetic_before = None, None
    else:
        source_dp = None if source.get("pretrained_weights") else bool(source.get("dp"))
        synthetic_before = bool(
            source.get("synthetic_in_lineage", source.get("synthetic_in_training"))
        )
    lineage = synthetic_here or synthetic_before  # None: unknown (a source from elsewhere)
    out = {
        "synthetic_in_training": synthetic_here,
        "pretrained_from": exp.source,
        # What came from the source: its whole model (from:) or its backbone (backbone:).
        "source_loaded": exp.source and ("model" if exp.loads_source_head else "backbone"),
        "source_dp": source_dp,
        "synthetic_in_lineage": lineage,
        "generator_private": bool(job.synthetic_generator_private) if lineage else None,
    }
    out["note"] = _privacy_note(exp, out, source)
    return out


def _privacy_note(exp: Experiment, lineage: dict, source: dict | None) -> str:
    if exp.dp_epsilon is None:
        return "non-private training"
    note = (
        f"DP-SGD on the head; (epsilon, delta) accounts for the {exp.train_data} training set "
        "as one dataset."
    )
    if lineage["synthetic_in_lineage"] and not lineage["generator_private"]:
        where = "training" if lineage["synthetic_in_training"] else "source model's training"
        note += (
            f" Synthetic data in the {where} came from a generator NOT trained privately: the "
            "guarantee does not cover the real patients the generator was trained on."
        )
    return note + _source_note(exp, lineage, source)


def _source_note(exp: Experiment, lineage: dict, source: dict | None) -> str:
    if not exp.source or lineage["source_dp"]:
        return ""
    what = "Initialised from" if exp.loads_source_head else "Backbone from"
    if source is not None and source.get("pretrained_weights"):
        return (
            f" {what} {exp.source}: the configured backbone, passed on unchanged by frozen sources."
        )
    by = (source or {}).get("experiment")
    via = f" (trained in {by})" if by and by != exp.source else ""
    if lineage["source_dp"] is False:
        data = (source or {}).get("train_data")
        state = "was not private" + (f" ({data} crops)" if data else "")
    else:
        state = "is not known here"
    return (
        f" {what} {exp.source}{via}, whose training {state}: the guarantee does not cover the "
        "data it was trained on."
    )
