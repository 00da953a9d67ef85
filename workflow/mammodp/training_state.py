"""The resumable state of every trainer (the classifier's epoch loop, the MCGAN and the DP-MCGAN):
its modules, optimisers, random generators, the torch and CUDA RNGs, the DP accountant and the
trainer's own progress, saved atomically and restored only by the very same job on the very same
data.

A state belongs to a settings ``key`` (the trainer's) and to ``data``, a ``data_fingerprint`` of
the tensors trained on; a state for other settings, other data or an older format is ignored, with
a log line, and training starts afresh.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .fileio import atomic_path

log = logging.getLogger(__name__)

# 2: one layout for every trainer (modules, optimizers, generators, torch_rng, cuda_rng, ...).
STATE_FORMAT = 2


def data_fingerprint(*tensors: torch.Tensor, source_sha256: str | None = None) -> str:
    """sha256 over the dtype, shape and bytes of each tensor (and a source model's sha256):
    which data a training state was computed on, so that a resume never mixes data."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))  # no copy of the data
    h.update(f"source={source_sha256}".encode())
    return h.hexdigest()


def on_cuda(device: str) -> bool:
    """Does a job on ``device`` run on a GPU (so its CUDA RNG states belong in its state)?"""
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


def restore_cuda_rng(states) -> None:
    """Restore the CUDA RNG states saved with a training state (a resume on another number of
    devices keeps the current ones, with a warning)."""
    if states is None:
        return
    if len(states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states)
    else:
        log.warning(
            "saved CUDA RNG states are for %d device(s), this machine has %d: not restored",
            len(states),
            torch.cuda.device_count(),
        )


@dataclass
class TrainingState:
    """What a trainer saves every few epochs and resumes from. ``modules``, ``optimizers`` and
    ``generators`` are named; ``accountant`` (an Opacus accountant, or None) may be set after
    construction, as the DP setup creates it. ``save(**progress)`` stores the trainer's own
    progress (epoch, history, best checkpoint, ...); ``restore`` returns it."""

    path: Path
    key: str
    data: str
    device: str = "cpu"
    modules: dict[str, nn.Module] = field(default_factory=dict)
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    generators: dict[str, torch.Generator] = field(default_factory=dict)
    accountant: object | None = None
    logger: logging.Logger = log

    def save(self, **progress) -> None:
        cuda = on_cuda(self.device)
        state = {
            "format": STATE_FORMAT,
            "key": self.key,
            "data": self.data,
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "generators": {k: g.get_state() for k, g in self.generators.items()},
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if cuda else None,
            "accountant": None if self.accountant is None else self.accountant.state_dict(),
            "progress": progress,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def restore(self, data_desc: str) -> dict | None:
        """Load a saved state of these settings and this data into the trainer's objects and
        return its progress; None (train afresh) when there is none that belongs here."""
        state = self._load(data_desc)
        if state is None:
            return None
        for k, m in self.modules.items():
            m.load_state_dict(state["modules"][k])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, g in self.generators.items():
            g.set_state(state["generators"][k])
        torch.set_rng_state(state["torch_rng"])
        if on_cuda(self.device):
            restore_cuda_rng(state["cuda_rng"])
        if self.accountant is not None:
            self.accountant.load_state_dict(state["accountant"])
        return state["progress"]

    def _load(self, data_desc: str) -> dict | None:
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as e:  # an unreadable state is not worth failing over: train afresh
            self.logger.warning("cannot read training state %s (%s): starting afresh", self.path, e)
            return None
        why = None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            why = "of an older version of this workflow"
        elif state.get("key") != self.key:
            why = "for other settings"
        elif state.get("data") != self.data:
            why = f"for other {data_desc}"
        if why:
            self.logger.info("saved training state is %s: starting afresh (%s)", why, self.path)
            return None
        return state
