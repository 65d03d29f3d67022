"""One way to load data for every chapter, and batched on-device helpers (no per-sample Python loop anywhere).

``load(name, split)`` returns ``(images, labels)``: uint8 images N×C×H×W and int64 labels, as CPU tensors. Sources are
tried in order: the ``DATA_DIR`` folder (official torchvision layouts, the CIFAR-10 JPEG mirror archive, idx files),
then a torchvision download unless ``BOOK_OFFLINE=1``. Decoded arrays are cached in ``lib.paths.cache_dir()`` so that
``DATA_DIR`` may be read-only. ``source_of(name)`` says which source was used and ``fingerprint(name)`` identifies
the exact bytes (a content hash); both go into every result's provenance. A damaged file raises one
``DatasetCorruptError`` naming the file, the damage, the known checksum and the fix.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
import re
import socket
import sys
import tarfile
import time
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from . import paths

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
MNIST_CLASSES = tuple(str(d) for d in range(10))
DATASETS = ("cifar10", "cifar100", "fashion_mnist", "mnist")
SPLITS = ("train", "test")
_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


class DatasetMissingError(FileNotFoundError):
    """No local copy of a dataset and no way to download it."""


class DatasetCorruptError(ValueError):
    """A dataset file exists but cannot be decoded (truncated, damaged, or not what its name says)."""


# The files in ../shared/datasets (also listed in data/README.md): (size in bytes, sha256), keyed by the path relative
# to that folder. Only used to tell a damaged copy from a good one in error messages, never to refuse a file: another
# valid copy (e.g. Zalando's own .gz files, which torchvision downloads) has other bytes.
_KNOWN_FILES = {
    "cifar10-jpeg.tar.gz": (19_641_893, "00a78acaf3d7c27307ba029958650e48cba76f3704c03e4cd1dd6bf77963ed47"),
    "fashion-mnist/train-images-idx3-ubyte.gz":
        (26_421_856, "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"),
    "fashion-mnist/train-labels-idx1-ubyte.gz":
        (29_491, "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),
    "fashion-mnist/t10k-images-idx3-ubyte.gz":
        (4_422_079, "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"),
    "fashion-mnist/t10k-labels-idx1-ubyte.gz":
        (5_125, "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"),
}
_SHA256_MEMO: dict[tuple, str] = {}


def _file_sha256(path: Path) -> str:
    """sha256 of a file, memoised per (path, size, mtime, ctime, inode): a replaced or rewritten file is hashed again
    (ctime changes on any write, even one that restores the mtime), an unchanged one costs one stat (hashing the
    20 MB archive takes ~50 ms, too much to repeat on every load)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key not in _SHA256_MEMO:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _SHA256_MEMO[key] = digest.hexdigest()
    return _SHA256_MEMO[key]


def _known_file(path: Path) -> tuple[str, int, str] | None:
    """(name in ../shared/datasets, size, sha256) of the known good copy of ``path``, matched by its name."""
    for key in (f"{path.parent.name}/{path.name}", path.name):
        if key in _KNOWN_FILES:
            return (key, *_KNOWN_FILES[key])
    return None


def _corrupt(path: Path, problem: str, member: str | None = None, fix: str | None = None) -> DatasetCorruptError:
    """The one error for a damaged file: which file (and archive member), what is wrong, its size and sha256 next to
    the known good copy's, and how to fix it."""
    where = f"member {member} of {path}" if member else str(path)
    try:
        measured = f"This file has {path.stat().st_size:,} bytes, sha256 {_file_sha256(path)}"
    except OSError:
        measured = "This file cannot be read"
    known = _known_file(path)
    if known:
        key, size, sha256 = known
        measured += f"; the known good file has {size:,} bytes, sha256 {sha256}"
        copy = f"copy it again from ../shared/datasets/{key} (checksums in data/README.md)"
    else:
        measured += " (no known checksum for this file name)"
        copy = "copy it again from where it came from"
    fix = fix or (f"{copy}, or delete it so that the official files are downloaded again (needs network and "
                  f"BOOK_OFFLINE unset)")
    return DatasetCorruptError(f"corrupt dataset file {where}: {problem}. {measured}. Fix: {fix}.")


@dataclass(frozen=True)
class Source:
    kind: str   # "pickles", "jpeg-mirror-archive", "jpeg-mirror-folder", "idx", "download"
    path: Path
    label: str  # what provenance shows


def classes(name: str) -> tuple[str, ...]:
    _check_name(name)
    return {"cifar10": CIFAR10_CLASSES, "fashion_mnist": FASHION_MNIST_CLASSES, "mnist": MNIST_CLASSES,
            "cifar100": tuple(str(i) for i in range(100))}[name]


def _check_name(name: str, split: str | None = None) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")


def _idx_pair(folder: Path, split: str) -> tuple[Path, Path] | None:
    found = []
    for stem in _IDX_FILES[split]:
        candidates = [folder / stem, folder / f"{stem}.gz"]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found[0], found[1]


def find_source(name: str) -> Source:
    """The first local source of ``name`` in ``DATA_DIR`` (or a previous download), without decoding anything."""
    _check_name(name)
    root = paths.data_dir()
    downloads = paths.cache_dir() / "downloads"
    if name == "cifar10":
        for base in (root, downloads):
            if (base / "cifar-10-batches-py" / "data_batch_1").is_file():
                return Source("pickles", base / "cifar-10-batches-py", "CIFAR-10 official (python pickles)")
        if (root / "cifar10-jpeg.tar.gz").is_file():
            return Source("jpeg-mirror-archive", root / "cifar10-jpeg.tar.gz",
                          "CIFAR-10 JPEG mirror (quality ~75; high frequencies slightly attenuated)")
        if (root / "cifar10-jpeg" / "train").is_dir():
            return Source("jpeg-mirror-folder", root / "cifar10-jpeg",
                          "CIFAR-10 JPEG mirror (quality ~75; high frequencies slightly attenuated)")
    elif name == "cifar100":
        for base in (root, downloads):
            if (base / "cifar-100-python" / "train").is_file():
                return Source("pickles", base / "cifar-100-python", "CIFAR-100 official (python pickles)")
    else:
        tv_name = "FashionMNIST" if name == "fashion_mnist" else "MNIST"
        plain = "fashion-mnist" if name == "fashion_mnist" else "mnist"
        label = "Fashion-MNIST official (idx)" if name == "fashion_mnist" else "MNIST official (idx)"
        for folder in (root / tv_name / "raw", root / plain, downloads / tv_name / "raw"):
            if _idx_pair(folder, "train") and _idx_pair(folder, "test"):
                return Source("idx", folder, label)
    raise DatasetMissingError(_missing_message(name))


def _missing_message(name: str) -> str:
    root = paths.data_dir()
    where = {
        "cifar10": f"{root}/cifar10-jpeg.tar.gz (the JPEG mirror, e.g. ../shared/datasets/cifar10-jpeg.tar.gz) or "
                   f"{root}/cifar-10-batches-py/ (official python version)",
        "cifar100": f"{root}/cifar-100-python/ (official python version)",
        "fashion_mnist": f"{root}/fashion-mnist/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte.gz "
                         f"(e.g. ../shared/datasets/fashion-mnist/)",
        "mnist": f"{root}/mnist/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte.gz",
    }[name]
    why = "downloads are disabled (BOOK_OFFLINE=1)" if paths.offline() else "the download failed (no network?)"
    return (f"dataset {name!r} is not in DATA_DIR={root} and {why}. Place {where}, or set DATA_DIR to the folder "
            f"that holds them.")


def _download(name: str) -> Source:
    import torchvision.datasets as tvd

    if paths.offline():
        raise DatasetMissingError(_missing_message(name))
    target = paths.cache_dir() / "downloads"
    cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "fashion_mnist": tvd.FashionMNIST,
           "mnist": tvd.MNIST}[name]
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        for train in (True, False):
            cls(str(target), train=train, download=True)
    except Exception as error:  # any network failure becomes the one clear message
        raise DatasetMissingError(_missing_message(name) + f" (download error: {error})") from None
    finally:
        socket.setdefaulttimeout(previous)
    return find_source(name)


def _resolve(name: str) -> Source:
    try:
        return find_source(name)
    except DatasetMissingError:
        return _download(name)


def source_of(name: str) -> str:
    """Human label of the source ``load(name, ...)`` uses (shown in provenance)."""
    return _resolve(name).label


# --- decoding -------------------------------------------------------------------------------------------------------

def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except gzip.BadGzipFile as error:  # also a failed CRC check
        raise _corrupt(path, f"not a valid gzip file ({error})") from None
    except (EOFError, zlib.error) as error:
        raise _corrupt(path, f"the gzip stream is cut short or damaged ({error})") from None
    # the header is 00 00 08 <ndim> then ndim big-endian sizes; check it before trusting it for a reshape
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or not 1 <= raw[3] <= 4:
        raise _corrupt(path, f"no idx header (expected bytes 00 00 08 0N, found {raw[:4].hex(' ') or 'nothing'})")
    ndim = raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise _corrupt(path, "the idx header is cut short")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(shape)  # Python ints: a garbage header cannot overflow
    if len(raw) - offset != expected:
        raise _corrupt(path, f"the idx header promises {'×'.join(map(str, shape))} = {expected:,} bytes of data but "
                             f"the file holds {len(raw) - offset:,}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape).copy()


def _decode_idx(source: Source, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = _idx_pair(source.path, split)
    images, labels = _read_idx(images_path), _read_idx(labels_path)
    if images.ndim != 3:
        raise _corrupt(images_path, f"an idx array of {images.ndim} dimensions where images need 3 (N×H×W)")
    if labels.shape != (len(images),):
        raise _corrupt(labels_path, f"{labels.size:,} labels (shape {labels.shape}) for the {len(images):,} images "
                                    f"of {images_path.name}")
    return images[:, None, :, :], labels.astype(np.int64)


def _pickle_files(source: Source, split: str) -> list[str]:
    if source.path.name == "cifar-10-batches-py":
        return [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    return [split]


def _decode_pickles(source: Source, split: str) -> tuple[np.ndarray, np.ndarray]:
    key = b"labels" if source.path.name == "cifar-10-batches-py" else b"fine_labels"
    images, labels = [], []
    for file in _pickle_files(source, split):
        path = source.path / file
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="bytes")
            images.append(np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(entry[key], dtype=np.int64).reshape(-1))
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
            # whatever a damaged pickle throws, the reader gets the file name and the fix
            raise _corrupt(path, f"not a readable CIFAR batch ({type(error).__name__}: {error})") from None
        if len(images[-1]) != len(labels[-1]):
            raise _corrupt(path, f"{len(labels[-1]):,} labels for {len(images[-1]):,} images")
    return np.concatenate(images), np.concatenate(labels)


def _decode_jpeg_mirror(source: Source) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Decode both splits of the ImageFolder JPEG tree (archive or folder) in one pass, in CIFAR class order."""
    from PIL import Image

    found: dict[str, list[tuple[int, str, np.ndarray]]] = {"train": [], "test": []}
    # a bad image in the extracted folder is fixed by extracting again, not by fetching that one file
    folder_fix = ("extract the folder again from ../shared/datasets/cifar10-jpeg.tar.gz, or delete it so that another "
                  "source (the archive, the official files) is used")

    def add(member_path: str, payload: bytes, where: Path, member: str | None) -> None:
        parts = member_path.strip("./").split("/")
        if len(parts) < 3 or parts[-3] not in found or not parts[-1].lower().endswith(".jpg"):
            return
        fix = None if member else folder_fix
        split, cls = parts[-3], parts[-2]
        if cls not in CIFAR10_CLASSES:
            raise _corrupt(where, f"unexpected class folder {cls!r} (not a CIFAR-10 class)", member, fix)
        try:
            with Image.open(io.BytesIO(payload)) as image:
                pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as error:  # PIL: UnidentifiedImageError, "image file is truncated"
            raise _corrupt(where, f"not a decodable JPEG ({error})", member, fix) from None
        if pixels.shape != (32, 32, 3):
            raise _corrupt(where, f"a {pixels.shape[1]}×{pixels.shape[0]} image where CIFAR-10 images are 32×32",
                           member, fix)
        found[split].append((CIFAR10_CLASSES.index(cls), parts[-1], pixels))

    from tqdm import tqdm

    # ~20 s for the 60,000 images, once: later loads read the cached arrays
    progress = tqdm(desc=f"decoding {source.path.name}", unit=" images", file=sys.stderr, mininterval=2,
                    leave=False)
    try:
        if source.kind == "jpeg-mirror-archive":
            _read_archive(source.path, add, progress)
        else:
            for file in sorted(source.path.glob("*/*/*.jpg")):
                add(str(file.relative_to(source.path)), file.read_bytes(), file, None)
                progress.update()
    finally:
        progress.close()
    out = {}
    for split, items in found.items():
        if not items:
            raise DatasetMissingError(f"no {split} images found in {source.path}")
        items.sort(key=lambda item: (item[0], item[1]))  # deterministic order: class, then file name
        out[split] = (np.stack([item[2] for item in items]).transpose(0, 3, 1, 2).copy(),
                      np.array([item[0] for item in items], dtype=np.int64))
    return out


def _read_archive(path: Path, add, progress) -> None:
    """Feed every member of the tar archive to ``add``; any damage to the archive itself becomes one clear error."""
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                if member.isfile():
                    add(member.name, archive.extractfile(member).read(), path, member.name)
                    progress.update()
            # tar stops at its end-of-archive block without reading the gzip trailer: read to the end so that a
            # file cut just before its end, or with a flipped bit, fails the CRC/length check instead of passing
            while archive.fileobj.read(1 << 20):
                pass
    except (FileNotFoundError, PermissionError):
        raise
    except EOFError as error:
        raise _corrupt(path, f"the archive ends early, a truncated copy ({error})") from None
    except tarfile.ReadError as error:
        problem = ("the file is empty" if path.stat().st_size == 0 else
                   f"not a readable (gzip-compressed) tar archive ({' '.join(str(error).split())})")
        raise _corrupt(path, problem) from None
    except (tarfile.TarError, zlib.error, OSError) as error:  # OSError: gzip.BadGzipFile, e.g. a failed CRC check
        raise _corrupt(path, f"the compressed data is damaged ({error})") from None


def _source_files(source: Source) -> list[Path]:
    """The files whose bytes ``load`` decodes from ``source`` (both splits), in a fixed order."""
    if source.kind == "idx":
        return [file for split in SPLITS for file in _idx_pair(source.path, split)]
    if source.kind == "pickles":
        return [source.path / file for split in SPLITS for file in _pickle_files(source, split)]
    if source.kind == "jpeg-mirror-folder":
        return sorted(source.path.glob("*/*/*.jpg"))
    return [source.path]


def _content_sha256(source: Source) -> str:
    files = _source_files(source)
    if files == [source.path]:
        return _file_sha256(source.path)  # one file: its plain sha256, the one sha256sum and data/README.md show
    digest = hashlib.sha256()
    for file in files:
        # names go in too: the same bytes in another role (train vs test) are other data
        digest.update(f"{file.relative_to(source.path).as_posix()}\0{_file_sha256(file)}\n".encode())
    return digest.hexdigest()


def fingerprint(name: str) -> str:
    """Short stable identifier of the exact bytes ``load(name, ...)`` decodes, for provenance and result validity.

    ``"<source kind>:sha256:<16 hex>"``: ``"jpeg-mirror-archive:sha256:00a78acaf3d7c273"`` (the first 16 hex of the
    archive's own sha256, as ``sha256sum`` prints it), ``"idx:sha256:…"`` over the four idx files,
    ``"pickles:sha256:…"`` over the batch files, ``"jpeg-mirror-folder:sha256:…"`` over the images. Equal for
    identical files wherever they lie, different as soon as one byte differs. File hashes are memoised per process by
    (path, size, mtime, ctime, inode): repeated calls cost a few stats, a replaced file is hashed again. Resolves the
    source like ``load`` (so it may download, and raises ``DatasetMissingError`` the same way); the hashes cover both
    splits, so one fingerprint identifies the dataset whatever split a result used.
    """
    _check_name(name)
    source = _resolve(name)
    return f"{source.kind}:sha256:{_content_sha256(source)[:16]}"


def _cache_paths(name: str, source: Source, split: str) -> tuple[Path, Path]:
    # keyed by content, not by path, size or mtime: an archive replaced by other bytes (even of the same size) gets a
    # fresh decode, while the same bytes copied elsewhere or touched reuse the decode (20 s and 2×69 MB saved)
    stamp = _content_sha256(source)[:16]
    folder = paths.cache_dir() / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}-{stamp}-{split}-images.npy", folder / f"{name}-{stamp}-{split}-labels.npy"


_TMP_SUFFIX = re.compile(r"\.tmp(\d+)$")
_ORPHAN_AGE_S = 3600  # np.save of the largest array takes about a second: an hour-old temporary is certainly dead


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows: rely on age alone there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, owned by someone else
        return True
    return True


def _clean_orphans(folder: Path) -> None:
    """Delete ``*.tmp<PID>`` files that a killed writer left behind (69 MB each): their PID is gone, or they are old."""
    now = time.time()
    for file in folder.glob("*.tmp*"):
        match = _TMP_SUFFIX.search(file.name)
        if not match:
            continue
        pid = int(match.group(1))
        try:
            age = now - file.stat().st_mtime
        except FileNotFoundError:  # its writer has just renamed it into place
            continue
        if age > _ORPHAN_AGE_S or (pid != os.getpid() and (pid <= 0 or not _pid_alive(pid))):
            file.unlink(missing_ok=True)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:  # disk full, Ctrl-C: leave no half-written file (a SIGKILL is handled by _clean_orphans)
        tmp.unlink(missing_ok=True)
        raise


def _read_cache(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    if not (images_path.is_file() and labels_path.is_file()):
        return None
    try:
        images, labels = np.load(images_path), np.load(labels_path)
        if images.dtype == np.uint8 and images.ndim == 4 and labels.shape == (len(images),):
            return images, labels
    except (OSError, ValueError, EOFError):
        pass
    # a damaged cache file (edited, disk trouble) is rebuilt from the dataset rather than served or fatal
    images_path.unlink(missing_ok=True)
    labels_path.unlink(missing_ok=True)
    return None


@lru_cache(maxsize=8)
def _load_arrays(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    source = _resolve(name)
    if source.kind in ("idx",):
        return _decode_idx(source, split)
    if source.kind == "pickles":
        return _decode_pickles(source, split)
    images_path, labels_path = _cache_paths(name, source, split)
    _clean_orphans(images_path.parent)
    cached = _read_cache(images_path, labels_path)
    if cached is not None:
        return cached
    decoded = _decode_jpeg_mirror(source)
    for each_split, (images, labels) in decoded.items():
        each_images, each_labels = _cache_paths(name, source, each_split)
        _save_atomic(each_images, images)
        _save_atomic(each_labels, labels)
    return decoded[split]


def load(name: str, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)``: uint8 N×C×H×W and int64 N, CPU tensors (callers must not modify them in place)."""
    _check_name(name, split)
    images, labels = _load_arrays(name, split)
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(np.ascontiguousarray(labels))


# --- subsets, statistics, normalisation ---------------------------------------------------------------------------

def subset(images: torch.Tensor, labels: torch.Tensor, n: int | None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A class-balanced random subset of ``n`` samples (all of them when ``n`` is None or ≥ N), same for a seed.

    The samples keep their dataset order, which may be sorted by class (the CIFAR-10 JPEG mirror is): take a smaller
    subset with this function again, never with ``[:n]``."""
    if n is None or n >= len(labels):
        return images, labels
    if n <= 0:
        raise ValueError(f"subset size must be positive, got {n}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    # rank of every sample inside its own class (in the random order): take the lowest ranks first
    shuffled = labels[order]
    n_classes = int(labels.max()) + 1
    rank = torch.empty_like(order)
    for c in range(n_classes):
        members = (shuffled == c).nonzero().squeeze(1)
        rank[members] = torch.arange(len(members))
    pick = order[torch.argsort(rank * n_classes + shuffled, stable=True)[:n]]
    pick, _ = pick.sort()
    return images[pick], labels[pick]


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images, in [0, 1] units."""
    x = images.to(torch.float64) / 255.0
    return tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).tolist())


@lru_cache(maxsize=8)
def stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Channel mean and std of the training split of ``name`` (as loaded, i.e. of the source actually used)."""
    return channel_stats(load(name, "train")[0])


class Normalize(torch.nn.Module):
    """First layer of every model: inputs stay in [0, 1], so attacks and budgets ε live in pixel units."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def to_unit(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 → float in [0, 1] (floats pass through)."""
    if images.dtype == torch.uint8:
        return images.to(dtype) / 255.0
    return images.to(dtype)


# --- batched, on-device augmentation ----------------------------------------------------------------------------

def _draw_device(generator: torch.Generator | None, device) -> torch.device:
    """Random numbers are drawn where the generator lives: with a generator on the data's device, no batch needs a
    host-to-device copy (a blocking sync on CUDA); a CPU generator keeps the CPU stream of earlier versions."""
    return generator.device if generator is not None else torch.device(device)


def batches(n: int, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None,
            drop_last: bool = False, device: torch.device | str = "cpu"):
    """Index tensors of consecutive batches (a fresh permutation per call when ``shuffle``)."""
    if shuffle:
        order = torch.randperm(n, generator=generator, device=_draw_device(generator, device)).to(device)
    else:
        order = torch.arange(n, device=device)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        yield order[start:start + batch_size]


def circular_shift(x: torch.Tensor, dy: int | torch.Tensor, dx: int | torch.Tensor) -> torch.Tensor:
    """Shift images down by ``dy`` and right by ``dx`` with wrap-around; per-sample shifts when tensors are given."""
    if not torch.is_tensor(dy) and not torch.is_tensor(dx):
        return torch.roll(x, shifts=(int(dy), int(dx)), dims=(-2, -1))
    n, _, h, w = x.shape
    dy = torch.as_tensor(dy, device=x.device).expand(n)
    dx = torch.as_tensor(dx, device=x.device).expand(n)
    rows = (torch.arange(h, device=x.device)[None, :] - dy[:, None]) % h
    cols = (torch.arange(w, device=x.device)[None, :] - dx[:, None]) % w
    return _gather(x, rows, cols)


def _gather(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """out[n, c, i, j] = x[n, c, rows[n, i], cols[n, j]] for every sample at once (NCHW, contiguous).

    One ``torch.gather`` over the flattened image with an index broadcast over channels: advanced indexing with three
    index tensors (the earlier version) was slower than a per-sample Python loop, and 4–7× slower than this."""
    n, c, h, w = x.shape
    index = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, -1)
    out = torch.gather(x.reshape(n, c, h * w), 2, index.expand(n, c, -1))
    return out.view(n, c, rows.shape[1], cols.shape[1])


TRANSLATE_MODES = ("zeros", "reflect", "circular")


def _check_translate(max_shift: int, mode: str) -> None:
    if mode not in TRANSLATE_MODES:
        raise ValueError(f"unknown translate mode {mode!r}; choose zeros, reflect or circular")
    if max_shift < 0:
        raise ValueError(f"max_shift must be non-negative, got {max_shift}")


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Reflection without repeating the edge pixel (F.pad's "reflect": -1 → 1, size → size - 2), for one bounce."""
    return (size - 1) - ((size - 1) - index.abs()).abs()


def _source_pixels(x: torch.Tensor, params: dict, max_shift: int, mode: str):
    """``(x, rows, cols)``: the image to gather from (zero-padded by ``max_shift`` in ``zeros`` mode) and, for every
    output pixel, its source row/column: translation and flip folded into one index, so the batch is copied once."""
    n, _, h, w = x.shape
    rows = torch.arange(h, device=x.device).expand(n, h)
    cols = torch.arange(w, device=x.device).expand(n, w)
    if "offsets" in params:
        dy, dx = params["offsets"]
        rows, cols = rows - dy[:, None], cols - dx[:, None]   # out[i, j] = x[i - dy, j - dx]
        if mode == "circular":
            rows, cols = rows % h, cols % w
        elif mode == "reflect":
            if max_shift >= min(h, w):
                raise ValueError(f"reflect translation needs max_shift < image size, got {max_shift} for {h}×{w}")
            rows, cols = _reflect(rows, h), _reflect(cols, w)
        else:  # zeros: pad once, index into the padded batch
            x = torch.nn.functional.pad(x, (max_shift,) * 4)
            rows, cols = rows + max_shift, cols + max_shift
    if "flip" in params:  # flipping after the translation = reading the translated columns backwards
        cols = torch.where(params["flip"][:, None], cols.flip(1), cols)
    return x, rows, cols


def random_translate(x: torch.Tensor, max_shift: int, *, mode: str = "zeros",
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate every image by its own random offset in [-max_shift, max_shift]² (``mode``: zeros, reflect, circular).

    ``zeros`` is the classic "pad and random-crop" augmentation; ``circular`` the circular shifts of Zhang (2019).
    """
    if max_shift == 0:
        return x
    return Augment(translate=max_shift, mode=mode)(x, generator=generator)


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half of the images left-right."""
    return Augment(flip=True)(x, generator=generator)


@dataclass(frozen=True)
class Augment:
    """Batched augmentation applied on the device to each training batch (nothing when left at the defaults).

    ``translate``: every image moves by its own offset in [-translate, translate]² (``mode``: zeros, i.e. pad and
    random-crop; reflect; circular, the circular shifts of Zhang 2019); ``flip``: a random half is mirrored
    left-right (after the translation). The random numbers come from ``generator`` (on its device), offsets first,
    then flips, as in earlier versions: a CPU generator gives the same images as before for the same state. Works on
    uint8 and float batches alike (the training loop augments the uint8 batch, 4× less memory to move).
    """
    translate: int = 0
    mode: str = "zeros"
    flip: bool = False

    @property
    def active(self) -> bool:
        return bool(self.translate or self.flip)

    def draw(self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> dict:
        """The random numbers for ``n`` images (``offsets`` 2×n, ``flip`` n), on ``device``."""
        where, params = _draw_device(generator, device), {}
        if self.translate:
            _check_translate(self.translate, self.mode)
            params["offsets"] = torch.randint(-self.translate, self.translate + 1, (2, n), generator=generator,
                                              device=where).to(device)
        if self.flip:
            params["flip"] = (torch.rand(n, generator=generator, device=where) < 0.5).to(device)
        return params

    def apply(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        """Augment the N×C×H×W batch ``x`` with numbers from :meth:`draw`: one gather for everything."""
        if not params:
            return x
        return _gather(*_source_pixels(x, params, self.translate, self.mode))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(x, self.draw(x.shape[0], generator, x.device))
