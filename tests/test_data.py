import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import time

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


# --- corrupt datasets, content-keyed cache, orphans, fingerprint (all fixtures synthetic, built in tmp_path) ---------

def _jpeg(value):
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _write_archive(path, value=10, members=None, mode="w:gz"):
    """A tiny ImageFolder archive like the mirror: cifar10-jpeg/{train,test}/{airplane,truck}/000N.jpg."""
    members = members or {f"cifar10-jpeg/{split}/{cls}/{i:04d}.jpg": _jpeg(value + 5 * i)
                          for split in ("train", "test") for cls in ("airplane", "truck") for i in range(2)}
    with tarfile.open(path, mode) as archive:
        for member, payload in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))


def _write_fashion(folder):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 4)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


@pytest.fixture
def sandbox(tmp_path, monkeypatch, fresh_loader):
    """An empty DATA_DIR and cache, downloads off."""
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BOOK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BOOK_OFFLINE", "1")
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


def _cut(path, keep):
    path.write_bytes(path.read_bytes()[:keep])


def _truncated_archive(root):
    _write_archive(root / "cifar10-jpeg.tar.gz")
    _cut(root / "cifar10-jpeg.tar.gz", (root / "cifar10-jpeg.tar.gz").stat().st_size // 2)
    return "cifar10", root / "cifar10-jpeg.tar.gz", "ends early"


def _archive_without_trailer(root):
    # tar stops reading at its end block, so only the gzip CRC/length trailer tells this copy is incomplete
    _write_archive(root / "cifar10-jpeg.tar.gz")
    _cut(root / "cifar10-jpeg.tar.gz", (root / "cifar10-jpeg.tar.gz").stat().st_size - 6)
    return "cifar10", root / "cifar10-jpeg.tar.gz", "ends early"


def _empty_archive(root):
    (root / "cifar10-jpeg.tar.gz").write_bytes(b"")
    return "cifar10", root / "cifar10-jpeg.tar.gz", "empty"


def _truncated_idx_gz(root):
    _write_fashion(root / "fashion-mnist")
    target = root / "fashion-mnist" / "train-images-idx3-ubyte.gz"
    _cut(target, target.stat().st_size // 2)
    return "fashion_mnist", target, "cut short"


def _short_idx_payload(root):
    _write_fashion(root / "fashion-mnist")
    target = root / "fashion-mnist" / "train-images-idx3-ubyte.gz"
    target.write_bytes(gzip.compress(gzip.decompress(target.read_bytes())[:-16]))
    return "fashion_mnist", target, "promises 6×28×28 = 4,704 bytes of data but the file holds 4,688"


def _not_gzip(root):
    _write_fashion(root / "fashion-mnist")
    target = root / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(gzip.decompress(target.read_bytes()))  # plain idx bytes under a .gz name
    return "fashion_mnist", target, "not a valid gzip file"


@pytest.mark.parametrize("damage", [_truncated_archive, _archive_without_trailer, _empty_archive, _truncated_idx_gz,
                                    _short_idx_payload, _not_gzip])
def test_corrupt_file_gives_one_clear_error(sandbox, damage):
    name, path, problem = damage(sandbox)
    split = "test" if "t10k" in path.name else "train"
    with pytest.raises(data.DatasetCorruptError) as caught:
        data.load(name, split)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert f"corrupt dataset file {path}:" in message and problem in message
    # the damaged file's own checksum, the known good one (these names are in the table), and the fix
    assert hashlib.sha256(path.read_bytes()).hexdigest() in message
    known_key = path.name if name == "cifar10" else f"fashion-mnist/{path.name}"
    assert data._KNOWN_FILES[known_key][1] in message
    assert f"Fix: copy it again from ../shared/datasets/{known_key}" in message and "downloaded again" in message
    assert not list((sandbox.parent / "cache").rglob("*.npy*")), "a failed decode must not leave files behind"


def test_corrupt_jpeg_member_is_named(sandbox):
    good = _jpeg(10)
    members = {f"cifar10-jpeg/{split}/airplane/0000.jpg": good for split in ("train", "test")}
    members["cifar10-jpeg/train/truck/0007.jpg"] = good[: len(good) // 3]
    _write_archive(sandbox / "cifar10-jpeg.tar.gz", members=members)
    with pytest.raises(data.DatasetCorruptError, match=r"member cifar10-jpeg/train/truck/0007\.jpg of .*"
                                                       r"cifar10-jpeg\.tar\.gz: not a decodable JPEG"):
        data.load("cifar10", "train")


def test_corrupt_jpeg_in_extracted_folder_is_named(sandbox):
    for split in ("train", "test"):
        (sandbox / "cifar10-jpeg" / split / "cat").mkdir(parents=True)
        (sandbox / "cifar10-jpeg" / split / "cat" / "0000.jpg").write_bytes(_jpeg(10))
    (sandbox / "cifar10-jpeg" / "test" / "cat" / "0001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(data.DatasetCorruptError, match=r"test/cat/0001\.jpg: not a decodable JPEG.*extract"):
        data.load("cifar10", "test")


def test_corrupt_cifar_pickle_is_named(sandbox):
    folder = sandbox / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, f)
    _cut(folder / "data_batch_3", 100)
    with pytest.raises(data.DatasetCorruptError, match=r"data_batch_3: not a readable CIFAR batch"):
        data.load("cifar10", "train")


def test_archive_replaced_by_same_size_archive_is_decoded_again(sandbox):
    archive = sandbox / "cifar10-jpeg.tar.gz"
    _write_archive(archive, value=10, mode="w")  # plain tar (read with r:*): sizes depend on 512-byte blocks only
    x_old, _ = data.load("cifar10", "train")
    stat = archive.stat()
    replacement = sandbox.parent / "replacement.tar"
    _write_archive(replacement, value=200, mode="w")
    assert replacement.stat().st_size == stat.st_size and replacement.read_bytes() != archive.read_bytes()
    archive.write_bytes(replacement.read_bytes())  # same path, inode, size ...
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ... and mtime: only the content tells them apart
    data._load_arrays.cache_clear()
    x_new, _ = data.load("cifar10", "train")
    assert x_old.float().mean() < 40 and x_new.float().mean() > 180, "the new archive's images must be served"
    assert len(list((sandbox.parent / "cache" / "datasets").glob("*-train-images.npy"))) == 2


def test_orphaned_temporaries_are_cleaned(sandbox):
    cache = sandbox.parent / "cache" / "datasets"
    cache.mkdir(parents=True)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid, live_pid = int(finished.stdout), os.getppid()
    dead = cache / f"cifar10-0123456789abcdef-train-images.npy.tmp{dead_pid}"
    live = cache / f"cifar10-0123456789abcdef-train-labels.npy.tmp{live_pid}"  # a writer still at work
    stale = cache / f"cifar10-0123456789abcdef-test-images.npy.tmp{live_pid}"  # PID reused long after the kill
    unrelated = cache / "notes.tmp"
    for file in (dead, live, stale, unrelated):
        file.write_bytes(b"x" * 100)
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    _write_archive(sandbox / "cifar10-jpeg.tar.gz")
    data.load("cifar10", "test")
    assert not dead.exists() and not stale.exists()
    assert live.exists() and unrelated.exists()
    assert sorted(p.name for p in cache.glob("*.tmp*")) == sorted([live.name, unrelated.name])


def test_fingerprint_is_a_content_hash(tmp_path, monkeypatch, fresh_loader):
    monkeypatch.setenv("BOOK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BOOK_OFFLINE", "1")
    for root in ("a", "b"):
        _write_fashion(tmp_path / root / "fashion-mnist")
    archive = tmp_path / "a" / "cifar10-jpeg.tar.gz"
    _write_archive(archive)

    def fingerprint(root, name):
        monkeypatch.setenv("DATA_DIR", str(tmp_path / root))
        return data.fingerprint(name)

    first = fingerprint("a", "fashion_mnist")
    assert first.startswith("idx:sha256:") and len(first) == len("idx:sha256:") + 16
    assert fingerprint("b", "fashion_mnist") == first, "identical files elsewhere: same fingerprint"
    archive_sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert fingerprint("a", "cifar10") == f"jpeg-mirror-archive:sha256:{archive_sha256[:16]}"
    labels = tmp_path / "b" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[-1] ^= 1
    with gzip.open(labels, "wb") as f:  # rewritten in place, same size: the memo must notice
        f.write(bytes(raw))
    assert fingerprint("b", "fashion_mnist") != first, "one byte changed: another fingerprint"
    assert fingerprint("a", "fashion_mnist") == first


def test_fingerprint_of_pickles(sandbox):
    folder = sandbox / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, f)
    before = data.fingerprint("cifar10")
    assert before.startswith("pickles:sha256:") and data.fingerprint("cifar10") == before
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.ones((2, 3072), np.uint8), b"labels": [0, 1]}, f)
    assert data.fingerprint("cifar10") != before


def test_fingerprint_of_the_shared_archive_is_its_sha256():
    source = data.find_source("cifar10")
    size, sha256 = data._KNOWN_FILES["cifar10-jpeg.tar.gz"]
    if source.kind != "jpeg-mirror-archive" or source.path.stat().st_size != size:
        pytest.skip("DATA_DIR does not hold the shared JPEG mirror")
    assert data.fingerprint("cifar10") == f"jpeg-mirror-archive:sha256:{sha256[:16]}"
    assert data.fingerprint("fashion_mnist").startswith("idx:sha256:")


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
