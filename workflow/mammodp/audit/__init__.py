"""Stage ``audit`` (``workflow/rules/audit.smk``): what the privacy guarantees look like in
practice: a membership-inference audit of classifier runs (``mia``, LiRA with an empirical
epsilon), a memorisation audit of synthetic sources (``memorisation``) and their tables and
figures (``summary``).
"""

from mammodp.exports import lazy_exports

# name -> the module that defines it; imported on first use (mammodp.exports)
_EXPORTS = {
    "AuditSpec": "mia",
    "audit_markdown": "summary",
    "audit_table": "summary",
    "epsilon_figure": "summary",
    "roc_figure": "summary",
    "run_audit": "mia",
    "scores_frame": "mia",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
