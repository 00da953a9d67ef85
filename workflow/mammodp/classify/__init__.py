"""Stage ``classify`` (``workflow/rules/classify.smk``): the Swin-T classifier jobs of the
experiment table, DP (Opacus) and non-DP, on cached backbone features or on images.

Modules: ``spec`` (a job's settings and data), ``models`` (backbones, heads, checkpoints),
``features`` (the feature cache), ``training`` and ``trainer`` (the epoch loops and their resume
state), ``dp`` and ``bookkeeping`` (DP-SGD), ``selection`` (the chosen epoch), ``metrics``,
``lineage`` and ``privacy_notes`` (what a guarantee covers) and ``job`` (one run, end to end).
"""

from mammodp.exports import lazy_exports

# name -> the module that defines it; imported on first use (mammodp.exports)
_EXPORTS = {
    "DPSpec": "spec",
    "Job": "spec",
    "TrainSpec": "spec",
    "feature_file": "features",
    "features_for": "features",
    "history_frame": "trainer",
    "load_feature_cache": "features",
    "noise_multiplier": "dp",
    "privacy_lineage": "lineage",
    "row_units": "dp",
    "run": "job",
    "select_data": "spec",
    "train_full": "training",
    "train_head": "training",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
