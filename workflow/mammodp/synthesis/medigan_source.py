"""Synthetic crops through medigan (``Generators``), by default the study's published MCGAN,
model ``00008_C-DCGAN_MMG_MASSES`` (condition 0 = malignant, 1 = benign).

medigan reads its model catalogue (``config/global.json``) and model packages
(``models/<model_id>/``) relative to the working directory and downloads both when missing. Runs
happen inside ``synthesis.medigan.workdir``; offline, the missing file is named with the place to
put it. ``export_package`` writes this project's own MCGAN checkpoint as a medigan model package
(the same layout medigan downloads), so the medigan code path runs, and is tested, offline.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from mammodp.errors import UserError
from mammodp.fileio import atomic_dir, stable_seed

from . import mcgan

log = logging.getLogger(__name__)

MODEL_ID = "00008_C-DCGAN_MMG_MASSES"
CONDITIONS = {0: "malignant", 1: "benign"}


@contextlib.contextmanager
def in_workdir(workdir: Path):
    """medigan resolves config/ and models/ against the working directory and imports model
    packages as ``models.<id>``: run it there."""
    old_cwd, old_path = os.getcwd(), list(sys.path)
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    sys.path.insert(0, str(workdir))
    try:
        yield
    finally:
        os.chdir(old_cwd)
        sys.path[:] = old_path


def _generators():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # medigan imports pkg_resources (deprecated)
        from medigan import Generators
        from medigan.constants import CONFIG_FILE_URL
    try:
        return Generators(), CONFIG_FILE_URL
    except Exception as e:
        raise UserError(
            f"medigan could not load its model catalogue ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}). Offline, place medigan's global.json from "
            f"{CONFIG_FILE_URL} at {Path.cwd() / 'config' / 'global.json'}."
        ) from e


def generate(
    workdir: str | Path, model_id: str, n_per_class: int, seed: int, out_dir: str | Path
) -> pd.DataFrame:
    """``n_per_class`` crops per condition through medigan; returns the synthetic manifest."""
    workdir = Path(workdir).resolve()
    out_dir = Path(out_dir)  # as given: manifest paths stay relative to the run directory
    rows = []
    with atomic_dir(out_dir.resolve()) as tmp, in_workdir(workdir):
        gens, _ = _generators()
        if model_id not in gens.config_manager.model_ids:
            raise UserError(
                f"medigan's catalogue ({workdir / 'config' / 'global.json'}) has no model "
                f"{model_id}; check synthesis.medigan.model_id."
            )
        execution = gens.config_manager.get_config_by_id(model_id, "execution")
        try:
            gens.add_model_executor(model_id)
        except Exception as e:
            package = workdir / "models" / model_id / f"{execution['package_name']}.zip"
            raise UserError(
                f"medigan could not load model {model_id} ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:200]}). Offline, place the model package "
                f"{execution['package_name']}.zip from {execution['package_link']} at {package}."
            ) from e
        for label, name in CONDITIONS.items():
            torch.manual_seed(stable_seed(seed, label))
            np.random.seed(stable_seed(seed, label) % 2**32)
            raw = tmp / f".raw{label}"
            gens.generate(
                model_id=model_id,
                num_samples=n_per_class,
                output_path=f"{raw}/",
                save_images=True,
                condition=label,
            )
            files = sorted(raw.glob("*.png"))
            if len(files) != n_per_class:
                raise UserError(
                    f"medigan model {model_id} wrote {len(files)} images for condition {label}, "
                    f"expected {n_per_class}"
                )
            for i, f in enumerate(files):
                img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
                if img is None or img.shape != (mcgan.IMAGE_SIZE, mcgan.IMAGE_SIZE):
                    raise UserError(f"{f}: medigan output is not a 128x128 image")
                fname = f"medigan_{i:05d}_{name}.png"
                cv2.imwrite(str(tmp / fname), img)
                rows.append({"path": fname, "label": label})  # fileio.read_manifest
            shutil.rmtree(raw)
    df = pd.DataFrame(rows)
    df["generator"] = f"medigan:{model_id}"
    df["seed"] = seed
    return df


# ----------------------------------------------------------------------------- export

_PACKAGE_TEMPLATE = '''"""medigan model package exported by mammodp: the study's MCGAN architecture
with weights trained by this workflow. generate(): condition 0 = malignant, 1 = benign, None =
balanced."""

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

N_CLASSES = 2
IMAGE_SIZE = 128

{generator_source}

{cast_source}

LEGACY_SPEC = {legacy_spec!r}


def _load(model_file):
    ckpt = torch.load(model_file, map_location="cpu", weights_only=True)
    spec = {{**LEGACY_SPEC, **ckpt["spec"]}}
    g = Generator(spec["latent_dim"], spec["embedding_dim"], spec["width"])
    g.load_state_dict(ckpt["generator"])
    return g.eval(), spec


def generate(model_file, num_samples, output_path, save_images=True, condition=None, z=None):
    g, spec = _load(model_file)
    if condition is None:
        labels = torch.arange(num_samples) % 2
    else:
        labels = torch.full((num_samples,), int(condition))
    if z is None:
        z = torch.randn(num_samples, spec["latent_dim"])
    with torch.no_grad():
        x = g(z, labels) if num_samples else torch.empty(0, 1, IMAGE_SIZE, IMAGE_SIZE)
    images = to_uint8(x, spec["input_range"], spec["output_cast"])
    if not save_images:
        return list(images)
    Path(output_path).mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(images, labels.tolist())):
        name = "benign" if label == 1 else "malignant"
        cv2.imwrite(str(Path(output_path) / f"{{i}}_{{name}}.png"), np.ascontiguousarray(img))
    return None
'''


def export_package(
    generator_pt: str | Path,
    workdir: str | Path,
    model_id: str = MODEL_ID,
    model_name: str = "1750",
) -> Path:
    """Write ``generator_pt`` (an MCGAN checkpoint of this project) as a medigan model package
    under ``workdir/models/<model_id>/`` and register it in ``workdir/config/global.json``."""
    workdir = Path(workdir)
    package = workdir / "models" / model_id
    package.mkdir(parents=True, exist_ok=True)
    source = _PACKAGE_TEMPLATE.format(
        generator_source=inspect.getsource(mcgan.Generator),
        cast_source=inspect.getsource(mcgan.to_uint8),
        legacy_spec=mcgan.LEGACY_SPEC,
    )
    (package / "__init__.py").write_text(source)
    shutil.copy(generator_pt, package / f"{model_name}.pt")
    entry = {
        "execution": {
            "package_name": model_id,
            "package_link": str((package.parent / f"{model_id}.zip").resolve()),
            "model_name": model_name,
            "extension": ".pt",
            "image_size": [mcgan.IMAGE_SIZE, mcgan.IMAGE_SIZE],
            "dependencies": ["numpy", "torch", "opencv-contrib-python-headless"],
            "generate_method": {
                "name": "generate",
                "args": {
                    "base": ["model_file", "num_samples", "output_path", "save_images"],
                    "custom": {"condition": None, "z": None},
                },
                "input_latent_vector_size": 100,
            },
        },
        "selection": {"generates": ["mass", "masses"], "modality": ["MMG"], "tags": []},
        "description": {"title": "MCGAN exported by mammodp", "comment": str(generator_pt)},
    }
    config = workdir / "config" / "global.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    catalogue = json.loads(config.read_text()) if config.exists() else {}
    catalogue[model_id] = entry
    config.write_text(json.dumps(catalogue, indent=2))
    return package
