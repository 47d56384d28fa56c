"""Checkpoints: plain types and tensors only, written atomically, read with weights_only=True.

A checkpoint is a dict:
    format_version  FORMAT_VERSION when written; a newer one is refused
    kind         "ae", "vae", ...: which model class to rebuild (see common/registry.py)
    config       dataclasses.asdict of the model config (rebuilds the model from the file alone)
    model        the unwrapped model's state dict
    optimizer    the optimizer's state dict
    epoch        number of completed epochs
    history      one dict of floats per completed epoch
    rng          RNG states needed to resume bit-for-bit
    train        the training settings (epochs, lr, batch size, seed, data, ...)
    argv         the command line that produced it
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.codes import for_inference
from common.errors import CheckpointError
from common.files import atomic_write
from common.registry import MODELS, model_classes

FORMAT_VERSION = 1  # bump when the layout changes in a way older code cannot read
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive
PICKLE_MAGIC = b"\x80"  # first byte of a pickle (protocol >= 2): torch.save's legacy format
# what a checkpoint needs besides kind/config/model for train.py --resume
TRAINING_KEYS = ("optimizer", "epoch", "history", "rng")


def unwrap(model: nn.Module) -> nn.Module:
    """The module whose state dict we save: torch.compile wraps it as `_orig_mod`."""
    return getattr(model, "_orig_mod", model)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write `state` (plain types and tensors) atomically: a crash leaves the old file or the new one."""
    return atomic_write(path, lambda f: torch.save({"format_version": FORMAT_VERSION, **state}, f))


def _load_failure(path: Path, head: bytes, err: Exception) -> str:
    """Why torch.load(weights_only=True) refused `path`, in words (one line)."""
    if not head.startswith((ZIP_MAGIC, PICKLE_MAGIC)):
        return f"{path} is not a checkpoint (not a file written by torch.save)"
    if head.startswith(ZIP_MAGIC) and not zipfile.is_zipfile(path):
        return f"{path} is truncated or corrupt (an incomplete torch.save archive)"
    if isinstance(err, pickle.UnpicklingError) and "weights only" in str(err).lower():
        return (f"{path} holds objects other than tensors and plain Python values; refused, since loading it "
                f"could run code (weights_only=True)")
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{path} is not a readable checkpoint (truncated or corrupt?): {reason[:200]}"


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """What torch.save wrote to `path`, read without ever executing code from the file
    (weights_only=True); every way of failing is a CheckpointError with a one-line reason."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with path.open("rb") as f:
            head = f.read(len(ZIP_MAGIC))
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror}") from None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, OSError, ValueError,
            KeyError, AttributeError, TypeError, IndexError) as err:
        raise CheckpointError(_load_failure(path, head, err)) from None


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", kind: str | None = None
) -> dict[str, Any]:
    """Read and validate a model checkpoint of this project (see read_checkpoint)."""
    state = read_checkpoint(path, map_location)
    required = ("kind", "config", "model")
    if not isinstance(state, dict) or any(key not in state for key in required):
        raise CheckpointError(f"{path} is not a checkpoint of this project (missing {', '.join(required)})")
    if not isinstance(state["kind"], str) or state["kind"] not in MODELS:
        raise CheckpointError(f"{path} holds an unknown model kind {state['kind']!r}")
    version = state.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {version!r}, newer than this code reads ({FORMAT_VERSION}); "
                              f"update the project")
    if not isinstance(state["config"], dict) or not isinstance(state["model"], dict):
        raise CheckpointError(f"{path} is malformed: its config and model entries must be dicts")
    if kind is not None and state["kind"] != kind:
        saved_folder = MODELS[state["kind"]].module.split(".")[0]
        raise CheckpointError(
            f"{path} holds {MODELS[state['kind']].description}, not {MODELS[kind].description}: "
            f"use the scripts in {saved_folder}/"
        )
    return state


def check_resumable(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """A checkpoint that train.py --resume can continue: it has the training state too."""
    missing = [key for key in TRAINING_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path} holds model weights only (no {', '.join(missing)}), so it cannot be "
                              f"resumed; start a new run with --overwrite")
    if not isinstance(state["epoch"], int) or state["epoch"] < 0 or not isinstance(state["history"], list):
        raise CheckpointError(f"{path} is malformed: bad epoch or history entry")


def build_model(kind: str, config: dict[str, Any]) -> nn.Module:
    model_cls, config_cls = model_classes(kind)
    try:
        return model_cls(config_cls(**config))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint config does not build a {kind} model: {err}") from None


def model_from_state(state: dict[str, Any], map_location: str | torch.device = "cpu") -> nn.Module:
    model = build_model(state["kind"], state["config"])
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError, KeyError) as err:
        raise CheckpointError(f"checkpoint weights do not fit its config: {str(err).splitlines()[0]}") from None
    return model.to(map_location).eval()


def load_model(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", kind: str | None = None
) -> nn.Module:
    """Rebuild the model stored at `path` (any registered kind), with its weights, in eval mode.

    >>> model = load_model("variational_autoencoder/checkpoints/last.pt")
    >>> mu, logvar = model.encode(x)  # x: (N, 1, 28, 28) in [0, 1]
    """
    state = load_checkpoint(path, map_location=map_location, kind=kind)
    return model_from_state(state, map_location)


def load_for_inference(path: str | os.PathLike, device: str | torch.device = "cpu", kind: str | None = None
                       ) -> tuple[nn.Module, dict[str, Any]]:
    """The model at `path` ready for figures and metrics (eval mode, fast memory format on
    `device`), and the rest of its checkpoint (history, training settings)."""
    state = load_checkpoint(path, kind=kind)
    return for_inference(model_from_state(state, device)), state
