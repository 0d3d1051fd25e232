import gzip

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import ROOT
from kcaps_training import datasets, idx


def _write_idx(path, array, compress=False):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    images = np.random.default_rng(0).integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    _write_idx(tmp_path / "x", images, compress)
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "x"), images)


def test_idx_directory_with_train_and_test(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 4)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz",
                   rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), compress=True)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 3, n, dtype=np.uint8))
    data = datasets.load("idx", tmp_path)
    assert data.x_train.shape == (6, 28, 28, 1) and data.x_test.shape == (4, 28, 28, 1)
    assert data.x_train.dtype == np.float32 and data.x_train.max() <= 1.0


def test_real_digits_split(real_digits):
    assert real_digits.x_train.shape == (8000, 28, 28, 1)
    assert real_digits.x_test.shape == (2000, 28, 28, 1)
    assert real_digits.num_classes == 10
    # class counts of the MNIST test set (shared/data/mnist/README.md)
    counts = np.bincount(np.concatenate([real_digits.y_train, real_digits.y_test]))
    np.testing.assert_array_equal(counts, [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])


def test_embedded_digits_are_mnist_shaped():
    data = datasets.load("digits")
    assert data.input_shape == (28, 28, 1)
    assert len(data.x_train) + len(data.x_test) == 1797
    assert data.x_train[:, :4].max() == 0.0  # 4-pixel border, as MNIST's 20x20 box in 28x28
    assert set(np.unique(data.y_train)) == set(range(10))


@pytest.mark.parametrize("name,shape,classes", [
    ("mnist", (28, 28, 1), 10), ("fashion_mnist", (28, 28, 1), 10), ("cifar10", (32, 32, 3), 10),
    ("smallnorb", (96, 96, 1), 5)])
def test_tfds_loader_with_mock_data(name, shape, classes):
    with tfds.testing.mock_data(num_examples=6):
        data = datasets.load(name)
    assert data.input_shape == shape and data.num_classes == classes
    assert len(data.x_train) == 6 and data.x_train.dtype == np.float32
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'.*digits.*real_digits"):
        datasets.load("svhn")


def test_missing_idx_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="idx directory not found: .*nowhere"):
        datasets.load("idx", tmp_path / "nowhere")


def test_idx_directory_without_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no train-images-idx"):
        datasets.load("idx", tmp_path)


@pytest.mark.parametrize("content,match", [
    (b"\x00\x00\x08\x03" + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 100,
     "declares shape"),
    (b"PK\x03\x04garbage", "bad magic number"),
    (b"\x1f\x8b\x08\x00broken", "corrupt gzip"),
    (b"", "bad magic number"),
])
def test_corrupt_idx_file(tmp_path, content, match):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match) as error:
        idx.read_idx(path)
    assert str(path) in str(error.value)


def test_pipeline_shifts_each_image_independently():
    x = np.zeros((64, 28, 28, 1), np.float32)
    x[:, 14, 14, 0] = 1.0
    batch, _ = next(iter(datasets.pipeline(x, np.zeros(64), 64, max_shift=2)))
    positions = {tuple(np.argwhere(image[..., 0])[0]) for image in batch.numpy()}
    assert len(positions) > 5 and all(12 <= r <= 16 and 12 <= c <= 16 for r, c in positions)


def test_pipeline_is_reproducible_for_a_seed_and_new_every_epoch():
    # Each image is a dot at the centre with the brightness of its label, so the shifts and the
    # pairing of images with labels can both be read off a batch.
    x = np.zeros((96, 16, 16, 1), np.float32)
    x[:, 8, 8, 0] = np.arange(1, 97)
    y = np.arange(96)

    def two_epochs(seed):
        data = datasets.pipeline(x, y, 32, shuffle=True, max_shift=2, seed=seed)
        return [[(b.numpy(), l.numpy()) for b, l in data] for _ in range(2)]

    def dots(epoch):  # (label, row, col) of every example, in the order it came
        return [(int(label), *map(int, np.argwhere(image[..., 0])[0]))
                for images, labels in epoch for image, label in zip(images, labels)
                if image.max() == label + 1]

    first, again, other = two_epochs(3), two_epochs(3), two_epochs(4)
    for epoch in first:
        assert len(dots(epoch)) == 96  # every image still carries its own label
    assert dots(first[0]) == dots(again[0]) and dots(first[1]) == dots(again[1])
    assert dots(first[0]) != dots(first[1])  # reshuffled and shifted anew each epoch
    assert dots(first[0]) != dots(other[0])
    shifts = {(r, c) for _, r, c in dots(first[0])}
    assert len(shifts) > 5 and all(6 <= r <= 10 and 6 <= c <= 10 for r, c in shifts)


def test_default_real_digits_directory_is_shared_beside_the_checkout(monkeypatch):
    from kcaps_training import datasets

    monkeypatch.delenv("KCAPS_MNIST_DIR", raising=False)
    assert datasets.mnist_dir() == ROOT.parent / "shared" / "data" / "mnist"
