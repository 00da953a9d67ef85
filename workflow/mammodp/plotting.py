"""Figures without a display: matplotlib on its Agg backend, and each figure written as a PNG
and its PDF twin, atomically."""

from __future__ import annotations

from pathlib import Path

from .fileio import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend (jobs have no display), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out: str | Path | tuple) -> None:
    """Write ``out``: a (png, pdf) pair of paths, or a .png and its .pdf twin; atomically."""
    pair = out if isinstance(out, tuple) else (Path(out), Path(out).with_suffix(".pdf"))
    for path in map(Path, pair):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, format=path.suffix.lstrip("."))
    pyplot().close(fig)
