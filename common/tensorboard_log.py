"""Optional TensorBoard logging for train.py --tensorboard: loss terms, sample grids, the latent projector.

tensorboard is an optional extra: only `open_writer` imports it, and a missing package is one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from common.errors import ProjectError

if TYPE_CHECKING:  # annotations only: a real import would make tensorboard a hard dependency
    from torch.utils.tensorboard import SummaryWriter

INSTALL_HINT = "--tensorboard needs the tensorboard package: pip install -e .[tensorboard]"


def open_writer(log_dir: str | os.PathLike[str], purge_step: int | None = None) -> SummaryWriter:
    """A SummaryWriter into `log_dir` (created if missing). A resumed run passes its checkpoint's
    step as `purge_step`, so the events a crashed run logged after it do not overlap the new ones."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # what torch raises when tensorboard is absent
        raise ProjectError(INSTALL_HINT) from err
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


def log_terms(writer: SummaryWriter, split: str, terms: dict[str, float], step: int) -> None:
    """One scalar per loss term, tagged "{split}/{name}" (NaN and inf too: a diverging run shows)."""
    for name, value in terms.items():
        writer.add_scalar(f"{split}/{name}", value, step)


def log_image_grid(writer: SummaryWriter, tag: str, images: torch.Tensor, step: int, nrow: int = 10) -> None:
    """`images` (N, 1, H, W) in [0, 1] as one grid with white separators."""
    from torchvision.utils import make_grid  # imported here to keep importing this module cheap

    writer.add_image(tag, make_grid(images.float().cpu(), nrow=nrow, padding=2, pad_value=1.0), step)


def log_embedding(writer: SummaryWriter, codes: torch.Tensor, labels: torch.Tensor, images: torch.Tensor,
                  step: int) -> None:
    """Codes (N, d) for the projector, coloured by `labels` (N,), `images` (N, 1, H, W) as sprites;
    1-D codes get a zero second column (the projector needs two)."""
    mat = codes.float().cpu()
    if mat.shape[1] == 1:
        mat = torch.cat([mat, torch.zeros_like(mat)], dim=1)
    writer.add_embedding(mat, metadata=labels.cpu().tolist(), label_img=images.float().cpu(), global_step=step,
                         tag="latent codes")
