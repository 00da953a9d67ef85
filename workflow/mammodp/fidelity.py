"""Fréchet Radiomics Distance (frd-score) between real and synthetic crops.

The study's comparisons, the real set first: real vs real (two disjoint halves of the training
crops, the reference floor), real vs synthetic, synthetic vs synthetic (disjoint halves) and
CBIS-DDSM test vs the external test set. Each value is recorded with the FRD version and its
normalisation (v0: the study's era, ~94 features, min-max; v1: ~464 features, z-score w.r.t. the
first set, log of the squared distance).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np
import pandas as pd

from .errors import UserError

log = logging.getLogger(__name__)

FRD_COLUMNS = [
    "set_a",
    "set_b",
    "n_a",
    "n_b",
    "frd_version",
    "normalisation",
    "value",
    "frd_score_version",
]
NORMALISATION = {
    "v0": "minmax [0, 7.4567] on the joint sets; Frechet distance",
    "v1": "z-score w.r.t. set_a; log of squared Frechet distance",
}
MIN_SET_SIZE = 5  # a covariance needs several images per set


def halves(paths: list[str], seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(paths))
    mid = len(paths) // 2
    return [paths[i] for i in sorted(perm[:mid])], [paths[i] for i in sorted(perm[mid:])]


def _cap(paths: list[str], max_images: int | None, seed: int) -> list[str]:
    """At most ``max_images`` paths, a seeded sample (a quicker, noisier estimate)."""
    if not max_images or len(paths) <= max_images:
        return paths
    rng = np.random.default_rng(seed)
    return sorted(paths[i] for i in rng.choice(len(paths), max_images, replace=False))


def comparisons(
    manifest: pd.DataFrame, synthetic: pd.DataFrame, seed: int, max_images: int | None = None
) -> list[tuple]:
    """(name_a, paths_a, name_b, paths_b) for the study's four comparisons."""
    real_train = manifest[(manifest["split"] == "train") & (manifest["dataset"] == "cbis-ddsm")]
    real = _cap(sorted(real_train["path"]), max_images, seed)
    syn = _cap(sorted(synthetic["path"]), max_images, seed)
    ra, rb = halves(real, seed)
    sa, sb = halves(syn, seed)
    out = [
        ("real_train_half1", ra, "real_train_half2", rb),
        ("real_train", real, "synthetic", syn),
        ("synthetic_half1", sa, "synthetic_half2", sb),
    ]
    test = manifest[manifest["split"] == "test"]
    external = _cap(sorted(test.loc[test["dataset"] != "cbis-ddsm", "path"]), max_images, seed)
    if external:
        cbis_test = _cap(sorted(test.loc[test["dataset"] == "cbis-ddsm", "path"]), max_images, seed)
        out.append(("cbis-ddsm_test", cbis_test, "external_test", external))
    return out


def frd_value(paths_a: list[str], paths_b: list[str], version: str, workers: int) -> float:
    from frd_score import frd  # heavy import (pyradiomics, SimpleITK): only when computing

    if min(len(paths_a), len(paths_b)) < MIN_SET_SIZE:
        raise UserError(
            f"FRD needs at least {MIN_SET_SIZE} images per set; got {len(paths_a)} and "
            f"{len(paths_b)}. Use more crops or synthetic samples."
        )
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return float(
            frd.compute_frd(
                [list(paths_a), list(paths_b)], frd_version=version, num_workers=workers
            )
        )


def compute_table(
    manifest: pd.DataFrame,
    synthetic: pd.DataFrame,
    versions: list[str],
    seed: int,
    workers: int,
    max_images: int | None = None,
) -> pd.DataFrame:
    from frd_score import __version__ as frd_score_version

    rows = []
    for name_a, a, name_b, b in comparisons(manifest, synthetic, seed, max_images):
        for version in versions:
            value = frd_value(a, b, version, workers)
            log.info("FRD %s %s vs %s: %.4f", version, name_a, name_b, value)
            rows.append(
                {
                    "set_a": name_a,
                    "set_b": name_b,
                    "n_a": len(a),
                    "n_b": len(b),
                    "frd_version": version,
                    "normalisation": NORMALISATION[version],
                    "value": value,
                    "frd_score_version": frd_score_version,
                }
            )
    return pd.DataFrame(rows, columns=FRD_COLUMNS)
