"""Optional TensorBoard logging for train.py --tensorboard: loss terms, sample grids, the latent projector.

tensorboard is an optional extra, so only `open_writer` imports it, and a missing package is one
`TensorBoardUnavailable` line saying how to install it.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from common.errors import ProjectError

if TYPE_CHECKING:  # annotations only: a real import would make tensorboard a hard dependency
    from torch.utils.tensorboard import SummaryWriter

INSTALL_HINT = "--tensorboard needs the tensorboard package: pip install -e .[tensorboard]"


class TensorBoardUnavailable(ProjectError):
    """The tensorboard package is not installed; the message says how to install it."""

    def __init__(self, message: str = INSTALL_HINT):
        super().__init__(message)


def open_writer(log_dir: str | os.PathLike[str], purge_step: int | None = None) -> SummaryWriter:
    """A SummaryWriter into `log_dir` (created if missing). A resumed run passes its checkpoint's
    step as `purge_step`, so the events a crashed run logged after it do not overlap the new ones."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # what torch raises when tensorboard is absent
        raise TensorBoardUnavailable() from err
    path = Path(log_dir)
    path.mkdir(parents=True, exist_ok=True)
    return SummaryWriter(log_dir=str(path), purge_step=purge_step)


def log_terms(writer: SummaryWriter, split: str, terms: dict[str, float], step: int) -> None:
    """One scalar per loss term, tagged "{split}/{name}"; NaN and inf are logged (a diverging run
    shows), entries that are not numbers (bools included) are skipped."""
    for name, value in terms.items():
        if not isinstance(value, bool) and isinstance(value, numbers.Real):
            writer.add_scalar(f"{split}/{name}", float(value), step)


def log_image_grid(writer: SummaryWriter, tag: str, images: torch.Tensor, step: int, nrow: int = 10) -> None:
    """`images` (N, 1, H, W) in [0, 1] as one grid with white separators."""
    from torchvision.utils import make_grid  # imported here to keep importing this module cheap

    writer.add_image(tag, make_grid(images.detach().float().cpu(), nrow=nrow, padding=2, pad_value=1.0), step)


def log_embedding(writer: SummaryWriter, codes: torch.Tensor, labels: torch.Tensor, images: torch.Tensor,
                  step: int, tag: str = "latent codes") -> None:
    """Codes (N, d) for the projector, coloured by `labels` (N,), `images` (N, 1, H, W) as sprites;
    1-D codes get a zero second column (the projector needs two)."""
    mat = codes.detach().float().cpu()
    if mat.ndim == 2 and mat.shape[1] == 1:
        mat = torch.cat([mat, torch.zeros_like(mat)], dim=1)
    writer.add_embedding(mat, metadata=[int(label) for label in labels.detach().cpu().reshape(-1).tolist()],
                         label_img=images.detach().float().cpu(), global_step=step, tag=tag)
