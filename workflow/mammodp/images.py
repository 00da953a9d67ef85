"""The crops as tensors, shared by the classifier, the MCGAN, the fidelity and the audits:
grayscale PNGs read into [-1, 1], and the flips of the study's augmentation."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .errors import UserError


def load_images(paths, input_size: int, strict: bool = False) -> torch.Tensor:
    """Grayscale PNGs -> (N, 1, S, S) float in [-1, 1], area-resized to the model's input
    (or, with ``strict``, refused unless already S x S: the GAN must see the crops as is)."""
    out = np.empty((len(paths), input_size, input_size), np.uint8)
    for i, p in enumerate(paths):
        a = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if a is None:
            raise UserError(f"{p}: image missing or unreadable; rebuild the crops.")
        if a.shape != (input_size, input_size):
            if strict:
                raise UserError(
                    f"{p}: expected a {input_size}x{input_size} grayscale PNG, got "
                    f"{a.shape[1]}x{a.shape[0]}; rebuild the crops."
                )
            a = cv2.resize(a, (input_size, input_size), interpolation=cv2.INTER_AREA)
        out[i] = a
    return torch.from_numpy(out).float().div_(127.5).sub_(1.0)[:, None]


FLIPS = ("none", "h", "v", "hv")


def random_flips(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The study's augmentation: independent horizontal and vertical flips, p = 0.5 each.
    Sequential on purpose: a sample drawn for both gets both."""
    flip_h = torch.rand(len(x), generator=generator) < 0.5
    flip_v = torch.rand(len(x), generator=generator) < 0.5
    x = x.clone()
    x[flip_h] = x[flip_h].flip(-1)
    x[flip_v] = x[flip_v].flip(-2)
    return x


def flip(x: torch.Tensor, variant: str) -> torch.Tensor:
    if "h" in variant:
        x = x.flip(-1)
    if "v" in variant:
        x = x.flip(-2)
    return x
