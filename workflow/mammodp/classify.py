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
and validated on, their labels and the source model file (``models.data_fingerprint``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import models, privacy_notes
from .bookkeeping import BookKeepingDP
from .config import RUN_FILES, Experiment
from .errors import UserError
from .fileio import atomic_path, sha256_file, write_csv, write_json
from .metrics import bootstrap_ci, classification_metrics, fast_metrics
from .progress import EpochClock, Every

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


def feature_file(paths, features: torch.Tensor) -> dict:
    """What ``backbone_features`` saves: the (N, 4, F) features of the images at ``paths``,
    keyed by their content (sha256), so that a job that sees the images at other paths (a
    module prefix, a storage plugin's copy) finds them."""
    return {
        "sha256": [sha256_file(p) for p in paths],
        "features": features,
        "variants": list(models.FLIPS),
    }


def load_feature_cache(paths: list[str | Path]) -> dict[str, torch.Tensor]:
    """image sha256 -> (4 flip variants, F) features from ``backbone_features`` files (keyed by
    content: the job that computed them may have seen the images at another path)."""
    table: dict[str, torch.Tensor] = {}
    for p in paths:
        blob = torch.load(p, map_location="cpu", weights_only=True)
        if "sha256" not in blob:
            raise UserError(f"{p}: features of an older version of this workflow; rebuild them.")
        for i, key in enumerate(blob["sha256"]):
            table[key] = blob["features"][i]
    return table


def _features_for(table: dict[str, torch.Tensor], paths, what: str) -> torch.Tensor:
    keys = [sha256_file(p) for p in paths]
    missing = [p for p, k in zip(paths, keys, strict=True) if k not in table]
    if missing:
        raise UserError(
            f"{len(missing)} {what} image(s) have no cached features, e.g. {missing[:2]}; "
            "rebuild results/features (the crops changed since they were computed)."
        )
    feats = torch.stack([table[k] for k in keys]) if len(keys) else torch.empty(0)
    if what == "training" and feats.isnan().any():
        raise UserError(
            f"{what} images have cached features without their flips (computed as evaluation "
            "images: a manifest split other than train); rebuild results/features."
        )
    return feats


# ----------------------------------------------------------------------------- selection


def _better(new: dict, best: dict | None, dp: bool) -> bool:
    """Is epoch ``new`` a better checkpoint than ``best``? Under DP only eligible epochs count
    (an ineligible best is replaced by any eligible epoch); then higher val AUPRC, then lower val
    loss; the earlier epoch on a full tie."""
    if best is None:
        return True
    if dp and new["eligible"] != best["eligible"]:
        return new["eligible"]

    def score(h):
        auprc = h["val_auprc"]
        return (auprc if auprc is not None and not math.isnan(auprc) else -1.0, -h["val_loss"])

    return score(new) > score(best)


def _evaluate(fn, x: torch.Tensor, y: torch.Tensor, loss_fn, batch: int, device: str):
    """(mean loss, p_benign) of a model function over a tensor, in batches, without grads."""
    losses, probs = [], []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            logits = fn(x[start : start + batch].to(device)).float().cpu()
            losses.append(loss_fn(logits, y[start : start + batch]).item() * len(logits))
            probs.append(torch.softmax(logits, dim=1)[:, 1])
    p = torch.cat(probs).numpy() if probs else np.zeros(0)
    return float(np.sum(losses) / max(len(x), 1)), p


# ----------------------------------------------------------------------------- training


class _Trainer:
    """The epoch loop shared by head and full training: validation, selection, DP bookkeeping,
    checkpointing of the whole state every few epochs, resume."""

    def __init__(
        self,
        job: Job,
        state_dir: Path,
        module: nn.Module,
        n_train: int,
        data: str,
        history_path: Path | None = None,
    ):
        self.job = job
        self.history_path = history_path  # history.csv, rewritten as the epochs go
        self._write_due = Every(2.0)  # history.csv at most every 2 s (run() writes the last)
        self.clock: EpochClock | None = None
        self.data = data  # data_fingerprint of what is trained on: part of the resume key
        self.state_dir = state_dir
        self.module = module  # the module whose weights are selected and saved
        self.n_train = n_train
        self.dp = job.experiment.dp_epsilon is not None
        self.gen = torch.Generator().manual_seed(job.seed)  # shuffling / Poisson sampling
        self.aug = torch.Generator().manual_seed(job.seed + 1)  # flips
        self.noise = torch.Generator().manual_seed(job.seed + 7919)  # DP noise
        self.history: list[dict] = []
        self.best: dict | None = None
        self.best_state: dict | None = None
        self.accountant = None
        self.noise_multiplier = None
        self.sample_rate = None
        self.expected_batch_size = None  # the clipped sum's denominator, as Opacus sets it
        self.n_units = None  # dp.unit: patient: the number of privacy units (else the rows)
        self._rdp_per_step = None

    def state_file(self) -> Path:
        return self.state_dir / "state.pt"

    def save(self, epoch: int, optimizer) -> None:
        state = {
            "key": self.job.key(),
            "data": self.data,
            "epoch": epoch,
            "module": self.module.state_dict(),
            "optimizer": optimizer.state_dict(),
            "gen": self.gen.get_state(),
            "aug": self.aug.get_state(),
            "noise": self.noise.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if models.on_cuda(self.job.device) else None,
            "history": self.history,
            "best": self.best,
            "best_state": self.best_state,
            "accountant": self.accountant.state_dict() if self.accountant is not None else None,
        }
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.state_file()) as tmp:
            torch.save(state, tmp)

    def resume(self, optimizer) -> int:
        """Load a saved state of this very job; return the first epoch still to run."""
        state = models.load_training_state(
            self.state_file(),
            self.job.key(),
            self.data,
            "data (training/validation tensors, labels or source model differ)",
            log,
        )
        if state is None:
            return 1
        self.module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        self.gen.set_state(state["gen"])
        self.aug.set_state(state["aug"])
        self.noise.set_state(state["noise"])
        torch.set_rng_state(state["torch"])
        if models.on_cuda(self.job.device):
            models.restore_cuda_rng(state.get("cuda"))
        self.history, self.best, self.best_state = (
            state["history"],
            state["best"],
            state["best_state"],
        )
        if self.accountant is not None:
            self.accountant.load_state_dict(state["accountant"])
        log.info(
            "resuming %s seed %d after epoch %d",
            self.job.experiment.experiment,
            self.job.seed,
            state["epoch"],
        )
        return state["epoch"] + 1

    def epsilon(self) -> float:
        """Spent epsilon. For the RDP accountant with one (sigma, q) the RDP curve is linear in
        the steps, so Opacus' own per-step curve is computed once and scaled: the same numbers
        as ``accountant.get_epsilon``, without recomputing the curve every epoch."""
        from opacus.accountants import RDPAccountant
        from opacus.accountants.analysis import rdp as analysis

        acc = self.accountant
        if not isinstance(acc, RDPAccountant) or len(acc.history) != 1:
            return float(acc.get_epsilon(self.job.dp.delta))
        sigma, q, steps = acc.history[0]
        if self._rdp_per_step is None or self._rdp_per_step[0] != (sigma, q):
            curve = analysis.compute_rdp(
                q=q, noise_multiplier=sigma, steps=1, orders=acc.DEFAULT_ALPHAS
            )
            self._rdp_per_step = ((sigma, q), curve)
        eps, _ = analysis.get_privacy_spent(
            orders=acc.DEFAULT_ALPHAS, rdp=self._rdp_per_step[1] * steps, delta=self.job.dp.delta
        )
        return float(eps)

    def end_epoch(
        self,
        epoch: int,
        train_loss: float,
        val_loss: float,
        val_p,
        val_y,
        optimizer,
        stop_after: int | None,
    ) -> None:
        # Validation every epoch: the numpy twin of classification_metrics (same numbers).
        m = fast_metrics(np.asarray(val_y, dtype=int), np.asarray(val_p, dtype=float))
        eps = self.epsilon() if self.dp else None
        lo, hi = self.job.dp.epsilon_window
        target = self.job.experiment.dp_epsilon
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_auroc": m["auroc"],
            "val_auprc": m["auprc"],
            "epsilon": eps,
            "eligible": bool(lo * target < eps < hi * target) if self.dp else True,
        }
        self.history.append(row)
        self._progress(row)
        if _better(row, self.best, self.dp):
            self.best = row
            self.best_state = {
                k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()
            }
        every = self.job.train.checkpoint_every
        if epoch % every == 0 or epoch == self.job.train.epochs:
            self.save(epoch, optimizer)
            if stop_after is not None and epoch >= stop_after:
                raise KeyboardInterrupt(f"stopped after epoch {epoch} (simulated kill)")

    def _progress(self, row: dict) -> None:
        """One log line per epoch and history.csv as the epochs go (at most every 2 s; ``run``
        writes the final one); under DP without the noise-free training loss."""
        epoch, last = row["epoch"], self.job.train.epochs
        if self.clock is None:
            self.clock = EpochClock(epoch, last)
        shown = {k: v for k, v in row.items() if k not in ("epoch", "eligible")}
        if self.dp:
            del shown["train_loss"]
        else:
            del shown["epsilon"]
        log.info(self.clock.line(epoch, shown))
        if self.history_path is not None and self._write_due(time.perf_counter()):
            self.history_path.parent.mkdir(parents=True, exist_ok=True)
            write_csv(self.history_path, history_frame(self.history, self.dp))

    def privacy(self) -> dict | None:
        if not self.dp:
            return None
        steps = int(sum(s for _, _, s in self.accountant.history))
        steps_per_epoch = steps // max(len(self.history), 1)
        chosen = self.best["epoch"]
        if not self.best["eligible"]:
            lo, hi = self.job.dp.epsilon_window
            log.warning(
                "no epoch spent an epsilon within (%g, %g) x %g; keeping the best epoch %d "
                "(epsilon %.3f) and marking it chosen_in_window: false",
                lo,
                hi,
                self.job.experiment.dp_epsilon,
                chosen,
                self.best["epsilon"],
            )
        return {
            "dp": True,
            "library": "opacus",
            "clipping": self.job.dp.clipping,
            "accountant": self.job.dp.accountant,
            "noise_multiplier": float(self.noise_multiplier),
            "max_grad_norm": self.job.dp.max_grad_norm,
            "sample_rate": float(self.sample_rate),
            "poisson_sampling": True,
            "expected_batch_size": self.expected_batch_size,
            "n_train": self.n_train,
            "unit_of_privacy": self.job.dp.unit,
            "n_units": self.n_train if self.n_units is None else self.n_units,
            "steps_per_epoch": steps_per_epoch,
            "planned_epochs": self.job.train.epochs,
            "steps": steps,
            "steps_at_chosen_epoch": steps_per_epoch * chosen,
            "delta": self.job.dp.delta,
            "target_epsilon": self.job.experiment.dp_epsilon,
            "epsilon_window": list(self.job.dp.epsilon_window),
            "chosen_epoch": chosen,
            "epsilon_at_chosen_epoch": self.best["epsilon"],
            "epsilon_final": self.history[-1]["epsilon"],
            "chosen_in_window": bool(self.best["eligible"]),
            "secure_mode": self.job.dp.secure_mode,
        }


def history_frame(history: list[dict], dp: bool) -> pd.DataFrame:
    """history.csv: under DP without the training loss (noise-free, private, outside the
    accountant)."""
    df = pd.DataFrame(history)
    return df.drop(columns=["train_loss"]) if dp else df


def noise_multiplier(job: Job, sample_rate: float) -> float:
    """σ for the target epsilon over the planned epochs, as ``make_private_with_epsilon``
    computes it (sample rate 1 / batches per epoch)."""
    return _sigma(
        job.experiment.dp_epsilon, job.dp.delta, sample_rate, job.train.epochs, job.dp.accountant
    )


@functools.lru_cache(maxsize=64)
def _sigma(epsilon: float, delta: float, sample_rate: float, epochs: int, accountant: str):
    """Opacus' σ search (0.4-1.5 s): once per setting in a process (an audit's shadow heads
    mostly share one)."""
    from opacus.accountants.utils import get_noise_multiplier

    return get_noise_multiplier(
        target_epsilon=epsilon,
        target_delta=delta,
        sample_rate=sample_rate,
        epochs=epochs,
        accountant=accountant,
    )


class _ShuffledBatches:
    """Non-DP batches: each epoch a fresh permutation of the rows from ``gen``, cut into batches
    of ``batch_size`` (the last smaller): what a shuffling DataLoader yields, without its per-row
    fetch and collation (a third of a head epoch)."""

    def __init__(self, n: int, batch_size: int, gen: torch.Generator):
        self.n, self.batch_size, self.gen = n, batch_size, gen

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self):
        yield from torch.randperm(self.n, generator=self.gen).split(self.batch_size)


class _PoissonBatches:
    """DP batches: Opacus' Poisson sampler (each row drawn with probability ``sample_rate``,
    ``1 / sample_rate`` steps an epoch), as row indices; the sampler DPDataLoader uses, without
    the DataLoader around it."""

    def __init__(self, n: int, sample_rate: float, gen: torch.Generator):
        from opacus.utils.uniform_sampler import UniformWithReplacementSampler

        self.sampler = UniformWithReplacementSampler(
            num_samples=n, sample_rate=sample_rate, generator=gen
        )

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for rows in self.sampler:
            yield torch.tensor(rows, dtype=torch.long)


def _poisson_loader(n: int, batch_size: int, gen: torch.Generator):
    """Poisson batches at Opacus' sample rate for a DataLoader of ``batch_size``: 1 / ⌈N/B⌉
    (``DPDataLoader.from_data_loader``)."""
    sample_rate = 1 / math.ceil(n / batch_size)
    return _PoissonBatches(n, sample_rate, gen), sample_rate


class _UnitPoissonLoader:
    """Poisson sampling of privacy units (``dp.unit: patient``): Opacus' sampler draws each unit
    with probability ``sample_rate``; a batch holds every row of the units drawn. The sample rate
    is the crop-level one, 1 / ⌈N/B⌉ over the N rows: the same steps per epoch and the same
    expected batch of rows, so the same noise multiplier, at the patient level."""

    def __init__(self, row_units: torch.Tensor, sample_rate: float, gen: torch.Generator):
        from opacus.utils.uniform_sampler import UniformWithReplacementSampler

        ids, inverse = torch.unique(row_units, return_inverse=True)
        order = torch.argsort(inverse, stable=True)
        self.rows = list(torch.split(order, torch.bincount(inverse).tolist()))
        self.n_units = len(ids)
        self.sampler = UniformWithReplacementSampler(
            num_samples=self.n_units, sample_rate=sample_rate, generator=gen
        )

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for units in self.sampler:
            rows = [self.rows[u] for u in units]
            yield torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)


def row_units(train: pd.DataFrame, unit: str) -> torch.Tensor | None:
    """A privacy-unit id per training row: None for ``crop`` (each row its own unit); for
    ``patient``, one id per real patient, and each synthetic row (no patient) a unit of its own."""
    if unit == "crop":
        return None
    patient = train["patient_id"].fillna("").astype(str)
    key = patient.where(patient != "", "synthetic:" + train.index.astype(str))
    return torch.tensor(pd.factorize(key)[0])


def train_head(
    job: Job,
    head: nn.Module,
    train_x: torch.Tensor,
    y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    state_dir: Path,
    backbone: nn.Module | None = None,
    stop_after: int | None = None,
    epoch_seconds: list | None = None,
    fingerprint: str | None = None,
    units: torch.Tensor | None = None,
    history_path: Path | None = None,
):
    """Train a head. ``train_x`` holds cached features (N, 4 flips, F), or images when a
    ``backbone`` is given (the faithful loop: backbone in train mode, forward every step).
    ``fingerprint``: ``data_fingerprint`` of the data the inputs came from (part of the resume
    key); by default that of the tensors given. ``units``: a privacy-unit id per row
    (``row_units``), needed for ``dp.unit: patient``. Returns the trainer (history, best state,
    privacy)."""
    t = job.train
    if fingerprint is None:
        fingerprint = models.data_fingerprint(train_x, y, val_x, val_y)
    if job.dp.unit == "patient" and units is not None:
        fingerprint = models.data_fingerprint(units, source_sha256=fingerprint)
    tr = _Trainer(job, state_dir, head, len(y), fingerprint, history_path)
    # Fused AdamW: the same update in one kernel (0.18 vs 0.53 ms a step for the study's head on
    # one core, a tenth of a head step; differences at float rounding, ~4e-9).
    optimizer = torch.optim.AdamW(
        head.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=True
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
    sum_loss = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing, reduction="sum")
    module, bk, engine = head, None, None
    if tr.dp:
        from opacus.accountants import create_accountant

        loader, tr.sample_rate = _poisson_loader(len(y), t.batch_size, tr.gen)
        if job.dp.unit == "patient":
            if units is None or job.dp.clipping != "bookkeeping":
                raise UserError("dp.unit: patient needs clipping: bookkeeping and unit ids")
            loader = _UnitPoissonLoader(units, tr.sample_rate, tr.gen)
            tr.n_units = loader.n_units
        tr.noise_multiplier = noise_multiplier(job, tr.sample_rate)
        expected = int(len(y) * tr.sample_rate)  # as Opacus: the "mean" denominator
        tr.expected_batch_size = expected
        if job.dp.clipping == "bookkeeping":
            tr.accountant = create_accountant(job.dp.accountant)
            bk = BookKeepingDP(head, job.dp.max_grad_norm, tr.noise_multiplier, expected, tr.noise)
        else:
            engine, module, optimizer = _opacus_head(job, head, optimizer, tr, expected)
            tr.accountant = engine.accountant
    else:
        loader = _ShuffledBatches(len(y), t.batch_size, tr.gen)
    if backbone is not None:
        if tr.dp and any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules()
        ):
            raise UserError(
                f"{job.model.arch}: a frozen backbone with BatchNorm in train mode mixes the "
                "samples of a batch (and updates its statistics from private data), so DP-SGD's "
                "sensitivity would not be the clipping norm; set train.faithful: false or use a "
                "backbone without BatchNorm (Swin-T has LayerNorm)."
            )
        backbone.train()  # the original loop: stochastic depth active in the frozen backbone

    def inputs(idx: torch.Tensor) -> torch.Tensor:
        if backbone is None:  # cached features: one flip variant per sample
            pick = torch.randint(0, train_x.shape[1], (len(idx),), generator=tr.aug)
            return train_x[idx, pick]
        x = models.random_flips(train_x[idx], tr.aug)
        with torch.no_grad():
            return backbone(x.expand(-1, 3, -1, -1).to(job.device)).float().cpu()

    start = tr.resume(optimizer)
    for epoch in range(start, t.epochs + 1):
        tick = time.perf_counter()
        module.train()
        total, count = 0.0, 0
        for idx in loader:
            optimizer.zero_grad()
            if len(idx) == 0:  # Poisson sampling can draw an empty batch: noise only
                if bk is not None:
                    bk.empty_step()
                else:
                    empty = torch.zeros(0, head_in_features(head))
                    (module(empty).sum() * 0.0).backward()
            else:
                out = module(inputs(idx))
                if bk is not None:
                    loss = sum_loss(out, y[idx])
                    bk.clipped_sum(loss, None if tr.n_units is None else units[idx])
                    loss = loss / len(idx)
                else:
                    loss = loss_fn(out, y[idx])
                    with warnings.catch_warnings():
                        # Opacus' hooks on a head fed with features (inputs need no gradient).
                        warnings.filterwarnings("ignore", message="Full backward hook is firing")
                        loss.backward()
                total += loss.item() * len(idx)
                count += len(idx)
            if bk is not None:
                bk.add_noise_and_scale()
                tr.accountant.step(noise_multiplier=tr.noise_multiplier, sample_rate=tr.sample_rate)
            optimizer.step()
        module.eval()
        val_loss, val_p = _evaluate(head, val_x, val_y, loss_fn, 4096, "cpu")
        tr.end_epoch(
            epoch, total / max(count, 1), val_loss, val_p, val_y.numpy(), optimizer, stop_after
        )
        if epoch_seconds is not None:  # a benchmark hook: wall time of the whole epoch
            epoch_seconds.append(time.perf_counter() - tick)
    if bk is not None:
        bk.close()
    return tr


def head_in_features(head: nn.Module) -> int:
    return next(m for m in head.modules() if isinstance(m, nn.Linear)).in_features


def _opacus_head(job: Job, head: nn.Module, optimizer, tr: _Trainer, expected: int):
    """Opacus' own per-sample path (GradSampleModule + DPOptimizer) with the same noise
    multiplier, sampling and accountant."""
    from opacus import GradSampleModule, PrivacyEngine
    from opacus.optimizers import DPOptimizer

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant=job.dp.accountant)
    module = GradSampleModule(head)
    optimizer = DPOptimizer(
        optimizer,
        noise_multiplier=tr.noise_multiplier,
        max_grad_norm=job.dp.max_grad_norm,
        expected_batch_size=expected,
        generator=tr.noise,
    )
    optimizer.attach_step_hook(engine.accountant.get_optimizer_hook_fn(sample_rate=tr.sample_rate))
    return engine, module, optimizer


def train_full(
    job: Job,
    model: models.Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    state_dir: Path,
    stop_after: int | None = None,
    fingerprint: str | None = None,
    history_path: Path | None = None,
):
    """Train every layer on images with random flips; on a GPU in fp32 or bf16 autocast
    (``train.precision``).
    ``fingerprint``, ``history_path``: as for ``train_head``."""
    t = job.train
    device = job.device
    model.to(device)
    if fingerprint is None:
        fingerprint = models.data_fingerprint(x, y, val_x, val_y)
    tr = _Trainer(job, state_dir, model, len(y), fingerprint, history_path)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
    # The original trains in float32 (no autocast in gan_compare/scripts/train_test_classifier.py).
    use_amp = device.startswith("cuda") and t.precision == "bf16"
    start = tr.resume(optimizer)
    for epoch in range(start, t.epochs + 1):
        model.train()
        perm = torch.randperm(len(x), generator=tr.gen)
        total = 0.0
        for s in range(0, len(x), t.batch_size):
            idx = perm[s : s + t.batch_size]
            xb = models.random_flips(x[idx], tr.aug)
            optimizer.zero_grad()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                loss = loss_fn(model(xb.to(device)).float(), y[idx].to(device))
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        model.eval()
        val_loss, val_p = _evaluate(model, val_x, val_y, loss_fn, t.feature_batch_size, device)
        tr.end_epoch(epoch, total / len(x), val_loss, val_p, val_y.numpy(), optimizer, stop_after)
    return tr


# ----------------------------------------------------------------------------- the job


def _initial_backbone(job: Job, source_model: str | None, backbone_model: str | None = None):
    """(backbone, source checkpoint or None, sha256 of what the backbone was loaded from or None,
    the ``backbone_source`` reference for this run's checkpoint). ``from:`` and ``backbone:``
    take the source model's backbone, with this job's stochastic depth (the faithful loop runs
    it in train mode); ``from:`` needs the source's head type (its head is loaded too).
    ``backbone_model``: the checkpoint holding the source's frozen backbone, as declared; this
    run's checkpoint refers to that one, so every frozen chain is one link long."""
    exp = job.experiment
    if not exp.source:
        backbone = models.create_backbone(job.model)
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
    backbone = models.load_backbone(source_model, job.model.drop_path_rate, backbone_model)
    sha = sha256_file(source_model)
    origin, origin_ckpt = models.backbone_origin(source_model, src_ckpt, backbone_model)
    if origin_ckpt["backbone"] is None:  # pretrained weights, passed on: no checkpoint to read
        return backbone, src_ckpt, sha, origin_ckpt["backbone_source"]
    ref = {"kind": "model", "path": str(origin), "sha256": sha256_file(origin)}
    return backbone, src_ckpt, sha, ref


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
    ``_source_privacy``, which reads it beside the source model when not given)."""
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
    out = {k: Path(outputs[k]) if outputs else Path(out_dir) / v for k, v in RUN_FILES.items()}
    state_dir = out["model"].parent / ".state"  # resume state: removed once the run is done
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

    backbone, src_ckpt, source_sha256, backbone_source = _initial_backbone(
        job, source_model, backbone_model
    )
    torch.manual_seed(job.seed)  # head init depends on the run's seed only
    head = models.make_head(exp.head, backbone.num_features)
    if exp.loads_source_head:
        head.load_state_dict(src_ckpt["head"])  # from: the source's head: really load it
    model = models.Classifier(backbone, head)
    size, fb = job.model.input_size, job.train.feature_batch_size

    if exp.trained == "head":
        cached = bool(features) and not job.train.faithful

        def embed(paths, imgs=None) -> torch.Tensor:
            if cached:
                return _features_for(cache, list(paths), "evaluation")[:, 0]
            imgs = models.load_images(paths, size) if imgs is None else imgs
            return models.backbone_features(
                backbone, imgs, ("none",), fb, job.device, job.train.feature_precision
            )[:, 0]

        # The resume key fingerprints the data as read: the cached features, or the images the
        # features are computed from here (on a GPU those need not be bitwise reproducible).
        if cached:
            cache = load_feature_cache(features)
            x_train = _features_for(cache, list(train["path"]), "training")
            val_x = embed(val["path"])
            fingerprint = models.data_fingerprint(
                x_train, y_train, val_x, y_val, source_sha256=source_sha256
            )
        else:
            train_imgs = models.load_images(train["path"], size)
            val_imgs = models.load_images(val["path"], size)
            fingerprint = models.data_fingerprint(
                train_imgs, y_train, val_imgs, y_val, source_sha256=source_sha256
            )
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
            val_x = embed(val["path"], val_imgs)
            del train_imgs, val_imgs  # only the features are trained on
        tr = train_head(
            job,
            head,
            x_train,
            y_train,
            val_x,
            y_val,
            state_dir,
            backbone if job.train.faithful else None,
            stop_after,
            fingerprint=fingerprint,
            units=row_units(train, job.dp.unit) if exp.dp_epsilon is not None else None,
            history_path=out["history"],
        )
        head.load_state_dict(tr.best_state)
        head.eval()
        test_probs = {}
        for name, df in tests.items():
            with torch.no_grad():
                test_probs[name] = torch.softmax(head(embed(df["path"])), 1)[:, 1].numpy()
    else:
        x_train = models.load_images(train["path"], size)
        x_val = models.load_images(val["path"], size)
        tr = train_full(
            job,
            model,
            x_train,
            y_train,
            x_val,
            y_val,
            state_dir,
            stop_after,
            fingerprint=models.data_fingerprint(
                x_train, y_train, x_val, y_val, source_sha256=source_sha256
            ),
            history_path=out["history"],
        )
        model.load_state_dict(tr.best_state)
        model.eval()
        test_probs = {}
        for name, df in tests.items():
            yt = torch.tensor(df["label"].astype(int).values)
            xt = models.load_images(df["path"], size)
            _, test_probs[name] = _evaluate(model, xt, yt, nn.CrossEntropyLoss(), fb, job.device)
    model.cpu()

    privacy = tr.privacy() or {"dp": False}
    source_record = (
        source_privacy
        if source_privacy is not None
        else _source_privacy(exp, source_model, backbone_model)
    )
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
    best = tr.best
    metrics = {
        "experiment": exp.experiment,
        "paper_id": exp.paper_id,
        "group": exp.group,
        "seed": job.seed,
        "dp_epsilon": exp.dp_epsilon,
        "chosen_epoch": best["epoch"],
        "epochs": job.train.epochs,
        "n_train": len(train),
        "val": {"auroc": best["val_auroc"], "auprc": best["val_auprc"], "loss": best["val_loss"]},
        "test": {},
    }
    pred_rows = []
    for name, probs in test_probs.items():
        labels = tests[name]["label"].astype(int).values
        metrics["test"][name] = classification_metrics(labels, probs)
        metrics["test"][name]["ci95"] = bootstrap_ci(
            labels, probs, job.train.bootstrap, seed=job.seed
        )
        for r, p in zip(tests[name].itertuples(), probs, strict=True):
            pred_rows.append(
                {
                    "dataset": name,
                    "lesion_id": r.lesion_id,
                    "patient_id": r.patient_id,
                    "label": int(r.label),
                    "p_benign": float(p),
                    "pred": int(p >= 0.5),
                }
            )
    models.save_checkpoint(
        out["model"],
        spec=job.model,
        head_type=exp.head,
        model=model,
        backbone_trained=exp.trained == "all",
        backbone_source=backbone_source,
    )
    write_csv(out["history"], history_frame(tr.history, tr.dp))
    write_csv(out["predictions"], pd.DataFrame(pred_rows))
    write_json(out["privacy"], _finite(privacy))
    write_json(out["metrics"], _finite(metrics))
    shutil.rmtree(state_dir, ignore_errors=True)  # done: nothing to resume
    return metrics


# A backbone: source whose frozen chain ends at pretrained weights: no data of this study in them.
PRETRAINED_ONLY = {"dp": None, "synthetic_in_lineage": False, "pretrained_weights": True}


def _source_privacy(
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
    ``_source_privacy``'s record; for backbone:, of the run that trained the backbone)."""
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


def _finite(obj):
    """JSON has no NaN: undefined values become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
