"""Reduced backbones for fast tests, and what a backbone's stochastic depth is."""

from __future__ import annotations

from mammodp.classify import models

TIMM_SWIN = "swin_tiny_patch4_window7_224"
REDUCED = {"embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2], "window_size": 4}
# A reduced timm Swin (as the demo configs) and a reduced torchvision Swin (the study's kind).
TINY = models.ModelSpec(
    arch=TIMM_SWIN, pretrained="none", input_size=32, drop_path_rate=0.0, overrides=REDUCED
)
TV_TINY = models.ModelSpec(arch="swin_t", pretrained="none", input_size=32, overrides=REDUCED)


def drop_rates(module) -> list[float]:
    """The stochastic-depth rates of a backbone's blocks, in order (torchvision and timm)."""
    from timm.layers import DropPath
    from torchvision.ops import StochasticDepth

    return [
        float(m.p if isinstance(m, StochasticDepth) else m.drop_prob)
        for m in module.modules()
        if isinstance(m, StochasticDepth | DropPath)
    ]
