"""IDX parsing and loading on tiny files written by the tests."""

import numpy as np
import pytest
import torch
from conftest import write_idx, write_mnist

from common.data import IMAGES_MAGIC, LABELS_MAGIC, DataError, iterate_batches, load_split, read_idx


def test_read_idx_round_trip(tmp_path):
    images = (np.arange(2 * 28 * 28) % 256).astype(np.uint8).reshape(2, 28, 28)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a", images), IMAGES_MAGIC), images)
    labels = np.array([3, 1, 4], dtype=np.uint8)
    assert np.array_equal(read_idx(write_idx(tmp_path / "b", labels), LABELS_MAGIC), labels)


def test_read_idx_by_hand_bytes(tmp_path):
    # magic 0x00000801 (uint8, 1 dim), length 3, then the bytes 7 8 9
    path = tmp_path / "labels"
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
    assert read_idx(path, LABELS_MAGIC).tolist() == [7, 8, 9]


def test_truncated_idx_is_refused(tmp_path):
    path = write_idx(tmp_path / "t", np.zeros((4, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"truncated or padded: header says shape \(4, 28, 28\) \(3136 bytes of data\), "
                                        r"file has 3126"):
        read_idx(path, IMAGES_MAGIC)


def test_bad_magic_is_refused(tmp_path):
    path = tmp_path / "m"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataError, match=r"has IDX magic number 0x89504E47; images need 0x00000803"):
        read_idx(path, IMAGES_MAGIC)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match=r"magic number none \(the file is shorter than 4 bytes\); labels need"):
        read_idx(path, LABELS_MAGIC)


def test_load_split_scales_once_to_unit_interval(tiny_mnist):
    train = load_split(tiny_mnist, "mnist", "train", download=False)
    raw = read_idx(tiny_mnist / "MNIST" / "raw" / "train-images-idx3-ubyte", IMAGES_MAGIC)
    assert train.images.shape == (96, 1, 28, 28) and train.images.dtype == torch.float32
    assert torch.allclose(train.images[:, 0], torch.from_numpy(raw.astype(np.float32)) / 255)
    assert train.labels.dtype == torch.int64 and train.labels.shape == (96,)
    test = load_split(tiny_mnist, "mnist", "test", download=False)
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


# ----------------------------------------------------------------------------------------------
# bounded inputs: headers are checked before data is read, and memory never exceeds what they announce


def idx_header(n: int, *dims: int, type_code: int = 0x08) -> bytes:
    return bytes([0, 0, type_code, 1 + len(dims)]) + b"".join(d.to_bytes(4, "big") for d in (n, *dims))


def peak_bytes(fn):
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_a_huge_sparse_file_is_refused_from_its_header(tmp_path):
    path = tmp_path / "images"
    with path.open("wb") as f:
        f.write(idx_header(2**31, 28, 28))
        f.truncate(16 + 2**31 * 784)  # sparse: takes no disk space
    with pytest.raises(DataError, match="announces 2,147,483,648 images; at most 1,000,000 are read"):
        read_idx(path, IMAGES_MAGIC)
    with path.open("r+b") as f:  # an honest header, a file far too big for it
        f.write(idx_header(1000, 28, 28))

    def read():
        with pytest.raises(DataError, match=r"truncated or padded: header says shape \(1000, 28, 28\)"):
            read_idx(path, IMAGES_MAGIC)

    assert peak_bytes(read) < 1 << 20  # refused from the file's size, nothing read


def test_load_split_checks_the_headers_before_reading_data(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = raw / "t10k-images-idx3-ubyte"
    labels = raw / "t10k-labels-idx1-ubyte"
    for header, label_header, match in [
        (idx_header(10**7, 28, 28), idx_header(10**7), "labels-idx1-ubyte announces 10,000,000 labels; at most "
                                                       "1,000,000 are read"),
        (idx_header(10**7, 28, 28), idx_header(2) + bytes(2), "images-idx3-ubyte announces 10,000,000 images"),
        (idx_header(3, 28, 28), idx_header(2) + bytes(2), "images-idx3-ubyte holds 3 images but the labels file 2 "
                                                          "labels"),
        (idx_header(3, 28, 28), idx_header(3, 1), r"labels-idx1-ubyte has IDX magic number 0x00000802; labels need "
                                                  r"0x00000801 \(uint8, N\)"),
        (idx_header(3, 28, 28), idx_header(3, type_code=0x0C), r"magic number 0x00000C01; labels need 0x00000801"),
        (idx_header(3, 28, 28, type_code=0x0D), idx_header(3) + bytes(3),
         r"images-idx3-ubyte has IDX magic number 0x00000D03; images need 0x00000803 \(uint8, N x 28 x 28\)"),
        (idx_header(3), idx_header(3) + bytes(3), r"images-idx3-ubyte has IDX magic number 0x00000801, as in a "
                                                  r"labels file; images need 0x00000803"),
        (idx_header(3, 28, 28), idx_header(3, 28, 28), r"labels-idx1-ubyte has IDX magic number 0x00000803, as in an "
                                                       r"images file; labels need 0x00000801"),
        (idx_header(3, 28, 28), idx_header(0), "labels-idx1-ubyte holds no labels"),
        (idx_header(3, 32, 32), idx_header(3) + bytes(3), r"holds images of shape \(32, 32\); expected 28x28"),
        (bytes([0, 0, 8, 3, 0]), idx_header(3) + bytes(3), "images-idx3-ubyte has a truncated IDX header"),
    ]:
        images.write_bytes(header)  # headers only: the data would be read after the checks
        labels.write_bytes(label_header)
        with pytest.raises(DataError, match=match):
            load_split(tmp_path, "mnist", "test", download=False)


def test_a_checkpoint_reader_finds_the_data_given_trained_with_or_downloads_to_data(tmp_path):
    from common.data import data_dir_for

    assert data_dir_for("mine", {"data_dir": str(tmp_path)}) == "mine"  # --data-dir wins
    assert data_dir_for(None, {"data_dir": str(tmp_path)}) == str(tmp_path)  # the training folder, still here
    assert data_dir_for(None, {"data_dir": str(tmp_path / "gone")}) == "data"  # trained elsewhere: ./data
    assert data_dir_for(None, {}) == "data" and data_dir_for(None, None) == "data"
