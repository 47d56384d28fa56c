"""IDX parsing and loading on tiny files written by the tests."""

import numpy as np
import pytest
import torch

from common.data import DataError, iterate_batches, load_dataset, load_split, read_idx
from conftest import write_idx, write_mnist


def test_read_idx_round_trip(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a", images)), images)
    labels = np.array([3, 1, 4], dtype=np.uint8)
    assert np.array_equal(read_idx(write_idx(tmp_path / "b", labels)), labels)


def test_read_idx_big_endian_int32(tmp_path):
    values = np.array([1, -2, 70000], dtype=">i4")
    assert read_idx(write_idx(tmp_path / "c", values, type_code=0x0C)).tolist() == [1, -2, 70000]


def test_read_idx_by_hand_bytes(tmp_path):
    # magic 0x00000801 (uint8, 1 dim), length 3, then the bytes 7 8 9
    path = tmp_path / "labels"
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
    assert read_idx(path).tolist() == [7, 8, 9]


def test_read_idx_gzipped(tmp_path):
    import gzip
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 2, 5, 6])))
    assert read_idx(path).tolist() == [5, 6]


def test_truncated_idx_is_refused(tmp_path):
    path = write_idx(tmp_path / "t", np.zeros((4, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_bad_magic_is_refused(tmp_path):
    path = tmp_path / "m"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataError, match="magic"):
        read_idx(path)


def test_load_split_scales_once_to_unit_interval(tiny_mnist):
    train = load_split(tiny_mnist, "mnist", "train", download=False)
    raw = read_idx(tiny_mnist / "MNIST" / "raw" / "train-images-idx3-ubyte")
    assert train.images.shape == (96, 1, 28, 28) and train.images.dtype == torch.float32
    assert torch.allclose(train.images[:, 0], torch.from_numpy(raw.astype(np.float32)) / 255)
    assert train.labels.dtype == torch.int64 and train.labels.shape == (96,)
    _, test = load_dataset(tiny_mnist, download=False)
    assert len(test) == 40


def test_fashion_mnist_reads_its_own_folder(tmp_path):
    root = write_mnist(tmp_path, n_train=8, n_test=4, folder="FashionMNIST")
    assert len(load_split(root, "fashion-mnist", "test", download=False)) == 4


def test_missing_files_name_the_folder_and_files(tmp_path):
    with pytest.raises(DataError) as err:
        load_split(tmp_path / "nowhere", "mnist", "train", download=False)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message


def test_failed_download_is_one_clear_line(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried mirrors")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataError) as err:
        load_split(tmp_path, "mnist", "train", download=True)
    assert "\n" not in str(err.value) and "download failed" in str(err.value)


def test_wrong_image_size_is_refused(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((3, 32, 32), np.uint8))
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="28x28"):
        load_split(tmp_path, "mnist", "test", download=False)


def test_label_count_must_match(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(2, np.uint8))
    with pytest.raises(DataError, match="labels"):
        load_split(tmp_path, "mnist", "test", download=False)


def test_batches_cover_every_image_once_and_shuffle_is_seeded():
    x = torch.arange(10).float().view(10, 1)
    plain = torch.cat(list(iterate_batches(x, 4)))
    assert torch.equal(plain, x)
    assert [b.shape[0] for b in iterate_batches(x, 4)] == [4, 4, 2]
    a = torch.cat(list(iterate_batches(x, 3, torch.Generator().manual_seed(5))))
    b = torch.cat(list(iterate_batches(x, 3, torch.Generator().manual_seed(5))))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert sorted(a.view(-1).tolist()) == list(range(10))
