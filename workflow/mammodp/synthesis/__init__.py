"""Stage ``synthesis`` (``workflow/rules/synthesis.smk``): synthetic mass crops, each source
ending in the same ``manifest.csv`` (path, label, generator, seed).

Modules: ``mcgan`` (the study's conditional DCGAN, DP or not: training and sampling),
``medigan_source`` (generation through medigan), ``published`` (the study's published samples)
and ``loss_figure`` (the MCGAN's loss curves).
"""

from mammodp.exports import lazy_exports

# name -> the module that defines it; imported on first use (mammodp.exports)
_EXPORTS = {
    "GanDPSpec": "mcgan",
    "GanSpec": "mcgan",
    "export_package": "medigan_source",
    "gan_losses": "loss_figure",
    "load_generator": "mcgan",
    "published_manifest": "published",
    "sample": "mcgan",
    "train": "mcgan",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
