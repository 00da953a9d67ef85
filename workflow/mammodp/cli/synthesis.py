"""The commands of stage ``synthesis`` (``workflow/rules/synthesis.smk``), each one's arguments
beside its handler."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mammodp.errors import UserError

from .common import resolve_device, set_threads

log = logging.getLogger("mammodp")


def add_train_gan(sub) -> None:
    s = sub.add_parser("train-gan", help="train the MCGAN on the real training crops")
    s.add_argument("--manifest", required=True)
    s.add_argument("--images", required=True, help="the crop folder the manifest describes")
    s.add_argument("--spec", required=True, help="JSON of GanSpec")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_train_gan)


def cmd_train_gan(a):
    import torch

    from mammodp.data.split import MANIFEST_COLUMNS
    from mammodp.fileio import read_manifest
    from mammodp.images import load_images
    from mammodp.synthesis import mcgan

    set_threads(a.threads)
    manifest = read_manifest(a.manifest, a.images, required=MANIFEST_COLUMNS)
    train = manifest[(manifest["split"] == "train") & (manifest["dataset"] == "cbis-ddsm")]
    images = load_images(train["path"], mcgan.IMAGE_SIZE, strict=True)
    labels = torch.tensor(train["label"].astype(int).values)
    spec_dict = json.loads(a.spec)
    dp = mcgan.GanDPSpec(**spec_dict.pop("dp", {}))
    spec = mcgan.GanSpec(**spec_dict)
    device = resolve_device(a.device)
    last = mcgan.train(images, labels, spec, a.out_dir, threads=a.threads, device=device, dp=dp)
    log.info("MCGAN trained on %d crops: %s", len(train), last)


def add_sample_gan(sub) -> None:
    s = sub.add_parser("sample-gan", help="sample synthetic crops from a trained MCGAN")
    s.add_argument("--model-dir", required=True)
    s.add_argument("--epoch", type=int, help="sample this checkpoint (default: the last epoch)")
    s.add_argument("--n-per-class", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--out-dir", required=True)
    s.add_argument("--manifest", required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_sample_gan)


def cmd_sample_gan(a):
    from mammodp.fileio import write_csv
    from mammodp.synthesis import mcgan

    set_threads(a.threads)
    name = f"generator_epoch{a.epoch:05d}.pt" if a.epoch else "generator.pt"
    checkpoint = Path(a.model_dir) / name
    if not checkpoint.is_file():
        saved = sorted(p.name for p in Path(a.model_dir).glob("generator*.pt"))
        raise UserError(
            f"{checkpoint}: no such MCGAN checkpoint (saved: {', '.join(saved) or 'none'}); "
            "train the MCGAN first, or set synthesis.mcgan.sample_epoch to a checkpoint epoch."
        )
    manifest = mcgan.sample(checkpoint, a.n_per_class, a.seed, a.out_dir)
    write_csv(a.manifest, manifest)


def add_medigan_samples(sub) -> None:
    s = sub.add_parser("medigan-samples", help="synthetic crops through medigan's Generators")
    s.add_argument("--workdir", required=True, help="medigan's config/ and models/ live here")
    s.add_argument("--model-id", required=True)
    s.add_argument("--n-per-class", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--out-dir", required=True)
    s.add_argument("--manifest", required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_medigan_samples)


def cmd_medigan_samples(a):
    from mammodp.fileio import write_csv
    from mammodp.synthesis.medigan_source import generate

    set_threads(a.threads)
    write_csv(a.manifest, generate(a.workdir, a.model_id, a.n_per_class, a.seed, a.out_dir))


def add_published_samples(sub) -> None:
    s = sub.add_parser("published-samples", help="manifest of the study's synthetic crops")
    s.add_argument("--path", required=True)
    s.add_argument("--manifest", required=True)
    s.set_defaults(func=cmd_published_samples)


def cmd_published_samples(a):
    from mammodp.fileio import write_csv
    from mammodp.synthesis.published import published_manifest

    write_csv(a.manifest, published_manifest(a.path))


COMMANDS = (
    add_train_gan,
    add_sample_gan,
    add_medigan_samples,
    add_published_samples,
)
