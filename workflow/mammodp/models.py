"""Classifier models: a timm Swin backbone (``swin_tiny_patch4_window7_224`` in the study) and the
study's heads, plus saving and loading that keeps frozen-backbone checkpoints small.

Heads: ``mlp`` = Linear(F -> F/2) -> LeakyReLU(0.2) -> Linear(F/2 -> 2) (768 -> 384 -> 2 for
Swin-T); ``linear`` = Linear(F -> 2). A frozen-backbone checkpoint stores only its head and a
reference to where the backbone came from (pretrained weights, or the checkpoint of the source
experiment), so 70+ runs do not store 70 copies of the same backbone.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from .errors import UserError
from .fileio import atomic_path, sha256_file

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class ModelSpec:
    arch: str = "swin_tiny_patch4_window7_224"
    pretrained: str = "imagenet"  # imagenet | none
    weights_file: str | None = None  # local ImageNet weights (offline clusters)
    input_size: int = 224
    overrides: dict = field(default_factory=dict)  # timm constructor kwargs (a reduced Swin)
    drop_path_rate: float = 0.1
    init_seed: int = 0  # seeds the random backbone when pretrained is none

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def create_backbone(spec: ModelSpec, drop_path_rate: float | None = None) -> nn.Module:
    """A timm backbone returning pooled features (``num_classes=0``)."""
    import timm

    kwargs = dict(spec.overrides)
    if spec.input_size != 224 or "img_size" in kwargs:
        kwargs.setdefault("img_size", spec.input_size)
    dpr = spec.drop_path_rate if drop_path_rate is None else drop_path_rate
    if spec.pretrained == "none":
        # The same random backbone for every run of a config, as ImageNet weights would be.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.init_seed)
            return timm.create_model(
                spec.arch, pretrained=False, num_classes=0, drop_path_rate=dpr, **kwargs
            )
    overlay = {}
    if spec.weights_file:
        if not Path(spec.weights_file).is_file():
            raise UserError(
                f"classifier.model.weights_file: {spec.weights_file} not found; point it to the "
                f"{spec.arch} ImageNet weights (.safetensors/.pth) or set pretrained: none."
            )
        overlay = {"file": str(spec.weights_file)}
    try:
        return timm.create_model(
            spec.arch,
            pretrained=True,
            num_classes=0,
            drop_path_rate=dpr,
            pretrained_cfg_overlay=overlay or None,
            **kwargs,
        )
    except Exception as e:  # hub unreachable, offline mode, missing cache
        raise UserError(
            f"ImageNet weights for {spec.arch} could not be loaded ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). Either allow network access to the "
            "Hugging Face hub, set classifier.model.weights_file to a local copy of the weights, "
            "or use classifier.model.pretrained: none."
        ) from e


def make_head(kind: str, num_features: int) -> nn.Module:
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(num_features, num_features // 2),
            nn.LeakyReLU(0.2),
            nn.Linear(num_features // 2, 2),
        )
    if kind == "linear":
        return nn.Linear(num_features, 2)
    raise UserError(f"unknown head '{kind}'; expected 'mlp' or 'linear'")


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:  # grayscale copied to 3 channels
            x = x.expand(-1, 3, -1, -1)
        return self.head(self.backbone(x))


def save_checkpoint(
    path: str | os.PathLike,
    *,
    spec: ModelSpec,
    head_type: str,
    model: Classifier,
    backbone_trained: bool,
    backbone_source: dict,
) -> None:
    """Write a checkpoint; the backbone's weights only when they were trained here."""
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "model_spec": asdict(spec),
        "head_type": head_type,
        "num_features": int(model.backbone.num_features),
        "head": model.head.state_dict(),
        "backbone": model.backbone.state_dict() if backbone_trained else None,
        "backbone_source": backbone_source,
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model checkpoint not found; build its experiment first.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: not a readable checkpoint ({e}); delete it and rerun.") from e
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: unknown checkpoint format {ckpt.get('format')}")
    return ckpt


def load_backbone(path: str | os.PathLike, drop_path_rate: float | None = None) -> nn.Module:
    """The backbone of a checkpoint, following frozen-backbone references to their source."""
    ckpt = load_checkpoint(path)
    spec = ModelSpec.from_dict(ckpt["model_spec"])
    if ckpt["backbone"] is not None:
        backbone = create_backbone(
            ModelSpec(**{**asdict(spec), "pretrained": "none"}), drop_path_rate
        )
        backbone.load_state_dict(ckpt["backbone"])
        return backbone
    source = ckpt["backbone_source"]
    if source["kind"] == "pretrained":
        return create_backbone(spec, drop_path_rate)
    src_path = Path(source["path"])
    if src_path.is_file() and sha256_file(src_path) != source["sha256"]:
        raise UserError(
            f"{path}: its backbone source {src_path} changed since training; rebuild {path}."
        )
    return load_backbone(src_path, drop_path_rate)


def load_model(path: str | os.PathLike) -> tuple[Classifier, dict]:
    ckpt = load_checkpoint(path)
    backbone = load_backbone(path)
    head = make_head(ckpt["head_type"], ckpt["num_features"])
    head.load_state_dict(ckpt["head"])
    return Classifier(backbone, head), ckpt


def load_images(paths, input_size: int, strict: bool = False) -> torch.Tensor:
    """Grayscale PNGs -> (N, 1, S, S) float in [-1, 1], area-resized to the model's input
    (or, with ``strict``, refused unless already S x S: the GAN must see the crops as is)."""
    out = np.empty((len(paths), input_size, input_size), np.uint8)
    for i, p in enumerate(paths):
        a = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if a is None:
            raise UserError(f"{p}: image missing or unreadable; rebuild the crops.")
        if a.shape != (input_size, input_size):
            if strict:
                raise UserError(
                    f"{p}: expected a {input_size}x{input_size} grayscale PNG, got "
                    f"{a.shape[1]}x{a.shape[0]}; rebuild the crops."
                )
            a = cv2.resize(a, (input_size, input_size), interpolation=cv2.INTER_AREA)
        out[i] = a
    return torch.from_numpy(out).float().div_(127.5).sub_(1.0)[:, None]


FLIPS = ("none", "h", "v", "hv")


def data_fingerprint(*tensors: torch.Tensor, source_sha256: str | None = None) -> str:
    """sha256 over the dtype, shape and bytes of each tensor (and a source model's sha256):
    which data a training state was computed on, so that a resume never mixes data."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))  # no copy of the data
    h.update(f"source={source_sha256}".encode())
    return h.hexdigest()


def on_cuda(device: str) -> bool:
    """Does a job on ``device`` run on a GPU (so its CUDA RNG states belong in its state)?"""
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


def load_training_state(
    state_file: Path, key: str, data: str, data_desc: str, logger: logging.Logger = log
) -> dict | None:
    """A saved training state, if it belongs to these settings (``key``) and this data (a
    ``data_fingerprint``); else None, with a line in the trainer's ``logger`` saying why (the
    job starts afresh)."""
    if not state_file.exists():
        return None
    try:
        state = torch.load(state_file, map_location="cpu", weights_only=False)
    except Exception as e:  # an unreadable state is not worth failing over: train afresh
        logger.warning("cannot read training state %s (%s): starting afresh", state_file, e)
        return None
    if not isinstance(state, dict) or state.get("key") != key:
        logger.info("saved training state in %s is for other settings: starting afresh", state_file)
        return None
    if state.get("data") != data:
        logger.info("saved training state is for other %s: starting afresh", data_desc)
        return None
    return state


def restore_cuda_rng(states) -> None:
    """Restore the CUDA RNG states saved with a training state (a resume on another number of
    devices keeps the current ones, with a warning)."""
    if states is None:
        return
    if len(states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states)
    else:
        log.warning(
            "saved CUDA RNG states are for %d device(s), this machine has %d: not restored",
            len(states),
            torch.cuda.device_count(),
        )


def random_flips(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The study's augmentation: independent horizontal and vertical flips, p = 0.5 each.
    Sequential on purpose: a sample drawn for both gets both."""
    flip_h = torch.rand(len(x), generator=generator) < 0.5
    flip_v = torch.rand(len(x), generator=generator) < 0.5
    x = x.clone()
    x[flip_h] = x[flip_h].flip(-1)
    x[flip_v] = x[flip_v].flip(-2)
    return x


def flip(x: torch.Tensor, variant: str) -> torch.Tensor:
    if "h" in variant:
        x = x.flip(-1)
    if "v" in variant:
        x = x.flip(-2)
    return x


@torch.no_grad()
def backbone_features(
    backbone: nn.Module,
    images: torch.Tensor,
    variants=FLIPS,
    batch_size: int = 64,
    device: str = "cpu",
) -> torch.Tensor:
    """Pooled features (N, len(variants), F) of the backbone in eval mode (exact: no
    stochastic depth, no dropout)."""
    backbone.eval().to(device)
    feats = []
    for v in variants:
        chunks = []
        for start in range(0, len(images), batch_size):
            x = flip(images[start : start + batch_size], v).to(device)
            chunks.append(backbone(x.expand(-1, 3, -1, -1)).float().cpu())
        feats.append(torch.cat(chunks) if chunks else torch.empty(0, backbone.num_features))
    return torch.stack(feats, dim=1)
