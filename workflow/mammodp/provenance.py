"""What a reader needs to trust a results folder: the config used (and its hash), the code
version (the package's version and folder, the git commit) and the versions of the software that
computed it."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import yaml

PACKAGES = [
    "torch",
    "torchvision",
    "timm",
    "opacus",
    "snakemake",
    "pydicom",
    "opencv-contrib-python-headless",
    "numpy",
    "pandas",
    "scikit-learn",
    "scipy",
    "matplotlib",
    "medigan",
    "frd-score",
    "pyradiomics-bhklab",
    "SimpleITK",
    "urllib3",
    "mammodp",
]


def software_versions():
    # Imported here, not at the top: the Snakefile imports git_commit at parse time, in
    # Snakemake's own environment (no pandas there under --software-deployment-method conda).
    import pandas as pd

    rows = [{"package": "python", "version": platform.python_version()}]
    for name in PACKAGES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "not installed"
        rows.append({"package": name, "version": version})
    return pd.DataFrame(rows)


def git_commit(repo: str | Path) -> str:
    """The commit of the workflow's checkout, with +dirty for uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def write(config: dict, commit: str, out_dir: str | Path) -> None:
    from .fileio import atomic_path, write_csv, write_json

    out_dir = Path(out_dir)
    write_csv(out_dir / "software.csv", software_versions())
    with atomic_path(out_dir / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    write_json(
        out_dir / "run.json",
        {**package_version(), "git_commit": commit, "config_sha256": config_hash(config)},
    )


def package_version() -> dict:
    """The version of the package that ran and where it was imported from (a module user's
    run shows which copy of the workflow's code computed it)."""
    from . import __version__

    return {"mammodp_version": __version__, "mammodp_package": str(Path(__file__).parent)}
