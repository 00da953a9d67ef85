"""The epoch loop's state shared by head and full training: validation, selection, DP accounting,
the history, and the training state saved every ``train.checkpoint_every`` epochs and resumed."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from mammodp.fileio import write_csv
from mammodp.progress import EpochClock, Every
from mammodp.training_state import TrainingState

from .metrics import fast_metrics
from .selection import is_better
from .spec import Job

log = logging.getLogger(__name__)


class Trainer:
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

    def state(self, optimizer) -> TrainingState:
        """The resume state: the selected module, its optimiser, the shuffling, flip and noise
        generators, the accountant; under this job's key and data fingerprint."""
        return TrainingState(
            self.state_dir / "state.pt",
            self.job.key(),
            self.data,
            self.job.device,
            modules={"module": self.module},
            optimizers={"optimizer": optimizer},
            generators={"gen": self.gen, "aug": self.aug, "noise": self.noise},
            accountant=self.accountant,
            logger=log,
        )

    def save(self, epoch: int, optimizer) -> None:
        self.state(optimizer).save(
            epoch=epoch, history=self.history, best=self.best, best_state=self.best_state
        )

    def resume(self, optimizer) -> int:
        """Load a saved state of this very job; return the first epoch still to run."""
        desc = "data (training/validation tensors, labels or source model differ)"
        progress = self.state(optimizer).restore(desc)
        if progress is None:
            return 1
        self.history, self.best = progress["history"], progress["best"]
        self.best_state = progress["best_state"]
        log.info(
            "resuming %s seed %d after epoch %d",
            self.job.experiment.experiment,
            self.job.seed,
            progress["epoch"],
        )
        return progress["epoch"] + 1

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
        if is_better(row, self.best, self.dp):
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
