"""Checkpoints checked against the slot a program gives them (--ae, --vae, --cvae, a study's runs).

A slot asks for a model kind, conditional or not, and the programs that put several models side by
side ask that they were trained on the same data (dataset and binarization). A file in the wrong
slot is one line naming the flag, instead of a traceback (a conditional VAE decoding without
labels) or a number that quietly means something else (a plain VAE "scored" on the labels it
never saw, models trained on different data compared on one test set).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.checkpoint import load_for_inference
from common.errors import CheckpointError, ProjectError
from common.registry import MODELS


def trained_on(state: dict[str, Any]) -> dict[str, str]:
    """The data a checkpoint's model was trained on: {"dataset", "binarize"} (train.py's defaults
    for a file written before the setting existed)."""
    train = state.get("train") if isinstance(state.get("train"), dict) else {}
    return {"dataset": train.get("dataset", "mnist"), "binarize": train.get("binarize", "none")}


# what the records (metrics.json, study.json) keep of how each model was trained
TRAINED_WITH = ("epochs", "batch_size", "lr", "lr_schedule", "seed", "dataset", "binarize")


def trained_with(state: dict[str, Any]) -> dict[str, Any]:
    """The TRAINED_WITH settings a checkpoint records (those it has)."""
    train = state.get("train") if isinstance(state.get("train"), dict) else {}
    return {key: train[key] for key in TRAINED_WITH if key in train}


def describe_data(data: dict[str, str]) -> str:
    """"mnist", "mnist, binarized": for messages."""
    return data["dataset"] + (f", binarized ({data['binarize']})" if data["binarize"] != "none" else "")


def load_slot(flag: str, path: str | os.PathLike, device: str | torch.device, kind: str,
              conditional: bool | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The model at `path` for the slot `flag`, which needs a model of `kind` and, for a VAE,
    conditional or not as `conditional` says (None: either). Every failure is a one-line
    CheckpointError that starts with the flag."""
    try:
        model, state = load_for_inference(path, device)
    except CheckpointError as err:
        raise CheckpointError(f"{flag}: {err}") from None
    if state["kind"] != kind:
        raise CheckpointError(f"{flag}: {path} holds {MODELS[state['kind']].description}; {flag} needs "
                              f"{MODELS[kind].description}")
    is_conditional = bool(getattr(model.config, "conditional", False))
    if conditional is not None and is_conditional != conditional:
        wanted = "a conditional VAE (trained with --conditional)" if conditional else "a VAE that is not conditional"
        raise CheckpointError(f"{flag}: {path} holds {'a conditional' if is_conditional else 'an unconditional'} "
                              f"VAE; {flag} needs {wanted}")
    return model, state


def same_data(states: dict[str, dict[str, Any]], dataset: str | None = None) -> dict[str, str]:
    """The data (see `trained_on`) that every checkpoint in `states` (flag -> checkpoint) was trained
    on. Models trained on different data, or on another dataset than `dataset` when it is given
    (--dataset), are refused: their numbers would not be comparable."""
    data = {flag: trained_on(state) for flag, state in states.items()}
    first = next(iter(data.values()))
    if any(d != first for d in data.values()):
        each = ", ".join(f"{flag} on {describe_data(d)}" for flag, d in data.items())
        raise CheckpointError(f"the models were trained on different data ({each}); compare models trained on "
                              f"the same dataset and binarization")
    if dataset is not None and dataset != first["dataset"]:
        raise CheckpointError(f"--dataset {dataset}: the models were trained on {first['dataset']}; drop the flag "
                              f"or give models trained on {dataset}")
    return first


def refuse_to_replace(out_dir: Path, names: Iterable[str], overwrite: bool, what: str, flag: str = "--out-dir"
                      ) -> None:
    """One line, unless `overwrite`, when `out_dir` holds any of the files `names` of an earlier `what`;
    `flag` is the one that names another place."""
    earlier = [name for name in names if os.path.lexists(out_dir / name)]
    if earlier and not overwrite:
        raise ProjectError(f"{out_dir} holds an earlier {what} ({', '.join(earlier)}): pass --overwrite to replace "
                           f"it, or use another {flag}")
