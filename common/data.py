"""MNIST-format datasets loaded once into memory and batched from tensors.

Files live where ``torchvision.datasets.MNIST`` keeps them (``<data-dir>/MNIST/raw/``;
``FashionMNIST/raw/`` for Fashion-MNIST). If they are missing we ask torchvision to download
them; if that fails the caller gets a ``DataError`` whose message is one line naming the folder
and the files expected. The IDX files are parsed here rather than by torchvision so that a
truncated or malformed file is reported clearly instead of surfacing as a numpy reshape error.
"""

from __future__ import annotations

import gzip
import math
import os
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch

from common.errors import DataError

# dataset name -> (torchvision class name, which is also the folder name under <data-dir>)
DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_SIZE = 28  # MNIST and Fashion-MNIST images are 28 x 28, one channel
BINARIZATIONS = ("none", "dynamic")  # grey levels as they are, or Bernoulli draws (Burda et al. 2016)
TEST_BINARIZATION_SEED = 0  # the one binary test set every evaluation of every run sees
NUM_CLASSES = 10
Tensors = Union[torch.Tensor, tuple[torch.Tensor, ...]]  # one tensor, or several batched together
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class Split:
    """One split held in memory: images float in [0, 1], shape (N, 1, 28, 28); labels int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) into an array, checking header and size.

    Layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
    dimension, then the data in C order.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise DataError(f"cannot read {path}: {reason}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'none'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path} has a truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path} is truncated or padded: header says shape {shape} ({expected} bytes of data), "
            f"file has {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def raw_folder(data_dir: str | os.PathLike, dataset: str) -> Path:
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    return Path(data_dir) / DATASETS[dataset] / "raw"


def _find(folder: Path, name: str) -> Path | None:
    """The file `name` (or `name.gz`) in `folder`; None when absent. Anything there that cannot
    be looked at (a folder without read permission) or is not a file is an error, not "absent"."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        try:
            mode = candidate.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as err:
            raise DataError(f"cannot read {candidate}: {err.strerror} (check the permissions of {folder}/ "
                            f"and the folders above it)") from None
        if not stat.S_ISREG(mode):
            raise DataError(f"{candidate} is not a regular file")
        return candidate
    return None


def _download(data_dir: Path, dataset: str) -> None:
    import torchvision.datasets  # imported lazily: only needed when files are missing

    cls = getattr(torchvision.datasets, DATASETS[dataset])
    try:
        cls(root=str(data_dir), train=True, download=True)
        cls(root=str(data_dir), train=False, download=True)
    except (OSError, RuntimeError, ValueError) as err:
        # torchvision raises RuntimeError("Error downloading ...") or URLError (an OSError)
        first_line = str(err).strip().splitlines()[0].rstrip(": ") if str(err).strip() else type(err).__name__
        raise DataError(f"{first_line} (no network, or the mirrors are unreachable?)") from None


def load_split(
    data_dir: str | os.PathLike, dataset: str = "mnist", split: str = "train", download: bool = True
) -> Split:
    """Load one split into memory, images scaled to [0, 1] once."""
    folder = raw_folder(data_dir, dataset)
    names = SPLIT_FILES[split]
    paths = [_find(folder, name) for name in names]
    if any(p is None for p in paths) and download:
        try:
            _download(Path(data_dir), dataset)
        except DataError as err:
            missing = ", ".join(n for n, p in zip(names, paths) if p is None)
            raise DataError(
                f"{dataset} not found in {folder}/ (expected {missing}) and download failed: {err}"
            ) from None
        paths = [_find(folder, name) for name in names]
    if any(p is None for p in paths):
        missing = ", ".join(n for n, p in zip(names, paths) if p is None)
        raise DataError(
            f"{dataset} not found: expected {missing} in {folder}/ "
            f"(pass --data-dir pointing at the folder that holds {DATASETS[dataset]}/raw/)"
        )
    images, labels = (read_idx(p) for p in paths)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or images.dtype != np.uint8:
        raise DataError(
            f"{paths[0]} holds images of shape {images.shape[1:]} ({images.dtype}); "
            f"expected uint8 {IMAGE_SIZE}x{IMAGE_SIZE}"
        )
    if images.shape[0] == 0:
        raise DataError(f"{paths[0]} holds no images")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{paths[1]} holds {labels.shape} labels for {images.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{paths[1]} has labels outside 0..{NUM_CLASSES - 1}")
    x = torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255.0)  # (N, 1, 28, 28)
    y = torch.from_numpy(labels.astype(np.int64))
    return Split(x, y)


def load_dataset(
    data_dir: str | os.PathLike, dataset: str = "mnist", download: bool = True
) -> tuple[Split, Split]:
    """Both splits, (train, test)."""
    return (
        load_split(data_dir, dataset, "train", download),
        load_split(data_dir, dataset, "test", download),
    )


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator that shuffles epoch `epoch` of a run seeded `seed`: it depends on nothing
    else, so a resumed run sees exactly the batches of an uninterrupted one."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def iterate_batches(data: Tensors, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Tensors]:
    """Yield batches of `data` (a tensor, or a tuple of tensors of equal length such as
    (images, labels), already on the device); shuffled when a generator is given.

    The permutation is drawn on the CPU from `generator` so that the order depends only on the
    seed, not on the device; the last, smaller batch is kept.
    """
    tensors = data if isinstance(data, tuple) else (data,)
    n = tensors[0].shape[0]
    order = None if generator is None else torch.randperm(n, generator=generator).to(tensors[0].device)
    for start in range(0, n, batch_size):
        index = slice(start, start + batch_size) if order is None else order[start: start + batch_size]
        batch = tuple(t[index] for t in tensors)
        yield batch if isinstance(data, tuple) else batch[0]


def with_optional_labels(x: torch.Tensor, labels: torch.Tensor | None, batch_size: int
                         ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """(images, labels) batches in order; labels None throughout when `labels` is None (for the
    inference helpers, whose labels matter only to conditional models)."""
    for batch in iterate_batches(x if labels is None else (x, labels), batch_size):
        yield (batch, None) if labels is None else batch


def binarize_test_set(images: torch.Tensor, seed: int = TEST_BINARIZATION_SEED) -> torch.Tensor:
    """The fixed binary version of the test images: each pixel ~ Bernoulli(intensity), drawn once on
    the CPU from `seed`, so it is the same on every device and for every run."""
    return torch.bernoulli(images.cpu(), generator=torch.Generator().manual_seed(seed))


def evaluation_split(split: Split, binarize: str) -> Split:
    """The split a model trained with `binarize` is evaluated on: as it is, or its fixed binary version."""
    if binarize not in BINARIZATIONS:
        raise DataError(f"unknown binarization {binarize!r}; choose from {', '.join(BINARIZATIONS)}")
    return split if binarize == "none" else Split(binarize_test_set(split.images), split.labels)


def binarization_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """The generator of epoch `epoch`'s dynamic binarization, on the training device; like the
    shuffle, it depends only on (seed, epoch), so a resumed run draws the same binary images."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch + 500_000_000)


def binarized(batches: Iterator[tuple[torch.Tensor, torch.Tensor]], generator: torch.Generator
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Dynamic binarization: each image's pixels drawn as Bernoulli(intensity) afresh every time the
    batch is used, on the batch's device (one kernel per step)."""
    for x, y in batches:
        yield torch.bernoulli(x, generator=generator), y
