"""The GPU check of the classifier stage, as one short script: on the published crops, one epoch
of full Swin-T fine-tuning (bf16 on a GPU) and a frozen-backbone DP head run (features on the
device, the head as the workflow trains it), with throughput and the device named.

    python workflow/bench/gpu_check.py --device cuda --data <dataset16062024> [--out r.json]

(--data defaults to ../shared/data/mammo_dp/dataset16062024 beside the checkout.)

The CPU smoke test (tests/test_bench.py) runs it with --device cpu --limit and a tiny Swin.
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

from mammodp import classify, models  # noqa: E402
from mammodp.processed import import_processed  # noqa: E402
from mammodp.split import apply_split  # noqa: E402

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "mammo_dp" / "dataset16062024"


def _cpu_name() -> str:
    try:  # platform.processor() is often empty on Linux
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SHARED, help="dataset16062024 folder")
    p.add_argument("--device", default="cuda")
    p.add_argument("--limit", type=int, help="use only the first N training crops (smoke test)")
    p.add_argument("--model", default="{}", help="JSON: classifier.model overrides")
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
    x = models.load_images(train["path"], spec.input_size)
    y = torch.tensor(train["label"].values)
    out = {"device": name, "torch": torch.__version__, "n_train": len(train)}

    # 1. One epoch of full fine-tuning (every layer, bf16 autocast on a GPU).
    full_backbone = models.create_backbone(spec)
    model = models.Classifier(full_backbone, models.make_head("linear", full_backbone.num_features))
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=1e-8)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for s in range(0, len(x), 128):
        xb, yb = x[s : s + 128].to(device), y[s : s + 128].to(device)
        opt.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            loss = loss_fn(model(xb).float(), yb)
        loss.backward()
        opt.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    out["full_epoch_s"] = time.perf_counter() - t
    out["full_images_per_s"] = len(x) / out["full_epoch_s"]

    # 2. Frozen backbone: features (eval mode, 4 flips) on the device, then a DP head run.
    backbone = models.create_backbone(spec)
    t = time.perf_counter()
    feats = models.backbone_features(backbone, x, batch_size=128, device=device)
    val_x = models.load_images(val["path"], spec.input_size)
    val_feats = models.backbone_features(backbone, val_x, ("none",), 128, device)[:, 0]
    out["feature_images_per_s"] = (4 * len(x) + len(val_x)) / (time.perf_counter() - t)
    exp = classify.Experiment("gpu_check", "-", "real", "real", "head", "mlp", "backbone", 6.0)
    job = classify.Job(
        exp,
        42,
        spec,
        classify.TrainSpec(epochs=a.dp_epochs, batch_size=128, lr=1e-5, checkpoint_every=10**6),
        classify.DPSpec(),
    )
    head = models.make_head("mlp", backbone.num_features)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        tr = classify.train_head(
            job, head, feats, y, val_feats, torch.tensor(val["label"].values), Path(tmp) / "state"
        )
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
