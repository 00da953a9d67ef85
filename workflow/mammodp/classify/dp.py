"""DP-SGD for the head: the noise multiplier for a target epsilon, Poisson sampling of crops or
patients (Opacus' sampler) and Opacus' own per-sample path (the book-keeping one is
``bookkeeping.py``)."""

from __future__ import annotations

import functools
import logging
import math
import warnings

import pandas as pd
import torch
from torch import nn

from .spec import Job
from .trainer import Trainer

log = logging.getLogger(__name__)


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


class PoissonBatches:
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


def poisson_loader(n: int, batch_size: int, gen: torch.Generator):
    """Poisson batches at Opacus' sample rate for a DataLoader of ``batch_size``: 1 / ⌈N/B⌉
    (``DPDataLoader.from_data_loader``)."""
    sample_rate = 1 / math.ceil(n / batch_size)
    return PoissonBatches(n, sample_rate, gen), sample_rate


class UnitPoissonLoader:
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


def opacus_head(job: Job, head: nn.Module, optimizer, tr: Trainer, expected: int):
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
