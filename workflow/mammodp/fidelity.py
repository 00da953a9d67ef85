"""Fréchet Radiomics Distance (frd-score) between real and synthetic crops.

The study's four comparisons (the keys of the paper's fidelity sheet): real vs real (the reference
floor), real vs synthetic, synthetic vs synthetic and CBIS-DDSM vs the external test set, the real
set first, pooled and per class. Two set designs:

- ``halves``: one pair per comparison: two disjoint halves of the training crops, the training
  crops vs all synthetic crops, two disjoint synthetic halves, CBIS-DDSM test vs external test.
- ``study``: the sheet's three-pair design: each pool (training crops R, synthetic crops S,
  external test crops B) drawn into three disjoint seeded sets (``set_size`` each, or a third of
  the pool), and the pairs R1-R2, R1-R3, R2-R3 / S1-R1, S2-R2, S3-R3 / S1-S2, S1-S3, S2-S3 /
  R1-B1, R2-B2, R3-B3, reported as mean ± std over the three pairs as the sheet does. This is the
  most plausible reading of the sheet; on the published crops it does not reproduce the sheet's
  values (see the README's FRD paragraph).

Each value is recorded with the FRD version and its normalisation (v0: the study's era, ~94
features, min-max to [0, 7.4567]; v1: ~464 features, z-score, log of the squared distance) and the
normalisation reference (frd-score's ``norm_ref``: v0 defaults to the joint sets, v1 to set_a).
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import warnings
from typing import NamedTuple

import numpy as np
import pandas as pd

from .errors import UserError, check_choice

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
    "comparison",
    "pair",
    "design",
]
COMPARISONS = ("real_vs_real", "real_vs_synthetic", "synthetic_vs_synthetic", "cbis_vs_bcdr")
DESIGNS = ("halves", "study")
STUDY_SETS = 3  # the sheet's three sets per pool, three pairs per comparison
NORM_REFS = ("default", "joint", "independent", "d1")
DEFAULT_NORM_REF = {"v0": "joint", "v1": "d1"}  # frd-score's defaults per version
_SCALING = {
    "v0": ("minmax [0, 7.4567]", "Frechet distance"),
    "v1": ("z-score", "log of squared Frechet distance"),
}
_REFERENCE = {
    "joint": "on the joint sets",
    "independent": "on each set alone",
    "d1": "w.r.t. set_a",
}
MIN_SET_SIZE = 5  # a covariance needs several images per set


def norm_ref_of(version: str, normalisation: str) -> str:
    """frd-score's ``norm_ref`` for a configured ``normalisation`` (``default``: the version's)."""
    check_choice("fidelity.normalisation", normalisation, NORM_REFS)
    return DEFAULT_NORM_REF[version] if normalisation == "default" else normalisation


def normalisation_label(version: str, normalisation: str = "default") -> str:
    scaling, distance = _SCALING[version]
    return f"{scaling} {_REFERENCE[norm_ref_of(version, normalisation)]}; {distance}"


NORMALISATION = {v: normalisation_label(v) for v in _SCALING}  # frd-score's defaults


def halves(paths: list[str], seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(paths))
    mid = len(paths) // 2
    return [paths[i] for i in sorted(perm[:mid])], [paths[i] for i in sorted(perm[mid:])]


def disjoint_sets(paths: list[str], k: int, size: int | None, seed: int) -> list[list[str]]:
    """``k`` disjoint seeded random sets of ``size`` paths each (at most ``len(paths) // k``;
    ``None``: exactly that, the pool split into equal parts), each sorted."""
    per_set = len(paths) // k if size is None else min(size, len(paths) // k)
    perm = np.random.default_rng(seed).permutation(len(paths))
    return [sorted(paths[i] for i in perm[j * per_set : (j + 1) * per_set]) for j in range(k)]


def _cap(paths: list[str], max_images: int | None, seed: int) -> list[str]:
    """At most ``max_images`` paths, a seeded sample (a quicker, noisier estimate)."""
    if not max_images or len(paths) <= max_images:
        return paths
    rng = np.random.default_rng(seed)
    return sorted(paths[i] for i in rng.choice(len(paths), max_images, replace=False))


CLASSES = {"pooled": None, "benign": 1, "malignant": 0}


class Pair(NamedTuple):
    """One FRD computation: two image sets of one comparison of one class."""

    cls: str
    comparison: str
    pair: int
    set_a: str
    paths_a: list[str]
    set_b: str
    paths_b: list[str]


_PAIRS_WITHIN = ((0, 1), (0, 2), (1, 2))  # R1-R2, R1-R3, R2-R3 as the sheet


def _study_pairs(cls, real, syn, external, seed, set_size) -> list[Pair]:
    r = disjoint_sets(real, STUDY_SETS, set_size, seed)
    s = disjoint_sets(syn, STUDY_SETS, set_size, seed)
    rn = [f"real_train_set{i + 1}" for i in range(STUDY_SETS)]
    sn = [f"synthetic_set{i + 1}" for i in range(STUDY_SETS)]
    out = [
        Pair(cls, "real_vs_real", p, rn[i], r[i], rn[j], r[j])
        for p, (i, j) in enumerate(_PAIRS_WITHIN, 1)
    ]
    out += [
        Pair(cls, "real_vs_synthetic", i + 1, rn[i], r[i], sn[i], s[i]) for i in range(STUDY_SETS)
    ]
    out += [
        Pair(cls, "synthetic_vs_synthetic", p, sn[i], s[i], sn[j], s[j])
        for p, (i, j) in enumerate(_PAIRS_WITHIN, 1)
    ]
    if external:
        b = disjoint_sets(external, STUDY_SETS, set_size, seed)
        out += [
            Pair(cls, "cbis_vs_bcdr", i + 1, rn[i], r[i], f"external_test_set{i + 1}", b[i])
            for i in range(STUDY_SETS)
        ]
    return out


def comparisons(
    manifest: pd.DataFrame,
    synthetic: pd.DataFrame,
    seed: int,
    max_images: int | None = None,
    design: str = "halves",
    set_size: int | None = None,
) -> list[Pair]:
    """The study's four comparisons as :class:`Pair` rows of the chosen set ``design``, pooled
    and per class (benign = 1, malignant = 0), the real set first."""
    check_choice("fidelity.design", design, DESIGNS)
    out = []
    for cls, label in CLASSES.items():
        m = manifest if label is None else manifest[manifest["label"].astype(int) == label]
        syn = synthetic if label is None else synthetic[synthetic["label"].astype(int) == label]
        real_train = m[(m["split"] == "train") & (m["dataset"] == "cbis-ddsm")]
        real = _cap(sorted(real_train["path"]), max_images, seed)
        syn_paths = _cap(sorted(syn["path"]), max_images, seed)
        test = m[m["split"] == "test"]
        external = _cap(sorted(test.loc[test["dataset"] != "cbis-ddsm", "path"]), max_images, seed)
        if design == "study":
            out += _study_pairs(cls, real, syn_paths, external, seed, set_size)
            continue
        ra, rb = halves(real, seed)
        sa, sb = halves(syn_paths, seed)
        out += [
            Pair(cls, "real_vs_real", 1, "real_train_half1", ra, "real_train_half2", rb),
            Pair(cls, "real_vs_synthetic", 1, "real_train", real, "synthetic", syn_paths),
            Pair(cls, "synthetic_vs_synthetic", 1, "synthetic_half1", sa, "synthetic_half2", sb),
        ]
        if external:
            cbis = _cap(sorted(test.loc[test["dataset"] == "cbis-ddsm", "path"]), max_images, seed)
            out.append(
                Pair(cls, "cbis_vs_bcdr", 1, "cbis-ddsm_test", cbis, "external_test", external)
            )
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
    norm_ref: str | None = None,
) -> float:
    """frd-score's FRD of two path lists; ``norm_ref`` (joint, independent, d1) overrides the
    version's default normalisation reference."""
    from frd_score import frd  # heavy import (pyradiomics, SimpleITK): only when computing

    if min(len(paths_a), len(paths_b)) < MIN_SET_SIZE:
        raise UserError(
            f"FRD needs at least {MIN_SET_SIZE} images per set; got {len(paths_a)} and "
            f"{len(paths_b)}. Use more crops or synthetic samples."
        )
    kwargs = {} if norm_ref is None else {"norm_ref": norm_ref}
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(frd_info_summarised())
        if cache is not None:
            stack.enter_context(cache.installed(frd))
        return float(
            frd.compute_frd(
                [list(paths_a), list(paths_b)], frd_version=version, num_workers=workers, **kwargs
            )
        )


class _FrdInfo(logging.Filter):
    """Drops frd-score's info records (it logs every normalisation step on the root logger),
    counting them by their first words; its warnings pass."""

    def __init__(self):
        super().__init__()
        self.counts: collections.Counter = collections.Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        if "frd_score" not in record.pathname or record.levelno >= logging.WARNING:
            return True
        self.counts[" ".join(record.getMessage().split()[:2])] += 1
        return False


@contextlib.contextmanager
def frd_info_summarised():
    """frd-score's info lines reduced to one summary line in this job's log."""
    root = logging.getLogger()
    quiet = _FrdInfo()
    targets = [root, *root.handlers]
    for t in targets:
        t.addFilter(quiet)
    try:
        yield quiet
    finally:
        for t in targets:
            t.removeFilter(quiet)
        if quiet.counts:
            common = ", ".join(f"{k!r} x{n}" for k, n in quiet.counts.most_common(3))
            log.info("frd-score: %d info lines left out (%s)", quiet.counts.total(), common)


def compute_table(
    manifest: pd.DataFrame,
    synthetic: pd.DataFrame,
    versions: list[str],
    seed: int,
    workers: int,
    max_images: int | None = None,
    design: str = "halves",
    set_size: int | None = None,
    normalisation: str = "default",
) -> pd.DataFrame:
    """One row per (comparison, pair, class, FRD version) of the chosen set design."""
    from frd_score import __version__ as frd_score_version

    refs = {v: norm_ref_of(v, normalisation) for v in versions}
    cache = FeatureCache()
    rows = []
    for p in comparisons(manifest, synthetic, seed, max_images, design, set_size):
        a, b = p.paths_a, p.paths_b
        for version in versions:
            if min(len(a), len(b)) < MIN_SET_SIZE and p.cls != "pooled":
                log.warning(
                    "FRD %s %s vs %s (%s): too few images, skipped",
                    version,
                    p.set_a,
                    p.set_b,
                    p.cls,
                )
                continue
            value = frd_value(a, b, version, workers, cache, refs[version])
            log.info("FRD %s %s vs %s (%s): %.4f", version, p.set_a, p.set_b, p.cls, value)
            rows.append(_frd_row(p, version, normalisation, value, frd_score_version, design))
    log.info("radiomics features extracted once each for %d images", cache.extracted)
    table = pd.DataFrame(rows, columns=FRD_COLUMNS)
    _log_pooled_means(table, design)
    return table


def _frd_row(
    p: Pair, version: str, normalisation: str, value: float, frd_score_version: str, design: str
) -> dict:
    """One row of the FRD table (``FRD_COLUMNS``)."""
    return {
        "set_a": p.set_a,
        "set_b": p.set_b,
        "class": p.cls,
        "n_a": len(p.paths_a),
        "n_b": len(p.paths_b),
        "frd_version": version,
        "normalisation": normalisation_label(version, normalisation),
        "value": value,
        "frd_score_version": frd_score_version,
        "comparison": p.comparison,
        "pair": p.pair,
        "design": design,
    }


def _log_pooled_means(table: pd.DataFrame, design: str) -> None:
    """One log line per (FRD version, comparison): the pooled value's mean ± std over pairs."""
    pooled = table[table["class"] == "pooled"]
    for (version, comp), g in pooled.groupby(["frd_version", "comparison"], sort=False):
        log.info(
            "FRD %s %s (%s design, %d pair(s)): %.3f ± %.3f",
            version,
            comp,
            design,
            len(g),
            g["value"].mean(),
            g["value"].std(ddof=0),
        )
