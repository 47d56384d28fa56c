"""Shared fixtures: tiny MNIST-format datasets written as real IDX files (no network, no real MNIST needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


def write_idx(path: Path, array: np.ndarray, type_code: int = 0x08) -> Path:
    """IDX by hand: 0, 0, type code, ndim, one big-endian uint32 per dimension, raw data."""
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.tobytes())
    return path


def make_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Blobs of ink at a label-dependent place: enough structure for a model to learn something."""
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    yy, xx = np.mgrid[0:28, 0:28]
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        cy, cx = 8 + (label // 5) * 12, 4 + (label % 5) * 5
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 12.0)
        images[i] = np.clip(255 * blob + rng.integers(0, 20, size=(28, 28)), 0, 255).astype(np.uint8)
    return images, labels


def write_mnist(root: Path, n_train: int = 96, n_test: int = 40, seed: int = 0, folder: str = "MNIST") -> Path:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images, labels = make_images(n, rng)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> Path:
    """A data dir holding MNIST/raw/ with 96 training and 40 test images."""
    return write_mnist(tmp_path / "data")


@pytest.fixture(scope="module")
def one_thread():
    """In-process training on one thread, for modules that also run several subprocesses at once on
    a machine with few cores, where spinning OpenMP threads would slow everything down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def one_line_exit(main, argv: list[str]) -> str:
    """The one line `main(argv)` exits with (status 1, no traceback): "error: ..."."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    message = stopped.value.code
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message, message
    return message
