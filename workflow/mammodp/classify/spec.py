"""The settings of one classifier job (an (experiment, seed) pair of the experiment table: the
model, training and DP settings its resume key is made of) and the crops it trains, validates
and tests on."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field

import pandas as pd

from mammodp.config import Experiment
from mammodp.errors import UserError

from . import models

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSpec:
    epochs: int = 300
    batch_size: int = 128
    lr: float = 1e-5
    weight_decay: float = 1e-8
    label_smoothing: float = 0.1
    feature_batch_size: int = 64
    feature_precision: str = "fp32"  # frozen-backbone features: fp32 | bf16 (autocast)
    checkpoint_every: int = 10
    faithful: bool = False
    bootstrap: int = 1000
    precision: str = "fp32"  # full fine-tuning on a GPU: fp32 (the original) | bf16 (autocast)


@dataclass(frozen=True)
class DPSpec:
    delta: float = 1e-4
    max_grad_norm: float = 1.0
    accountant: str = "rdp"
    epsilon_window: tuple[float, float] = (0.75, 1.05)
    secure_mode: bool = False
    clipping: str = "bookkeeping"  # bookkeeping | opacus
    unit: str = "crop"  # the unit of privacy: crop | patient (Poisson over, clipped per patient)


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

    def key(self) -> str:
        d = {
            "experiment": asdict(self.experiment),
            "seed": self.seed,
            "model": asdict(self.model),
            "train": asdict(self.train),
            "dp": asdict(self.dp),
        }
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


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
