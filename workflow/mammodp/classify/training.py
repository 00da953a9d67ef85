"""Head training (on cached features, or the faithful loop on images through the frozen backbone
in train mode) and full fine-tuning."""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mammodp import images, training_state
from mammodp.errors import UserError

from . import models
from .bookkeeping import BookKeepingDP
from .dp import UnitPoissonLoader, noise_multiplier, opacus_head, poisson_loader
from .selection import evaluate
from .spec import Job
from .trainer import Trainer

log = logging.getLogger(__name__)


class ShuffledBatches:
    """Non-DP batches: each epoch a fresh permutation of the rows from ``gen``, cut into batches
    of ``batch_size`` (the last smaller): what a shuffling DataLoader yields, without its per-row
    fetch and collation (a third of a head epoch)."""

    def __init__(self, n: int, batch_size: int, gen: torch.Generator):
        self.n, self.batch_size, self.gen = n, batch_size, gen

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self):
        yield from torch.randperm(self.n, generator=self.gen).split(self.batch_size)


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
        fingerprint = training_state.data_fingerprint(train_x, y, val_x, val_y)
    if job.dp.unit == "patient" and units is not None:
        fingerprint = training_state.data_fingerprint(units, source_sha256=fingerprint)
    tr = Trainer(job, state_dir, head, len(y), fingerprint, history_path)
    loop = _head_loop(job, tr, head, y, units, _batch_inputs(job, tr, train_x, backbone))
    if backbone is not None:
        _faithful_train_mode(job, backbone, tr.dp)
    start = tr.resume(loop.optimizer)
    for epoch in range(start, t.epochs + 1):
        tick = time.perf_counter()
        train_loss = loop.epoch()
        val_loss, val_p = evaluate(head, val_x, val_y, loop.loss_fn, 4096, "cpu")
        tr.end_epoch(epoch, train_loss, val_loss, val_p, val_y.numpy(), loop.optimizer, stop_after)
        if epoch_seconds is not None:  # a benchmark hook: wall time of the whole epoch
            epoch_seconds.append(time.perf_counter() - tick)
    if loop.bk is not None:
        loop.bk.close()
    return tr


@dataclass
class HeadLoop:
    """A head's optimiser steps over an epoch's batches (``loader``): ``module`` is the head, or
    Opacus' per-sample wrapper of it; ``bk``: the book-keeping DP clipper, if clipping that way;
    ``inputs``: a batch's inputs from its row indices."""

    tr: Trainer
    head: nn.Module
    module: nn.Module
    optimizer: torch.optim.Optimizer
    loader: Iterable[torch.Tensor]
    inputs: Callable[[torch.Tensor], torch.Tensor]
    y: torch.Tensor
    units: torch.Tensor | None
    loss_fn: nn.Module
    sum_loss: nn.Module
    bk: BookKeepingDP | None

    def epoch(self) -> float:
        """One epoch of steps; the mean training loss over its rows."""
        self.module.train()
        total, count = 0.0, 0
        for idx in self.loader:
            self.optimizer.zero_grad()
            if len(idx) == 0:  # Poisson sampling can draw an empty batch: noise only
                self._empty_backward()
            else:
                total += self._backward(idx) * len(idx)
                count += len(idx)
            if self.bk is not None:
                self.bk.add_noise_and_scale()
                tr = self.tr
                tr.accountant.step(noise_multiplier=tr.noise_multiplier, sample_rate=tr.sample_rate)
            self.optimizer.step()
        self.module.eval()
        return total / max(count, 1)

    def _empty_backward(self) -> None:
        if self.bk is not None:
            self.bk.empty_step()
        else:
            empty = torch.zeros(0, models.head_in_features(self.head))
            (self.module(empty).sum() * 0.0).backward()

    def _backward(self, idx: torch.Tensor) -> float:
        """The gradients of a batch (clipped per sample under DP); its mean loss."""
        out = self.module(self.inputs(idx))
        if self.bk is not None:
            loss = self.sum_loss(out, self.y[idx])
            self.bk.clipped_sum(loss, None if self.tr.n_units is None else self.units[idx])
            loss = loss / len(idx)
        else:
            loss = self.loss_fn(out, self.y[idx])
            with warnings.catch_warnings():
                # Opacus' hooks on a head fed with features (inputs need no gradient).
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                loss.backward()
        return loss.item()


def _head_loop(job: Job, tr: Trainer, head: nn.Module, y, units, inputs) -> HeadLoop:
    """The optimiser, losses and batches of a head's training."""
    t = job.train
    # Fused AdamW: the same update in one kernel (0.18 vs 0.53 ms a step for the study's head on
    # one core, a tenth of a head step; differences at float rounding, ~4e-9).
    optimizer = torch.optim.AdamW(
        head.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=True
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
    sum_loss = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing, reduction="sum")
    module, bk = head, None
    if tr.dp:
        loader, module, optimizer, bk = _private_steps(job, tr, head, optimizer, units)
    else:
        loader = ShuffledBatches(len(y), t.batch_size, tr.gen)
    return HeadLoop(tr, head, module, optimizer, loader, inputs, y, units, loss_fn, sum_loss, bk)


def _private_steps(job: Job, tr: Trainer, head: nn.Module, optimizer, units):
    """DP-SGD: (Poisson batches of rows or patients, the module and optimiser stepped, the
    book-keeping clipper or None for Opacus' per-sample path); the sample rate, noise
    multiplier for the target epsilon and accountant set on ``tr``."""
    from opacus.accountants import create_accountant

    loader, tr.sample_rate = poisson_loader(tr.n_train, job.train.batch_size, tr.gen)
    if job.dp.unit == "patient":
        if units is None or job.dp.clipping != "bookkeeping":
            raise UserError("dp.unit: patient needs clipping: bookkeeping and unit ids")
        loader = UnitPoissonLoader(units, tr.sample_rate, tr.gen)
        tr.n_units = loader.n_units
    tr.noise_multiplier = noise_multiplier(job, tr.sample_rate)
    expected = int(tr.n_train * tr.sample_rate)  # as Opacus: the "mean" denominator
    tr.expected_batch_size = expected
    if job.dp.clipping == "bookkeeping":
        tr.accountant = create_accountant(job.dp.accountant)
        bk = BookKeepingDP(head, job.dp.max_grad_norm, tr.noise_multiplier, expected, tr.noise)
        return loader, head, optimizer, bk
    engine, module, optimizer = opacus_head(job, head, optimizer, tr, expected)
    tr.accountant = engine.accountant
    return loader, module, optimizer, None


def _faithful_train_mode(job: Job, backbone: nn.Module, dp: bool) -> None:
    if dp and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules()):
        raise UserError(
            f"{job.model.arch}: a frozen backbone with BatchNorm in train mode mixes the "
            "samples of a batch (and updates its statistics from private data), so DP-SGD's "
            "sensitivity would not be the clipping norm; set train.faithful: false or use a "
            "backbone without BatchNorm (Swin-T has LayerNorm)."
        )
    backbone.train()  # the original loop: stochastic depth active in the frozen backbone


def _batch_inputs(job: Job, tr: Trainer, train_x: torch.Tensor, backbone: nn.Module | None):
    """A batch's inputs from its row indices, with the flips drawn from ``tr.aug``."""

    def inputs(idx: torch.Tensor) -> torch.Tensor:
        if backbone is None:  # cached features: one flip variant per sample
            pick = torch.randint(0, train_x.shape[1], (len(idx),), generator=tr.aug)
            return train_x[idx, pick]
        x = images.random_flips(train_x[idx], tr.aug)
        with torch.no_grad():
            return backbone(x.expand(-1, 3, -1, -1).to(job.device)).float().cpu()

    return inputs


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
        fingerprint = training_state.data_fingerprint(x, y, val_x, val_y)
    tr = Trainer(job, state_dir, model, len(y), fingerprint, history_path)
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
            xb = images.random_flips(x[idx], tr.aug)
            optimizer.zero_grad()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                loss = loss_fn(model(xb.to(device)).float(), y[idx].to(device))
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        model.eval()
        val_loss, val_p = evaluate(model, val_x, val_y, loss_fn, t.feature_batch_size, device)
        tr.end_epoch(epoch, total / len(x), val_loss, val_p, val_y.numpy(), optimizer, stop_after)
    return tr
