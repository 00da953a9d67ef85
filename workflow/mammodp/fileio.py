"""Atomic output writing and small file helpers shared by every stage.

Outputs are written to a temporary sibling and renamed into place, so an interrupted or failed
job never leaves a file that a rerun would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import UserError


@cache
def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it: set, then restore at once
    os.umask(mask)
    return mask


def _publish(tmp: Path, path: Path, base_mode: int) -> None:
    """Give ``tmp`` the mode a plain ``open``/``mkdir`` would (mkstemp/mkdtemp make it
    owner-only, which would lock a group that shares ``results/`` out), then rename it."""
    tmp.chmod(base_mode & ~_umask())
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        _publish(tmp, path, 0o666)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from e  # name the output, not the temp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        _publish(tmp, path, 0o777)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(e.errno, e.strerror, str(path)) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def json_safe(obj):
    """``obj`` with NaN and infinities as None (JSON has neither), numpy scalars as Python
    ones."""
    if isinstance(obj, np.floating | np.integer):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def read_json(path: str | os.PathLike):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from e


def write_csv(path: str | os.PathLike, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, lineterminator="\n")


def read_csv(path: str | os.PathLike, required: list[str] | None = None, **kw) -> pd.DataFrame:
    """Read a CSV and check that the columns this project relies on are present."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, **kw)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot be parsed as CSV ({e})") from e
    if required:
        missing = [c for c in required if c not in df.columns]
        if missing:
            raise UserError(
                f"{path}: missing column(s) {missing}; found {list(df.columns)}. "
                "Fix its header, or regenerate it (a file written by an older version of this "
                "workflow: snakemake --forcerun <the rule that writes it>)."
            )
    return df


class Outputs:
    """Where a command writes each of its files, by file name: the paths its rule declared
    (``--outputs name=path ...``), or files of that name in a folder. ``outputs / "main.csv"``
    is the path of main.csv either way, so writers need not know which."""

    def __init__(self, folder: str | os.PathLike | None = None, paths: dict | None = None):
        self.folder, self.paths = folder, paths

    @classmethod
    def parse(cls, pairs: list[str], option: str = "--outputs") -> Outputs:
        paths = {}
        for pair in pairs:
            name, sep, path = pair.partition("=")
            if not sep or not name or not path:
                raise UserError(f"{option} {pair}: expected name=path")
            paths[name] = path
        return cls(paths=paths)

    def __truediv__(self, name: str) -> Path:
        if self.paths is None:
            return Path(self.folder) / name
        if name not in self.paths:
            raise UserError(f"no output path for {name}: add {name}=<path> to --outputs")
        return Path(self.paths[name])


def as_outputs(out: str | os.PathLike | Outputs) -> Outputs:
    return out if isinstance(out, Outputs) else Outputs(folder=out)


def read_manifest(
    path: str | os.PathLike, images: str | os.PathLike, required: list[str] | None = None
) -> pd.DataFrame:
    """A manifest (crops.csv, a synthetic manifest) with its ``path`` column resolved against
    ``images``, the image folder it describes. Manifests store paths relative to that folder, so
    they stay true wherever Snakemake puts it (a module prefix, a storage plugin's local copy)."""
    df = read_csv(path, required=required)
    images = Path(images)
    if not images.is_dir():
        raise UserError(f"{images}: image folder of {path} not found; rerun the rule that made it.")
    df["path"] = [str(images / p) for p in df["path"]]
    return df


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stable_seed(*parts) -> int:
    """A 32-bit seed derived from values, independent of processing order and of PYTHONHASHSEED."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")
