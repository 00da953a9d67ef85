"""One classifier job: an (experiment, seed) pair of the experiment table, trained as the study
did (`gan_compare/scripts/train_test_classifier.py`; what differs: the README's table) and
tested on CBIS-DDSM test and the external set.

Frozen-backbone experiments train only the head. Their backbone is a fixed function, so its pooled
features are computed once per image and flip variant (none, h, v, hv) in eval mode (rule
``backbone_features``, shared by every experiment with the same backbone), and each epoch draws
one variant per training sample: exactly random horizontal and vertical flips with p = 0.5 each.
``train.faithful`` instead runs the original loop (the frozen backbone in train mode, stochastic
depth active, a backbone forward per step). Full experiments train every layer on images.

A run starts from the configured backbone, from a source experiment's model (``from:``, backbone
and head: the study's dbr156-160, ``reinit_head: False``) or from its backbone under a new head
seeded by the run's seed (``backbone:``: the study's dbr155, whose ``swin_t_imagenet_frozen``
config loaded dbr15's checkpoint minus its non-matching head keys, then ``freeze_layers`` froze it
and made a new MLP head; gan_compare/constants.py load_pretrained_weights, freeze_layers).

Under DP (Opacus' Poisson sampling and accountant; ``make_private_with_epsilon`` over the planned
epochs) a checkpoint is eligible only while the spent epsilon lies in the configured window
around the target; among eligible epochs the best validation AUPRC wins (ties: lower validation
loss). Clipping runs either through Opacus' per-sample gradients or, for linear heads, through
the equivalent book-keeping path (``dp.clipping``).

Every ``train.checkpoint_every`` epochs the training state (weights, optimiser, RNGs, the privacy
accountant, the best checkpoint so far) is saved in ``<out_dir>/.state``; a killed job resumes
from it and ends with the same result as an uninterrupted run. A state is resumed only by the very
same job on the very same data: its settings (``Job.key``) and a fingerprint of the tensors trained
and validated on, their labels and the source model file (``training_state.data_fingerprint``).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from mammodp import images, training_state
from mammodp.config import RUN_FILES, Experiment
from mammodp.errors import UserError
from mammodp.fileio import json_safe, sha256_file, write_csv, write_json

from . import models, privacy_notes
from .dp import row_units
from .features import feature_width, features_for, load_feature_cache
from .lineage import privacy_lineage, read_source_privacy
from .metrics import bootstrap_ci, classification_metrics
from .selection import evaluate
from .spec import Job, select_data
from .trainer import history_frame
from .training import train_full, train_head

log = logging.getLogger(__name__)


def _initial_backbone(
    job: Job, source_model: str | None, backbone_model: str | None = None, build: bool = True
):
    """(backbone, source checkpoint or None, sha256 of what the backbone was loaded from or None,
    the ``backbone_source`` reference for this run's checkpoint). ``build=False``: the backbone
    is None (a head on cached features never runs it; building Swin-T, and importing
    torchvision for it, would cost a head job a few seconds). ``from:`` and ``backbone:``
    take the source model's backbone, with this job's stochastic depth (the faithful loop runs
    it in train mode); ``from:`` needs the source's head type (its head is loaded too).
    ``backbone_model``: the checkpoint holding the source's frozen backbone, as declared; this
    run's checkpoint refers to that one, so every frozen chain is one link long."""
    exp = job.experiment
    if not exp.source:
        backbone = models.create_backbone(job.model) if build else None
        # Local weights may change under the same path: their content is part of the data.
        weights = job.model.weights_file
        sha = sha256_file(weights) if weights and job.model.pretrained != "none" else None
        return backbone, None, sha, {"kind": "pretrained", "pretrained": job.model.pretrained}
    src_ckpt = models.load_checkpoint(source_model)
    if exp.loads_source_head and src_ckpt["head_type"] != exp.head:
        raise UserError(
            f"experiment {exp.experiment}: head '{exp.head}' differs from its source "
            f"{exp.source}'s head '{src_ckpt['head_type']}'; fix config/experiments.tsv "
            f"(or use init backbone:{exp.source} for a new head)."
        )
    backbone = (
        models.load_backbone(source_model, job.model.drop_path_rate, backbone_model)
        if build
        else None
    )
    sha = sha256_file(source_model)
    origin, origin_ckpt = models.backbone_origin(source_model, src_ckpt, backbone_model)
    if origin_ckpt["backbone"] is None:  # pretrained weights, passed on: no checkpoint to read
        return backbone, src_ckpt, sha, origin_ckpt["backbone_source"]
    ref = {"kind": "model", "path": str(origin), "sha256": sha256_file(origin)}
    return backbone, src_ckpt, sha, ref


@dataclass
class JobData:
    """What a job trains, validates and tests on: the manifest rows, and the labels trained and
    validated on."""

    train: pd.DataFrame
    val: pd.DataFrame
    tests: dict[str, pd.DataFrame]
    y_train: torch.Tensor
    y_val: torch.Tensor

    def fingerprint(self, x_train, x_val, source_sha256: str | None) -> str:
        """The resume key's data part: the inputs, their labels and the source model file."""
        return training_state.data_fingerprint(
            x_train, self.y_train, x_val, self.y_val, source_sha256=source_sha256
        )


def run(
    job: Job,
    manifest: pd.DataFrame,
    synthetic: pd.DataFrame | None,
    source_model: str | None,
    out_dir: str | os.PathLike,
    features: list[str] | None = None,
    stop_after: int | None = None,
    generator_privacy: dict | None = None,
    *,
    outputs: dict[str, str] | None = None,
    backbone_model: str | None = None,
    source_privacy: dict | None = None,
) -> dict:
    """Train, select, test and write model.pt, metrics.json, predictions.csv, history.csv and
    privacy.json into ``out_dir`` (or to the paths ``outputs`` names, keys as ``RUN_FILES``).
    ``features``: cached backbone features (frozen, non-faithful experiments); computed here when
    not given. ``generator_privacy``: the DP-MCGAN's privacy.json record, when its crops are in the
    training set (for the lineage's epsilon). ``backbone_model``: see ``_initial_backbone``.
    ``source_privacy``: the privacy.json of the run whose training this run loads (see
    ``read_source_privacy``, which reads it beside the source model when not given)."""
    torch.set_num_threads(job.threads)
    torch.manual_seed(job.seed)
    np.random.seed(job.seed)
    exp = job.experiment
    _check_supported(exp, source_model)
    out = {k: Path(outputs[k]) if outputs else Path(out_dir) / v for k, v in RUN_FILES.items()}
    state_dir = out["model"].parent / ".state"  # resume state: removed once the run is done
    data = _load_data(job, manifest, synthetic)
    cache = _feature_cache(job, features)
    model, source_sha256, backbone_source = _initial_model(job, source_model, backbone_model, cache)
    if exp.trained == "head":
        tr, test_probs = _train_and_test_head(
            job, model, data, cache, source_sha256, state_dir, stop_after, out["history"]
        )
    else:
        tr, test_probs = _train_and_test_full(
            job, model, data, source_sha256, state_dir, stop_after, out["history"]
        )
    model.cpu()
    privacy = tr.privacy() or {"dp": False}
    if source_privacy is None:
        source_privacy = read_source_privacy(exp, source_model, backbone_model)
    _complete_privacy(privacy, job, manifest, data.train, generator_privacy, source_privacy)
    metrics = _metrics(job, tr, data, test_probs)
    predictions = _predictions(data.tests, test_probs)
    _save_model(out["model"], job, model, backbone_source)
    write_csv(out["history"], history_frame(tr.history, tr.dp))
    write_csv(out["predictions"], predictions)
    write_json(out["privacy"], json_safe(privacy))
    write_json(out["metrics"], json_safe(metrics))
    shutil.rmtree(state_dir, ignore_errors=True)  # done: nothing to resume
    return metrics


def _check_supported(exp: Experiment, source_model: str | None) -> None:
    if exp.dp_epsilon is not None and exp.trained != "head":
        raise UserError(
            f"experiment {exp.experiment}: DP is supported for head training only "
            "(the study's setting); set trained: head or dp_epsilon: none."
        )
    if exp.source and not source_model:
        raise UserError(
            f"experiment {exp.experiment} starts from {exp.source}: its model is missing"
        )


def _load_data(job: Job, manifest: pd.DataFrame, synthetic: pd.DataFrame | None) -> JobData:
    exp = job.experiment
    train, val, tests = select_data(manifest, synthetic, exp.train_data)
    y_train = torch.tensor(train["label"].astype(int).values)
    y_val = torch.tensor(val["label"].astype(int).values)
    log.info(
        "%s seed %d: %d train (%s), %d val, tests %s",
        exp.experiment,
        job.seed,
        len(train),
        exp.train_data,
        len(val),
        {k: len(v) for k, v in tests.items()},
    )
    return JobData(train, val, tests, y_train, y_val)


def _feature_cache(job: Job, features: list[str] | None) -> dict | None:
    """The cached features a frozen head trains on; None where the job computes its inputs
    (full training, the faithful loop, no feature files)."""
    if job.experiment.trained != "head" or not features or job.train.faithful:
        return None
    return load_feature_cache(features)


def _initial_model(
    job: Job, source_model: str | None, backbone_model: str | None, cache: dict | None = None
):
    """(classifier, sha256 of what the backbone was loaded from, its ``backbone_source``): the
    initial backbone under a new head, or the source's head for ``from:``. With a feature
    ``cache`` the classifier's backbone is None: the cache stands for it."""
    exp = job.experiment
    backbone, src_ckpt, source_sha256, backbone_source = _initial_backbone(
        job, source_model, backbone_model, build=cache is None
    )
    torch.manual_seed(job.seed)  # head init depends on the run's seed only
    width = feature_width(cache) if backbone is None else backbone.num_features
    head = models.make_head(exp.head, width)
    if exp.loads_source_head:
        head.load_state_dict(src_ckpt["head"])  # from: the source's head: really load it
    return models.Classifier(backbone, head), source_sha256, backbone_source


def _train_and_test_head(
    job: Job,
    model: models.Classifier,
    data: JobData,
    cache: dict | None,
    source_sha256: str | None,
    state_dir: Path,
    stop_after: int | None,
    history_path: Path,
):
    """Train the head (the backbone stays frozen) on the feature ``cache`` or on features
    computed here, and select its epoch; (trainer, p_benign per test set)."""
    backbone, head = model.backbone, model.head
    # The resume key fingerprints the data as read: the cached features, or the images the
    # features are computed from here (on a GPU those need not be bitwise reproducible).
    if cache is not None:
        x_train, val_x, fingerprint, embed = _cached_head_inputs(data, cache, source_sha256)
    else:
        x_train, val_x, fingerprint, embed = _computed_head_inputs(
            job, backbone, data, source_sha256
        )
    dp = job.experiment.dp_epsilon is not None
    tr = train_head(
        job,
        head,
        x_train,
        data.y_train,
        val_x,
        data.y_val,
        state_dir,
        backbone if job.train.faithful else None,
        stop_after,
        fingerprint=fingerprint,
        units=row_units(data.train, job.dp.unit) if dp else None,
        history_path=history_path,
    )
    head.load_state_dict(tr.best_state)
    head.eval()
    test_probs = {}
    for name, df in data.tests.items():
        with torch.no_grad():
            test_probs[name] = torch.softmax(head(embed(df["path"])), 1)[:, 1].numpy()
    return tr, test_probs


def _cached_head_inputs(data: JobData, cache: dict, source_sha256: str | None):
    """(training features, validation features, fingerprint, embed) from the feature cache;
    ``embed(paths)``: the unflipped features of other images."""

    def embed(paths) -> torch.Tensor:
        return features_for(cache, list(paths), "evaluation")[:, 0]

    x_train = features_for(cache, list(data.train["path"]), "training")
    val_x = embed(data.val["path"])
    return x_train, val_x, data.fingerprint(x_train, val_x, source_sha256), embed


def _computed_head_inputs(job: Job, backbone: nn.Module, data: JobData, source_sha256: str | None):
    """As ``_cached_head_inputs``, the features computed here from the images (the faithful
    loop trains on the images themselves); only the features are kept."""
    size, fb = job.model.input_size, job.train.feature_batch_size

    def embed(paths, imgs=None) -> torch.Tensor:
        imgs = images.load_images(paths, size) if imgs is None else imgs
        return models.backbone_features(
            backbone, imgs, ("none",), fb, job.device, job.train.feature_precision
        )[:, 0]

    train_imgs = images.load_images(data.train["path"], size)
    val_imgs = images.load_images(data.val["path"], size)
    fingerprint = data.fingerprint(train_imgs, val_imgs, source_sha256)
    x_train = (
        train_imgs
        if job.train.faithful
        else models.backbone_features(
            backbone,
            train_imgs,
            batch_size=fb,
            device=job.device,
            precision=job.train.feature_precision,
        )
    )
    return x_train, embed(data.val["path"], val_imgs), fingerprint, embed


def _train_and_test_full(
    job: Job,
    model: models.Classifier,
    data: JobData,
    source_sha256: str | None,
    state_dir: Path,
    stop_after: int | None,
    history_path: Path,
):
    """Train every layer on images and select the epoch; (trainer, p_benign per test set)."""
    size, fb = job.model.input_size, job.train.feature_batch_size
    x_train = images.load_images(data.train["path"], size)
    x_val = images.load_images(data.val["path"], size)
    tr = train_full(
        job,
        model,
        x_train,
        data.y_train,
        x_val,
        data.y_val,
        state_dir,
        stop_after,
        fingerprint=data.fingerprint(x_train, x_val, source_sha256),
        history_path=history_path,
    )
    model.load_state_dict(tr.best_state)
    model.eval()
    test_probs = {}
    for name, df in data.tests.items():
        yt = torch.tensor(df["label"].astype(int).values)
        xt = images.load_images(df["path"], size)
        _, test_probs[name] = evaluate(model, xt, yt, nn.CrossEntropyLoss(), fb, job.device)
    return tr, test_probs


def _complete_privacy(
    privacy: dict,
    job: Job,
    manifest: pd.DataFrame,
    train: pd.DataFrame,
    generator_privacy: dict | None,
    source_record: dict | None,
) -> None:
    """Complete the trainer's privacy record: the run, its lineage and what the guarantee
    covers."""
    exp = job.experiment
    privacy.update(
        {
            "experiment": exp.experiment,
            "seed": job.seed,
            "train_data": exp.train_data,
            **privacy_lineage(exp, job, source_record),
        }
    )
    parts = privacy_notes.lineage_parts(exp, privacy, generator_privacy, source_record)
    # The generator and the sources trained on the real training crops; this run on ``train``.
    real_train = manifest[(manifest["split"] == "train") & (manifest["dataset"] == "cbis-ddsm")]
    privacy.update(privacy_notes.compose(parts, privacy_notes.max_crops_per_patient(real_train)))
    if privacy["dp"]:
        k = privacy_notes.max_crops_per_patient(train)
        eps = privacy["epsilon_final"]
        privacy.update(privacy_notes.patient_guarantee(eps, job.dp.delta, k, job.dp.unit))
        privacy["warnings"] = privacy_notes.dp_warnings(privacy)
        privacy["not_covered"] = list(privacy_notes.NOT_COVERED)
    elif privacy["lineage_private"]:  # not DP here; every training before it was
        privacy["warnings"] = privacy_notes.lineage_warnings(privacy)
        privacy["not_covered"] = list(privacy_notes.LINEAGE_NOT_COVERED)


def _metrics(job: Job, tr, data: JobData, test_probs: dict) -> dict:
    """metrics.json: the chosen epoch's validation and each test set's metrics (bootstrap
    CIs)."""
    exp, best = job.experiment, tr.best
    metrics = {
        "experiment": exp.experiment,
        "paper_id": exp.paper_id,
        "group": exp.group,
        "seed": job.seed,
        "dp_epsilon": exp.dp_epsilon,
        "chosen_epoch": best["epoch"],
        "epochs": job.train.epochs,
        "n_train": len(data.train),
        "val": {"auroc": best["val_auroc"], "auprc": best["val_auprc"], "loss": best["val_loss"]},
        "test": {},
    }
    for name, probs in test_probs.items():
        labels = data.tests[name]["label"].astype(int).values
        metrics["test"][name] = classification_metrics(labels, probs)
        metrics["test"][name]["ci95"] = bootstrap_ci(
            labels, probs, job.train.bootstrap, seed=job.seed
        )
    return metrics


def _predictions(tests: dict[str, pd.DataFrame], test_probs: dict) -> pd.DataFrame:
    """predictions.csv: a row per test image."""
    rows = []
    for name, probs in test_probs.items():
        for r, p in zip(tests[name].itertuples(), probs, strict=True):
            rows.append(
                {
                    "dataset": name,
                    "lesion_id": r.lesion_id,
                    "patient_id": r.patient_id,
                    "label": int(r.label),
                    "p_benign": float(p),
                    "pred": int(p >= 0.5),
                }
            )
    return pd.DataFrame(rows)


def _save_model(path: Path, job: Job, model: models.Classifier, backbone_source: dict) -> None:
    exp = job.experiment
    models.save_checkpoint(
        path,
        spec=job.model,
        head_type=exp.head,
        model=model,
        backbone_trained=exp.trained == "all",
        backbone_source=backbone_source,
    )
