"""MNIST-format datasets: IDX files parsed and checked, splits held in memory, seeded batches, binarization.

Files live where torchvision keeps them (<data-dir>/MNIST/raw/, FashionMNIST/raw/) and torchvision
downloads missing ones. They are parsed here so that a damaged file is one DataError line naming it,
and nothing is read before its header passes: at most MAX_IMAGES 28 x 28 uint8 images, a plain file's
size must match, a gzipped one is inflated in chunks and refused once longer than announced.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import math
import os
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Union

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
MAX_IDX_BYTES = MAX_IMAGES * IMAGE_SIZE * IMAGE_SIZE  # the most data read_idx reads from one file
_MAX_IDX_DIMS = 4
_CHUNK = 1 << 20  # bytes inflated at a time from a gzipped file
Tensors = Union[torch.Tensor, tuple[torch.Tensor, ...]]  # one tensor, or several batched together
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # uint8, 3 dimensions (N, 28, 28); uint8, 1 dimension (N,)


@dataclass(frozen=True)
class Split:
    """One split held in memory: images float in [0, 1], shape (N, 1, 28, 28); labels int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


@contextlib.contextmanager
def _idx_file(path: Path) -> Iterator[IO[bytes]]:
    """`path` opened for reading (inflated if it ends in .gz): a regular file; any read error is a DataError."""
    try:
        with path.open("rb") as raw:
            if not stat.S_ISREG(os.fstat(raw.fileno()).st_mode):
                raise DataError(f"{path} is not a regular file")
            if path.suffix == ".gz":
                with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                    yield f
            else:
                yield raw
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise DataError(f"cannot read {path}: {reason}") from None


def _read_header(f: IO[bytes], path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {magic.hex() or 'none'})")
    ndim = magic[3]
    if not 1 <= ndim <= _MAX_IDX_DIMS:
        raise DataError(f"{path} has a bad IDX header ({ndim} dimensions)")
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataError(f"{path} has a truncated IDX header")
    shape = tuple(int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(ndim))
    return np.dtype(_IDX_DTYPES[magic[2]]), shape


def idx_header(path: str | os.PathLike) -> tuple[np.dtype, tuple[int, ...]]:
    """The dtype and shape an IDX file's header announces, read without reading its data."""
    path = Path(path)
    with _idx_file(path) as f:
        return _read_header(f, path)


def read_idx(path: str | os.PathLike, dtype: np.dtype | type | None = None,
             shape: tuple[int | None, ...] | None = None) -> np.ndarray:
    """An IDX file (optionally gzipped) as an array: two zero bytes, a type code, the number of
    dimensions, one big-endian uint32 per dimension, the data in C order. `dtype` and `shape` (None:
    any size), when given, must match the header; checked, with MAX_IDX_BYTES, before any data is read."""
    path = Path(path)
    with _idx_file(path) as f:
        found_dtype, found_shape = _read_header(f, path)
        if (dtype is not None and found_dtype != np.dtype(dtype)) or (shape is not None and (
                len(shape) != len(found_shape) or any(w is not None and w != n for w, n in zip(shape, found_shape)))):
            want = tuple("any" if n is None else n for n in shape) if shape is not None else "any shape"
            raise DataError(f"{path} holds {found_dtype} data of shape {found_shape}; expected "
                            f"{np.dtype(dtype) if dtype is not None else 'any type'} of shape {want}")
        expected = math.prod(found_shape) * found_dtype.itemsize
        if expected > MAX_IDX_BYTES:
            raise DataError(f"{path} announces shape {found_shape} ({expected:,} bytes of data); at most "
                            f"{MAX_IDX_BYTES:,} bytes are read")
        header = 4 + 4 * len(found_shape)
        if path.suffix != ".gz":  # the size is known: check it before reading anything
            size = os.fstat(f.fileno()).st_size
            if size - header != expected:
                raise DataError(f"{path} is truncated or padded: header says shape {found_shape} ({expected} bytes "
                                f"of data), file has {size - header}")
        data = bytearray()
        while len(data) < expected:  # in chunks: a file that is shorter than announced costs what it holds
            chunk = f.read(min(_CHUNK, expected - len(data)))
            if not chunk:
                break
            data += chunk
        if len(data) < expected or f.read(1):
            got = f"{len(data)}" if len(data) < expected else "more"
            raise DataError(f"{path} is truncated or padded: header says shape {found_shape} ({expected} bytes of "
                            f"data), file has {got}")
    return np.frombuffer(data, dtype=found_dtype).reshape(found_shape)


def _magic(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    """The IDX magic number of a header: its type code in the third byte, its dimensions in the fourth."""
    code = next(code for code, kind in _IDX_DTYPES.items() if np.dtype(kind) == dtype)
    return code << 8 | len(shape)


def _check_magic(path: Path, dtype: np.dtype, shape: tuple[int, ...], expected: int, what: str) -> None:
    """A file whose magic number is not that of its kind is named with both numbers, and as the
    other kind when it is one (a labels file where the images go, or the other way round)."""
    found = _magic(dtype, shape)
    if found != expected:
        other = {IMAGES_MAGIC: ", as in an images file", LABELS_MAGIC: ", as in a labels file"}.get(found, "")
        need = f"uint8, N x {IMAGE_SIZE} x {IMAGE_SIZE}" if expected == IMAGES_MAGIC else "uint8, N"
        raise DataError(f"{path} has IDX magic number 0x{found:08X} ({dtype} data of shape {shape}{other}); "
                        f"{what} need 0x{expected:08X} ({need})")


def raw_folder(data_dir: str | os.PathLike, dataset: str) -> Path:
    """<data_dir>/<MNIST or FashionMNIST>/raw, where the IDX files of `dataset` are."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    return Path(data_dir) / DATASETS[dataset] / "raw"


def _find(folder: Path, name: str) -> Path | None:
    """The file `name` (or `name.gz`) in `folder`, or None; one that cannot be looked at or is not a
    file is an error, not "absent"."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        try:
            mode = candidate.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as err:
            hint = (f" (check the permissions of {folder}/ and the folders above it)"
                    if err.errno in (errno.EACCES, errno.EPERM) else "")
            raise DataError(f"cannot read {candidate}: {os_reason(err)}{hint}") from None
        if not stat.S_ISREG(mode):
            raise DataError(f"{candidate} is not a regular file")
        return candidate
    return None


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
    dtype, shape = idx_header(image_path)  # headers first: nothing big is read before they pass
    _check_magic(image_path, dtype, shape, IMAGES_MAGIC, "images")  # so uint8, (N, H, W)
    if shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{image_path} holds images of shape {shape[1:]} ({dtype}); "
                        f"expected uint8 {IMAGE_SIZE}x{IMAGE_SIZE}")
    n = shape[0]
    if n == 0:
        raise DataError(f"{image_path} holds no images")
    if n > MAX_IMAGES:
        raise DataError(f"{image_path} announces {n:,} images; at most {MAX_IMAGES:,} are read")
    label_dtype, label_shape = idx_header(label_path)
    _check_magic(label_path, label_dtype, label_shape, LABELS_MAGIC, "labels")  # so uint8, (N,)
    if label_shape != (n,):
        raise DataError(f"{label_path} holds {label_shape} labels for {n} images")
    images = read_idx(image_path, np.uint8, (n, IMAGE_SIZE, IMAGE_SIZE))
    labels = read_idx(label_path, np.uint8, (n,))
    if labels.max() >= NUM_CLASSES:
        raise DataError(f"{label_path} has labels outside 0..{NUM_CLASSES - 1}")
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
