import gzip
import pickle

import numpy as np
import pytest
import torch

from lib import data, paths


@pytest.fixture
def fresh_loader():
    data._load_arrays.cache_clear()
    data.stats.cache_clear()
    yield
    data._load_arrays.cache_clear()
    data.stats.cache_clear()


def test_fashion_mnist_shapes_and_balance():
    x, y = data.load("fashion_mnist", "train")
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.uint8
    assert y.dtype == torch.int64 and torch.bincount(y).tolist() == [6000] * 10
    x_test, y_test = data.load("fashion_mnist", "test")
    assert x_test.shape == (10000, 1, 28, 28) and torch.bincount(y_test).tolist() == [1000] * 10


def test_cifar10_statistics_match_official_means():
    x, y = data.load("cifar10", "test")
    assert x.shape == (10000, 3, 32, 32) and torch.bincount(y).tolist() == [1000] * 10
    mean, std = data.stats("cifar10")
    assert np.allclose(mean, (0.4914, 0.4822, 0.4465), atol=2e-3)
    assert np.allclose(std, (0.2470, 0.2435, 0.2616), atol=5e-3)
    assert "JPEG mirror" in data.source_of("cifar10")


def test_bad_names_give_one_clear_error():
    with pytest.raises(ValueError, match="unknown dataset 'cifar11'.*cifar10"):
        data.load("cifar11", "train")
    with pytest.raises(ValueError, match="unknown split 'val'"):
        data.load("cifar10", "val")


def test_missing_dataset_offline_names_the_files(tmp_path, monkeypatch, fresh_loader):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("BOOK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BOOK_OFFLINE", "1")
    with pytest.raises(data.DatasetMissingError, match="cifar10-jpeg.tar.gz.*DATA_DIR"):
        data.load("cifar10", "train")
    with pytest.raises(data.DatasetMissingError, match="fashion-mnist"):
        data.load("fashion_mnist", "test")
    assert not list((tmp_path / "cache").rglob("*.npy")), "a failed load must not leave files behind"


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_torchvision_idx_layout(tmp_path, monkeypatch, fresh_loader):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 28, 28))
    for split, prefix in (("train", "train"), ("test", "t10k")):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", np.arange(7) % 10)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    x, y = data.load("fashion_mnist", "test")
    assert x.shape == (7, 1, 28, 28) and torch.equal(x[:, 0], torch.from_numpy(images).to(torch.uint8))
    assert y.tolist() == list(range(7))
    assert data.find_source("fashion_mnist").kind == "idx"


def test_official_cifar_pickles(tmp_path, monkeypatch, fresh_loader):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [1, 2, 3, 4]}
        with open(folder / name, "wb") as f:
            pickle.dump(batches[name], f)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    x, y = data.load("cifar10", "train")
    assert x.shape == (20, 3, 32, 32)
    assert torch.equal(x[0], torch.from_numpy(batches["data_batch_1"][b"data"][0].reshape(3, 32, 32)))
    assert "official" in data.source_of("cifar10")


def test_jpeg_folder_is_decoded_in_cifar_class_order(tmp_path, monkeypatch, fresh_loader):
    from PIL import Image
    root = tmp_path / "cifar10-jpeg"
    for split in ("train", "test"):
        for cls, value in (("truck", 250), ("airplane", 10)):
            (root / split / cls).mkdir(parents=True)
            Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(root / split / cls / "0000.jpg", quality=95)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BOOK_CACHE_DIR", str(tmp_path / "cache"))
    x, y = data.load("cifar10", "train")
    assert y.tolist() == [0, 9]  # airplane is class 0, truck class 9, whatever the folder order
    assert abs(int(x[0].float().mean()) - 10) <= 2 and abs(int(x[1].float().mean()) - 250) <= 2
    assert list((tmp_path / "cache" / "datasets").glob("*.npy")), "decoded arrays are cached outside DATA_DIR"


def test_subset_is_balanced_and_deterministic():
    x, y = data.load("fashion_mnist", "train")
    xs, ys = data.subset(x, y, 1000, seed=3)
    assert torch.bincount(ys).tolist() == [100] * 10
    assert torch.equal(data.subset(x, y, 1000, seed=3)[1], ys)
    assert not torch.equal(data.subset(x, y, 1000, seed=4)[0], xs)
    assert data.subset(x, y, None)[0] is x
    with pytest.raises(ValueError):
        data.subset(x, y, 0)


def test_circular_shift_matches_roll_per_sample():
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6)
    assert torch.equal(data.circular_shift(x, 2, -1), torch.roll(x, (2, -1), (-2, -1)))
    per_sample = data.circular_shift(x, torch.tensor([1, 3]), torch.tensor([0, 4]))
    assert torch.equal(per_sample[0], torch.roll(x[0], (1, 0), (-2, -1)))
    assert torch.equal(per_sample[1], torch.roll(x[1], (3, 4), (-2, -1)))
    assert torch.equal(data.circular_shift(x, 5, 6), x)


def _shift_with_zeros(image, dy, dx):
    out = torch.zeros_like(image)
    h, w = image.shape[-2:]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


@pytest.mark.parametrize("mode", ["zeros", "circular"])
def test_random_translate_is_a_translation_of_each_image(mode):
    x = torch.rand(16, 2, 7, 7) + 0.1
    out = data.random_translate(x, 2, mode=mode, generator=torch.Generator().manual_seed(0))
    shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
    make = (lambda im, dy, dx: torch.roll(im, (dy, dx), (-2, -1))) if mode == "circular" else _shift_with_zeros
    used = set()
    for image, result in zip(x, out):
        match = [s for s in shifts if torch.equal(make(image, *s), result)]
        assert len(match) == 1
        used.add(match[0])
    assert len(used) > 3, "offsets must vary across the batch"


def test_flip_and_augment_are_reproducible():
    x = torch.rand(64, 1, 4, 4)
    flipped = data.random_flip(x, torch.Generator().manual_seed(0))
    is_flipped = [torch.equal(a, b.flip(-1)) for a, b in zip(flipped, x)]
    assert all(torch.equal(a, b) or f for a, b, f in zip(flipped, x, is_flipped))
    assert 10 < sum(is_flipped) < 54
    augment = data.Augment(translate=2, flip=True)
    a = augment(x, torch.Generator().manual_seed(5))
    b = augment(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="translate mode"):
        data.random_translate(x, 1, mode="wrap")


def test_normalize_layer():
    layer = data.Normalize((0.5, 0.25), (0.5, 0.25))
    x = torch.tensor([0.5, 0.25]).view(1, 2, 1, 1).expand(1, 2, 3, 3)
    assert torch.allclose(layer(x), torch.zeros(1, 2, 3, 3))
    assert paths.data_dir().is_dir()
