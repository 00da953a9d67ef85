"""Privacy lineage: a run reports the epsilon of every private source of its weights or data."""

from __future__ import annotations

import json

import pytest

from mammodp import classify
from mammodp.classify import models
from mammodp.classify.job import _initial_backbone
from mammodp.classify.lineage import read_source_privacy
from mammodp.config import Experiment

from ..helpers.jobs import make_job
from ..helpers.models import TINY, TV_TINY


@pytest.mark.parametrize(
    ("train_data", "source", "private", "want"),
    [
        ("real", None, False, (False, None)),  # no source: nothing synthetic anywhere
        ("real", {"dp": False, "synthetic_in_training": True}, False, (True, False)),
        ("real", {"dp": True, "synthetic_in_lineage": True}, True, (True, True)),
        ("real+synthetic", None, False, (True, False)),
        ("real", "unknown", False, (None, None)),  # a source model with no privacy.json
    ],
)
def test_privacy_lineage_follows_the_source_model(train_data, source, private, want):
    init = "backbone" if source is None else "from:src"
    job = make_job("dst", eps=6.0, init=init)
    job.experiment = Experiment("dst", "-", "x", train_data, "head", "mlp", init, 6.0)
    job.synthetic_generator_private = private
    known = None if source == "unknown" else source
    lineage = classify.privacy_lineage(job.experiment, job, known)
    assert (lineage["synthetic_in_lineage"], lineage["generator_private"]) == want
    assert ("NOT trained privately" in lineage["note"]) == (want == (True, False))


def test_backbone_lineage_follows_frozen_sources_to_the_run_that_trained_the_backbone(tmp_path):
    """backbone:<x> takes x's backbone only: its privacy lineage is that of the run that trained
    the backbone (x itself, or x's own source when x is frozen), or none for pretrained weights."""
    from mammodp.fileio import sha256_file

    def save(name, trained, source):
        d = tmp_path / name
        d.mkdir()
        model = models.Classifier(models.create_backbone(TV_TINY), models.make_head("mlp", 32))
        models.save_checkpoint(
            d / "model.pt",
            spec=TV_TINY,
            head_type="mlp",
            model=model,
            backbone_trained=trained,
            backbone_source=source,
        )
        return str(d / "model.pt")

    def ref(path):
        return {"kind": "model", "path": path, "sha256": sha256_file(path)}

    full = save("full", True, {"kind": "pretrained"})  # dbr15: synthetic crops, non-private
    (tmp_path / "full" / "privacy.json").write_text(
        json.dumps(
            {
                "experiment": "full",
                "dp": False,
                "train_data": "synthetic",
                "synthetic_in_training": True,
                "synthetic_in_lineage": True,
            }
        )
    )
    frozen_on_full = save("frozen_on_full", False, ref(full))
    (tmp_path / "frozen_on_full" / "privacy.json").write_text(
        json.dumps(
            {
                "experiment": "frozen_on_full",
                "dp": True,
                "train_data": "real",
                "synthetic_in_training": False,
                "synthetic_in_lineage": True,
            }
        )
    )
    frozen_on_imagenet = save("frozen_on_imagenet", False, {"kind": "pretrained"})
    (tmp_path / "frozen_on_imagenet" / "privacy.json").write_text(
        json.dumps(
            {
                "experiment": "frozen_on_imagenet",
                "dp": False,
                "train_data": "synthetic",
                "synthetic_in_training": True,
                "synthetic_in_lineage": True,
            }
        )
    )

    def lineage(init, path):
        exp = Experiment("dst", "dbr155", "x", "real", "head", "mlp", init, 6.0)
        job = make_job("dst", eps=6.0)
        return classify.privacy_lineage(exp, job, read_source_privacy(exp, path))

    dbr155 = lineage("backbone:full", full)
    assert (dbr155["source_dp"], dbr155["synthetic_in_lineage"]) == (False, True)
    assert dbr155["generator_private"] is False and "NOT trained privately" in dbr155["note"]
    assert "Backbone from full, whose training was not private (synthetic crops)" in dbr155["note"]
    chained = lineage("backbone:frozen_on_full", frozen_on_full)
    assert chained["source_dp"] is False  # full's training, not frozen_on_full's DP head
    assert (
        "Backbone from frozen_on_full (trained in full), whose training was not" in chained["note"]
    )
    imagenet = lineage("backbone:frozen_on_imagenet", frozen_on_imagenet)
    assert (imagenet["source_dp"], imagenet["synthetic_in_lineage"]) == (None, False)
    assert "the configured backbone, passed on unchanged by frozen sources" in imagenet["note"]
    assert "NOT trained privately" not in imagenet["note"]
    # from: the source's head came along: its own training counts (its synthetic crops).
    whole = lineage("from:frozen_on_imagenet", frozen_on_imagenet)
    assert (whole["source_dp"], whole["synthetic_in_lineage"]) == (False, True)
    assert whole["source_loaded"] == "model" and imagenet["source_loaded"] == "backbone"


def test_dp_run_on_dp_mcgan_crops_reports_the_lineage_epsilon(tmp_path, tiny_manifest):
    from opacus.accountants import RDPAccountant

    exp = Experiment("mix", "-", "x", "real+synthetic", "head", "mlp", "backbone", 6.0)
    job = classify.Job(
        exp,
        1,
        TINY,
        classify.TrainSpec(epochs=2, batch_size=16, lr=1e-3),
        classify.DPSpec(),
        synthetic_generator_private=True,
    )
    train = tiny_manifest[tiny_manifest["split"] == "train"]
    synthetic = train[["path", "label"]].head(16).reset_index(drop=True)
    gan = {"dp": True, "accountant": "rdp", "noise_multiplier": 1.3, "sample_rate": 0.05}
    gan |= {"steps": 400, "delta": 1e-5, "epsilon_final": 2.0}
    classify.run(job, tiny_manifest, synthetic, None, tmp_path, generator_privacy=gan)
    privacy = json.loads((tmp_path / "privacy.json").read_text())
    assert [p["part"] for p in privacy["lineage_parts"]] == ["classifier mix", "generator"]
    acc = RDPAccountant()
    acc.history = [
        (privacy["noise_multiplier"], privacy["sample_rate"], privacy["steps"]),
        (1.3, 0.05, 400),
    ]
    delta = privacy["delta"] + 1e-5
    assert privacy["lineage_epsilon_rdp"] == pytest.approx(acc.get_epsilon(delta), rel=1e-9)
    assert privacy["lineage_epsilon_basic"] == pytest.approx(privacy["epsilon_final"] + 2.0)


def test_chains_link_only_to_checkpoints_that_hold_weights(tmp_path, tiny_manifest):
    """A run on a frozen source refers to the checkpoint that holds its backbone (the one the
    rule declares), or, when that is the configured pretrained backbone, to no checkpoint: a
    later run never follows a path its rule did not declare."""
    classify.run(
        make_job("full", trained="all", epochs=1), tiny_manifest, None, None, tmp_path / "f"
    )
    classify.run(make_job("frozen", epochs=1), tiny_manifest, None, None, tmp_path / "p")
    full, frozen = str(tmp_path / "f" / "model.pt"), str(tmp_path / "p" / "model.pt")
    *_, on_pretrained = _initial_backbone(make_job("a", init="from:frozen"), frozen)
    assert on_pretrained == {"kind": "pretrained", "pretrained": TINY.pretrained}
    classify.run(
        make_job("b", init="backbone:full", epochs=1), tiny_manifest, None, full, tmp_path / "b"
    )
    b = str(tmp_path / "b" / "model.pt")
    *_, on_b = _initial_backbone(make_job("c", init="backbone:b"), b, full)
    assert on_b["kind"] == "model" and on_b["path"] == full  # one link, to the weights
