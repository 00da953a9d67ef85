"""What several stages' commands share: torch threads, the device, ``key=path`` arguments
and the classifier job from the rules' JSON."""

from __future__ import annotations

import json
import logging
import os

from mammodp.config import Experiment
from mammodp.errors import UserError

log = logging.getLogger("mammodp")


def set_threads(n: int) -> int:
    os.environ["OMP_NUM_THREADS"] = str(n)
    import torch

    torch.set_num_threads(n)
    log.info("torch threads: %d", torch.get_num_threads())
    return n


def resolve_device(device: str) -> str:
    """``auto`` means cuda when this machine has a GPU. A GPU job claims its own device first
    (see ``gpu.py``), before CUDA starts."""
    if device == "cpu":
        return device
    from mammodp import gpu

    gpu.assign()
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise UserError("device: cuda, but no GPU is visible here; use device: cpu or auto")
    return "cpu"


def named_paths(pairs: list[str], keys, option: str) -> dict[str, str]:
    """``key=path`` arguments, each of ``keys`` exactly once."""
    from mammodp.fileio import Outputs

    out = Outputs.parse(pairs, option).paths
    if sorted(out) != sorted(keys):
        raise UserError(f"{option}: give key=path for each of {', '.join(keys)}")
    return out


def one_or_list(paths: list[str] | None):
    """One folder as itself (for the messages that name it), several as a list."""
    return paths[0] if paths and len(paths) == 1 else paths


def job_from_json(text: str, threads: int):
    """A classifier job from the rules' JSON (``job_json``)."""
    from mammodp import classify
    from mammodp.classify import models

    spec = json.loads(text)
    return classify.Job(
        experiment=Experiment(**spec["experiment"]),
        seed=int(spec["seed"]),
        model=models.ModelSpec.from_dict(spec["model"]),
        train=classify.TrainSpec(**spec["train"]),
        dp=classify.DPSpec(**{**spec["dp"], "epsilon_window": tuple(spec["dp"]["epsilon_window"])}),
        device=resolve_device(spec.get("device", "cpu")),
        threads=threads,
        synthetic_generator_private=bool(spec.get("synthetic_generator_private", False)),
    )
