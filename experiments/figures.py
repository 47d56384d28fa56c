"""The comparison's and the studies' figures: several models or runs side by side; arrays in, PNG out."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from common.figures import save_figure, scatter_latent, tile


def image_panel(ax: Axes, images: np.ndarray, grid: int, title: str) -> None:
    ax.imshow(tile(images[: grid * grid], grid, grid), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)


def plot_ae_vs_vae(samples: dict[str, np.ndarray], ae_codes: np.ndarray, vae_codes: np.ndarray, labels: np.ndarray,
                   path: str | os.PathLike, grid: int = 10) -> Path:
    """Left the AE, right the VAE. Top: grid x grid decoded z ~ N(0, I). Middle: decoded samples of
    a Gaussian mixture fitted to the training codes after training. Bottom: the test codes (first
    two dimensions) with the N(0, I) 1σ and 2σ circles. `samples` holds the sets named
    "AE, z ~ N(0, I)", "AE + GMM", "VAE, z ~ N(0, I)", "VAE + GMM"."""
    fig = Figure(figsize=(11, 17))
    axes = fig.subplots(3, 2)
    for col, (name, codes) in enumerate((("AE", ae_codes), ("VAE", vae_codes))):
        image_panel(axes[0, col], samples[f"{name}, z ~ N(0, I)"], grid, f"{name}: decoded z ~ N(0, I)")
        image_panel(axes[1, col], samples[f"{name} + GMM"], grid,
                     f"{name} + GMM: z from a mixture fitted after training")
        points = scatter_latent(axes[2, col], codes, labels, f"{name}: test-set codes", prior_circles=True)
    fig.colorbar(points, ax=axes[2].tolist(), ticks=range(10), shrink=0.8, label="digit")
    return save_figure(fig, path)


def plot_latent_panels(panels: Sequence[tuple[str, np.ndarray]], labels: np.ndarray, path: str | os.PathLike) -> Path:
    """Several (N, 2) code sets side by side, coloured by digit, with the prior's circles."""
    fig = Figure(figsize=(6 * len(panels), 6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, codes) in zip(axes, panels):
        points = scatter_latent(ax, codes, labels, title, prior_circles=True)
    fig.colorbar(points, ax=axes.tolist(), ticks=range(10), shrink=0.8, label="digit")
    return save_figure(fig, path)


def plot_densities(panels: Sequence[tuple[str, np.ndarray]], extent: float, path: str | os.PathLike) -> Path:
    """Densities on the square [-extent, extent]^2 (row 0 at the top), side by side on one colour
    scale, with the prior's 1σ and 2σ circles."""
    vmax = max(float(density.max()) for _, density in panels)
    fig = Figure(figsize=(5.5 * len(panels), 5))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, density) in zip(axes, panels):
        image = ax.imshow(density, extent=(-extent, extent, -extent, extent), cmap="viridis", vmin=0, vmax=vmax)
        for r, style in ((1, "-"), (2, "--")):
            ax.add_patch(Circle((0, 0), r, fill=False, color="w", ls=style, lw=1.0))
        ax.set_title(title)
        ax.set_xlabel("z[0]")
        ax.set_ylabel("z[1]")
    fig.colorbar(image, ax=axes.tolist(), shrink=0.8, label="density")
    return save_figure(fig, path)


def plot_latent_study(latent_dims: Sequence[int], curves: dict[str, Sequence[float]], path: str | os.PathLike,
                      title: str = "") -> Path:
    """Each named curve (nats/image) against latent size, on a log-2 x axis."""
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    for (name, values), marker in zip(curves.items(), "osd^v"):
        ax.plot(latent_dims, values, marker + "-", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(latent_dims), [str(d) for d in latent_dims])
    ax.minorticks_off()
    ax.set_xlabel("latent size d")
    ax.set_ylabel("nats / image (test)")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return save_figure(fig, path)
