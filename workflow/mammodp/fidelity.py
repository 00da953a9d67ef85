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
    "class",
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


CLASSES = {"pooled": None, "benign": 1, "malignant": 0}


def comparisons(
    manifest: pd.DataFrame, synthetic: pd.DataFrame, seed: int, max_images: int | None = None
) -> list[tuple]:
    """(class, name_a, paths_a, name_b, paths_b) for the study's four comparisons, pooled and per
    class (benign = 1, malignant = 0), the real set first."""
    out = []
    for cls, label in CLASSES.items():
        m = manifest if label is None else manifest[manifest["label"].astype(int) == label]
        syn = synthetic if label is None else synthetic[synthetic["label"].astype(int) == label]
        real_train = m[(m["split"] == "train") & (m["dataset"] == "cbis-ddsm")]
        real = _cap(sorted(real_train["path"]), max_images, seed)
        syn_paths = _cap(sorted(syn["path"]), max_images, seed)
        ra, rb = halves(real, seed)
        sa, sb = halves(syn_paths, seed)
        out += [
            (cls, "real_train_half1", ra, "real_train_half2", rb),
            (cls, "real_train", real, "synthetic", syn_paths),
            (cls, "synthetic_half1", sa, "synthetic_half2", sb),
        ]
        test = m[m["split"] == "test"]
        external = _cap(sorted(test.loc[test["dataset"] != "cbis-ddsm", "path"]), max_images, seed)
        if external:
            cbis = _cap(sorted(test.loc[test["dataset"] == "cbis-ddsm", "path"]), max_images, seed)
            out.append((cls, "cbis-ddsm_test", cbis, "external_test", external))
    return out


class FeatureCache:
    """Radiomics features per (FRD version, image), shared by every comparison: frd-score's own
    ``compute_features`` extracts each image once, the rest of frd-score (normalisation,
    statistics, Frechet distance) runs unchanged."""

    def __init__(self):
        self.store: dict[tuple[str, str], tuple[np.ndarray, dict]] = {}
        self.extracted = 0

    @contextlib.contextmanager
    def installed(self, frd_module):
        original = frd_module.compute_features

        def compute_features(
            files,
            feature_extractor,
            masks=None,
            resize_size=None,
            verbose=False,
            num_workers=None,
            frd_version="v1",
        ):
            if masks is not None:  # masks are not cached: extract as frd-score does
                return original(
                    files, feature_extractor, masks, resize_size, verbose, num_workers, frd_version
                )
            files = [str(f) for f in files]
            todo = [f for f in dict.fromkeys(files) if (frd_version, f) not in self.store]
            if todo:
                feats, results, _ = original(
                    todo, feature_extractor, None, resize_size, verbose, num_workers, frd_version
                )
                if len(results) != len(todo):  # frd-score skipped an image: no alignment
                    raise UserError(
                        f"radiomics extraction failed for {len(todo) - len(results)} image(s); "
                        "check that every crop is a readable 8-bit grayscale PNG"
                    )
                for f, row, res in zip(todo, feats, results, strict=True):
                    self.store[(frd_version, f)] = (row, res)
                self.extracted += len(todo)
            rows = [self.store[(frd_version, f)] for f in files]
            return np.asarray([r[0] for r in rows]), [r[1] for r in rows], [None] * len(files)

        frd_module.compute_features = compute_features
        try:
            yield self
        finally:
            frd_module.compute_features = original


def frd_value(
    paths_a: list[str],
    paths_b: list[str],
    version: str,
    workers: int,
    cache: FeatureCache | None = None,
) -> float:
    from frd_score import frd  # heavy import (pyradiomics, SimpleITK): only when computing

    if min(len(paths_a), len(paths_b)) < MIN_SET_SIZE:
        raise UserError(
            f"FRD needs at least {MIN_SET_SIZE} images per set; got {len(paths_a)} and "
            f"{len(paths_b)}. Use more crops or synthetic samples."
        )
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        if cache is not None:
            stack.enter_context(cache.installed(frd))
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

    cache = FeatureCache()
    rows = []
    for cls, name_a, a, name_b, b in comparisons(manifest, synthetic, seed, max_images):
        for version in versions:
            if min(len(a), len(b)) < MIN_SET_SIZE and cls != "pooled":
                log.warning(
                    "FRD %s %s vs %s (%s): too few images, skipped", version, name_a, name_b, cls
                )
                continue
            value = frd_value(a, b, version, workers, cache)
            log.info("FRD %s %s vs %s (%s): %.4f", version, name_a, name_b, cls, value)
            rows.append(
                {
                    "set_a": name_a,
                    "set_b": name_b,
                    "class": cls,
                    "n_a": len(a),
                    "n_b": len(b),
                    "frd_version": version,
                    "normalisation": NORMALISATION[version],
                    "value": value,
                    "frd_score_version": frd_score_version,
                }
            )
    log.info("radiomics features extracted once each for %d images", cache.extracted)
    return pd.DataFrame(rows, columns=FRD_COLUMNS)
