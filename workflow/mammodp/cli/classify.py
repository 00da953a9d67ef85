"""The commands of stage ``classify`` (``workflow/rules/classify.smk``), each one's arguments
beside its handler."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mammodp.config import RUN_FILES
from mammodp.fileio import atomic_path

from .common import job_from_json, named_paths, resolve_device, set_threads

log = logging.getLogger("mammodp")


def add_backbone_features(sub) -> None:
    s = sub.add_parser("backbone-features", help="pooled backbone features per image and flip")
    s.add_argument("--manifest", required=True, help="a manifest CSV with a path column")
    s.add_argument("--images", required=True, help="the image folder the manifest describes")
    s.add_argument("--model", required=True, help="JSON: classifier.model")
    s.add_argument("--source-model", help="take the backbone from this checkpoint instead")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="autocast")
    s.add_argument("--device", default="cpu")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_backbone_features)


def cmd_backbone_features(a):
    import torch

    from mammodp import classify
    from mammodp.classify import models
    from mammodp.fileio import read_manifest
    from mammodp.images import FLIPS, load_images
    from mammodp.progress import track

    set_threads(a.threads)
    device = resolve_device(a.device)
    images = read_manifest(a.manifest, a.images, required=["path"])
    paths = sorted(set(images["path"]))
    # Flips only where a head trains (real training crops, synthetic crops): evaluation uses
    # the unflipped view, and its other variants are NaN (refused as training inputs).
    trained = images if "split" not in images else images[images["split"] == "train"]
    flipped = set(trained["path"])
    spec = models.ModelSpec.from_dict(json.loads(a.model))
    backbone = (
        models.load_backbone(a.source_model) if a.source_model else models.create_backbone(spec)
    )
    run = {"batch_size": a.batch_size, "device": device, "precision": a.precision}
    feats = []
    chunks = range(0, len(paths), 512)  # bounded memory: images are loaded in chunks
    for start in track(chunks, len(chunks), "features", "chunks of 512 images", log):
        chunk = paths[start : start + 512]
        x = load_images(chunk, spec.input_size)
        out = models.backbone_features(backbone, x, ("none",), **run).expand(-1, 4, -1).clone()
        out[:, 1:] = float("nan")
        rows = torch.tensor([p in flipped for p in chunk])
        if rows.any():
            out[rows, 1:] = models.backbone_features(backbone, x[rows], FLIPS[1:], **run)
        feats.append(out)
    blob = classify.feature_file(paths, torch.cat(feats))
    with atomic_path(a.out) as tmp:
        torch.save(blob, tmp)
    log.info(
        "%d images (%d with flips) x %d variants x %d features",
        len(paths),
        len(flipped),
        *blob["features"].shape[1:],
    )


def add_classify(sub) -> None:
    s = sub.add_parser("classify", help="train and test one (experiment, seed) job")
    s.add_argument("--job", required=True, help="JSON: experiment row, seed, model, train, dp")
    s.add_argument("--manifest", required=True)
    s.add_argument("--images", required=True, help="the crop folder the manifest describes")
    s.add_argument("--synthetic")
    s.add_argument("--synthetic-images", help="the synthetic manifest's folder")
    s.add_argument("--source-model")
    s.add_argument("--source-privacy", help="privacy.json of the run whose training it loads")
    s.add_argument("--backbone-model", help="the checkpoint holding the source's frozen backbone")
    s.add_argument("--generator-model", help="the DP-MCGAN's model folder (its privacy.json)")
    s.add_argument("--features", nargs="*", help="cached backbone features (frozen backbones)")
    s.add_argument("--outputs", nargs=5, required=True, help="model=PATH metrics=PATH ...")
    s.add_argument("--threads", type=int, default=1, help="torch threads (the rule's {threads})")
    s.set_defaults(func=cmd_classify)


def cmd_classify(a):
    from mammodp import classify
    from mammodp.data.split import MANIFEST_COLUMNS
    from mammodp.fileio import read_json, read_manifest

    set_threads(a.threads)  # the job's {threads}: not part of what it computes
    job = job_from_json(a.job, a.threads)
    manifest = read_manifest(a.manifest, a.images, required=MANIFEST_COLUMNS)
    synthetic = None
    if a.synthetic:
        synthetic = read_manifest(a.synthetic, a.synthetic_images, required=["path", "label"])
    generator = read_json(Path(a.generator_model) / "privacy.json") if a.generator_model else None
    metrics = classify.run(
        job,
        manifest,
        synthetic,
        a.source_model,
        None,
        a.features,
        generator_privacy=generator,
        outputs=named_paths(a.outputs, RUN_FILES, "--outputs"),
        backbone_model=a.backbone_model,
        source_privacy=read_json(a.source_privacy) if a.source_privacy else None,
    )
    log.info("test metrics: %s", json.dumps(metrics["test"]))


COMMANDS = (
    add_backbone_features,
    add_classify,
)
