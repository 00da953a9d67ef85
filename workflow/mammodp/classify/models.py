"""Classifier models: the study's Swin-T backbone (torchvision's ``swin_t``; timm names work too,
e.g. the reduced Swin of the CPU demo) and the study's heads, plus saving and loading that keeps
frozen-backbone checkpoints small.

Heads: ``mlp`` = Linear(F -> F/2) -> LeakyReLU(0.2) -> Linear(F/2 -> 2) (768 -> 384 -> 2 for
Swin-T); ``linear`` = Linear(F -> 2). A frozen-backbone checkpoint stores only its head and a
reference to where the backbone came from (pretrained weights, or the checkpoint of the source
experiment), so 70+ runs do not store 70 copies of the same backbone.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from mammodp.errors import UserError
from mammodp.fileio import atomic_path, sha256_file
from mammodp.images import FLIPS, flip

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1

# torchvision's swin_t builder (torchvision/models/swin_transformer.py ``swin_t``): the study's
# backbone, models.swin_t(weights="IMAGENET1K_V1") (gan_compare/constants.py get_classifier).
# Built from SwinTransformer directly so that overrides can change any of these arguments.
TORCHVISION_SWIN_T = {
    "patch_size": [4, 4],
    "embed_dim": 96,
    "depths": [2, 2, 6, 2],
    "num_heads": [3, 6, 12, 24],
    "window_size": [7, 7],
    "stochastic_depth_prob": 0.2,
}
# What classifier.model.overrides may set for swin_t (stochastic depth: drop_path_rate).
TORCHVISION_OVERRIDES = (
    "patch_size",
    "embed_dim",
    "depths",
    "num_heads",
    "window_size",
    "mlp_ratio",
    "dropout",
    "attention_dropout",
)


@dataclass(frozen=True)
class ModelSpec:
    arch: str = "swin_t"  # torchvision's swin_t, or a timm model name
    pretrained: str = "imagenet"  # imagenet | none
    weights_file: str | None = None  # local ImageNet weights (offline clusters)
    input_size: int = 224
    overrides: dict = field(default_factory=dict)  # constructor arguments (a reduced Swin)
    drop_path_rate: float | None = None  # None: the architecture's default (swin_t 0.2)
    init_seed: int = 0  # seeds the random backbone when pretrained is none

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def create_backbone(spec: ModelSpec) -> nn.Module:
    """A backbone returning pooled features, with ``num_features``; its stochastic depth is
    ``spec.drop_path_rate`` (None: the architecture's own default)."""
    if "drop_path_rate" in spec.overrides or "stochastic_depth_prob" in spec.overrides:
        raise UserError(
            "classifier.model.overrides: set stochastic depth with classifier.model."
            "drop_path_rate (null: the architecture's default), not in overrides."
        )
    # Random initialisation draws from the global RNG: keep the caller's stream untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.init_seed)
        if spec.arch == "swin_t":
            return _torchvision_swin_t(spec)
        return _timm_backbone(spec)


def _timm_backbone(spec: ModelSpec) -> nn.Module:
    """A timm backbone (``num_classes=0``: pooled features); the ImageNet weights from the
    Hugging Face hub or ``weights_file``."""
    import timm

    if not timm.is_model(spec.arch):
        raise UserError(
            f"classifier.model.arch: unknown model '{spec.arch}'; use swin_t (torchvision, the "
            "study's) or a timm model name such as swin_tiny_patch4_window7_224."
        )
    kwargs = dict(spec.overrides, num_classes=0)
    if spec.input_size != 224 or "img_size" in kwargs:
        kwargs.setdefault("img_size", spec.input_size)
    if spec.drop_path_rate is not None:  # else timm's default (0.1 for its Swin models)
        kwargs["drop_path_rate"] = spec.drop_path_rate
    if spec.pretrained == "none":
        return timm.create_model(spec.arch, pretrained=False, **kwargs)
    overlay = {}
    if spec.weights_file:
        _check_weights_file(spec)
        overlay = {"file": str(spec.weights_file)}
    try:
        return timm.create_model(
            spec.arch, pretrained=True, pretrained_cfg_overlay=overlay or None, **kwargs
        )
    except Exception as e:  # hub unreachable, offline mode, missing cache
        raise UserError(
            f"ImageNet weights for {spec.arch} could not be loaded ({_first_line(e)}). Either "
            "allow network access to the Hugging Face hub, set classifier.model.weights_file to "
            "a local copy of the weights, or use classifier.model.pretrained: none."
        ) from e


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _check_weights_file(spec: ModelSpec) -> Path:
    path = Path(spec.weights_file)
    if not path.is_file():
        raise UserError(
            f"classifier.model.weights_file: {path} not found; point it to the {spec.arch} "
            "ImageNet weights (.safetensors/.pth) or set pretrained: none."
        )
    return path


def swin_t_kwargs(spec: ModelSpec) -> dict:
    """Constructor arguments of torchvision's SwinTransformer: swin_t's, with the overrides."""
    unknown = sorted(set(spec.overrides) - set(TORCHVISION_OVERRIDES))
    if unknown:
        raise UserError(
            f"classifier.model.overrides: {unknown} are not arguments of torchvision's "
            f"SwinTransformer for arch swin_t; allowed: {list(TORCHVISION_OVERRIDES)} "
            "(timm arguments need a timm arch)."
        )
    kwargs = {**TORCHVISION_SWIN_T, **spec.overrides}
    for key in ("patch_size", "window_size"):
        if isinstance(kwargs[key], int):
            kwargs[key] = [kwargs[key], kwargs[key]]
    depths, heads = list(kwargs["depths"]), list(kwargs["num_heads"])
    if len(depths) != len(heads) or sum(depths) < 2:
        raise UserError(
            f"classifier.model.overrides: depths {depths} and num_heads {heads} need one entry "
            "per stage and at least 2 blocks in all."
        )
    if spec.drop_path_rate is not None:
        kwargs["stochastic_depth_prob"] = float(spec.drop_path_rate)
    return kwargs


def _torchvision_swin_t(spec: ModelSpec) -> nn.Module:
    """torchvision's SwinTransformer with ``head = Identity``: its forward then returns the
    pooled features (features -> norm -> permute -> avgpool -> flatten)."""
    from torchvision.models.swin_transformer import SwinTransformer

    kwargs = swin_t_kwargs(spec)
    state, where = (None, None) if spec.pretrained == "none" else _swin_t_imagenet_state(spec)
    model = SwinTransformer(**kwargs)
    model.num_features = model.head.in_features
    model.head = nn.Identity()
    if state is None:
        return model
    body = {k: v for k, v in state.items() if not k.startswith("head.")}  # the 1000-class head
    try:
        model.load_state_dict(body)
    except RuntimeError as e:
        raise UserError(
            f"{where}: not the weights of torchvision's swin_t with classifier.model.overrides "
            f"{spec.overrides} ({str(e).splitlines()[0]}); use overrides {{}} with ImageNet "
            "weights, or pretrained: none."
        ) from e
    return model


def _swin_t_imagenet_state(spec: ModelSpec) -> tuple[dict, str]:
    """torchvision's IMAGENET1K_V1 state_dict for swin_t (81.474 % top-1): from
    ``weights_file``, else torchvision's own download (its cache, hash-checked)."""
    from torchvision.models import Swin_T_Weights

    weights = Swin_T_Weights.IMAGENET1K_V1
    if spec.weights_file:
        path = _check_weights_file(spec)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise UserError(
                f"classifier.model.weights_file: {path} is not a readable torch state_dict "
                f"({_first_line(e)}); give torchvision's {weights.url.rsplit('/', 1)[-1]}."
            ) from e
        if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
            raise UserError(
                f"classifier.model.weights_file: {path} is not a state_dict (name -> tensor); "
                f"give torchvision's {weights.url.rsplit('/', 1)[-1]}."
            )
        # torchvision names its files <name>-<first 8 hex digits of the sha256>.pth.
        expected = weights.url.rsplit("-", 1)[-1].split(".")[0]
        if not sha256_file(path).startswith(expected):
            log.warning("%s is not torchvision's IMAGENET1K_V1 file (%s): using it", path, expected)
        return state, str(path)
    try:
        return weights.get_state_dict(progress=False, check_hash=True), weights.url
    except Exception as e:  # offline, proxy, corrupt cache
        raise UserError(
            f"ImageNet weights for swin_t could not be downloaded from {weights.url} "
            f"({_first_line(e)}). Either allow network access (torchvision caches them under "
            "$TORCH_HOME/hub/checkpoints), set classifier.model.weights_file to a local copy of "
            "that file, or use classifier.model.pretrained: none."
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


def head_in_features(head: nn.Module) -> int:
    """The feature width a head takes: its first linear layer's input."""
    return next(m for m in head.modules() if isinstance(m, nn.Linear)).in_features


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
        "num_features": head_in_features(model.head),
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


AS_SAVED = "as_saved"  # load_backbone: the stochastic depth the checkpoint's job ran with


def backbone_origin(
    path: str | os.PathLike, ckpt: dict | None = None, origin: str | os.PathLike | None = None
) -> tuple[Path, dict]:
    """The checkpoint that holds a checkpoint's backbone, and its content: itself when it trained
    its backbone or refers to pretrained weights, else the source its frozen backbone came from,
    each link checked against the sha256 recorded at training. ``origin``: that source as the
    rule declared it (its recorded path is where it was when this checkpoint was trained, which a
    module prefix or a storage plugin's local copy need not keep)."""
    path = Path(path)
    ckpt = load_checkpoint(path) if ckpt is None else ckpt
    while ckpt["backbone"] is None and ckpt["backbone_source"]["kind"] == "model":
        source = ckpt["backbone_source"]
        src_path, origin = Path(origin or source["path"]), None  # origin: the first link's
        if not src_path.is_file():
            raise UserError(f"{path}: its backbone source {src_path} is missing; rebuild it.")
        if sha256_file(src_path) != source["sha256"]:
            raise UserError(
                f"{path}: its backbone source {src_path} changed since training; rebuild {path}."
            )
        path, ckpt = src_path, load_checkpoint(src_path)
    return path, ckpt


def load_backbone(
    path: str | os.PathLike,
    drop_path_rate: float | None | str = AS_SAVED,
    origin: str | os.PathLike | None = None,
) -> nn.Module:
    """The backbone of a checkpoint, following frozen-backbone references to their source
    (``origin``: see ``backbone_origin``). ``drop_path_rate``: its stochastic depth: a rate, None
    (the architecture's default) or ``AS_SAVED`` (what the checkpoint's own job ran with)."""
    top = load_checkpoint(path)
    if drop_path_rate == AS_SAVED:
        drop_path_rate = ModelSpec.from_dict(top["model_spec"]).drop_path_rate
    _, ckpt = backbone_origin(path, top, origin)
    spec = replace(ModelSpec.from_dict(ckpt["model_spec"]), drop_path_rate=drop_path_rate)
    if ckpt["backbone"] is None:  # pretrained weights (or a seeded random init)
        return create_backbone(spec)
    backbone = create_backbone(replace(spec, pretrained="none"))
    backbone.load_state_dict(ckpt["backbone"])
    return backbone


def load_model(path: str | os.PathLike) -> tuple[Classifier, dict]:
    ckpt = load_checkpoint(path)
    backbone = load_backbone(path)
    head = make_head(ckpt["head_type"], ckpt["num_features"])
    head.load_state_dict(ckpt["head"])
    return Classifier(backbone, head), ckpt


PRECISIONS = ("fp32", "bf16")


def cpu_has_native_bf16() -> bool | None:
    """Whether this x86 CPU computes bf16 in hardware (AVX-512 BF16 or AMX); None where torch
    cannot tell (other architectures, other torch versions)."""
    names = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu, private
    checks = [getattr(torch.cpu, name, None) for name in names]
    if platform.machine().lower() not in ("x86_64", "amd64") or None in checks:
        return None
    return any(check() for check in checks)


@functools.cache
def _warn_emulated_bf16(reason: str) -> None:  # once per process, not once per batch
    log.warning(
        "bf16 features on a CPU %s: emulated, about 2x slower than fp32 (measured on an Ice Lake "
        "Xeon: 4.7-4.9 vs 7.6-9.7 images/s); set classifier.train.feature_precision: fp32 "
        "(features then differ from a bf16 run's by bf16 rounding)",
        reason,
    )


def autocast(device: str, precision: str):
    """The autocast context of a feature pass: bf16 on a GPU or a CPU (fastest on CPUs with
    AVX-512 BF16 or AMX; emulated, and slower than fp32, on other x86 CPUs), nothing for fp32."""
    if precision not in PRECISIONS:
        raise UserError(f"classifier.train.feature_precision: '{precision}' is not fp32 or bf16")
    kind = torch.device(device).type
    if precision == "bf16" and kind == "cpu":
        if not torch.backends.mkldnn.is_available():
            _warn_emulated_bf16("without oneDNN")
        elif cpu_has_native_bf16() is False:
            _warn_emulated_bf16("without AVX-512 BF16 or AMX")
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bf16")


def backbone_features(
    backbone: nn.Module,
    images: torch.Tensor,
    variants=FLIPS,
    batch_size: int = 64,
    device: str = "cpu",
    precision: str = "fp32",
) -> torch.Tensor:
    """Pooled features (N, len(variants), F) of the backbone in eval mode (exact: no
    stochastic depth, no dropout), in inference mode, under ``precision`` autocast (features are
    returned in float32 either way)."""
    backbone.eval().to(device)
    feats = []
    with torch.inference_mode(), autocast(device, precision):
        for v in variants:
            chunks = []
            for start in range(0, len(images), batch_size):
                x = flip(images[start : start + batch_size], v).to(device)
                chunks.append(backbone(x.expand(-1, 3, -1, -1)).float().cpu())
            feats.append(torch.cat(chunks) if chunks else torch.empty(0, backbone.num_features))
    # Outside inference mode: plain tensors, which a head's autograd may save.
    return torch.stack([f.clone() for f in feats], dim=1)
