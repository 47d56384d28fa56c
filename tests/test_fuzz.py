"""Fuzzing the readers (hypothesis): random and mutated IDX files and checkpoints, with random
bytes, truncations and odd but well-typed fields, thrown at read_idx/load_split and
load_checkpoint/load_model. The property, for every input: a valid result, or a ProjectError
whose message is one line; never another exception; and memory bounded by a small multiple of
what the file holds (IDX: Python's allocations, traced; checkpoints: an address-space limit the
loader must work within). Each test runs in seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import make_images
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.checkpoint import check_resumable, load_checkpoint, load_model
from common.data import IMAGES_MAGIC, LABELS_MAGIC, load_split, read_idx
from common.errors import ProjectError
from common.loop import TrainConfig
from vanila_autoencoder.model import AEConfig, Autoencoder

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def one_line_or_result(call: Callable[[], Any]) -> Any:
    """call(), or the ProjectError it raised, checked to be one short line. Anything else propagates."""
    try:
        return call()
    except ProjectError as err:
        message = str(err)
        assert message and "\n" not in message and len(message) < 600, message
        return err


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# ----------------------------------------------------------------------------------------------
# IDX files


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    return bytes([0, 0, type_code, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape) + \
        array.tobytes()


IMAGES, LABELS = make_images(3, np.random.default_rng(0))
VALID_IDX = {"images": idx_bytes(IMAGES), "labels": idx_bytes(LABELS)}


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """`base` with some of: header fields rewritten, bytes overwritten, a cut, junk appended."""
    data = bytearray(base)
    if draw(st.booleans()):  # type code and number of dimensions
        data[2], data[3] = draw(st.integers(0, 255)), draw(st.integers(0, 255))
    for _ in range(draw(st.integers(0, 3))):  # a dimension, often a huge one
        offset = 4 + 4 * draw(st.integers(0, 3))
        data[offset:offset + 4] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        data += draw(st.binary(max_size=64))
    return bytes(data)


def idx_files(which: str) -> st.SearchStrategy[bytes]:
    """Random bytes, or a mutated valid file."""
    return st.one_of(st.binary(max_size=300), mutated(VALID_IDX[which]))


@contextlib.contextmanager
def traced_peak() -> Iterator[list[int]]:
    tracemalloc.start()
    peak: list[int] = []
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


@FUZZ
@given(data=idx_files("images"), images=st.booleans())
def test_read_idx_is_a_valid_array_or_one_line_and_bounded(scratch, data, images):
    path = scratch / "x"
    path.write_bytes(data)
    with traced_peak() as peak:
        result = one_line_or_result(lambda: read_idx(path, IMAGES_MAGIC if images else LABELS_MAGIC))
    assert isinstance(result, (np.ndarray, ProjectError))
    if isinstance(result, np.ndarray):
        assert result.dtype == np.uint8 and result.shape[1:] == ((28, 28) if images else ())
    assert peak[0] <= 4 * len(data) + (2 << 20)


@FUZZ
@given(images=idx_files("images"), labels=idx_files("labels"))
def test_load_split_is_a_valid_split_or_one_line(scratch, images, labels):
    raw = scratch / "split" / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "t10k-images-idx3-ubyte").write_bytes(images)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(labels)
    with traced_peak() as peak:
        result = one_line_or_result(lambda: load_split(scratch / "split", "mnist", "test", download=False))
    if not isinstance(result, ProjectError):
        n = len(result)
        assert result.images.shape == (n, 1, 28, 28) and result.labels.shape == (n,) and n > 0
        assert 0 <= float(result.images.min()) and float(result.images.max()) <= 1 and int(result.labels.max()) < 10
    assert peak[0] <= 8 * (len(images) + len(labels)) + (2 << 20)  # the split is held as floats: 4 bytes a pixel


# ----------------------------------------------------------------------------------------------
# checkpoints


SMALL = AEConfig(filters=(4, 4, 4, 4))
torch.manual_seed(0)
BASE_STATE = {"format_version": 1, "kind": "ae", "config": dataclasses.asdict(SMALL),
              "model": Autoencoder(SMALL).state_dict(), "optimizer": {"state": {}, "param_groups": []}, "epoch": 1,
              "history": [{"epoch": 1, "train_loss": 2.0, "test_loss": 1.5}], "rng": {"torch": torch.get_rng_state()},
              "train": dataclasses.asdict(TrainConfig())}


@contextlib.contextmanager
def address_space_headroom(extra: int = 1 << 30) -> Iterator[None]:
    """Let this process map at most `extra` more bytes than it has now: a loader that asked for
    more would fail (and that failure must not read as a clean refusal: see `load`)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * resource.getpagesize()
    limit = mapped + extra if hard == resource.RLIM_INFINITY else min(hard, mapped + extra)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def load(path: Path) -> Any:
    """load_model and, as train.py --resume would, check_resumable; every outcome one line."""
    def both():
        model = load_model(path)
        check_resumable(path, load_checkpoint(path))
        return model

    context = address_space_headroom() if Path("/proc/self/statm").exists() else contextlib.nullcontext()
    with context:
        result = one_line_or_result(both)
    if isinstance(result, ProjectError):
        assert "memory" not in str(result).lower(), f"needed more than the headroom: {result}"
    return result


def saved_bytes(state: dict, scratch: Path) -> bytes:
    path = scratch / "base.pt"
    torch.save(state, path)
    return path.read_bytes()


@FUZZ
@given(data=st.data())
def test_damaged_checkpoint_files_load_or_are_one_line(scratch, data):
    base = saved_bytes(BASE_STATE, scratch)
    how = data.draw(st.sampled_from(["random", "zip-random", "truncated", "flipped"]))
    if how == "random":
        damaged = data.draw(st.binary(max_size=2000))
    elif how == "zip-random":
        damaged = b"PK\x03\x04" + data.draw(st.binary(max_size=2000))
    elif how == "truncated":
        damaged = base[: data.draw(st.integers(0, len(base) - 1))]
    else:
        damaged = bytearray(base)
        for _ in range(data.draw(st.integers(1, 8))):
            damaged[data.draw(st.integers(0, len(base) - 1))] = data.draw(st.integers(0, 255))
        damaged = bytes(damaged)
    path = scratch / "damaged.pt"
    path.write_bytes(damaged)
    load(path)


plain_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8)
odd_numbers = st.sampled_from([0, -1, 1, 2, 3, 28, 1024, 1025, 4097, 2**31, 2**63, 10**30, 0.5, -0.0, float("nan"),
                               float("inf"), True])
tensors = st.builds(
    lambda shape, fill: torch.full(shape, fill),
    st.lists(st.integers(0, 6), max_size=3).map(tuple),
    st.sampled_from([0.0, 1.0, float("nan"), float("inf"), -float("inf")]))


@st.composite
def doctored_states(draw: st.DrawFn) -> dict:
    """BASE_STATE with one to three fields replaced by something loadable but odd."""
    state = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE_STATE.items()}
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["config", "train", "model", "top", "history"]))
        value = draw(st.one_of(plain_values, odd_numbers, tensors))
        if where in ("config", "train", "model") and isinstance(state[where], dict):
            key = draw(st.sampled_from(sorted(state[where]) + ["unknown"]))
            state[where] = {**state[where], key: value}
        elif where != "history":
            state[draw(st.sampled_from(["kind", "format_version", "epoch", "config", "model", "train",
                                        "optimizer", "rng"]))] = value
        else:
            state["history"] = draw(st.lists(st.dictionaries(st.text(max_size=6), plain_values | odd_numbers,
                                                             max_size=3), max_size=3))
    return state


@FUZZ
@given(state=doctored_states())
def test_odd_checkpoint_fields_load_or_are_one_line(scratch, state):
    path = scratch / "doctored.pt"
    torch.save(state, path)
    result = load(path)
    if isinstance(result, torch.nn.Module):  # accepted: then it really is a working model
        with torch.inference_mode():
            out = result.decode(torch.zeros(2, result.latent_dim))
        assert out.shape == (2, 1, 28, 28) and bool(torch.isfinite(out).all())
