"""Memorisation audit of a synthetic source: does any synthetic crop copy a real training crop?

For each synthetic crop, the distance to its closest real training crop and to its closest real
held-out crop (CBIS-DDSM val and test: crops the generator never saw), over an equal number of
each (the training crops subsampled, seeded), in pixel space and, when cached features are
given, in backbone-feature space. The generator trained on flipped crops, so a synthetic crop is
compared in its four flip variants (none, h, v, hv) and the closest counts. Reported:

- the distance-to-closest-record (DCR) distributions, synthetic -> train (every training crop)
  and -> held-out, beside the real baseline held-out -> train;
- the share of synthetic crops whose nearest neighbour in (train subset + held-out) is a training
  crop, with a Clopper-Pearson interval: about 0.5 means no memorisation signal;
- near-copies: synthetic crops closer to a training crop than the ``quantile`` of the held-out ->
  train distances (how close a crop of another patient gets), against the count expected if the
  synthetic crops were like held-out ones.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from mammodp.errors import UserError

SPACES = ("pixel", "features")


def load_pixels(paths, size: int) -> torch.Tensor:
    """Grayscale crops as (N, size * size) float in [0, 1] (area-resized)."""
    from mammodp import images

    return images.load_images(list(paths), size)[:, 0].add(1.0).div(2.0).flatten(1)


def pixel_flips(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, D) -> (N, 4, D): the crops unflipped, flipped left-right, up-down and both."""
    img = x.view(-1, size, size)
    variants = [img, img.flip(-1), img.flip(-2), img.flip(-1, -2)]
    return torch.stack(variants, 1).flatten(2)


def nearest(queries: torch.Tensor, refs: torch.Tensor, metric: str, chunk: int = 1024):
    """For each query (Q, V, D; V variants) the smallest distance to any of ``refs`` (R, D, or
    R, W, D with W variants of each reference) over the variants, and that reference's index.
    ``metric``: euclidean (per pixel: divided by sqrt(D), an RMS difference) or cosine
    (1 - cosine similarity)."""
    q, v, d = queries.shape
    flat = queries.reshape(q * v, d).double()
    per_ref = refs.shape[1] if refs.dim() == 3 else 1
    refs = refs.reshape(-1, d).double()
    if metric == "cosine":
        flat = torch.nn.functional.normalize(flat, dim=1)
        refs = torch.nn.functional.normalize(refs, dim=1)
    best, idx = [], []
    for s in range(0, len(flat), chunk):
        part = flat[s : s + chunk]
        dist = 1 - part @ refs.T if metric == "cosine" else torch.cdist(part, refs).div_(np.sqrt(d))
        m, i = dist.min(1)
        best.append(m)
        idx.append(i)
    best, idx = torch.cat(best).view(q, v), torch.cat(idx).view(q, v)
    m, var = best.min(1)
    return m.numpy(), idx.gather(1, var[:, None])[:, 0].numpy() // per_ref


def split_real(manifest, seed: int):
    """(every training crop, train subset, held-out) real CBIS-DDSM crops; the subset and the
    held-out set equally large: every held-out crop (val and test) and as many training crops
    at random, or the reverse when the training crops are fewer."""
    cbis = manifest[manifest["dataset"] == "cbis-ddsm"]
    train = cbis[cbis["split"] == "train"].reset_index(drop=True)
    held = cbis[cbis["split"].isin(["val", "test"])]
    m = min(len(train), len(held))
    if m == 0:
        raise UserError(
            "the memorisation audit needs real CBIS-DDSM training and held-out (val, test) "
            "crops in crops.csv; rebuild the split"
        )
    rng = np.random.default_rng(seed)
    sub = np.sort(rng.choice(len(train), size=m, replace=False))
    held = held.iloc[np.sort(rng.choice(len(held), size=m, replace=False))]
    return train, sub, held.reset_index(drop=True)


def audit_space(syn_q, train_r, subset, held_r, held_q, metric: str, quantile: float, copy=None):
    """One space's numbers. ``syn_q``, ``held_q``: queries with variants (N, V, D); ``train_r``:
    every training crop (M, D), ``subset`` the indices of as many as ``held_r`` holds. Near-copies
    and the closest pairs look at every training crop; the nearest-is-train share at the equal
    halves (so that 0.5 is what no memorisation gives). ``copy``: (synthetic queries, held-out
    queries, training references) for the near-copies and their baseline instead, when the
    flips are on the references' side (features: the held-out crops have one view only), so
    that synthetic and held-out crops are measured alike."""
    syn_c, held_c, train_c = copy if copy is not None else (syn_q, held_q, train_r)
    d_all, i_all = nearest(syn_c, train_c, metric)
    d_sub, _ = nearest(syn_q, train_r[subset], metric)
    d_held, _ = nearest(syn_q, held_r, metric)
    d_real, _ = nearest(held_c, train_c, metric)  # the baseline: another patient's crop
    closer = (d_sub < d_held) + 0.5 * (d_sub == d_held)
    k, n = int(np.round(closer.sum())), len(closer)
    lo, hi = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    threshold = float(np.quantile(d_real, quantile))
    return {
        "metric": metric,
        "share_nearest_is_train": float(closer.mean()),
        "share_ci95": [float(lo), float(hi)],
        "near_copy_threshold": threshold,
        "near_copy_quantile": quantile,
        "near_copies": int((d_all < threshold).sum()),
        "near_copies_expected": float(quantile * n),
        "dcr_train_median": float(np.median(d_all)),
        "dcr_heldout_median": float(np.median(d_held)),
        "dcr_real_median": float(np.median(d_real)),
        "_per_crop": {"dcr_train": d_all, "dcr_heldout": d_held, "nearest_train": i_all},
        "_baseline": d_real,
    }


def audit(manifest, synthetic, size: int, seed: int, quantile: float, features=None) -> dict:
    """The audit of one synthetic source (``synthetic``: its manifest with resolved paths).
    ``features``: the cached-feature table (``classify.load_feature_cache``), or None for the
    pixel space only. Returns per space the numbers, plus the rows compared."""
    if not len(synthetic):
        raise UserError("the memorisation audit needs synthetic crops: the manifest is empty")
    train, subset, held = split_real(manifest, seed)
    syn_px = load_pixels(synthetic["path"], size)
    train_px, held_px = load_pixels(train["path"], size), load_pixels(held["path"], size)
    out = {"n_synthetic": len(synthetic), "n_train": len(train), "n_heldout": len(held)}
    out["image_size"] = size
    out["pixel"] = audit_space(
        pixel_flips(syn_px, size),
        train_px,
        subset,
        held_px,
        pixel_flips(held_px, size),
        "euclidean",
        quantile,
    )
    if features is not None:
        from mammodp.classify.features import features_for

        syn_f = features_for(features, list(synthetic["path"]), "training")  # 4 variants
        train_all = features_for(features, list(train["path"]), "training")  # 4 variants
        held_f = features_for(features, list(held["path"]), "evaluation")[:, 0]  # one view
        # The share: synthetic flips against unflipped real crops on both sides. Near-copies and
        # their baseline: unflipped synthetic and held-out crops against every training flip.
        copy = (syn_f[:, :1], held_f[:, None], train_all)
        out["features"] = audit_space(
            syn_f, train_all[:, 0], subset, held_f, held_f[:, None], "cosine", quantile, copy
        )
    out["_train"], out["_synthetic"] = train, synthetic.reset_index(drop=True)
    return out
