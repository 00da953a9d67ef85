"""MCGAN: the study's malignancy-conditioned DCGAN for 128x128 grayscale mass crops.

Generator: label -> Embedding(2, 50) -> Linear(50, 100) -> LeakyReLU(0.1), concatenated with
noise z (100) -> five transposed convolutions (16f, 8f, 4f, 2f, f channels with f = 64 in the
study: 1024 ... 64; kernel 4; BatchNorm + ReLU; no bias) -> transposed conv to 1 channel + tanh.
Discriminator: label -> Embedding(2, 50) -> Linear(50, 128*128) -> LeakyReLU(0.1) as a second
input channel; convolutions kernel 6, stride 2, padding 2 (f ... 16f channels, BatchNorm from the
second, LeakyReLU 0.1) -> final conv + sigmoid. BCE loss, Adam (lr 1e-4, beta1 0.5), batch 8,
one-sided label smoothing (real targets U(0.7, 1.2)), generator updated every second batch.

Three details of the original training are options (``GanSpec``), the original's by default:
``input_range`` (the original feeds real crops in [0, 1] against tanh fakes and maps samples
[0, 1] -> [0, 255]), ``init`` (the original re-initialises only Conv and BatchNorm weights),
``augmentation`` (random flips plus RandomResizedCrop) and ``output_cast`` (how samples outside
the 8-bit range are cast). See ``train`` and ``to_uint8`` for the sources.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn

from mammodp.errors import UserError, check_choice
from mammodp.fileio import atomic_dir, write_csv, write_json
from mammodp.images import random_flips
from mammodp.progress import EpochClock, Every
from mammodp.training_state import TrainingState, data_fingerprint

log = logging.getLogger(__name__)

IMAGE_SIZE = 128
N_CLASSES = 2


@dataclass(frozen=True)
class GanSpec:
    epochs: int = 3000
    batch_size: int = 8
    lr: float = 1e-4
    beta1: float = 0.5
    latent_dim: int = 100
    embedding_dim: int = 50
    width: int = 64  # the study's base channel count (G: 1024 ... 64; D: 64 ... 1024)
    d_steps_per_g_step: int = 2
    real_label_low: float = 0.7
    real_label_high: float = 1.2
    checkpoint_every: int = 100
    sample_epoch: int | None = None  # which checkpoint samples are drawn from (None: the last)
    # Epochs after sample_epoch cannot change that checkpoint: stop there (False: train all
    # ``epochs`` for the whole loss curve, as the original did).
    stop_at_sample_epoch: bool = True
    seed: int = 0
    input_range: str = "study"  # study: real crops in [0, 1] | symmetric: [-1, 1] (as tanh)
    init: str = "study"  # study: Conv and BatchNorm weights only | all: every layer N(0, 0.02)
    augmentation: str = "study"  # study: flips + RandomResizedCrop | flips
    output_cast: str = "wrap"  # wrap: the original's uint8 cast | clamp: clip to [0, 255]

    def __post_init__(self):
        for key, allowed in OPTIONS.items():
            check_choice(f"synthesis.mcgan.{key}", getattr(self, key), allowed)

    @property
    def last_epoch(self) -> int:
        """The last epoch trained: ``sample_epoch`` when training stops there, else ``epochs``
        (which, under DP, still sets the noise: the same σ either way)."""
        if self.stop_at_sample_epoch and self.sample_epoch is not None:
            return min(self.sample_epoch, self.epochs)
        return self.epochs

    def check_sample_epoch(self) -> None:
        e = self.sample_epoch
        if e is not None and not (
            e <= self.epochs and (e % self.checkpoint_every == 0 or e == self.epochs)
        ):
            raise UserError(
                f"synthesis.mcgan.sample_epoch = {e} is not a checkpoint epoch "
                f"(every {self.checkpoint_every} up to {self.epochs})"
            )


OPTIONS = {
    "input_range": ("study", "symmetric"),
    "init": ("study", "all"),
    "augmentation": ("study", "flips"),
    "output_cast": ("wrap", "clamp"),
}
# What checkpoints written before these options existed were trained with.
LEGACY_SPEC = {
    "input_range": "symmetric",
    "init": "all",
    "augmentation": "flips",
    "output_cast": "clamp",
}


# The DP discriminator step: each real sample's gradient clipped alone, fakes of a fixed number.
DP_STEP = "real-clipped-fixed-fakes"


@dataclass(frozen=True)
class GanDPSpec:
    """DP-SGD on the discriminator (the only part that sees real data; the generator learns
    from it by post-processing)."""

    enabled: bool = False
    epsilon: float = 10.0
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    accountant: str = "rdp"


class Generator(nn.Module):
    def __init__(self, latent_dim=100, embedding_dim=50, width=64):
        super().__init__()
        self.latent_dim = latent_dim
        self.embed = nn.Sequential(
            nn.Embedding(N_CLASSES, embedding_dim),
            nn.Linear(embedding_dim, latent_dim),
            nn.LeakyReLU(0.1),
        )
        chans = [2 * latent_dim, 16 * width, 8 * width, 4 * width, 2 * width, width]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:], strict=True)):
            stride, pad = (1, 0) if i == 0 else (2, 1)
            layers += [
                nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(True),
            ]
        layers += [nn.ConvTranspose2d(width, 1, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cond = self.embed(labels)
        x = torch.cat([z, cond], dim=1)[:, :, None, None]
        return self.net(x)


class Discriminator(nn.Module):
    def __init__(self, embedding_dim=50, width=64):
        super().__init__()
        self.embed = nn.Sequential(
            nn.Embedding(N_CLASSES, embedding_dim),
            nn.Linear(embedding_dim, IMAGE_SIZE * IMAGE_SIZE),
            nn.LeakyReLU(0.1),
        )
        chans = [2, width, 2 * width, 4 * width, 8 * width, 16 * width]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:], strict=True)):
            layers.append(nn.Conv2d(cin, cout, 6, 2, 2, bias=False))
            if i > 0:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.1))  # not in place: Opacus hooks need the input (DP)
        layers += [nn.Conv2d(16 * width, 1, 4, 1, 0, bias=False), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cond = self.embed(labels).view(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
        return self.net(torch.cat([x, cond], dim=1)).view(-1)


def init_weights(module: nn.Module, scheme: str = "study") -> None:
    """``study``: as the original's ``weights_init``
    (gan_compare/training/networks/generation/utils.py), which matches class names: Conv*
    weights N(0, 0.02), BatchNorm* weights N(1, 0.02) and biases 0; Embedding and Linear keep
    PyTorch's default initialisation. ``all``: Embedding and Linear weights N(0, 0.02) too."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) or (
        scheme == "all" and isinstance(module, (nn.Linear, nn.Embedding))
    ):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build(spec: GanSpec) -> tuple[Generator, Discriminator]:
    g = Generator(spec.latent_dim, spec.embedding_dim, spec.width)
    d = Discriminator(spec.embedding_dim, spec.width)
    g.apply(lambda m: init_weights(m, spec.init))
    d.apply(lambda m: init_weights(m, spec.init))
    return g, d


def to_training_range(images: torch.Tensor, input_range: str) -> torch.Tensor:
    """Crops as loaded (``images.load_images``: [-1, 1]) -> the range D sees. ``study``: [0, 1],
    as the original's ToTensor without its commented-out Normalize
    (gan_compare/scripts/train_gan.py); u / 255 for an 8-bit pixel u, up to float32 rounding."""
    return (images + 1.0) / 2.0 if input_range == "study" else images


def to_uint8(x: torch.Tensor, input_range: str, output_cast: str) -> np.ndarray:
    """Generator outputs (N, 1, H, W) -> 8-bit images. ``study`` maps [0, 1] -> [0, 255] (the
    original's ``interval_mapping(img, 0, 1, 0, 255)`` in gan_compare/scripts/generate.py), so
    the negative half of tanh falls outside; ``symmetric`` maps [-1, 1] -> [0, 255]. ``wrap`` is
    the original's ``astype("uint8")``: truncation, then modulo 256, which turns slightly negative
    values into bright specks (in the study's 3000 published samples, 71 % of the pixels >= 250 lie
    where the 5x5 median is below 60); ``clamp`` clips to [0, 255] and rounds."""
    v = x.detach().double().squeeze(1)
    v = v * 255.0 if input_range == "study" else (v + 1.0) * 127.5
    if output_cast == "wrap":
        return torch.remainder(torch.trunc(v).to(torch.int64), 256).to(torch.uint8).numpy()
    return v.clamp(0, 255).round().to(torch.uint8).numpy()


def random_resized_crops(x: torch.Tensor) -> torch.Tensor:
    """The original's training augmentation after the flips: torchvision's
    RandomResizedCrop(128, scale=(0.95, 1.0), ratio=(0.95, 1.1)) drawn per sample
    (gan_compare/scripts/train_gan.py), from torch's global RNG (saved with the training state)."""
    from torchvision.transforms import InterpolationMode, RandomResizedCrop
    from torchvision.transforms import functional as tf

    size = x.shape[-1]
    out = torch.empty_like(x)
    for i, img in enumerate(x):
        top, left, h, w = RandomResizedCrop.get_params(img, scale=(0.95, 1.0), ratio=(0.95, 1.1))
        out[i] = tf.resized_crop(
            img, top, left, h, w, [size, size], InterpolationMode.BILINEAR, antialias=True
        )
    return out


def augment(real: torch.Tensor, spec: GanSpec, rng: torch.Generator) -> torch.Tensor:
    real = random_flips(real, rng)
    return random_resized_crops(real) if spec.augmentation == "study" else real


def sample_grid(g: Generator, spec: GanSpec, per_class: int, seed: int) -> np.ndarray:
    """Rows: malignant (0), benign (1); fixed noise so grids are comparable across epochs."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(per_class * 2, spec.latent_dim, generator=gen)
    labels = torch.tensor([0] * per_class + [1] * per_class)
    was_training = g.training
    g.eval()
    with torch.no_grad():
        imgs = to_uint8(g(z, labels), spec.input_range, spec.output_cast)
    g.train(was_training)
    rows = [np.hstack(list(imgs[i * per_class : (i + 1) * per_class])) for i in range(2)]
    return np.vstack(rows)


def _state_dir(out_dir: Path) -> Path:
    """Resume state lives beside the output, not in it: Snakemake removes a failed job's
    outputs, and the state must survive a kill."""
    return out_dir.parent / f".{out_dir.name}.state"


def _spec_key(spec: GanSpec, dp: GanDPSpec, n: int, device: str) -> str:
    """The settings a training state belongs to (the device type too: the DP noise generator
    lives on the device, and its state cannot move between CPU and CUDA)."""
    dev = torch.device(device).type
    key = {"spec": asdict(spec), "dp": asdict(dp), "n": n, "device": dev}
    if dp.enabled:  # states of the earlier DP step (real and fakes clipped together) differ
        key["dp_step"] = DP_STEP
    return json.dumps(key, sort_keys=True)


def _real_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE against smoothed targets that may exceed 1 (the study's U(0.7, 1.2)): the BCE
    formula itself, which torch's BCELoss refuses for targets above one."""
    out = out.clamp(1e-7, 1 - 1e-7)
    return -(target * out.log() + (1 - target) * (1 - out).log()).mean()


def train(
    images: torch.Tensor,
    labels: torch.Tensor,
    spec: GanSpec,
    out_dir: str | Path,
    threads: int = 1,
    device: str = "cpu",
    dp: GanDPSpec | None = None,
    stop_after: int | None = None,
) -> dict:
    """Train and write ``generator.pt`` (last epoch trained), ``generator_epoch<k>.pt`` (the
    sampling checkpoint, when set), ``losses.csv``, ``losses.png``, ``samples/epoch<k>.png`` and,
    under DP, ``privacy.json`` into ``out_dir`` (atomically, as one directory). Training ends at
    ``spec.last_epoch``: the sampling checkpoint when ``stop_at_sample_epoch`` (the same weights
    as a full run's, which the later epochs do not touch).

    Every ``checkpoint_every`` epochs the full training state (both networks, optimisers, RNGs
    including the DP noise generator and, on CUDA, the CUDA RNGs, the DP accountant) is saved
    beside ``out_dir``; a rerun after a kill resumes from it and ends with the same weights as an
    uninterrupted run. A state is resumed only for the same settings and the same data (a
    fingerprint of ``images`` and ``labels``), and is deleted once the outputs are written.
    ``stop_after`` simulates such a kill."""
    dp = dp or GanDPSpec()
    spec.check_sample_epoch()  # before hours of training, not after
    last = spec.last_epoch
    out_dir = Path(out_dir)
    state_dir = _state_dir(out_dir)
    torch.set_num_threads(threads)
    run = _setup(images, labels, spec, dp, device)
    state = _training_state(run, state_dir / "state.pt", spec, dp, images, labels, device)
    history, step, start = _resume(state, state_dir)
    clock, write_due = EpochClock(start, last), Every(2.0)
    for epoch in range(start, last + 1):
        row, step = _epoch(run, epoch, step, spec, dp, device)
        history.append(row)
        log.info(clock.line(epoch, {k: v for k, v in row.items() if k != "epoch"}))
        if write_due(time.perf_counter()):  # progress as it goes; the output's copy is below
            write_csv(state_dir / "losses.csv", pd.DataFrame(history))
        if epoch % spec.checkpoint_every == 0 or epoch == last:
            _checkpoint(run.nets.g, spec, epoch, state, state_dir, history=history, step=step)
            if stop_after is not None and epoch >= stop_after:
                raise KeyboardInterrupt(f"stopped after epoch {epoch} (simulated kill)")
    _write_outputs(out_dir, state_dir, run, spec, dp, history, last)
    # The outputs are complete: the resume state has served its purpose.
    shutil.rmtree(state_dir, ignore_errors=True)
    return history[-1]


@dataclass
class _Nets:
    g: Generator
    d: nn.Module  # under DP: Opacus' GradSampleModule around the discriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer  # under DP: Opacus' DPOptimizer
    private: bool


@dataclass
class _Run:
    """What one training run updates and draws from."""

    nets: _Nets
    d: nn.Module  # the discriminator itself (``nets.d`` wraps it under DP): what is saved
    loader: torch.utils.data.DataLoader
    engine: object | None  # Opacus' PrivacyEngine under DP
    rng: torch.Generator
    rng_real: torch.Generator
    noise: torch.Generator
    n: int


def _generators(spec: GanSpec, dp: GanDPSpec, device: str):
    """Seed torch and make the run's own generators: (public stream, per-record, DP noise)."""
    torch.manual_seed(spec.seed)
    rng = torch.Generator().manual_seed(spec.seed)  # shuffling / Poisson sampling, flips, z
    # Under DP the draws made per real sample (label smoothing, flips) come from their own
    # generator, so that the public stream (sampling, z, fake labels) never depends on how many
    # real samples a batch held.
    rng_real = rng if not dp.enabled else torch.Generator().manual_seed(spec.seed + 104729)
    # DP noise: on the device (Opacus draws it there), saved and restored with the state.
    noise = torch.Generator(device=device).manual_seed(spec.seed + 7919)
    return rng, rng_real, noise


def _networks(spec: GanSpec, dp: GanDPSpec, device: str):
    """The initialised generator and discriminator on ``device``, with their Adam optimisers."""
    g, d = build(spec)
    if dp.enabled:
        from opacus.validators import ModuleValidator

        d = ModuleValidator.fix(d)  # BatchNorm mixes samples; DP needs per-sample (GroupNorm)
    g.to(device), d.to(device)
    opt_g = torch.optim.Adam(g.parameters(), lr=spec.lr, betas=(spec.beta1, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=spec.lr, betas=(spec.beta1, 0.999))
    return g, d, opt_g, opt_d


def _setup(images, labels, spec: GanSpec, dp: GanDPSpec, device: str) -> _Run:
    """Seeded generators, networks, optimisers and the data loader (made private under DP)."""
    rng, rng_real, noise = _generators(spec, dp, device)
    g, d, opt_g, opt_d = _networks(spec, dp, device)
    dataset = torch.utils.data.TensorDataset(to_training_range(images, spec.input_range), labels)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=spec.batch_size, shuffle=True, generator=rng
    )
    engine = None
    d_train = d
    if dp.enabled:
        engine, d_train, opt_d, loader = _make_private_d(d, opt_d, loader, spec, dp, noise)
        # Opacus' hooks on D fire for the generator's images too (no input needs a gradient).
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
    nets = _Nets(g, d_train, opt_g, opt_d, engine is not None)
    return _Run(nets, d, loader, engine, rng, rng_real, noise, len(images))


def _training_state(run: _Run, path: Path, spec, dp, images, labels, device) -> TrainingState:
    return TrainingState(
        path,
        _spec_key(spec, dp, run.n, device),
        data_fingerprint(images, labels),
        device,
        modules={"g": run.nets.g, "d": run.d},
        optimizers={"g": run.nets.opt_g, "d": run.nets.opt_d},
        generators={"rng": run.rng, "rng_real": run.rng_real, "noise": run.noise},
        accountant=run.engine.accountant if run.engine is not None else None,
        logger=log,
    )


def _resume(state: TrainingState, state_dir: Path) -> tuple[list[dict], int, int]:
    """(history, step, first epoch to train): a saved state's, or a fresh start's."""
    history: list[dict] = []
    step, start = 0, 1
    progress = state.restore("training data (images or labels differ)")
    if progress is not None:
        history, step, start = progress["history"], progress["step"], progress["epoch"] + 1
        log.info("resuming MCGAN training after epoch %d", progress["epoch"])
    elif state_dir.exists():
        shutil.rmtree(state_dir)
    (state_dir / "samples").mkdir(parents=True, exist_ok=True)
    return history, step, start


def _epoch(run: _Run, epoch: int, step: int, spec: GanSpec, dp: GanDPSpec, device):
    """One pass over the loader: (the epoch's loss row, the batch step count after it)."""
    nets = run.nets
    d_losses, g_losses = [], []
    for real, y in run.loader:
        batch = _dp_batch if nets.private else _batch
        loss_d, fake, y_fake = batch(nets, real, y, spec, run.rng, run.rng_real, device)
        if loss_d is not None:
            d_losses.append(loss_d)
        step += 1
        if fake is not None and step % spec.d_steps_per_g_step == 0:
            g_losses.append(_generator_step(nets, fake, y_fake, device))
    # Under DP only losses on generated images (public) are recorded.
    row = {
        "epoch": epoch,
        ("loss_d_fake" if nets.private else "loss_d"): _mean(d_losses),
        "loss_g": _mean(g_losses),
    }
    if run.engine is not None:
        row["epsilon"] = run.engine.get_epsilon(dp.delta)
    return row, step


def _checkpoint(g, spec: GanSpec, epoch: int, state: TrainingState, state_dir: Path, **progress):
    """A checkpoint epoch: the sample grid, the sampling checkpoint and the training state."""
    grid = sample_grid(g, spec, 8, seed=spec.seed)
    cv2.imwrite(str(state_dir / "samples" / f"epoch{epoch:05d}.png"), grid)
    if epoch == spec.sample_epoch:
        _save_generator(g, spec, epoch, state_dir / f"generator_epoch{epoch:05d}.pt")
    state.save(**progress, epoch=epoch)
    log.info("epoch %d: training state saved", epoch)


def _write_outputs(out_dir, state_dir, run: _Run, spec, dp, history: list[dict], last: int):
    """Write ``out_dir`` as one directory from the state directory and the trained generator."""
    with atomic_dir(out_dir) as tmp:
        shutil.copytree(state_dir / "samples", tmp / "samples")
        _save_generator(run.nets.g, spec, last, tmp / "generator.pt")
        if spec.sample_epoch is not None:
            name = f"generator_epoch{spec.sample_epoch:05d}.pt"
            shutil.copy(state_dir / name, tmp / name)
        losses = pd.DataFrame(history)
        write_csv(tmp / "losses.csv", losses)
        from .loss_figure import gan_losses

        gan_losses(tmp / "losses.csv", tmp / "losses.png")
        if run.engine is not None:
            opt_d, loader = run.nets.opt_d, run.loader
            privacy = _gan_privacy(run.engine, opt_d, loader, dp, history, run.n, spec)
            write_json(tmp / "privacy.json", privacy)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _smoothed_targets(b: int, spec: GanSpec, rng: torch.Generator, device) -> torch.Tensor:
    """One-sided label smoothing: real targets U(real_label_low, real_label_high)."""
    t = torch.empty(b).uniform_(spec.real_label_low, spec.real_label_high, generator=rng)
    return t.to(device)


def _fakes(nets: _Nets, b: int, spec: GanSpec, rng: torch.Generator, device):
    z = torch.randn(b, spec.latent_dim, generator=rng).to(device)
    y_fake = torch.randint(0, N_CLASSES, (b,), generator=rng).to(device)
    return nets.g(z, y_fake), y_fake


def _batch(nets: _Nets, real, y, spec: GanSpec, rng, rng_real, device):
    """The original's discriminator step: real and as many fake images in one loss."""
    b = len(real)
    real, y = augment(real, spec, rng).to(device), y.to(device)
    target_real = _smoothed_targets(b, spec, rng, device)
    fake, y_fake = _fakes(nets, b, spec, rng, device)
    nets.opt_d.zero_grad()
    bce = nn.BCELoss()
    loss_d = _real_loss(nets.d(real, y), target_real) + bce(
        nets.d(fake.detach(), y_fake), torch.zeros(b, device=device)
    )
    loss_d.backward()
    nets.opt_d.step()
    return loss_d.item(), fake, y_fake


def _dp_batch(nets: _Nets, real, y, spec: GanSpec, rng, rng_real, device):
    """DP-SGD step of the discriminator whose sensitivity is the clipping norm C: a fixed number
    of fakes (the expected batch size) drawn from the public stream, their gradient added after
    Opacus clipped each real sample's gradient on its own and added the noise. Returns the
    (public) loss on the fakes."""
    fake, y_fake = _fakes(nets, spec.batch_size, spec, rng, device)
    fake_grads, loss_fake = _fake_d_gradient(nets, fake.detach(), y_fake)
    if len(real):  # per-record randomness: flips, crops and smoothed targets
        real = augment(real, spec, rng_real)
    target = _smoothed_targets(len(real), spec, rng_real, device)
    _real_d_backward(nets, real.to(device), y.to(device), target)
    if nets.opt_d.pre_step():  # Opacus: clip per real sample, noise, / expected batch, account
        for p, fg in zip(nets.opt_d.params, fake_grads, strict=True):
            p.grad.add_(fg)
        nets.opt_d.original_optimizer.step()
    return loss_fake, fake, y_fake


def _fake_d_gradient(nets: _Nets, fake, y_fake) -> tuple[list[torch.Tensor], float]:
    """Gradient of the discriminator's mean BCE on generated images (target 0), without
    per-sample hooks: it depends on public quantities only (the released D and G, public z)."""
    nets.d.disable_hooks()
    try:
        out = nets.d(fake, y_fake)
        loss = nn.functional.binary_cross_entropy(out, torch.zeros_like(out))
        params = nets.opt_d.params
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    finally:
        nets.d.enable_hooks()
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
    return grads, loss.item()


def _real_d_backward(nets: _Nets, real, y, target) -> None:
    """Per-sample gradients (Opacus' hooks) of the smoothed BCE on the real batch alone."""
    nets.opt_d.zero_grad()
    if len(real) == 0:  # Poisson sampling can draw an empty batch: a noise-only step
        (nets.d(real, y).sum() * 0.0).backward()
        return
    _real_loss(nets.d(real, y), target).backward()


def private_d_sum(nets: _Nets, real, y, target, fake, y_fake) -> list[torch.Tensor]:
    """The DP discriminator update before noise and averaging, for records already augmented
    (``real``, ``y``, smoothed ``target``): the sum of the real samples' clipped gradients plus
    the expected batch size times the fakes' mean gradient. Adding or removing one record moves
    it by at most the clipping norm (tests/synthesis/test_mcgan.py)."""
    fake_grads, _ = _fake_d_gradient(nets, fake, y_fake)
    _real_d_backward(nets, real, y, target)
    nets.opt_d.clip_and_accumulate()
    m = nets.opt_d.expected_batch_size
    out = [p.summed_grad + m * fg for p, fg in zip(nets.opt_d.params, fake_grads, strict=True)]
    nets.opt_d.zero_grad()
    return out


def _generator_step(nets: _Nets, fake, y_fake, device) -> float:
    nets.opt_g.zero_grad()
    if nets.private:
        nets.d.disable_hooks()  # no per-sample grads of D for G's step
    out = nets.d(fake, y_fake)
    loss_g = nn.functional.binary_cross_entropy(out, torch.ones(len(fake), device=device))
    loss_g.backward()
    if nets.private:
        nets.d.enable_hooks()
        nets.opt_d.zero_grad()
    nets.opt_g.step()
    return loss_g.item()


def _make_private_d(d, opt_d, loader, spec: GanSpec, dp: GanDPSpec, noise: torch.Generator):
    from opacus import PrivacyEngine

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant=dp.accountant)
    d_private, opt_d, loader = engine.make_private_with_epsilon(
        module=d,
        optimizer=opt_d,
        data_loader=loader,
        target_epsilon=dp.epsilon,
        target_delta=dp.delta,
        epochs=spec.epochs,
        max_grad_norm=dp.max_grad_norm,
        poisson_sampling=True,
        noise_generator=noise,
    )
    return engine, d_private, opt_d, loader


def _gan_privacy(engine, opt_d, loader, dp: GanDPSpec, history, n_train, spec) -> dict:
    steps = sum(s for _, _, s in engine.accountant.history)
    fake_batch = spec.batch_size
    return {
        "dp": True,
        "library": "opacus",
        "trained_privately": "discriminator (the generator only sees it: post-processing)",
        "dp_step": (
            "each real sample's gradient clipped on its own (Opacus); the gradient on "
            f"{fake_batch} generated images per step (a fixed number, from a public random "
            "stream, the generator's batch statistics over those images only) added after the "
            "noise: one real record moves the update by at most max_grad_norm"
        ),
        "fake_batch_size": fake_batch,
        "not_covered": [
            "losses.csv and the losses figure: only losses on generated images (public) are "
            "recorded; the noise-free loss on real crops is not",
        ],
        "accountant": dp.accountant,
        "noise_multiplier": float(opt_d.noise_multiplier),
        "max_grad_norm": dp.max_grad_norm,
        "sample_rate": float(loader.sample_rate),
        "poisson_sampling": True,
        "n_train": n_train,
        "unit_of_privacy": "crop",
        "n_units": n_train,
        "steps": int(steps),
        # sigma is set for the planned epochs; a run that stops at sample_epoch spends less.
        "planned_epochs": spec.epochs,
        "epochs_trained": len(history),
        "delta": dp.delta,
        "target_epsilon": dp.epsilon,
        "epsilon_final": history[-1]["epsilon"],
    }


def _save_generator(g: Generator, spec: GanSpec, epoch: int, path: Path) -> None:
    state = {k: v.detach().cpu() for k, v in g.state_dict().items()}
    torch.save({"spec": asdict(spec), "generator": state, "epochs_trained": epoch}, path)


def load_generator(path: str | Path) -> tuple[Generator, GanSpec]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    saved = {**LEGACY_SPEC, **ckpt["spec"]}
    spec = GanSpec(**{k: v for k, v in saved.items() if k in GanSpec.__dataclass_fields__})
    g = Generator(spec.latent_dim, spec.embedding_dim, spec.width)
    g.load_state_dict(ckpt["generator"])
    g.eval()
    return g, spec


def sample(
    generator_path: str | Path, n_per_class: int, seed: int, out_dir: str | Path, batch: int = 64
) -> pd.DataFrame:
    """Write ``n_per_class`` images per class as PNGs; label 1 = benign, in the file name."""
    g, spec = load_generator(generator_path)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        for label, name in ((0, "malignant"), (1, "benign")):
            for start in range(0, n_per_class, batch):
                b = min(batch, n_per_class - start)
                z = torch.randn(b, spec.latent_dim, generator=gen)
                with torch.no_grad():
                    imgs = to_uint8(
                        g(z, torch.full((b,), label)), spec.input_range, spec.output_cast
                    )
                for i, img in enumerate(imgs):
                    fname = f"mcgan_{start + i:05d}_{name}.png"
                    cv2.imwrite(str(tmp / fname), img)
                    rows.append({"path": fname, "label": label})  # fileio.read_manifest
    df = pd.DataFrame(rows)
    df["generator"] = "mcgan"
    df["seed"] = seed
    return df
