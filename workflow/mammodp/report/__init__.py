"""Stage ``report`` (``workflow/rules/report.smk``): the paper's tables (``tables``), figures
(``figures``) and the study's published numbers beside ours (``comparison``), all computed from
the per-run files.
"""

from mammodp.exports import lazy_exports

# name -> the module that defines it; imported on first use (mammodp.exports)
_EXPORTS = {
    "Context": "comparison",
    "curves": "figures",
    "paper_comparison": "figures",
    "privacy_utility": "figures",
    "sample_grid": "figures",
    "summarise": "tables",
    "write_comparison": "comparison",
    "write_tables": "tables",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
