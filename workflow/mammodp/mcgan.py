"""MCGAN: the study's malignancy-conditioned DCGAN for 128x128 grayscale mass crops.

Generator: label -> Embedding(2, 50) -> Linear(50, 100) -> LeakyReLU(0.1), concatenated with
noise z (100) -> five transposed convolutions (16f, 8f, 4f, 2f, f channels with f = 64 in the
study: 1024 ... 64; kernel 4; BatchNorm + ReLU; no bias) -> transposed conv to 1 channel + tanh.
Discriminator: label -> Embedding(2, 50) -> Linear(50, 128*128) -> LeakyReLU(0.1) as a second
input channel; convolutions kernel 6, stride 2, padding 2 (f ... 16f channels, BatchNorm from the
second, LeakyReLU 0.1) -> final conv + sigmoid. Weights N(0, 0.02). BCE loss, Adam (lr 1e-4,
beta1 0.5), batch 8, one-sided label smoothing (real targets U(0.7, 1.2)), generator updated every
second batch, random flips. Images are scaled to [-1, 1], matching tanh.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn

from .errors import UserError
from .fileio import atomic_dir, write_csv

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
    seed: int = 0


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
            layers.append(nn.LeakyReLU(0.1, inplace=True))
        layers += [nn.Conv2d(16 * width, 1, 4, 1, 0, bias=False), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cond = self.embed(labels).view(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
        return self.net(torch.cat([x, cond], dim=1)).view(-1)


def init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build(spec: GanSpec) -> tuple[Generator, Discriminator]:
    g = Generator(spec.latent_dim, spec.embedding_dim, spec.width)
    d = Discriminator(spec.embedding_dim, spec.width)
    g.apply(init_weights)
    d.apply(init_weights)
    return g, d


def load_images(paths: list[str]) -> torch.Tensor:
    """8-bit PNGs -> float tensor in [-1, 1], shape (N, 1, 128, 128)."""
    arrs = []
    for p in paths:
        a = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if a is None or a.shape != (IMAGE_SIZE, IMAGE_SIZE):
            raise UserError(f"{p}: expected a {IMAGE_SIZE}x{IMAGE_SIZE} grayscale PNG")
        arrs.append(a)
    x = torch.from_numpy(np.stack(arrs)).float().div(127.5).sub(1.0)
    return x[:, None]


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.detach().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).squeeze(1).numpy()


def sample_grid(g: Generator, latent_dim: int, per_class: int, seed: int) -> np.ndarray:
    """Rows: malignant (0), benign (1); fixed noise so grids are comparable across epochs."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(per_class * 2, latent_dim, generator=gen)
    labels = torch.tensor([0] * per_class + [1] * per_class)
    was_training = g.training
    g.eval()
    with torch.no_grad():
        imgs = to_uint8(g(z, labels))
    g.train(was_training)
    rows = [np.hstack(list(imgs[i * per_class : (i + 1) * per_class])) for i in range(2)]
    return np.vstack(rows)


def train(
    images: torch.Tensor,
    labels: torch.Tensor,
    spec: GanSpec,
    out_dir: str | Path,
    threads: int = 1,
    device: str = "cpu",
) -> dict:
    """Train and write ``generator.pt``, ``losses.csv`` and ``samples/epoch<k>.png`` into
    ``out_dir`` (atomically, as one directory)."""
    torch.set_num_threads(threads)
    torch.manual_seed(spec.seed)
    rng = torch.Generator().manual_seed(spec.seed)
    g, d = build(spec)
    g.to(device), d.to(device)
    opt_g = torch.optim.Adam(g.parameters(), lr=spec.lr, betas=(spec.beta1, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=spec.lr, betas=(spec.beta1, 0.999))
    bce = nn.BCELoss()
    n = len(images)
    history = []
    step = 0
    with atomic_dir(out_dir) as tmp:
        (tmp / "samples").mkdir()
        for epoch in range(1, spec.epochs + 1):
            perm = torch.randperm(n, generator=rng)
            d_losses, g_losses = [], []
            for start in range(0, n, spec.batch_size):
                idx = perm[start : start + spec.batch_size]
                real = images[idx].clone()
                y = labels[idx]
                flip_h = torch.rand(len(idx), generator=rng) < 0.5
                flip_v = torch.rand(len(idx), generator=rng) < 0.5
                real[flip_h] = real[flip_h].flip(-1)
                real[flip_v] = real[flip_v].flip(-2)
                real, y = real.to(device), y.to(device)
                b = len(idx)
                # Discriminator: one-sided label smoothing on real targets.
                target_real = (
                    torch.empty(b)
                    .uniform_(spec.real_label_low, spec.real_label_high, generator=rng)
                    .to(device)
                )
                z = torch.randn(b, spec.latent_dim, generator=rng).to(device)
                y_fake = torch.randint(0, N_CLASSES, (b,), generator=rng).to(device)
                fake = g(z, y_fake)
                opt_d.zero_grad()
                # BCELoss needs targets in [0, 1]: above-one targets use the same formula.
                out_real = d(real, y).clamp(1e-7, 1 - 1e-7)
                loss_real = -(
                    target_real * out_real.log() + (1 - target_real) * (1 - out_real).log()
                ).mean()
                loss_fake = bce(d(fake.detach(), y_fake), torch.zeros(b, device=device))
                loss_d = loss_real + loss_fake
                loss_d.backward()
                opt_d.step()
                d_losses.append(loss_d.item())
                step += 1
                if step % spec.d_steps_per_g_step == 0:
                    opt_g.zero_grad()
                    loss_g = bce(d(fake, y_fake), torch.ones(b, device=device))
                    loss_g.backward()
                    opt_g.step()
                    g_losses.append(loss_g.item())
            history.append(
                {
                    "epoch": epoch,
                    "loss_d": float(np.mean(d_losses)),
                    "loss_g": float(np.mean(g_losses)) if g_losses else math.nan,
                }
            )
            if epoch % spec.checkpoint_every == 0 or epoch == spec.epochs:
                grid = sample_grid(g, spec.latent_dim, 8, seed=spec.seed)
                cv2.imwrite(str(tmp / "samples" / f"epoch{epoch:05d}.png"), grid)
                log.info("epoch %d: %s", epoch, history[-1])
        torch.save(
            {
                "spec": asdict(spec),
                "generator": g.cpu().state_dict(),
                "epochs_trained": spec.epochs,
            },
            tmp / "generator.pt",
        )
        write_csv(tmp / "losses.csv", pd.DataFrame(history))
    return history[-1]


def load_generator(path: str | Path) -> tuple[Generator, GanSpec]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    spec = GanSpec(**ckpt["spec"])
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
                    imgs = to_uint8(g(z, torch.full((b,), label)))
                for i, img in enumerate(imgs):
                    fname = f"mcgan_{start + i:05d}_{name}.png"
                    cv2.imwrite(str(tmp / fname), img)
                    rows.append({"path": str(out_dir / fname), "label": label})
    df = pd.DataFrame(rows)
    df["generator"] = "mcgan"
    df["seed"] = seed
    return df
