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


def software_versions() -> dict[str, str]:
    """package -> version in this interpreter ("not installed" where absent)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_software(path: str | Path) -> None:
    """One environment's versions (``mammodp software``, run in each rule family's environment:
    what the jobs of that family really ran with). The standard library only: it runs in every
    environment."""
    import csv

    from .fileio import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["package", "version"])
        writer.writerows(software_versions().items())


def software_table(env_csvs: list[str | Path]):
    """One row per package, one version column per environment (named after its file)."""
    import pandas as pd

    columns = {
        Path(p).stem: pd.read_csv(p, dtype=str).set_index("package")["version"] for p in env_csvs
    }
    return pd.DataFrame(columns).rename_axis("package").reset_index()


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


def write(config: dict, commit: str, out_dir, source: str = "", env_csvs=()) -> None:
    """software.csv, config.yaml and run.json into ``out_dir`` (a folder or
    ``fileio.Outputs``); ``source``: where the workflow's code came from (a checkout's folder,
    a module's URL); ``env_csvs``: each environment's ``write_software`` file (default: this
    interpreter's versions, as the one column ``this``)."""
    import pandas as pd

    from .fileio import as_outputs, atomic_path, write_csv, write_json

    out_dir = as_outputs(out_dir)
    if env_csvs:
        software = software_table(env_csvs)
    else:
        software = pd.DataFrame(software_versions().items(), columns=["package", "this"])
    write_csv(out_dir / "software.csv", software)
    with atomic_path(out_dir / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    write_json(
        out_dir / "run.json",
        {
            **package_version(),
            "git_commit": commit,
            "workflow_source": source,
            "config_sha256": config_hash(config),
        },
    )


def package_version() -> dict:
    """The version of the package that ran and where it was imported from (a module user's
    run shows which copy of the workflow's code computed it)."""
    from . import __version__

    return {"mammodp_version": __version__, "mammodp_package": str(Path(__file__).parent)}
