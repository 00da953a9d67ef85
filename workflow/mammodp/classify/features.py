"""Cached backbone features: what rule ``backbone_features`` writes (the pooled features of every
image and flip variant, keyed by image content) and their lookup by a job."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from mammodp import images
from mammodp.errors import UserError
from mammodp.fileio import sha256_file

log = logging.getLogger(__name__)


def feature_file(paths, features: torch.Tensor) -> dict:
    """What ``backbone_features`` saves: the (N, 4, F) features of the images at ``paths``,
    keyed by their content (sha256), so that a job that sees the images at other paths (a
    module prefix, a storage plugin's copy) finds them."""
    return {
        "sha256": [sha256_file(p) for p in paths],
        "features": features,
        "variants": list(images.FLIPS),
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


def feature_width(table: dict[str, torch.Tensor]) -> int:
    """The backbone's feature width, as its cached features hold it."""
    if not table:
        raise UserError("the cached feature files hold no image; rebuild results/features.")
    return next(iter(table.values())).shape[-1]


def features_for(table: dict[str, torch.Tensor], paths, what: str) -> torch.Tensor:
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
