"""The codes of a fixed subset of test images after every epoch (latent_codes.npz).

They show how the latent space forms during training: latent_evolution.gif and TensorBoard's projector.

The subset is the same for every run (SUBSET_SIZE images drawn with SUBSET_SEED), so two runs'
files can be shown side by side. The file holds plain arrays (np.savez, read with
allow_pickle=False): epochs (E,), codes (E, n, d) float32, labels (n,), indices (n,).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.errors import ProjectError
from common.files import atomic_write

SUBSET_SIZE = 2000  # test images whose codes are kept (enough for a dense scatter, 16 kB a 2-d epoch)
SUBSET_SEED = 0
FILE_NAME = "latent_codes.npz"


@dataclass(frozen=True)
class CodeHistory:
    epochs: np.ndarray  # (E,) int64, increasing
    codes: np.ndarray  # (E, n, d) float32: codes[i] are the codes after epochs[i]
    labels: np.ndarray  # (n,) int64
    indices: np.ndarray  # (n,) int64: which test images


def subset_indices(num_test: int, size: int = SUBSET_SIZE, seed: int = SUBSET_SEED) -> torch.Tensor:
    """The fixed subset: the first `size` of a seeded permutation of the test set (all of it if smaller)."""
    return torch.randperm(num_test, generator=torch.Generator().manual_seed(seed))[:size]


def read_code_history(path: str | os.PathLike) -> CodeHistory:
    """The arrays in `path`, checked for consistent shapes; a ProjectError with one line otherwise."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            history = CodeHistory(*(np.asarray(f[key]) for key in ("epochs", "codes", "labels", "indices")))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ProjectError(f"cannot read the latent-code history {path}: {str(err).splitlines()[0][:200]}") from None
    e, c = history.epochs, history.codes
    if (e.ndim != 1 or c.ndim != 3 or c.shape[0] != len(e) or history.labels.shape != (c.shape[1],)
            or history.indices.shape != (c.shape[1],)):
        raise ProjectError(f"{path} is malformed: epochs {e.shape}, codes {c.shape}, labels {history.labels.shape}")
    return history


def append_epoch(path: str | os.PathLike, epoch: int, codes: torch.Tensor, labels: torch.Tensor,
                 indices: torch.Tensor) -> CodeHistory:
    """Add the codes after `epoch` to the file (rewritten atomically). Entries from epoch `epoch` on
    are dropped first, so a resumed or restarted run never mixes in another run's later epochs; a
    file for another subset or latent size is replaced."""
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
    atomic_write(path, lambda f: np.savez(f, epochs=history.epochs, codes=history.codes, labels=history.labels,
                                          indices=history.indices))
    return history


def as_arrays(history: CodeHistory) -> dict[str, np.ndarray]:
    """The history as plain arrays, e.g. to embed in a shipped model file."""
    return {"epochs": history.epochs, "codes": history.codes, "labels": history.labels, "indices": history.indices}


def find_code_history(checkpoint: str | os.PathLike, state: dict) -> CodeHistory | None:
    """The code history that belongs to a checkpoint: embedded in it (shipped model files), or the
    latent_codes.npz of its run folder (<run>/checkpoints/last.pt -> <run>/latent_codes.npz); None
    when there is none."""
    embedded = state.get("latent_codes")
    if isinstance(embedded, dict):
        try:
            epochs, codes, labels, indices = (np.asarray(embedded[key]) for key in
                                              ("epochs", "codes", "labels", "indices"))
        except (KeyError, TypeError, ValueError):
            raise ProjectError(f"{checkpoint} holds a malformed latent_codes entry") from None
        return CodeHistory(epochs.astype(np.int64), codes.astype(np.float32), labels.astype(np.int64),
                           indices.astype(np.int64))
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
