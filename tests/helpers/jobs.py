"""Classifier jobs for tests: a tiny model, three epochs, the real job objects."""

from __future__ import annotations

import dataclasses

from mammodp import classify
from mammodp.config import Experiment

from .models import TINY


def make_job(
    name, eps=None, trained="head", head="mlp", init="backbone", epochs=3, seed=1, model=TINY
):
    exp = Experiment(name, "-", "real", "real", trained, head, init, eps)
    return classify.Job(
        exp,
        seed,
        model,
        classify.TrainSpec(epochs=epochs, batch_size=16, lr=1e-3),
        classify.DPSpec(),
    )


def dp_job(name, clipping="bookkeeping", batch=16, epochs=3, unit="crop", accountant="rdp"):
    j = make_job(name, eps=6.0, epochs=epochs)
    j.train = dataclasses.replace(j.train, batch_size=batch)
    j.dp = dataclasses.replace(j.dp, clipping=clipping, unit=unit, accountant=accountant)
    return j
