"""Drawing one model's figures: arrays in, PNG or GIF files out; each function saves and returns its path.

Nothing here runs a model (common/latents.py and common/model_figures.py compute the arrays). Figures
are `matplotlib.figure.Figure` objects, never pyplot, so importing this in a notebook changes nothing.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from PIL import Image

from common.files import atomic_write

DPI = 100


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """`fig` saved to `path` through the one atomic writer (common/files.py), in the suffix's format."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=DPI, bbox_inches="tight"))


def tile(images: np.ndarray, rows: int, cols: int, pad: int = 1) -> np.ndarray:
    """(rows * cols, H, W) or (rows * cols, 1, H, W) -> one (rows*(H+pad)-pad, cols*(W+pad)-pad) mosaic."""
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[:, 0]
    n, h, w = images.shape
    if n != rows * cols:
        raise ValueError(f"need {rows * cols} images for a {rows}x{cols} grid, got {n}")
    out = np.ones((rows * (h + pad) - pad, cols * (w + pad) - pad), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = images[i]
    return out


def plot_reconstructions(originals: np.ndarray, reconstructions: np.ndarray, path: str | os.PathLike,
                         title: str = "") -> Path:
    """Originals on the top row, their reconstructions underneath."""
    n = len(originals)
    fig = Figure(figsize=(1.0 * n, 2.3))
    axes = fig.subplots(2, n, squeeze=False)  # (2, n) even for one digit
    for i in range(n):
        for row, imgs in enumerate((originals, reconstructions)):
            axes[row, i].imshow(np.asarray(imgs[i]).squeeze(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            axes[row, i].set(xticks=[], yticks=[])
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("recon.")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def scatter_latent(ax: Axes, codes: np.ndarray, labels: np.ndarray, title: str, prior_circles: bool = False):
    """Codes (N, 2) coloured by digit; with `prior_circles`, N(0, I)'s 1- and 2-sigma circles."""
    points = ax.scatter(codes[:, 0], codes[:, 1], c=labels, cmap="tab10", vmin=-0.5, vmax=9.5, s=2, alpha=0.6)
    if prior_circles:
        for r, style in ((1, "-"), (2, "--")):
            ax.add_patch(Circle((0, 0), r, fill=False, color="k", ls=style, lw=1.2, label=f"N(0, I) {r}σ"))
        ax.legend(loc="upper right", fontsize=8)
    ax.axhline(0, color="0.7", lw=0.5, zorder=0)
    ax.axvline(0, color="0.7", lw=0.5, zorder=0)
    ax.set(title=title, xlabel="z[0]", ylabel="z[1]")
    ax.set_aspect("equal", adjustable="datalim")
    return points


def plot_latent_space(codes: np.ndarray, labels: np.ndarray, path: str | os.PathLike, title: str = "",
                      prior_circles: bool = False) -> Path:
    """Test-set codes coloured by digit (the first two dimensions if latent_dim > 2)."""
    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
    fig.colorbar(scatter_latent(ax, codes, labels, title, prior_circles), ax=ax, ticks=range(10)).set_label("digit")
    return save_figure(fig, path)


def plot_loss_curves(history: Sequence[dict[str, float]], path: str | os.PathLike,
                     terms: Sequence[str] = ("loss",), title: str = "") -> Path:
    """Train and test value of each term per epoch, one panel per term."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(4.5 * len(terms), 3.5))
    axes = fig.subplots(1, len(terms), squeeze=False)
    for ax, term in zip(axes[0], terms):
        for split, style in (("train", "o-"), ("test", "s--")):
            key = f"{split}_{term}"
            if all(key in h for h in history):
                ax.plot(epochs, [h[key] for h in history], style, label=split)
        nats = term in ("loss", "recon", "kl", "neg_elbo", "bce")
        ax.set(title=term, xlabel="epoch", ylabel="nats / image" if nats else "")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_image_grid(images: np.ndarray, rows: int, cols: int, path: str | os.PathLike, title: str = "") -> Path:
    fig = Figure(figsize=(cols * 0.45 + 0.4, rows * 0.45 + 0.6))
    ax = fig.subplots()
    ax.imshow(tile(images, rows, cols), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set(xticks=[], yticks=[])
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def plot_image_panels(panels: Sequence[tuple[str, np.ndarray]], rows: int, cols: int,
                      path: str | os.PathLike, title: str = "") -> Path:
    """Several image grids side by side, each with its own title."""
    fig = Figure(figsize=(len(panels) * (cols * 0.45 + 0.4), rows * 0.45 + 0.9))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (name, images) in zip(axes[0], panels):
        ax.imshow(tile(images, rows, cols), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set(xticks=[], yticks=[])
        ax.set_title(name, fontsize=10)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_latent_evolution(panels: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray, bool]],
                          path: str | os.PathLike, fps: float = 2.0) -> Path:
    """An animated GIF, one frame per epoch, of each panel's codes as they form during training.

    panels: (title, epochs (E,), codes (E, n, 2), labels (n,), prior_circles). Each panel's axes span
    all its epochs' codes, so the motion is real; a panel with fewer epochs holds its last frame.
    """
    frames = max(len(epochs) for _, epochs, _, _, _ in panels)
    fig = Figure(figsize=(5.2 * len(panels), 5.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    limits = []
    for _, _, codes, _, circles in panels:
        lo, hi = codes.reshape(-1, 2).min(0), codes.reshape(-1, 2).max(0)
        if circles:  # keep the prior's 2-sigma circle in view
            lo, hi = np.minimum(lo, -2.2), np.maximum(hi, 2.2)
        centre, half = (lo + hi) / 2, (hi - lo).max() / 2 * 1.05 + 1e-6
        limits.append((centre - half, centre + half))
    images = []
    for frame in range(frames):
        for ax, (title, epochs, codes, labels, circles), (lo, hi) in zip(axes, panels, limits):
            i = min(frame, len(epochs) - 1)
            ax.clear()
            scatter_latent(ax, codes[i], labels, f"{title}: epoch {epochs[i]}", prior_circles=circles)
            ax.set_aspect("equal", adjustable="box")
            ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]))
        # each frame as matplotlib's PillowWriter grabs it: RGBA pixels, RGB when opaque
        buffer = io.BytesIO()
        fig.savefig(buffer, format="rgba", dpi=DPI)
        width, height = fig.get_size_inches()
        image = Image.frombuffer("RGBA", (int(width * DPI), int(height * DPI)), buffer.getbuffer(), "raw", "RGBA", 0, 1)
        images.append(image if image.getextrema()[3][0] < 255 else image.convert("RGB"))
    return atomic_write(path, lambda f: images[0].save(f, format="GIF", save_all=True, append_images=images[1:],
                                                       duration=int(1000 / fps), loop=0))
