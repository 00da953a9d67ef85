"""The MCGAN's training losses per epoch, as a figure (``losses.png`` beside the generator, and
the report's ``mcgan_losses`` figure)."""

from __future__ import annotations

import pandas as pd

from mammodp.plotting import pyplot, save


def gan_losses(losses_csv, out):
    plt = pyplot()
    losses = pd.read_csv(losses_csv)
    fig, ax = plt.subplots(figsize=(6, 3.2), constrained_layout=True)
    # A DP-MCGAN records the discriminator's loss on generated images only (public).
    d_col = "loss_d" if "loss_d" in losses else "loss_d_fake"
    d_label = "discriminator" if d_col == "loss_d" else "discriminator, generated images only"
    ax.plot(losses["epoch"], losses[d_col], color="0.0", label=d_label)
    ax.plot(losses["epoch"], losses["loss_g"], color="0.5", linestyle="--", label="generator")
    ax.set(xlabel="epoch", ylabel="BCE loss (epoch mean)", title="MCGAN training losses")
    ax.title.set_fontsize(10)
    ax.legend(frameon=False)
    ax.grid(True, alpha=0.3)
    save(fig, out)
