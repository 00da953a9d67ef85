"""One classifier job: an (experiment, seed) pair of the experiment table, trained as the study
did (DESIGN §5) and tested on CBIS-DDSM test and the external set.

Frozen-backbone experiments train only the head. Their backbone is a fixed function, so its pooled
features are computed once per image and flip variant (none, h, v, hv) in eval mode, and each
epoch draws one variant per training sample, which is exactly random horizontal and vertical
flips with p = 0.5 each. Full experiments train every layer on images.

Under DP (Opacus, Poisson sampling, ``make_private_with_epsilon`` over the planned epochs) a
checkpoint is eligible only while the spent epsilon lies in the configured window around the
target; among eligible epochs the best validation AUPRC wins (ties: lower validation loss).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from . import models
from .errors import UserError
from .fileio import sha256_file, write_csv, write_json
from .metrics import classification_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSpec:
    epochs: int = 300
    batch_size: int = 128
    lr: float = 1e-5
    weight_decay: float = 1e-8
    label_smoothing: float = 0.1
    feature_batch_size: int = 64


@dataclass(frozen=True)
class DPSpec:
    delta: float = 1e-4
    max_grad_norm: float = 1.0
    accountant: str = "rdp"
    epsilon_window: tuple[float, float] = (0.75, 1.05)
    secure_mode: bool = False


@dataclass(frozen=True)
class Experiment:
    experiment: str
    paper_id: str
    group: str
    train_data: str  # real | real+synthetic | synthetic
    trained: str  # head | all
    head: str  # mlp | linear
    init: str  # backbone | from:<experiment>
    dp_epsilon: float | None
    description: str = ""

    @property
    def source(self) -> str | None:
        return self.init.split(":", 1)[1] if self.init.startswith("from:") else None


@dataclass
class Job:
    experiment: Experiment
    seed: int
    model: models.ModelSpec
    train: TrainSpec
    dp: DPSpec
    device: str = "cpu"
    threads: int = 1
    synthetic_generator_private: bool = False
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- data


def select_data(manifest: pd.DataFrame, synthetic: pd.DataFrame | None, train_data: str):
    """(train, val, {test_name: test}) frames with ``path`` and ``label`` (and ids)."""
    cbis = manifest[manifest["dataset"] == "cbis-ddsm"]
    real_train = cbis[cbis["split"] == "train"].assign(source="real")
    val = cbis[cbis["split"] == "val"]
    tests = {
        name: part.reset_index(drop=True)
        for name, part in manifest[manifest["split"] == "test"].groupby("dataset", sort=True)
    }
    parts = []
    if train_data in ("real", "real+synthetic"):
        parts.append(real_train)
    if train_data in ("synthetic", "real+synthetic"):
        if synthetic is None or synthetic.empty:
            raise UserError(f"train data '{train_data}' needs synthetic crops; none were given.")
        parts.append(synthetic.assign(source="synthetic", lesion_id="", patient_id=""))
    train = pd.concat(parts, ignore_index=True)
    for name, df in (("train", train), ("val", val)):
        if set(df["label"].astype(int)) != {0, 1}:
            raise UserError(f"the {name} set needs both classes; it has {len(df)} crops.")
    return train.reset_index(drop=True), val.reset_index(drop=True), tests


# ----------------------------------------------------------------------------- training


def _evaluate(fn, x: torch.Tensor, y: torch.Tensor, loss_fn, batch: int, device: str):
    """(mean loss, p_benign) of a model function over a tensor, in batches, without grads."""
    losses, probs = [], []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            logits = fn(x[start : start + batch].to(device)).float().cpu()
            losses.append(loss_fn(logits, y[start : start + batch]).item() * len(logits))
            probs.append(torch.softmax(logits, dim=1)[:, 1])
    return float(np.sum(losses) / max(len(x), 1)), torch.cat(probs).numpy()


def _choose(history: list[dict], dp: bool) -> int:
    """Index of the chosen epoch: best val AUPRC among eligible epochs, ties to lower loss."""
    eligible = [i for i, h in enumerate(history) if h["eligible"]] if dp else range(len(history))
    eligible = list(eligible) or [len(history) - 1]

    def key(i):
        auprc = history[i]["val_auprc"]
        return (-(auprc if not math.isnan(auprc) else -1.0), history[i]["val_loss"], i)

    return min(eligible, key=key)


def _make_private(job: Job, module, optimizer, loader):
    from opacus import PrivacyEngine

    with warnings.catch_warnings():
        # Opacus warns whenever secure_mode is off; it is a documented config choice here.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant=job.dp.accountant, secure_mode=job.dp.secure_mode)
    noise_gen = None if job.dp.secure_mode else torch.Generator().manual_seed(job.seed + 7919)
    module, optimizer, loader = engine.make_private_with_epsilon(
        module=module,
        optimizer=optimizer,
        data_loader=loader,
        target_epsilon=job.experiment.dp_epsilon,
        target_delta=job.dp.delta,
        epochs=job.train.epochs,
        max_grad_norm=job.dp.max_grad_norm,
        poisson_sampling=True,
        noise_generator=noise_gen,
    )
    return engine, module, optimizer, loader


def train_head(
    job: Job,
    feats: torch.Tensor,
    y: torch.Tensor,
    val_feats: torch.Tensor,
    val_y: torch.Tensor,
    head: nn.Module,
):
    """Train a head on cached features (N, 4 flip variants, F). Returns (best head state,
    history, privacy info)."""
    t = job.train
    gen = torch.Generator().manual_seed(job.seed)
    variant_gen = torch.Generator().manual_seed(job.seed + 1)
    loader = DataLoader(
        TensorDataset(feats, y), batch_size=t.batch_size, shuffle=True, generator=gen
    )
    optimizer = torch.optim.AdamW(head.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
    dp = job.experiment.dp_epsilon is not None
    engine = None
    module = head
    if dp:
        engine, module, optimizer, loader = _make_private(job, head, optimizer, loader)
    history, states = [], []
    for epoch in range(1, t.epochs + 1):
        module.train()
        total, count = 0.0, 0
        for xb, yb in loader:
            if len(xb) == 0:  # Poisson sampling can draw an empty batch; Opacus still steps
                xb = xb.reshape(0, feats.shape[-1])
            else:
                pick = torch.randint(0, xb.shape[1], (len(xb),), generator=variant_gen)
                xb = xb[torch.arange(len(xb)), pick]
            optimizer.zero_grad()
            loss = loss_fn(module(xb), yb) if len(xb) else module(xb).sum() * 0.0
            with warnings.catch_warnings():
                # Opacus' hooks on a head fed with cached features (inputs need no gradient).
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                loss.backward()
            optimizer.step()
            total += loss.item() * len(xb)
            count += len(xb)
        module.eval()
        val_loss, val_p = _evaluate(module, val_feats, val_y, loss_fn, 4096, "cpu")
        m = classification_metrics(val_y.numpy(), val_p)
        eps = engine.get_epsilon(job.dp.delta) if dp else None
        lo, hi = job.dp.epsilon_window
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / max(count, 1),
                "val_loss": val_loss,
                "val_auroc": m["auroc"],
                "val_auprc": m["auprc"],
                "epsilon": eps,
                "eligible": (lo * job.experiment.dp_epsilon < eps < hi * job.experiment.dp_epsilon)
                if dp
                else True,
            }
        )
        states.append(copy.deepcopy(head.state_dict()))
    chosen = _choose(history, dp)
    privacy = (
        _privacy_report(job, engine, optimizer, loader, history, chosen, len(y)) if dp else None
    )
    return states[chosen], history, chosen, privacy


def train_full(
    job: Job,
    model: models.Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
):
    """Train every layer on images with random flips. Returns (best state, history, chosen)."""
    t = job.train
    gen = torch.Generator().manual_seed(job.seed)
    device = job.device
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
    use_amp = device.startswith("cuda")
    history, states = [], []
    for epoch in range(1, t.epochs + 1):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for start in range(0, len(x), t.batch_size):
            idx = perm[start : start + t.batch_size]
            xb = x[idx].clone()
            fh = torch.rand(len(idx), generator=gen) < 0.5
            fv = torch.rand(len(idx), generator=gen) < 0.5
            xb[fh] = xb[fh].flip(-1)
            xb[fv] = xb[fv].flip(-2)
            optimizer.zero_grad()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                loss = loss_fn(model(xb.to(device)).float(), y[idx].to(device))
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        model.eval()
        val_loss, val_p = _evaluate(model, val_x, val_y, loss_fn, t.feature_batch_size, device)
        m = classification_metrics(val_y.numpy(), val_p)
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / len(x),
                "val_loss": val_loss,
                "val_auroc": m["auroc"],
                "val_auprc": m["auprc"],
                "epsilon": None,
                "eligible": True,
            }
        )
        states.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
    chosen = _choose(history, dp=False)
    return states[chosen], history, chosen


def _privacy_report(job: Job, engine, optimizer, loader, history, chosen: int, n_train: int):
    sample_rate = float(getattr(loader, "sample_rate", job.train.batch_size / n_train))
    steps_per_epoch = len(loader)
    return {
        "dp": True,
        "library": "opacus",
        "accountant": job.dp.accountant,
        "noise_multiplier": float(optimizer.noise_multiplier),
        "max_grad_norm": job.dp.max_grad_norm,
        "sample_rate": sample_rate,
        "poisson_sampling": True,
        "expected_batch_size": sample_rate * n_train,
        "n_train": n_train,
        "steps_per_epoch": steps_per_epoch,
        "planned_epochs": job.train.epochs,
        "steps": steps_per_epoch * job.train.epochs,
        "steps_at_chosen_epoch": steps_per_epoch * (chosen + 1),
        "delta": job.dp.delta,
        "target_epsilon": job.experiment.dp_epsilon,
        "epsilon_window": list(job.dp.epsilon_window),
        "chosen_epoch": chosen + 1,
        "epsilon_at_chosen_epoch": history[chosen]["epsilon"],
        "epsilon_final": history[-1]["epsilon"],
        "chosen_in_window": bool(history[chosen]["eligible"]),
        "secure_mode": job.dp.secure_mode,
    }


# ----------------------------------------------------------------------------- the job


def run(
    job: Job,
    manifest: pd.DataFrame,
    synthetic: pd.DataFrame | None,
    source_model: str | None,
    out_dir: str | os.PathLike,
) -> dict:
    """Train, select, test and write model.pt, metrics.json, predictions.csv, history.csv and
    privacy.json into ``out_dir``."""
    torch.set_num_threads(job.threads)
    torch.manual_seed(job.seed)
    np.random.seed(job.seed)
    exp = job.experiment
    if exp.dp_epsilon is not None and exp.trained != "head":
        raise UserError(
            f"experiment {exp.experiment}: DP is supported for head training only "
            "(the study's setting); set trained: head or dp_epsilon: none."
        )
    if exp.source and not source_model:
        raise UserError(
            f"experiment {exp.experiment} starts from {exp.source}: its model is missing"
        )
    out_dir = Path(out_dir)
    train, val, tests = select_data(manifest, synthetic, exp.train_data)
    size = job.model.input_size
    x_train = models.load_images(train["path"], size)
    y_train = torch.tensor(train["label"].astype(int).values)
    x_val = models.load_images(val["path"], size)
    y_val = torch.tensor(val["label"].astype(int).values)
    x_tests = {k: models.load_images(v["path"], size) for k, v in tests.items()}
    log.info(
        "%s seed %d: %d train (%s), %d val, tests %s",
        exp.experiment,
        job.seed,
        len(train),
        exp.train_data,
        len(val),
        {k: len(v) for k, v in tests.items()},
    )

    if exp.source:
        src_ckpt = models.load_checkpoint(source_model)
        if src_ckpt["head_type"] != exp.head:
            raise UserError(
                f"experiment {exp.experiment}: head '{exp.head}' differs from its source "
                f"{exp.source}'s head '{src_ckpt['head_type']}'; fix config/experiments.tsv."
            )
        drop = 0.0 if exp.trained == "head" else None
        backbone = models.load_backbone(source_model, drop)
        backbone_source = {
            "kind": "model",
            "path": str(source_model),
            "sha256": sha256_file(source_model),
        }
    else:
        src_ckpt = None
        backbone = models.create_backbone(job.model)
        backbone_source = {"kind": "pretrained", "pretrained": job.model.pretrained}
    torch.manual_seed(job.seed)  # head init depends on the run's seed only
    head = models.make_head(exp.head, backbone.num_features)
    if src_ckpt is not None:
        head.load_state_dict(src_ckpt["head"])  # the source's head: really load it
    model = models.Classifier(backbone, head)

    if exp.trained == "head":
        fb = job.train.feature_batch_size
        feats = models.backbone_features(backbone, x_train, batch_size=fb, device=job.device)
        val_feats = models.backbone_features(backbone, x_val, ("none",), fb, job.device)[:, 0]
        best, history, chosen, privacy = train_head(job, feats, y_train, val_feats, y_val, head)
        head.load_state_dict(best)
        test_probs = {}
        for name, xt in x_tests.items():
            ft = models.backbone_features(backbone, xt, ("none",), fb, job.device)[:, 0]
            with torch.no_grad():
                test_probs[name] = torch.softmax(head(ft), 1)[:, 1].numpy()
    else:
        best, history, chosen = train_full(job, model, x_train, y_train, x_val, y_val)
        privacy = None
        model.load_state_dict(best)
        model.eval()
        test_probs = {}
        loss_fn = nn.CrossEntropyLoss()
        for name, xt in x_tests.items():
            yt = torch.tensor(tests[name]["label"].astype(int).values)
            _, test_probs[name] = _evaluate(
                model, xt, yt, loss_fn, job.train.feature_batch_size, job.device
            )
    model.cpu()

    if privacy is None:
        privacy = {"dp": False}
    privacy.update(
        {
            "experiment": exp.experiment,
            "seed": job.seed,
            "train_data": exp.train_data,
            "synthetic_in_training": "synthetic" in exp.train_data,
            "generator_private": bool(job.synthetic_generator_private)
            if "synthetic" in exp.train_data
            else None,
            "note": _privacy_note(exp, job),
        }
    )
    pred_rows = []
    metrics = {
        "experiment": exp.experiment,
        "paper_id": exp.paper_id,
        "group": exp.group,
        "seed": job.seed,
        "dp_epsilon": exp.dp_epsilon,
        "chosen_epoch": chosen + 1,
        "epochs": job.train.epochs,
        "n_train": len(train),
        "val": {
            "auroc": history[chosen]["val_auroc"],
            "auprc": history[chosen]["val_auprc"],
            "loss": history[chosen]["val_loss"],
        },
        "test": {},
    }
    for name, probs in test_probs.items():
        labels = tests[name]["label"].astype(int).values
        metrics["test"][name] = classification_metrics(labels, probs)
        for (_, r), p in zip(tests[name].iterrows(), probs, strict=True):
            pred_rows.append(
                {
                    "dataset": name,
                    "lesion_id": r["lesion_id"],
                    "patient_id": r["patient_id"],
                    "label": int(r["label"]),
                    "p_benign": float(p),
                    "pred": int(p >= 0.5),
                }
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    models.save_checkpoint(
        out_dir / "model.pt",
        spec=job.model,
        head_type=exp.head,
        model=model,
        backbone_trained=exp.trained == "all",
        backbone_source=backbone_source,
    )
    write_csv(out_dir / "history.csv", pd.DataFrame(history))
    write_csv(out_dir / "predictions.csv", pd.DataFrame(pred_rows))
    write_json(out_dir / "privacy.json", _finite(privacy))
    write_json(out_dir / "metrics.json", _finite(metrics))
    return metrics


def _privacy_note(exp: Experiment, job: Job) -> str:
    if exp.dp_epsilon is None:
        return "non-private training"
    note = (
        f"DP-SGD on the head; (epsilon, delta) accounts for the {exp.train_data} training set "
        "as one dataset."
    )
    if "synthetic" in exp.train_data and not job.synthetic_generator_private:
        note += (
            " The synthetic data's generator was NOT trained privately: the guarantee does not "
            "cover the real patients the generator was trained on."
        )
    if exp.source:
        note += (
            f" Initialised from {exp.source}, whose training is not covered by this guarantee "
            "if it used real data without DP."
        )
    return note


def _finite(obj):
    """JSON has no NaN: undefined values become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
