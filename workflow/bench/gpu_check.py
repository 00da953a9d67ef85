"""The GPU part of the study, measured as one short script: on the published crops, feature
images/s of the frozen Swin-T (fp32 and bf16), one epoch of dbr15's full fine-tuning through the
real training loop (``classify.train_full``: random flips, validation, selection), one MCGAN
epoch at the study's width and batch size (``mcgan.train``), and one frozen-backbone DP head run
(``classify.train_head``), with the device named. The README's cost model turns these numbers
into GPU-hours for config/paper.yaml and config/paper-published.yaml.

    python workflow/bench/gpu_check.py --device cuda --data <dataset16062024> [--out r.json]

(--data defaults to ../shared/data/mammo_dp/dataset16062024 beside the checkout.)

The CPU smoke test (tests/test_bench.py) runs it with --device cpu --limit, a tiny Swin and a
narrow GAN.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from mammodp import classify, images
from mammodp.classify import models
from mammodp.config import Experiment
from mammodp.data.processed import import_processed
from mammodp.data.split import apply_split
from mammodp.synthesis import mcgan

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "mammo_dp" / "dataset16062024"


def _cpu_name() -> str:
    try:  # platform.processor() is often empty on Linux
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _job(name, trained, head, eps, epochs, spec, device, precision="fp32"):
    exp = Experiment(name, "-", "synthetic", "real", trained, head, "backbone", eps)
    train = classify.TrainSpec(
        epochs=epochs, batch_size=128, lr=1e-5, checkpoint_every=10**6, precision=precision
    )
    return classify.Job(exp, 42, spec, train, classify.DPSpec(), device=device)


def feature_rates(spec, x, device: str) -> dict:
    """Images/s of the frozen backbone's feature pass (4 flips), fp32 and bf16."""
    backbone = models.create_backbone(spec)
    out = {}
    for precision in ("fp32", "bf16"):
        models.backbone_features(backbone, x[:8], ("none",), 128, device, precision)  # warm-up
        _sync(device)
        t = time.perf_counter()
        models.backbone_features(backbone, x, batch_size=128, device=device, precision=precision)
        _sync(device)
        out[f"feature_images_per_s_{precision}"] = 4 * len(x) / (time.perf_counter() - t)
    return out


def full_epoch(spec, x, y, val_x, val_y, device: str, precision: str) -> float:
    """Seconds of one dbr15 epoch (every layer, linear head) through the real loop."""
    backbone = models.create_backbone(spec)
    model = models.Classifier(backbone, models.make_head("linear", backbone.num_features))
    job = _job("dbr15", "all", "linear", None, 1, spec, device, precision)
    with tempfile.TemporaryDirectory() as tmp:
        _sync(device)
        t = time.perf_counter()
        classify.train_full(job, model, x, y, val_x, val_y, Path(tmp) / "state")
        _sync(device)
        return time.perf_counter() - t


def gan_epoch(images, labels, width: int, device: str) -> float:
    """Seconds of one MCGAN epoch at the study's batch size (8) and ``width`` (64: the study)."""
    spec = mcgan.GanSpec(epochs=1, width=width, batch_size=8, checkpoint_every=1, seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        _sync(device)
        t = time.perf_counter()
        mcgan.train(images, labels, spec, Path(tmp) / "model", device=device)
        _sync(device)
        return time.perf_counter() - t


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SHARED, help="dataset16062024 folder")
    p.add_argument("--device", default="cuda")
    p.add_argument("--limit", type=int, help="use only the first N training crops (smoke test)")
    p.add_argument("--model", default="{}", help="JSON: classifier.model overrides")
    p.add_argument("--gan-width", type=int, default=64, help="MCGAN width (64: the study)")
    p.add_argument("--precision", default="bf16", help="dbr15's train.precision on a GPU")
    p.add_argument("--dp-epochs", type=int, default=300)
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    device = a.device
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else _cpu_name()
    spec = models.ModelSpec.from_dict({"pretrained": "none", **json.loads(a.model)})
    index, split = import_processed(a.data)
    index["path"] = [str(a.data / p) for p in index["path"]]  # stored relative to the folder
    index = apply_split(index, split, str(a.data))
    train = index[(index["split"] == "train") & (index["dataset"] == "cbis-ddsm")]
    val = index[(index["split"] == "val") & (index["dataset"] == "cbis-ddsm")]
    if a.limit:
        train, val = train.head(a.limit), val.head(max(a.limit // 4, 8))
    x = images.load_images(train["path"], spec.input_size)
    y = torch.tensor(train["label"].values)
    val_x = images.load_images(val["path"], spec.input_size)
    val_y = torch.tensor(val["label"].values)
    out = {"device": name, "torch": torch.__version__, "n_train": len(train)}
    out.update(feature_rates(spec, x, device))
    out["full_epoch_s"] = full_epoch(spec, x, y, val_x, val_y, device, a.precision)
    out["full_images_per_s"] = len(x) / out["full_epoch_s"]
    crops = images.load_images(train["path"], mcgan.IMAGE_SIZE, strict=True)
    out["gan_epoch_s"] = gan_epoch(crops, y, a.gan_width, device)
    out["gan_width"] = a.gan_width

    # A frozen-backbone DP head run, on features computed on the device.
    backbone = models.create_backbone(spec)
    feats = models.backbone_features(backbone, x, batch_size=128, device=device)
    val_feats = models.backbone_features(backbone, val_x, ("none",), 128, device)[:, 0]
    job = _job("gpu_check", "head", "mlp", 6.0, a.dp_epochs, spec, "cpu")
    head = models.make_head("mlp", backbone.num_features)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        tr = classify.train_head(job, head, feats, y, val_feats, val_y, Path(tmp) / "state")
        out["dp_head_run_s"] = time.perf_counter() - t
    privacy = tr.privacy()
    out.update(
        dp_epochs=a.dp_epochs,
        noise_multiplier=privacy["noise_multiplier"],
        epsilon_final=privacy["epsilon_final"],
    )
    print(f"device: {name}")
    for k, v in out.items():
        print(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}")
    if a.out:
        a.out.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
