"""MNIST-format datasets: IDX files read and checked, splits held in memory, seeded batches, binarization.

Files live where torchvision keeps them (<data-dir>/MNIST/raw/, FashionMNIST/raw/) and torchvision
downloads and unpacks missing ones. They are read here so that a damaged file is one DataError line
naming it, and nothing is read before its header and its size pass: uint8 data, at most MAX_IMAGES
images of 28 x 28, the file exactly as long as the header says.
"""

from __future__ import annotations

import errno
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch

from common.errors import DataError
from common.files import os_reason, removed_if_left_empty

# dataset name -> torchvision class name, also the folder under <data-dir>
DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
SPLIT_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IMAGE_SIZE = 28  # MNIST and Fashion-MNIST images are 28 x 28, one channel
BINARIZATIONS = ("none", "dynamic")  # grey levels as they are, or Bernoulli draws (Burda et al. 2016)
TEST_BINARIZATION_SEED = 0  # the one binary test set every evaluation of every run sees
NUM_CLASSES = 10
MAX_IMAGES = 1_000_000  # per split (MNIST's training split has 60,000): caps what a header can ask for
Tensors = Union[torch.Tensor, tuple[torch.Tensor, ...]]  # one tensor, or several batched together
# IDX magic numbers: two zero bytes, the type code (0x08: uint8), the number of dimensions
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # images (N, 28, 28); labels (N,)
# magic number -> (what the file holds, its article, its layout)
_KINDS = {IMAGES_MAGIC: ("images", "an", f"uint8, N x {IMAGE_SIZE} x {IMAGE_SIZE}"),
          LABELS_MAGIC: ("labels", "a", "uint8, N")}


@dataclass(frozen=True)
class Split:
    """One split held in memory: images float in [0, 1], shape (N, 1, 28, 28); labels int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


def read_idx(path: Path, magic: int, count: int | None = None) -> np.ndarray:
    """The uint8 array in an MNIST IDX file: the magic number `magic` (images or labels), one big-endian
    uint32 per dimension, the data in C order. Images must be 28 x 28 and, with `count`, there must be
    `count` of them. The header and the file's size are checked before any data is read."""
    kind, _, layout = _KINDS[magic]
    header_size = 4 + 4 * (magic & 0xFF)  # the magic number, then one uint32 per dimension
    try:
        with path.open("rb") as f:
            header = f.read(header_size)
            found = int.from_bytes(header[:4], "big") if len(header) >= 4 else None
            if found != magic:
                other = f", as in {_KINDS[found][1]} {_KINDS[found][0]} file" if found in _KINDS else ""
                shown = "none (the file is shorter than 4 bytes)" if found is None else f"0x{found:08X}"
                raise DataError(f"{path} has IDX magic number {shown}{other}; {kind} need 0x{magic:08X} ({layout})")
            if len(header) < header_size:
                raise DataError(f"{path} has a truncated IDX header")
            shape = tuple(int.from_bytes(header[i: i + 4], "big") for i in range(4, len(header), 4))
            if shape[1:] != (IMAGE_SIZE, IMAGE_SIZE)[: len(shape) - 1]:
                raise DataError(f"{path} holds images of shape {shape[1:]}; expected {IMAGE_SIZE}x{IMAGE_SIZE}")
            if shape[0] == 0:
                raise DataError(f"{path} holds no {kind}")
            if shape[0] > MAX_IMAGES:
                raise DataError(f"{path} announces {shape[0]:,} {kind}; at most {MAX_IMAGES:,} are read")
            if count is not None and shape[0] != count:
                raise DataError(f"{path} holds {shape[0]:,} images but the labels file {count:,} labels")
            expected, size = math.prod(shape), os.fstat(f.fileno()).st_size - len(header)
            data = bytearray(expected if size == expected else 0)  # writable, for torch.from_numpy
            if size != expected or f.readinto(data) != expected:
                raise DataError(f"{path} is truncated or padded: header says shape {shape} ({expected} bytes of "
                                f"data), file has {size}")
    except OSError as err:
        raise DataError(f"cannot read {path}: {os_reason(err)}") from None
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def raw_folder(data_dir: str | os.PathLike, dataset: str) -> Path:
    """<data_dir>/<MNIST or FashionMNIST>/raw, where the IDX files of `dataset` are."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    return Path(data_dir) / DATASETS[dataset] / "raw"


def _find(folder: Path, name: str) -> Path | None:
    """The file `name` in `folder`, or None; one that cannot be looked at or is not a file is an
    error, not "absent"."""
    path = folder / name
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        hint = (f" (check the permissions of {folder}/ and the folders above it)"
                if err.errno in (errno.EACCES, errno.EPERM) else "")
        raise DataError(f"cannot read {path}: {os_reason(err)}{hint}") from None
    if not stat.S_ISREG(mode):
        raise DataError(f"{path} is not a regular file")
    return path


def _download(data_dir: Path, dataset: str) -> None:
    import torchvision.datasets  # only needed when files are missing

    cls = getattr(torchvision.datasets, DATASETS[dataset])
    try:
        cls(root=str(data_dir), train=True, download=True)
        cls(root=str(data_dir), train=False, download=True)
    except (OSError, RuntimeError, ValueError) as err:
        # torchvision raises RuntimeError("Error downloading ...") or URLError (an OSError)
        first_line = str(err).strip().splitlines()[0].rstrip(": ") if str(err).strip() else type(err).__name__
        raise DataError(f"{first_line} (no network, or the mirrors are unreachable?)") from None


def load_split(data_dir: str | os.PathLike, dataset: str = "mnist", split: str = "train", download: bool = True
               ) -> Split:
    """Load one split into memory, images scaled to [0, 1] once."""
    folder = raw_folder(data_dir, dataset)
    names = SPLIT_FILES[split]
    paths = [_find(folder, name) for name in names]
    if any(p is None for p in paths) and download:
        try:
            with removed_if_left_empty(folder):  # a failed download leaves no empty MNIST/raw/ behind
                _download(Path(data_dir), dataset)
        except DataError as err:
            missing = ", ".join(n for n, p in zip(names, paths) if p is None)
            raise DataError(f"{dataset} not found in {folder}/ (expected {missing}) and download failed: {err}"
                            ) from None
        paths = [_find(folder, name) for name in names]
    if any(p is None for p in paths):
        missing = ", ".join(n for n, p in zip(names, paths) if p is None)
        raise DataError(f"{dataset} not found: expected {missing} in {folder}/ "
                        f"(pass --data-dir pointing at the folder that holds {DATASETS[dataset]}/raw/)")
    image_path, label_path = paths
    labels = read_idx(label_path, LABELS_MAGIC)  # first: at most MAX_IMAGES bytes, and it gives N
    if labels.max() >= NUM_CLASSES:
        raise DataError(f"{label_path} has labels outside 0..{NUM_CLASSES - 1}")
    images = read_idx(image_path, IMAGES_MAGIC, count=len(labels))
    return Split(torch.from_numpy(images).unsqueeze(1).float().div_(255.0),  # (N, 1, 28, 28)
                 torch.from_numpy(labels.astype(np.int64)))


def data_dir_for(given: str | None, saved: dict) -> str:
    """Where a program reading a checkpoint finds the data: --data-dir if given, else the training
    folder if it exists here, else ./data (where it is downloaded)."""
    trained_with = saved.get("data_dir") if isinstance(saved, dict) else None
    if given:
        return given
    return trained_with if isinstance(trained_with, str) and Path(trained_with).is_dir() else "data"


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator that shuffles epoch `epoch` of a run seeded `seed`, and depends on nothing else."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def iterate_batches(data: Tensors, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Tensors]:
    """Batches of `data` (a tensor, or a tuple of equally long ones such as (images, labels)), the
    last smaller one kept; shuffled by a permutation drawn on the CPU from `generator`, if given, so
    the order depends on the seed alone. Not a DataLoader: MNIST fits in memory (188 MB as float32),
    so one gather per step on the device replaces per-sample collation and a copy per batch."""
    tensors = data if isinstance(data, tuple) else (data,)
    n = tensors[0].shape[0]
    order = None if generator is None else torch.randperm(n, generator=generator).to(tensors[0].device)
    for start in range(0, n, batch_size):
        index = slice(start, start + batch_size) if order is None else order[start: start + batch_size]
        batch = tuple(t[index] for t in tensors)
        yield batch if isinstance(data, tuple) else batch[0]


def with_optional_labels(x: torch.Tensor, labels: torch.Tensor | None, batch_size: int
                         ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """(images, labels) batches in order; labels None throughout when `labels` is None."""
    for batch in iterate_batches(x if labels is None else (x, labels), batch_size):
        yield (batch, None) if labels is None else batch


def binarize_test_set(images: torch.Tensor, seed: int = TEST_BINARIZATION_SEED) -> torch.Tensor:
    """The fixed binary test images: each pixel ~ Bernoulli(intensity), drawn on the CPU from `seed`,
    so the same on every device and for every run."""
    return torch.bernoulli(images.cpu(), generator=torch.Generator().manual_seed(seed))


def evaluation_split(split: Split, binarize: str) -> Split:
    """The split a model trained with `binarize` is evaluated on: as it is, or its fixed binary version."""
    if binarize not in BINARIZATIONS:
        raise DataError(f"unknown binarization {binarize!r}; choose from {', '.join(BINARIZATIONS)}")
    return split if binarize == "none" else Split(binarize_test_set(split.images), split.labels)


def binarization_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """The generator of epoch `epoch`'s dynamic binarization, on the device; like the shuffle's, (seed, epoch) alone."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch + 500_000_000)


def binarized(batches: Iterator[tuple[torch.Tensor, torch.Tensor]], generator: torch.Generator
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Dynamic binarization: pixels drawn as Bernoulli(intensity) afresh each time, on the batch's device."""
    for x, y in batches:
        yield torch.bernoulli(x, generator=generator), y
