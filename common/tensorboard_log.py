"""Optional TensorBoard logging for train.py --tensorboard: loss terms, sample grids, the latent projector.

tensorboard is an optional extra (pip install -e .[tensorboard]), so nothing here imports it at module import
time: `open_writer` does, and turns a missing package into one clear `TensorBoardUnavailable` message.

    with open_writer(out_dir / "tensorboard") as writer:
        log_terms(writer, "train", train_terms, step)
        log_image_grid(writer, "samples", images, step)
        log_embedding(writer, codes, labels, images, step)
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from common.errors import ProjectError

if TYPE_CHECKING:  # annotations only: importing it for real would make tensorboard a hard dependency
    from torch.utils.tensorboard import SummaryWriter

INSTALL_HINT = "--tensorboard needs the tensorboard package: pip install -e .[tensorboard]"


class TensorBoardUnavailable(ProjectError):
    """The tensorboard package is not installed; the message says how to install it."""

    def __init__(self, message: str = INSTALL_HINT):
        super().__init__(message)


def open_writer(log_dir: str | os.PathLike[str], purge_step: int | None = None) -> SummaryWriter:
    """A SummaryWriter writing into `log_dir` (created if missing).

    `purge_step`: a resumed run passes the step of its checkpoint, so that events a crashed run wrote after
    that checkpoint are dropped instead of showing as a second, overlapping curve.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # ModuleNotFoundError is a subclass; torch raises ImportError when tensorboard is absent
        raise TensorBoardUnavailable() from err
    path = Path(log_dir)
    path.mkdir(parents=True, exist_ok=True)
    return SummaryWriter(log_dir=str(path), purge_step=purge_step)


def log_terms(writer: SummaryWriter, split: str, terms: dict[str, float], step: int) -> None:
    """One scalar per loss term, tagged f"{split}/{name}" (e.g. "train/loss", "test/kl").

    Non-finite values are logged as given, so that a diverging run shows up as NaN/inf in TensorBoard rather
    than as a silently missing point; entries that are not numbers (bools included) are skipped.
    """
    for name, value in terms.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            continue
        writer.add_scalar(f"{split}/{name}", float(value), step)


def log_image_grid(writer: SummaryWriter, tag: str, images: torch.Tensor, step: int, nrow: int = 10) -> None:
    """`images` (N, 1, H, W) in [0, 1], on any device, as one grid image with white (1.0) separators."""
    from torchvision.utils import make_grid  # torchvision is a core dependency; imported here to keep import cheap

    grid = make_grid(images.detach().float().cpu(), nrow=nrow, padding=2, pad_value=1.0)
    writer.add_image(tag, grid, step)


def log_embedding(writer: SummaryWriter, codes: torch.Tensor, labels: torch.Tensor, images: torch.Tensor,
                  step: int, tag: str = "latent codes") -> None:
    """Latent codes (N, d) for the TensorBoard projector, coloured by `labels` (N,), with `images` (N, 1, H, W)
    as the sprite.

    The projector needs at least 2 dimensions, so 1-D codes (d = 1) get a second column of zeros: the points
    then lie on a line, in the order of their single coordinate.
    """
    mat = codes.detach().float().cpu()
    if mat.ndim == 2 and mat.shape[1] == 1:
        mat = torch.cat([mat, torch.zeros_like(mat)], dim=1)
    writer.add_embedding(mat, metadata=[int(label) for label in labels.detach().cpu().reshape(-1).tolist()],
                         label_img=images.detach().float().cpu(), global_step=step, tag=tag)
