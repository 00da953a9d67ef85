"""medigan generation, offline, through medigan's own Generators API."""

from __future__ import annotations

import cv2
import pytest
import torch

from mammodp.errors import UserError
from mammodp.synthesis import mcgan, medigan_source


@pytest.fixture(scope="module")
def generator_pt(tmp_path_factory):
    d = tmp_path_factory.mktemp("gan")
    images = torch.rand(16, 1, 128, 128) * 2 - 1
    spec = mcgan.GanSpec(epochs=15, width=8, lr=1e-9, checkpoint_every=15, seed=2)
    mcgan.train(images, torch.tensor([0, 1] * 8), spec, d / "model")
    return d / "model" / "generator.pt"


def test_generate_through_medigan_from_an_exported_package(tmp_path, generator_pt):
    work = tmp_path / "medigan"
    medigan_source.export_package(generator_pt, work)
    df = medigan_source.generate(work, medigan_source.MODEL_ID, 5, seed=3, out_dir=tmp_path / "out")
    assert len(df) == 10 and df["label"].tolist() == [0] * 5 + [1] * 5
    assert df["generator"].unique().tolist() == ["medigan:00008_C-DCGAN_MMG_MASSES"]
    for path in df["path"]:
        img = cv2.imread(str(tmp_path / "out" / path), cv2.IMREAD_UNCHANGED)
        assert img.shape == (128, 128)
    again = medigan_source.generate(
        work, medigan_source.MODEL_ID, 5, seed=3, out_dir=tmp_path / "b"
    )
    for a, b in zip(df["path"], again["path"], strict=True):
        assert (cv2.imread(str(tmp_path / "out" / a)) == cv2.imread(str(tmp_path / "b" / b))).all()


def test_offline_without_the_catalogue(tmp_path):
    with pytest.raises(
        UserError, match=r"place medigan's global.json from .* at .*/config/global.json"
    ):
        medigan_source.generate(tmp_path / "empty", medigan_source.MODEL_ID, 2, 0, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_offline_without_the_model_package(tmp_path, generator_pt):
    import json

    work = tmp_path / "medigan"
    package = medigan_source.export_package(generator_pt, work)
    config = work / "config" / "global.json"
    catalogue = json.loads(config.read_text())
    catalogue[medigan_source.MODEL_ID]["execution"]["package_link"] = (
        "https://zenodo.org/record/7031766/files/00008_C-DCGAN_MMG_MASSES.zip?download=1"
    )
    config.write_text(json.dumps(catalogue))
    for f in package.iterdir():
        f.unlink()
    expected = (
        r"place the model package 00008_C-DCGAN_MMG_MASSES.zip from https://zenodo.org/.* at "
        r".*/models/00008_C-DCGAN_MMG_MASSES/00008_C-DCGAN_MMG_MASSES.zip"
    )
    with pytest.raises(UserError, match=expected):
        medigan_source.generate(work, medigan_source.MODEL_ID, 2, 0, tmp_path / "o")
