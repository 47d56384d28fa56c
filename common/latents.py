"""Latent codes: images to codes and back in batches, grids and lines in latent space, and the codes
of a fixed test subset kept after every epoch (latent_codes.npz, the same subset for every run).

Models are used through GenerativeModel (common/registry.py): `code(x)` is the point code (z for
the AE, the posterior mean for the VAE), `decode(z)` pixel intensities.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.data import with_optional_labels
from common.errors import CheckpointError, ProjectError
from common.files import atomic_write
from common.registry import GenerativeModel

SUBSET_SIZE = 2000  # test images whose codes are kept (enough for a dense scatter, 16 kB a 2-d epoch)
SUBSET_SEED = 0
FILE_NAME = "latent_codes.npz"  # plain arrays: epochs (E,), codes (E, n, d) float32, labels (n,), indices (n,)


@torch.inference_mode()
def _in_batches(model: GenerativeModel, fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
                inputs: torch.Tensor, labels: torch.Tensor | None, batch_size: int, what: str) -> torch.Tensor:
    """fn(inputs, labels) batch by batch on the model's device, in eval mode, gathered as float32 on the
    CPU; all finite, since finite weights can still overflow the activations and every figure or
    metric drawn from them would be blank or NaN."""
    device = next(model.parameters()).device
    model.eval()
    out = torch.cat([fn(xb.to(device), None if yb is None else yb.to(device)).float().cpu()
                     for xb, yb in with_optional_labels(inputs, labels, batch_size)])
    if not bool(torch.isfinite(out).all()):
        raise CheckpointError(f"the model's {what} are NaN or infinite: its weights overflow float32, so the "
                              f"checkpoint is unusable")
    return out


def encode_codes(model: GenerativeModel, x: torch.Tensor, batch_size: int = 1000, *,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
    """(N, C, H, W) images -> (N, latent_dim) point codes, float32 on the CPU; `labels` (N,) for a
    conditional model (others ignore them)."""
    return _in_batches(model, model.code, x, labels, batch_size, "codes")


def decode_codes(model: GenerativeModel, z: torch.Tensor, batch_size: int = 1000, *,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
    """(N, latent_dim) codes -> (N, C, H, W) intensities in [0, 1], float32 on the CPU; `labels` (N,):
    the digits a conditional model should write."""
    return _in_batches(model, model.decode, z, labels, batch_size, "decoded images")


def reconstruct(model: GenerativeModel, x: torch.Tensor, batch_size: int = 1000, *,
                labels: torch.Tensor | None = None) -> torch.Tensor:
    """Decode each image's point code (the VAE decodes its mean, no sampling)."""
    return decode_codes(model, encode_codes(model, x, batch_size, labels=labels), batch_size, labels=labels)


def balanced_labels(n: int, num_classes: int = 10) -> torch.Tensor:
    """0, 1, ..., 9, 0, 1, ...: the digits asked of a conditional model's samples (equal shares)."""
    return torch.arange(n) % num_classes


def interpolate(z_start: torch.Tensor, z_end: torch.Tensor, steps: int) -> torch.Tensor:
    """(P, d), (P, d) -> (P * steps, d): for each pair, `steps` evenly spaced points from start to end."""
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    return (z_start.unsqueeze(1) * (1 - t) + z_end.unsqueeze(1) * t).reshape(-1, z_start.shape[1])


def grid_codes(axis_values: torch.Tensor, latent_dim: int) -> torch.Tensor:
    """A square grid over the first two latent dimensions (the rest 0) from `axis_values` (2, n): row r,
    column c holds (z0, z1) = (axis_values[0][c], axis_values[1][-1 - r]), so z1 grows upwards."""
    n = axis_values.shape[1]
    z = torch.zeros(n, n, latent_dim)
    z[:, :, 0] = axis_values[0].view(1, n)
    z[:, :, 1] = axis_values[1].flip(0).view(n, 1)
    return z.view(n * n, latent_dim)


def uniform_in_box(codes: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n codes uniform over the bounding box of `codes` (N, d): the fairest blind draw for an AE."""
    lo, hi = codes.min(0).values, codes.max(0).values
    return lo + (hi - lo) * torch.rand(n, codes.shape[1], generator=generator)


@dataclass(frozen=True)
class CodeHistory:
    epochs: np.ndarray  # (E,) int64, increasing
    codes: np.ndarray  # (E, n, d) float32: codes[i] are the codes after epochs[i]
    labels: np.ndarray  # (n,) int64
    indices: np.ndarray  # (n,) int64: which test images


def subset_indices(num_test: int, size: int = SUBSET_SIZE, seed: int = SUBSET_SEED) -> torch.Tensor:
    """The fixed subset: the first `size` of a seeded permutation of the test set (all of it if smaller)."""
    return torch.randperm(num_test, generator=torch.Generator().manual_seed(seed))[:size]


def _checked(arrays: Mapping[str, Any], where: object) -> CodeHistory:
    """The CodeHistory in `arrays` (an .npz file, or a shipped checkpoint's dict), its shapes checked."""
    try:
        kinds = {"epochs": np.int64, "codes": np.float32, "labels": np.int64, "indices": np.int64}
        history = CodeHistory(*(np.asarray(arrays[key]).astype(kind) for key, kind in kinds.items()))
    except (KeyError, TypeError, ValueError):
        raise ProjectError(f"{where} holds a malformed latent-code history") from None
    e, c = history.epochs, history.codes
    n = c.shape[1] if c.ndim == 3 else -1  # images in the subset
    if e.ndim != 1 or c.ndim != 3 or c.shape[0] != len(e) or {history.labels.shape, history.indices.shape} != {(n,)}:
        raise ProjectError(f"{where} is malformed: epochs {e.shape}, codes {c.shape}, labels {history.labels.shape}")
    return history


def read_code_history(path: str | os.PathLike) -> CodeHistory:
    """The arrays in `path`, checked for consistent shapes; a ProjectError with one line otherwise."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return _checked(f, path)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ProjectError(f"cannot read the latent-code history {path}: {str(err).splitlines()[0][:200]}") from None


def append_epoch(path: str | os.PathLike, epoch: int, codes: torch.Tensor, labels: torch.Tensor,
                 indices: torch.Tensor) -> CodeHistory:
    """Add the codes after `epoch` to the file (rewritten atomically), dropping its entries from `epoch`
    on (a resumed run never mixes in another run's later epochs); a file for another subset or latent
    size is replaced."""
    path = Path(path)
    new_codes = codes.detach().float().cpu().numpy()[None]
    epochs, stacked = np.array([epoch], dtype=np.int64), new_codes
    if path.exists():
        try:
            old = read_code_history(path)
        except ProjectError:
            old = None  # unreadable: replaced by this run's history
        if (old is not None and np.array_equal(old.indices, indices.numpy())
                and old.codes.shape[2] == new_codes.shape[2]):
            keep = old.epochs < epoch
            epochs = np.concatenate([old.epochs[keep], epochs])
            stacked = np.concatenate([old.codes[keep], new_codes])
    history = CodeHistory(epochs, stacked.astype(np.float32), labels.cpu().numpy().astype(np.int64),
                          indices.cpu().numpy().astype(np.int64))
    atomic_write(path, lambda f: np.savez(f, **vars(history)))  # epochs, codes, labels, indices
    return history


def find_code_history(checkpoint: str | os.PathLike, state: dict) -> CodeHistory | None:
    """The code history of a checkpoint: embedded in it (shipped model files), or its run folder's
    (<run>/checkpoints/last.pt -> <run>/latent_codes.npz), or None."""
    if isinstance(state.get("latent_codes"), dict):
        return _checked(state["latent_codes"], checkpoint)
    checkpoint = Path(checkpoint)
    candidate = checkpoint.parent.parent / FILE_NAME
    if checkpoint.parent.name == "checkpoints" and candidate.is_file():
        return read_code_history(candidate)
    return None


def first_two_dims(codes: np.ndarray) -> np.ndarray:
    """(..., d) -> (..., 2) for a scatter: the first two dimensions, a zero column when d = 1."""
    if codes.shape[-1] == 1:
        codes = np.concatenate([codes, np.zeros_like(codes)], -1)
    return codes[..., :2]
