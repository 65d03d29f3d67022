"""Experiments of the chapter "Spatial mixing" (Cazenavette, Julin & Lucey: workshop and later versions).

Sections (``runs(profile, section)``):

* ``resnet``: separable pre-activation ResNets (standard / Full / Chans d=9 / Chans d=3 / Space) over depths, with
  training time and an FGSM curve per model (paper Figs 2, 3, 8; workshop Figs 3-5, 10);
* ``static``: Chans ResNets whose frozen depthwise bank is Same / Box / Identity (paper Fig 5, workshop Fig 6);
* ``convmixer``: ConvMixer Full / Chans / Space over depths (paper Figs 4, 6, 7; workshop Figs 7-9, 11, 12);
* ``smoothing``: ConvMixer-Chans with DCT-smoothed random filters and their FGSM curves (paper Fig 9, workshop
  Figs 13-14);
* ``unshuffle``: patch-1 ConvMixers that undo a fixed pixel permutation (later version §4.4, Figs 10-13).

The spectral-envelope figures need no training; :func:`random_bank`, :func:`named_bank` and :func:`coverage_curve`
compute them directly; so do the rank of the frozen filter banks (:mod:`lib.spatial_rank`, :func:`rank_figure`) and
the reach of the un-shuffling networks (:func:`unshuffle_reach`: pixels outside the receptive field, oracle PSNR).
:func:`claims` turns stored results into the closing claims table with rule-based verdicts.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .. import data, spectra
from ..attacks import accuracy_under_attack
from ..claims import mean_sd as _mean_sd_count
from ..filters.dct import dct_lowpass, smoothing_index
from ..models.convmixer import ConvMixer
from ..models.separable_resnet import SeparableResNet
from ..training import TrainConfig, count_parameters, fit, predict, psnr
from ..unshuffle import PixelPermutation
from . import Run

CHAPTER = "spatial_mixing"
SECTIONS = ("resnet", "static", "convmixer", "smoothing", "unshuffle")

# ResNet variants of the figures: label → model switches
RESNET_VARIANTS = {
    "Standard": {"conv": "standard", "mixing": "full", "depth_multiplier": 1},
    "Full": {"conv": "separable", "mixing": "full", "depth_multiplier": 9},
    "Chans (d=9)": {"conv": "separable", "mixing": "chans", "depth_multiplier": 9},
    "Chans (d=3)": {"conv": "separable", "mixing": "chans", "depth_multiplier": 3},
    "Space": {"conv": "separable", "mixing": "space", "depth_multiplier": 9},
}
STATIC_BANKS = {"Different": "random", "Same": "same", "Box": "box", "Identity": "identity"}
CONVMIXER_VARIANTS = {"Full": "full", "Chans": "chans", "Space": "space"}

_EPS_255 = [0, 1, 2, 4, 8]  # FGSM budgets in 1/255 pixel units (the papers' values are only in their figures)

SETTINGS = {
    # quick: everything shrunk to run in minutes on a 2-core CPU. CIFAR-10 subsets of 2,560 training images (2
    # epochs, batch 32 for the ResNets; 3 epochs, batch 64 for the ConvMixers); ResNets on images average-pooled to
    # 16×16 with base width 8 and depths 1-2; ConvMixers of width 32 with 2×2 patches (16×16 tokens; kernel 8 kept
    # so that the DCT smoothing indices 0/15/28 keep their meaning); un-shuffling with a width-32, depth-4, kernel-5
    # ConvMixer on 5,000 images pooled to half size (5 epochs): its receptive field (17 pixels) must span the 14×14 or
    # 16×16 image, since a permuted pixel may have to travel anywhere; a depth-2 one (9 pixels) cannot un-shuffle.
    # 2 seeds for the headline numbers (1 for the Same/Box/Identity banks).
    "quick": {
        "resnet": {"dataset": "cifar10", "image_size": 16, "train_size": 2560, "test_size": 500, "width": 8,
                   "depths": [1, 2], "headline_depth": 1, "seeds": [0, 1], "static_seeds": [0], "attack_size": 100,
                   "epsilons_255": _EPS_255,
                   "train": {"epochs": 2, "batch_size": 32, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 5e-4,
                             "schedule": "onecycle", "warmup_fraction": 0.2, "channels_last": True}},
        "convmixer": {"dataset": "cifar10", "image_size": 32, "train_size": 2560, "test_size": 500, "dim": 32,
                      "depths": [2, 4], "headline_depth": 2, "filters_depth": 4, "kernel_size": 8, "patch_size": 2,
                      "seeds": [0, 1], "attack_size": 100, "epsilons_255": _EPS_255, "keeps": [8, 7, 6, 4],
                      "train": {"epochs": 3, "batch_size": 64, "optimizer": "adamw", "lr": 5e-3,
                                "weight_decay": 1e-2, "schedule": "onecycle", "warmup_fraction": 0.2,
                                "channels_last": True}},
        "unshuffle": {"datasets": ["fashion_mnist", "cifar10"], "image_scale": 2, "train_size": 5000,
                      "test_size": 100, "dim": 32, "depth": 4, "kernel_size": 5, "variants": ["Full", "Chans", "Space"],
                      "seeds": [0], "sweep": {"depth": [2, 4], "dim": [16, 32], "kernel_size": [3, 5]}, "samples": 6,
                      "train": {"epochs": 5, "batch_size": 64, "optimizer": "adamw", "lr": 1e-2,
                                "weight_decay": 0.0, "schedule": "onecycle", "warmup_fraction": 0.2,
                                "loss": "mse", "channels_last": True}},
    },
    # paper: full CIFAR-10 / Fashion-MNIST, the papers' architectures (ResNet base width 16 and d=9; ConvMixer-128,
    # kernel 8, patch 1), 3 seeds at the headline depth. Hyper-parameters are ours (the papers give none): SGD+Nesterov
    # one-cycle for the ResNets; the ConvMixer authors' CIFAR recipe (AdamW, one-cycle, lr 0.01, wd 0.01) shortened.
    "paper": {
        "resnet": {"dataset": "cifar10", "image_size": 32, "train_size": None, "test_size": None, "width": 16,
                   "depths": [1, 2, 3], "headline_depth": 3, "seeds": [0, 1, 2], "attack_size": 2000,
                   "epsilons_255": [0, 0.5, 1, 2, 4, 8],
                   "train": {"epochs": 6, "batch_size": 256, "optimizer": "sgd", "lr": 0.2, "momentum": 0.9,
                             "nesterov": True, "weight_decay": 5e-4, "schedule": "onecycle",
                             "warmup_fraction": 0.2, "augment": {"translate": 4, "mode": "zeros", "flip": True}}},
        "convmixer": {"dataset": "cifar10", "image_size": 32, "train_size": None, "test_size": None, "dim": 128,
                      "depths": [2, 4, 6], "headline_depth": 4, "filters_depth": 4, "kernel_size": 8,
                      "patch_size": 1, "seeds": [0, 1, 2], "attack_size": 2000,
                      "epsilons_255": [0, 0.5, 1, 2, 4, 8], "keeps": [8, 7, 6, 4],
                      "train": {"epochs": 6, "batch_size": 512, "optimizer": "adamw", "lr": 1e-2,
                                "weight_decay": 1e-2, "schedule": "onecycle", "warmup_fraction": 0.2,
                                "augment": {"translate": 4, "mode": "zeros", "flip": True}}},
        "unshuffle": {"datasets": ["fashion_mnist", "cifar10", "mnist"], "image_scale": 1, "train_size": None,
                      "test_size": None,
                      "dim": 128, "depth": 4, "kernel_size": 7, "variants": ["Full", "Chans", "Space"],
                      "seeds": [0], "sweep": {"depth": [2, 4, 8], "dim": [64, 128, 256], "kernel_size": [3, 5, 7]},
                      "samples": 8,
                      "train": {"epochs": 3, "batch_size": 256, "optimizer": "adamw", "lr": 2e-3,
                                "weight_decay": 0.0, "schedule": "onecycle", "warmup_fraction": 0.1,
                                "loss": "mse"}},
    },
}


# --- data -----------------------------------------------------------------------------------------------------------

def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images average-pooled to ``size``×``size`` (quick profile only); unchanged when already that size."""
    if images.shape[-1] == size:
        return images
    if images.shape[-1] % size:
        raise ValueError(f"image size {images.shape[-1]} is not a multiple of the requested {size}")
    pooled = F.avg_pool2d(images.float(), images.shape[-1] // size)
    return pooled.round().clamp(0, 255).to(torch.uint8)


def load_split(dataset: str, train_size: int | None, test_size: int | None, image_size: int | None = None):
    """Class-balanced subsets (the same for every model and seed: data seed 0), optionally average-pooled."""
    x_train, y_train = data.subset(*data.load(dataset, "train"), train_size, seed=0)
    x_test, y_test = data.subset(*data.load(dataset, "test"), test_size, seed=0)
    if image_size is not None:
        x_train, x_test = _resize(x_train, image_size), _resize(x_test, image_size)
    return (x_train, y_train), (x_test, y_test)


def _train_config(config: dict) -> TrainConfig:
    train = dict(config["train"])
    if isinstance(train.get("augment"), dict):
        train["augment"] = data.Augment(**train["augment"])
    return TrainConfig(**train)


def _attack(model, test, config, device) -> list[float] | None:
    if not config.get("epsilons_255"):
        return None
    x, y = data.subset(*test, config["attack_size"], seed=1)
    return accuracy_under_attack(model, x, y, [e / 255 for e in config["epsilons_255"]], attack="fgsm",
                                 batch_size=250, device=torch.device(device))


def _summary(out: dict, model, test, config, device) -> dict:
    trainable = count_parameters(model, trainable_only=True)
    return {"accuracy": out["final"]["accuracy"], "history": out["history"], "train_time_s": out["train_time_s"],
            "trainable_parameters": trainable, "parameters": count_parameters(model),
            "time_per_trainable_parameter_us": 1e6 * out["train_time_s"] / max(trainable, 1),
            "fgsm_accuracy": _attack(model, test, config, device)}


# --- run functions (``fn(config, device) -> dict``) -----------------------------------------------------------------

def train_resnet(config: dict, device) -> dict:
    """Train one (separable) ResNet; returns accuracy, timing, parameter counts and the FGSM curve."""
    train, test = load_split(config["dataset"], config["train_size"], config["test_size"], config["image_size"])
    mean, std = data.stats(config["dataset"])
    model = SeparableResNet(config["depth"], conv=config["conv"], mixing=config["mixing"],
                            depth_multiplier=config["depth_multiplier"], filters=config.get("filters", "random"),
                            width=config["width"], in_channels=train[0].shape[1], mean=mean, std=std)
    out = fit(model, train, test, config=_train_config(config), seed=config["seed"], device=device,
              progress=False, description=f"ResNet {config['conv']}/{config['mixing']} n={config['depth']}")
    return _summary(out, model, test, config, device)


def train_convmixer(config: dict, device) -> dict:
    """Train one ConvMixer classifier; also returns its depthwise filters when ``keep_filters`` is set."""
    train, test = load_split(config["dataset"], config["train_size"], config["test_size"], config["image_size"])
    mean, std = data.stats(config["dataset"])
    model = ConvMixer(config["dim"], config["depth"], kernel_size=config["kernel_size"],
                      patch_size=config["patch_size"], mixing=config["mixing"],
                      smoothing_keep=config.get("smoothing_keep"), in_channels=train[0].shape[1], mean=mean, std=std)
    initial = model.depthwise_filters()
    out = fit(model, train, test, config=_train_config(config), seed=config["seed"], device=device,
              progress=False, description=f"ConvMixer {config['mixing']} depth {config['depth']}")
    result = _summary(out, model, test, config, device)
    if config.get("keep_filters"):
        result["filters"] = np.stack([f.cpu().numpy() for f in model.depthwise_filters()]).astype(np.float32)
        result["initial_filters"] = np.stack([f.cpu().numpy() for f in initial]).astype(np.float32)
    return result


def train_unshuffle(config: dict, device) -> dict:
    """Train a patch-1 ConvMixer to undo a fixed pixel permutation (MSE); test PSNR and a few sample images."""
    (x_train, _), (x_test, _) = load_split(config["dataset"], config["train_size"], config["test_size"])
    scale = config.get("image_scale", 1)
    if scale != 1:  # quick profile: average-pool the images (28→14, 32→16) before shuffling
        x_train, x_test = _resize(x_train, x_train.shape[-1] // scale), _resize(x_test, x_test.shape[-1] // scale)
    channels, height, width = x_train.shape[1:]
    mean, std = data.stats(config["dataset"])
    permutation = PixelPermutation(height, width, seed=config["permutation_seed"])
    model = ConvMixer(config["dim"], config["depth"], kernel_size=config["kernel_size"], patch_size=1,
                      mixing=config["mixing"], head="image", in_channels=channels, mean=mean, std=std)
    out = fit(model, (x_train, x_train), (x_test, x_test), config=_train_config(config), seed=config["seed"],
              device=device, input_transform=permutation, progress=False,
              description=f"un-shuffle {config['dataset']} {config['mixing']}")
    pick = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(config["seed"]))[:config["samples"]]
    originals = x_test[pick]
    shuffled = permutation.shuffle(originals)
    reconstructed = predict(model, originals, input_transform=permutation, device=torch.device(device))
    to_uint8 = lambda t: (data.to_unit(t).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    # reference: the PSNR of answering every test image with the mean training image (what a model that ignores its
    # input can reach); un-shuffling results are only informative above it
    mean_image = data.to_unit(x_train).mean(0, keepdim=True).expand(len(x_test), -1, -1, -1)
    trainable = count_parameters(model, trainable_only=True)
    return {"psnr": out["final"]["psnr"], "mean_image_psnr": float(psnr(mean_image, x_test).mean()),
            "history": out["history"], "train_time_s": out["train_time_s"],
            "trainable_parameters": trainable, "parameters": count_parameters(model),
            "samples": {"shuffled": to_uint8(shuffled), "reconstructed": to_uint8(reconstructed),
                        "original": to_uint8(originals)}}


# --- the runs of every section ---------------------------------------------------------------------------------------

def _resnet_config(s: dict, depth: int, seed: int, variant: dict, filters: str = "random") -> dict:
    config = {k: s[k] for k in ("dataset", "image_size", "train_size", "test_size", "width", "attack_size",
                                "epsilons_255", "train")}
    return {**config, **variant, "depth": depth, "seed": seed, "filters": filters}


def _convmixer_config(s: dict, depth: int, seed: int, mixing: str, keep: int | None = None) -> dict:
    config = {k: s[k] for k in ("dataset", "image_size", "train_size", "test_size", "dim", "kernel_size",
                                "patch_size", "attack_size", "epsilons_255", "train")}
    config.update(depth=depth, seed=seed, mixing=mixing, keep_filters=depth == s["filters_depth"])
    if keep is not None and keep != s["kernel_size"]:
        config["smoothing_keep"] = keep  # keep = k is the plain random model: same config, same stored result
    return config


def _unshuffle_config(s: dict, dataset: str, mixing: str, seed: int, **overrides) -> dict:
    config = {k: s[k] for k in ("image_scale", "train_size", "test_size", "dim", "depth", "kernel_size", "samples",
                                "train")}
    config.update(dataset=dataset, mixing=mixing, seed=seed, permutation_seed=1234, **overrides)
    return config


def _available(dataset: str) -> bool:
    """True when ``dataset`` is on disk (MNIST is used only where it can be read or was downloaded before)."""
    try:
        data.find_source(dataset)
        return True
    except data.DatasetMissingError:
        return False


def _dedupe(runs: list[Run]) -> list[Run]:
    seen, out = set(), []
    for run in runs:
        if run.key not in seen:
            seen.add(run.key)
            out.append(run)
    return out


def runs(profile: str, section: str | None = None) -> list[Run]:
    """Every run the chapter's figures need (``section`` picks one of :data:`SECTIONS`)."""
    if profile not in SETTINGS:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(SETTINGS)}")
    if section is not None and section not in SECTIONS:
        raise ValueError(f"unknown section {section!r}; choose one of {', '.join(SECTIONS)}")
    r, c, u = (SETTINGS[profile][k] for k in ("resnet", "convmixer", "unshuffle"))
    out: list[Run] = []
    for label, variant in RESNET_VARIANTS.items():
        for depth in r["depths"]:
            for seed in (r["seeds"] if depth == r["headline_depth"] else r["seeds"][:1]):
                out.append(Run(CHAPTER, "resnet", _resnet_config(r, depth, seed, variant), train_resnet, "resnet"))
    chans = RESNET_VARIANTS["Chans (d=9)"]
    for label, bank in STATIC_BANKS.items():
        if bank != "random":
            for seed in r.get("static_seeds", r["seeds"]):
                out.append(Run(CHAPTER, "resnet", _resnet_config(r, r["headline_depth"], seed, chans, bank),
                               train_resnet, "static"))
    for mixing in CONVMIXER_VARIANTS.values():
        for depth in c["depths"]:
            for seed in (c["seeds"] if depth == c["headline_depth"] else c["seeds"][:1]):
                out.append(Run(CHAPTER, "convmixer", _convmixer_config(c, depth, seed, mixing), train_convmixer,
                               "convmixer"))
    for keep in c["keeps"]:
        if keep != c["kernel_size"]:
            for seed in c["seeds"]:
                out.append(Run(CHAPTER, "convmixer", _convmixer_config(c, c["headline_depth"], seed, "chans", keep),
                               train_convmixer, "smoothing"))
    for dataset in [d for d in u["datasets"] if d != "mnist" or _available(d)]:
        for label in u["variants"]:
            for seed in u["seeds"]:
                out.append(Run(CHAPTER, "unshuffle", _unshuffle_config(u, dataset, CONVMIXER_VARIANTS[label], seed),
                               train_unshuffle, "unshuffle"))
    for field, values in u["sweep"].items():
        for value in values:
            for label in ("Full", "Chans"):
                config = _unshuffle_config(u, "cifar10", CONVMIXER_VARIANTS[label], u["seeds"][0], **{field: value})
                out.append(Run(CHAPTER, "unshuffle", config, train_unshuffle, "unshuffle"))
    out = _dedupe(out)
    return [run for run in out if section in (None, run.section)]


# --- selecting stored results ---------------------------------------------------------------------------------------

def select(results: list[dict], **where) -> list[dict]:
    """The results whose stored config matches every ``key=value`` (missing results, ``None``, are skipped)."""
    return [res for res in results if res is not None
            and all(res["config"].get(k, None if k == "smoothing_keep" else object()) == v for k, v in where.items())]


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample sd over seeds, skipping missing values (``nan, nan`` when none)."""
    mean, sd, _ = _mean_sd_count(v for v in values if v is not None)
    return mean, sd


def resnet_selector(label: str, depth: int, filters: str = "random") -> dict:
    variant = RESNET_VARIANTS[label]
    return {"conv": variant["conv"], "mixing": variant["mixing"], "depth_multiplier": variant["depth_multiplier"],
            "depth": depth, "filters": filters}


# --- spectral coverage (no training) -------------------------------------------------------------------------------

def random_bank(n: int, k: int = 8, dims: int = 2, seed: int = 0, unit_energy: bool = True) -> np.ndarray:
    """``n`` random filters (k taps, or k×k when ``dims=2``) drawn like PyTorch's default depthwise init (uniform
    ±1/k for a k×k filter, ±1/√k for k taps); scaled to unit energy by default so banks compare by shape alone."""
    if dims not in (1, 2):
        raise ValueError(f"dims must be 1 or 2, got {dims}")
    if n < 1 or k < 1:
        raise ValueError(f"bank size and kernel size must be positive, got n={n}, k={k}")
    shape = (n, k) if dims == 1 else (n, k, k)
    bound = 1 / math.sqrt(k ** dims)
    bank = np.random.default_rng(seed).uniform(-bound, bound, shape)
    return _unit(bank) if unit_energy else bank


def _unit(bank: np.ndarray) -> np.ndarray:
    axes = tuple(range(1, bank.ndim))
    return bank / np.sqrt((bank ** 2).sum(axis=axes, keepdims=True))


BANKS = ("random", "same", "box", "identity")


def named_bank(kind: str, n: int, k: int = 3, seed: int = 0, same_size: int = 9) -> np.ndarray:
    """Banks of the static-filter experiment, k×k and unit energy: ``random`` (Different), ``same`` (``same_size``
    random kernels repeated to fill the bank), ``box`` and ``identity`` (all filters identical)."""
    if kind not in BANKS:
        raise ValueError(f"unknown bank {kind!r}; choose one of {', '.join(BANKS)}")
    if kind == "random":
        return random_bank(n, k, 2, seed)
    if kind == "same":
        base = random_bank(min(n, same_size), k, 2, seed)
        return np.resize(base, (n, k, k))
    if kind == "box":
        return _unit(np.ones((n, k, k)))
    bank = np.zeros((n, k, k))
    bank[:, k // 2, k // 2] = 1.0
    return bank


def coverage_curve(kind: str, sizes, k: int = 3, seeds: int = 5, grid: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd over ``seeds`` banks of the coverage (mean of the envelope) for every bank size."""
    values = np.array([[spectra.coverage(spectra.spectral_envelope(named_bank(kind, n, k, seed=1000 * n + s), grid))
                        for s in range(seeds)] for n in sizes])
    return values.mean(1), values.std(1)


def smoothed_bank(keep: int, n: int = 64, k: int = 8, seed: int = 0) -> np.ndarray:
    """A random k×k bank (default init scale, not normalised) low-passed to its ``keep``×``keep`` DCT block."""
    return dct_lowpass(random_bank(n, k, 2, seed, unit_energy=False), keep)


# --- parameter counts (eqs. 1-4) -------------------------------------------------------------------------------------

def parameter_table(depths, width: int = 16, multipliers=(9, 3)) -> list[dict]:
    """Per depth: trainable parameters predicted by eqs. (1)-(3) and counted on the built models, for every variant."""
    from ..models.separable_resnet import predicted_trainable
    rows = []
    for depth in depths:
        variants = [("Standard", "standard", "full", 1)] + [
            (f"{name} (d={d})", "separable", mixing, d) for d in multipliers
            for name, mixing in (("Full", "full"), ("Chans", "chans"), ("Space", "space"))]
        for label, conv, mixing, d in variants:
            model = SeparableResNet(depth, conv=conv, mixing=mixing, depth_multiplier=d, width=width)
            predicted = predicted_trainable(depth, conv=conv, mixing=mixing, depth_multiplier=d, width=width)
            actual = count_parameters(model, trainable_only=True)
            rows.append({"depth n": depth, "layers": 6 * depth + 2, "model": label, "predicted (eqs. 1-3)": predicted,
                         "counted": actual, "match": "yes" if predicted == actual else "NO",
                         "all parameters": count_parameters(model)})
    return rows


# --- reach of the un-shuffling networks (no training) ---------------------------------------------------------------

# cap of lib.training.psnr: the MSE is clamped at 1e-12, so an exact reconstruction scores 10·log10(1e12) = 120 dB
PSNR_CAP_DB = 120.0
REACH_IMAGES = 200  # class-balanced test images (data seed 0) on which the oracle PSNR is computed
NATIVE_SIZE = {"cifar10": 32, "cifar100": 32, "fashion_mnist": 28, "mnist": 28}
BEST_UNSHUFFLER = {"depth": 16, "dim": 512, "kernel_size": 7}  # the later paper's best model (Fig 13)


def receptive_window(model: torch.nn.Module) -> tuple[int, int]:
    """``(before, after)``: output pixel (i, j) of ``model`` depends on input rows i − before … i + after (and the same
    columns), for a model whose 2-D convolutions are applied one after the other with stride 1 (the patch-1 ConvMixer:
    1×1 stem, depthwise k×k and pointwise 1×1 per block, 1×1 head; its residual branches skip a convolution and so
    see less, never more). Padding ``"same"`` follows PyTorch (k = 8: 3 before, 4 after). Strided convolutions
    (downsampling) are refused: an image-to-image un-shuffler has none."""
    before = after = 0
    for conv in (m for m in model.modules() if isinstance(m, torch.nn.Conv2d)):
        if any(s != 1 for s in conv.stride):
            raise ValueError(f"receptive_window handles stride-1 convolutions only, got stride {conv.stride}")
        if conv.kernel_size[0] != conv.kernel_size[1] or conv.dilation[0] != conv.dilation[1]:
            raise ValueError("receptive_window handles square kernels only")
        span = conv.dilation[0] * (conv.kernel_size[0] - 1)
        left = {"same": span // 2, "valid": 0}.get(conv.padding, None) if isinstance(conv.padding, str) \
            else conv.padding[0]
        before += left
        after += span - left
    return before, after


def unshuffle_window(depth: int, kernel_size: int) -> tuple[int, int]:
    """:func:`receptive_window` of the chapter's un-shuffling ConvMixer (patch 1, image head; width is irrelevant)."""
    model = ConvMixer(1, depth, kernel_size=kernel_size, patch_size=1, head="image", in_channels=1, mean=(0.0,),
                      std=(1.0,))
    return receptive_window(model)


def out_of_reach_mask(order, height: int, width: int, before: int, after: int) -> torch.Tensor:
    """Boolean (height, width): True where the output pixel's source lies outside its receptive field.

    ``order`` as in :class:`lib.unshuffle.PixelPermutation` (shuffled position i holds original pixel order[i]). The
    value the model must write at output position p = (y, x) sits, in its shuffled input, at position
    q = order⁻¹[p]; it can be reached only if q lies in rows y − before … y + after and in columns
    x − before … x + after."""
    order = torch.as_tensor(order).flatten()
    if sorted(order.tolist()) != list(range(height * width)):
        raise ValueError(f"order is not a permutation of the {height}×{width} pixel positions")
    source = torch.argsort(order)  # source[p] = shuffled position of original pixel p
    target = torch.arange(height * width)
    dy = source // width - target // width
    dx = source % width - target % width
    inside = (dy >= -before) & (dy <= after) & (dx >= -before) & (dx <= after)
    return (~inside).view(height, width)


def oracle_psnr(images: torch.Tensor, unreachable: torch.Tensor) -> float:
    """Mean test PSNR (:func:`lib.training.psnr`, the chapter's metric) of an oracle that restores every reachable pixel
    exactly and answers the mean image of ``images`` (uint8 N×C×H×W, the evaluation images) at every unreachable one.

    With nothing out of reach it is :data:`PSNR_CAP_DB` (the metric's cap, an exact reconstruction). It is the ceiling
    of a model that can only copy pixels it sees into place; a model might still beat it slightly by guessing an
    unreachable pixel from the (shuffled) pixels it does see, better than the mean image does."""
    unit = data.to_unit(images)
    mean = unit.mean(0, keepdim=True)
    oracle = torch.where(torch.as_tensor(unreachable, dtype=torch.bool).view(1, 1, *unit.shape[-2:]), mean, unit)
    return float(psnr(oracle, images).mean())


def _unshuffle_images(dataset: str, scale: int, n: int) -> torch.Tensor:
    """``n`` class-balanced test images (data seed 0), average-pooled by ``scale`` as :func:`train_unshuffle` does."""
    images, _ = data.subset(*data.load(dataset, "test"), n, seed=0)
    return _resize(images, images.shape[-1] // scale) if scale != 1 else images


def _window_text(before: int, after: int) -> str:
    return f"±{before}" if before == after else f"−{before}…+{after}"


def unshuffle_reach(profile: str, n_images: int = REACH_IMAGES, oracle: bool = True) -> list[dict]:
    """Out-of-reach fraction and oracle PSNR of every un-shuffling model of ``profile``, for the permutation its runs
    use: the base model on each data set, the CIFAR-10 depth and kernel-size sweeps (width does not change the
    receptive field) and, for reference, the later paper's best model (depth 16, width 512, kernel 7) at the profile's
    CIFAR-10 image size.

    Each row: ``dataset``, ``image`` (H×W), ``model``, ``depth``, ``kernel_size``, ``window`` (before, after),
    ``receptive field`` (pixels per side), ``out of reach`` (fraction of output pixels), ``oracle PSNR (dB)``
    (:func:`oracle_psnr` on ``n_images`` test images, :data:`PSNR_CAP_DB` when nothing is out of reach; NaN with
    ``note`` = "dataset missing" when the data set cannot be read, NaN when ``oracle`` is False)."""
    u = SETTINGS[profile]["unshuffle"]
    scale = u["image_scale"]
    datasets = [d for d in u["datasets"] if d != "mnist" or _available(d)]
    models = [(d, "base", u["depth"], u["kernel_size"]) for d in datasets]
    for field in ("depth", "kernel_size"):
        for value in u["sweep"].get(field, []):
            depth = value if field == "depth" else u["depth"]
            kernel = value if field == "kernel_size" else u["kernel_size"]
            if (depth, kernel) != (u["depth"], u["kernel_size"]):
                models.append(("cifar10", f"sweep {field.replace('_', ' ')} {value}", depth, kernel))
    models.append(("cifar10", "papers' best (width 512)", BEST_UNSHUFFLER["depth"], BEST_UNSHUFFLER["kernel_size"]))
    images, rows = {}, []
    for dataset, label, depth, kernel in models:
        size = NATIVE_SIZE[dataset] // scale
        seed = _unshuffle_config(u, dataset, "chans", u["seeds"][0])["permutation_seed"]
        before, after = unshuffle_window(depth, kernel)
        mask = out_of_reach_mask(PixelPermutation(size, size, seed=seed).order, size, size, before, after)
        row = {"dataset": dataset, "image": f"{size}×{size}", "model": label, "depth": depth, "kernel_size": kernel,
               "window": (before, after), "receptive field": before + after + 1,
               "out of reach": float(mask.float().mean()), "oracle PSNR (dB)": math.nan, "note": ""}
        if oracle and not mask.any():  # everything in reach: the oracle is exact, no image needed
            row["oracle PSNR (dB)"] = PSNR_CAP_DB
        elif oracle:
            if dataset not in images:
                try:
                    images[dataset] = _unshuffle_images(dataset, scale, n_images)
                except data.DatasetMissingError:
                    images[dataset] = None
            if images[dataset] is None:
                row["note"] = "dataset missing"
            else:
                if tuple(images[dataset].shape[-2:]) != (size, size):
                    raise ValueError(f"{dataset}: expected {size}×{size} images, got {tuple(images[dataset].shape)}")
                row["oracle PSNR (dB)"] = oracle_psnr(images[dataset], mask)
                row["oracle images"] = len(images[dataset])
        rows.append(row)
    return rows


def reach_table(rows: list[dict]) -> list[dict]:
    """:func:`unshuffle_reach` rows formatted for the notebook's Markdown table."""
    def db(value: float) -> str:
        if math.isnan(value):
            return "n/a"
        return f"{value:.0f} (cap: exact)" if value >= PSNR_CAP_DB - 1e-6 else f"{value:.1f}"
    return [{"data set": r["dataset"], "image": r["image"], "model": r["model"],
             "depth, kernel": f"{r['depth']}, {r['kernel_size']}",
             "receptive field": f"{r['receptive field']}×{r['receptive field']} ({_window_text(*r['window'])})",
             "out of reach": f"{100 * r['out of reach']:.0f}%", "oracle PSNR (dB)": db(r["oracle PSNR (dB)"])}
            for r in rows]


# --- claims and verdicts ---------------------------------------------------------------------------------------------

CLOSE_ABS = 0.02   # "≈": a gap of at most 2 points of accuracy (or 2 sd of the seeds, when larger)
FAR_ABS = 0.05     # "≫": a gap of at least 5 points (and above 2 sd)


def _tolerance(base: float, *sds: float) -> float:
    sds = [s for s in sds if s == s]  # drop NaN
    return max(base, 2 * math.sqrt(sum(s * s for s in sds))) if sds else base


def verdict_close_and_far(full: tuple, chans: tuple, space: tuple) -> str:
    """"Chans ≈ Full ≫ Space": supported when |Full − Chans| ≤ tol_close and Chans − Space ≥ tol_far."""
    if any(math.isnan(x[0]) for x in (full, chans, space)):
        return "no data"
    close = abs(full[0] - chans[0]) <= _tolerance(CLOSE_ABS, full[1], chans[1])
    far = chans[0] - space[0] >= _tolerance(FAR_ABS, chans[1], space[1])
    return "supported" if close and far else "partly supported" if close or far else "not supported"


def verdict_greater(a: tuple, b: tuple, margin: float = 0.0) -> str:
    """``a > b``: supported when the gap exceeds ``margin`` and 2 sd; 'inconclusive' when within the noise."""
    if math.isnan(a[0]) or math.isnan(b[0]):
        return "no data"
    gap = a[0] - b[0]
    tol = _tolerance(margin, a[1], b[1])
    return "supported" if gap > tol else "not supported" if gap < -tol else "inconclusive"


def verdict_not_worse(a: tuple, b: tuple, tolerance: float = CLOSE_ABS) -> str:
    """``a`` is not worse than ``b``: supported unless ``b`` exceeds ``a`` by more than the "≈" tolerance."""
    if math.isnan(a[0]) or math.isnan(b[0]):
        return "no data"
    return "not supported" if verdict_greater(b, a, tolerance) == "supported" else "supported"


def verdict_psnr_close(full: float, chans: float, reference: float, tolerance_db: float = 1.0) -> str:
    """Un-shuffling "nearly as good": Chans within ``tolerance_db`` of Full, both clearly (> 1 dB) above the PSNR of
    the mean image; 'inconclusive' when Full itself does not beat that reference."""
    if math.isnan(full) or math.isnan(chans):
        return "no data"
    if not math.isnan(reference) and full <= reference + 1.0:
        return "inconclusive"
    return "supported" if full - chans <= tolerance_db else "not supported"


def verdict_relative_gain(smoothed: tuple, base: tuple, threshold: float) -> str:
    """``smoothed`` beats ``base`` by a relative gain above ``threshold``; a gain that the seeds' spread (2 pooled sd)
    could explain is 'inconclusive', since at small attack sets one image is already a large relative change."""
    if math.isnan(smoothed[0]) or math.isnan(base[0]) or base[0] <= 0:
        return "no data"
    gain = (smoothed[0] - base[0]) / base[0]
    if gain <= threshold:
        return "not supported"
    return "supported" if verdict_greater(smoothed, base) == "supported" else "inconclusive"


def _fmt(x: tuple, scale: float = 100, unit: str = "%") -> str:
    return "n/a" if math.isnan(x[0]) else f"{scale * x[0]:.1f} ± {scale * x[1]:.1f}{unit}"


def claims(results: list[dict], profile: str) -> list[dict]:
    """The claims table of the chapter: claim, paper's statement, our measurement (mean ± sd over seeds), verdict."""
    s = SETTINGS[profile]
    r, c = s["resnet"], s["convmixer"]
    rd, cd = r["headline_depth"], c["headline_depth"]
    acc = lambda sel: mean_sd(x["accuracy"] for x in select(results, **sel))
    res = {label: acc(resnet_selector(label, rd)) for label in RESNET_VARIANTS}
    cm = {label: acc(convmixer_selector(m, cd, profile)) for label, m in CONVMIXER_VARIANTS.items()}
    rows = []
    rows.append({"claim": "ResNet: Chans ≈ Full ≫ Space (accuracy)",
                 "paper": "Chans 'barely' below Full; Space 'significantly worse' (Figs 2/3)",
                 "ours": f"Full {_fmt(res['Full'])}, Chans {_fmt(res['Chans (d=9)'])}, Space {_fmt(res['Space'])}",
                 "verdict": verdict_close_and_far(res["Full"], res["Chans (d=9)"], res["Space"])})
    rows.append({"claim": "ConvMixer: Chans ≈ Full ≫ Space (accuracy)",
                 "paper": "Chans competitive with Full, Space 'completely out-classed' (Fig 4 / workshop Fig 7)",
                 "ours": f"Full {_fmt(cm['Full'])}, Chans {_fmt(cm['Chans'])}, Space {_fmt(cm['Space'])}",
                 "verdict": verdict_close_and_far(cm["Full"], cm["Chans"], cm["Space"])})
    # training time per trainable parameter: Space ≫ Chans
    tpp = lambda sel: mean_sd(x["time_per_trainable_parameter_us"] for x in select(results, **sel))
    t_chans, t_space = tpp(resnet_selector("Chans (d=9)", rd)), tpp(resnet_selector("Space", rd))
    rows.append({"claim": "ResNet: learned spatial mixing costs more time per trainable parameter",
                 "paper": "Space has a 'much higher' time per trainable parameter than Chans (Fig 3 right)",
                 "ours": f"Chans {t_chans[0]:.1f} ± {t_chans[1]:.1f} µs, Space {t_space[0]:.1f} ± "
                         f"{t_space[1]:.1f} µs",
                 "verdict": verdict_greater(t_space, t_chans)})
    time = lambda sel: mean_sd(x["train_time_s"] for x in select(results, **sel))
    t_full_cm = time(convmixer_selector("full", cd, profile))
    t_chans_cm = time(convmixer_selector("chans", cd, profile))
    rows.append({"claim": "ConvMixer: Chans trains faster than Full",
                 "paper": "'significant speedup when not learning the spatial mixing' (Fig 6 / workshop Fig 9)",
                 "ours": f"Full {t_full_cm[0]:.1f} ± {t_full_cm[1]:.1f} s, Chans {t_chans_cm[0]:.1f} ± "
                         f"{t_chans_cm[1]:.1f} s",
                 "verdict": verdict_greater(t_full_cm, t_chans_cm)})
    banks = {label: acc(resnet_selector("Chans (d=9)", rd, bank)) for label, bank in STATIC_BANKS.items()}
    rows.append({"claim": "Random frozen filters must be uncorrelated (Different ≫ Same)",
                 "paper": "'large performance drop' from Different to Same, then Box, Identity fails (Fig 5)",
                 "ours": ", ".join(f"{k} {_fmt(v)}" for k, v in banks.items()),
                 "verdict": verdict_greater(banks["Different"], banks["Same"], FAR_ABS)})
    last = lambda sel: mean_sd(x["fgsm_accuracy"][-1] for x in select(results, **sel) if x.get("fgsm_accuracy"))
    eps = r["epsilons_255"][-1]
    f_full, f_chans = last(resnet_selector("Full", rd)), last(resnet_selector("Chans (d=9)", rd))
    rows.append({"claim": f"ResNet: Chans more robust to FGSM than Full (ε = {eps}/255)",
                 "paper": "Chans 'clearly more robust' (Fig 8 / workshop Fig 10)",
                 "ours": f"Full {_fmt(f_full)}, Chans {_fmt(f_chans)}",
                 "verdict": verdict_greater(f_chans, f_full)})
    keeps = [k for k in c["keeps"] if k != c["kernel_size"]]
    smooth_sel = lambda keep: convmixer_selector("chans", cd, profile, keep)
    base_rob, base_clean = last(smooth_sel(c["kernel_size"])), acc(smooth_sel(c["kernel_size"]))
    best_keep = max(keeps, key=lambda k: last(smooth_sel(k))[0]) if keeps else c["kernel_size"]
    best_rob, best_clean = last(smooth_sel(best_keep)), acc(smooth_sel(best_keep))
    gain = (best_rob[0] - base_rob[0]) / base_rob[0] if base_rob[0] > 0 else math.nan
    index = smoothing_index(c["kernel_size"], best_keep)
    rows.append({"claim": f"Smoothing raises FGSM accuracy at the largest ε ({c['epsilons_255'][-1]}/255) by >25%",
                 "paper": "'relative performance increase of over 25%' (Fig 9 / workshop Fig 14)",
                 "ours": f"index 0: {_fmt(base_rob)}; best index {index}: {_fmt(best_rob)}; relative gain "
                         f"{100 * gain:+.0f}%",
                 "verdict": verdict_relative_gain(best_rob, base_rob, 0.25)})
    rows.append({"claim": "Smoothing does not hurt clean accuracy",
                 "paper": "'while not hurting performance on clean data at all'",
                 "ours": f"index 0: {_fmt(base_clean)}; index {index}: {_fmt(best_clean)}",
                 "verdict": verdict_not_worse(best_clean, base_clean)})
    u = s["unshuffle"]
    for dataset in u["datasets"]:
        base = unshuffle_base(profile)
        p = {label: mean_sd(x["psnr"] for x in select(results, dataset=dataset, mixing=m, **base))
             for label, m in CONVMIXER_VARIANTS.items()}
        if math.isnan(p["Full"][0]):
            continue
        reference = mean_sd(x["mean_image_psnr"] for x in select(results, dataset=dataset, **base)
                            if "mean_image_psnr" in x)
        rows.append({"claim": f"Un-shuffling ({dataset}): Chans nearly as good as Full",
                     "paper": "test results 'shockingly close' (Figs 10-13)",
                     "ours": f"PSNR Full {p['Full'][0]:.1f} dB, Chans {p['Chans'][0]:.1f} dB, Space "
                             f"{p['Space'][0]:.1f} dB (mean image: {reference[0]:.1f} dB)",
                     "verdict": verdict_psnr_close(p["Full"][0], p["Chans"][0], reference[0])})
    return rows


# --- figures (called by the notebook; each figure built from results carries its provenance) ------------------------

def _tiles(bank: np.ndarray, columns: int = 8, limit: int = 32) -> np.ndarray:
    """Filters laid out on a grid with one blank pixel between them (NaN shows as background)."""
    bank = np.asarray(bank)[:limit]
    k = bank.shape[-1]
    rows = math.ceil(len(bank) / columns)
    tiles = np.full((rows * (k + 1) - 1, min(columns, len(bank)) * (k + 1) - 1), np.nan)
    for i, f in enumerate(bank):
        r, c = divmod(i, columns)
        tiles[r * (k + 1):r * (k + 1) + k, c * (k + 1):c * (k + 1) + k] = f
    return tiles


def show_filters(ax, bank, title: str = "", columns: int = 8, limit: int = 32) -> None:
    tiles = _tiles(bank, columns, limit)
    scale = np.nanmax(np.abs(tiles)) or 1.0
    ax.imshow(tiles, cmap="RdBu_r", vmin=-scale, vmax=scale)
    ax.set_title(title)
    ax.axis("off")


def show_envelope(ax, envelope: np.ndarray, title: str = "", vmax: float | None = None):
    freq = spectra.frequencies(envelope.shape[-1])
    image = ax.imshow(envelope, extent=(freq[0], freq[-1], freq[-1], freq[0]), vmin=0, vmax=vmax)
    ax.set_title(title)
    ax.set_xlabel("cycles/pixel")
    ax.grid(False)
    return image


def envelope_grid_figure(sizes=(1, 4, 16, 64), k: int = 8, grid: int = 256):
    """Fig 1: spectral envelopes of 1, 4, 16, 64 random k×k filters (unit energy), on a common colour scale."""
    from ..plotting import figure
    fig, axes = figure(1, len(sizes), width=2.4 * len(sizes), height=2.6)
    envelopes = [spectra.spectral_envelope(random_bank(n, k, 2, seed=n), grid) for n in sizes]
    vmax = max(e.max() for e in envelopes)
    for ax, n, env in zip(axes, sizes, envelopes):
        show_envelope(ax, env, f"{n} filter{'s' if n > 1 else ''}: coverage {spectra.coverage(env):.2f}", vmax)
    return fig


def envelope_1d_figure(sizes=(1, 4, 16, 64), k: int = 8, grid: int = 512):
    """App. A.2 / Fig 16: left, overlaid |FFT| of 1, 4, 16, 64 random 8-tap filters; right, their envelopes."""
    from ..plotting import figure
    fig, axes = figure(len(sizes), 2, width=6.4, height=1.5 * len(sizes), sharex=True, sharey=True)
    freq = spectra.frequencies(grid)
    for row, n in enumerate(sizes):
        bank = random_bank(n, k, 1, seed=n)
        responses = spectra.magnitude_response(bank, grid)
        envelope = spectra.spectral_envelope(bank, grid)
        axes[row, 0].plot(freq, responses.T, lw=0.7, alpha=0.8)
        axes[row, 1].fill_between(freq, envelope, alpha=0.4)
        axes[row, 1].plot(freq, envelope, lw=1)
        axes[row, 0].set_ylabel(f"{n} filter{'s' if n > 1 else ''}")
        axes[row, 1].set_title(f"coverage {spectra.coverage(envelope):.2f}", fontsize=8)
    axes[0, 0].set_title("individual spectra")
    axes[-1, 0].set_xlabel("frequency (cycles/sample)")
    axes[-1, 1].set_xlabel("frequency (cycles/sample)")
    return fig


def coverage_figure(sizes=(1, 2, 4, 8, 16, 32, 64, 128), k: int = 3, grid: int = 128, seeds: int = 5):
    """Coverage against bank size for the four static banks of the ResNet experiment (3×3, unit energy), and the
    envelope of each bank at 64 filters."""
    fig = __import__("matplotlib.pyplot", fromlist=["figure"]).figure(figsize=(9.6, 4.6), constrained_layout=True)
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.1, 1])
    ax = top.subplots()
    labels = {"random": "Different (random)", "same": "Same (9 kernels repeated)", "box": "Box", "identity": "Identity"}
    for kind, label in labels.items():
        mean, sd = coverage_curve(kind, sizes, k, seeds, grid)
        ax.errorbar(sizes, mean, yerr=sd, marker="o", capsize=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set(xlabel=f"number of {k}×{k} filters in the bank", ylabel="coverage (mean of envelope)")
    ax.legend(ncols=2)
    axes = bottom.subplots(1, 4)
    envelopes = {label: spectra.spectral_envelope(named_bank(kind, 64, k), grid) for kind, label in labels.items()}
    vmax = max(e.max() for e in envelopes.values())
    for a, (label, env) in zip(axes, envelopes.items()):
        show_envelope(a, env, label.split(" (")[0], vmax)
    return fig


def rank_table(rows: list[dict]) -> list[dict]:
    """:func:`lib.spatial_rank.rank_statistics` rows formatted for the notebook (the chapter's models named)."""
    models = {1: "ConvMixer (one filter per channel)", 3: "Chans (d=3)", 9: "Chans (d=9), Full, Same"}
    return [{"d": r["d"], "models": models.get(r["d"], ""),
             "rank": f"{r['rank_mean']:.0f}" if r["rank_min"] == r["rank_max"] else
                     f"{r['rank_mean']:.2f} ({r['rank_min']}-{r['rank_max']})",
             "spans all 3×3 kernels": "yes" if r["rank_min"] == r["span"] else "no",
             "condition number: mean ± sd": f"{r['condition_mean']:.1f} ± {r['condition_sd']:.1f}",
             "median (5-95%)": f"{r['condition_median']:.1f} ({r['condition_p05']:.1f}-{r['condition_p95']:.1f})",
             "smallest σ: mean ± sd": f"{r['smallest_mean']:.3f} ± {r['smallest_sd']:.3f}"} for r in rows]


def rank_figure(rows: list[dict]):
    """Rank, condition number and smallest singular value of the d×9 matrix of d frozen random 3×3 filters against d
    (:func:`lib.spatial_rank.rank_statistics`: mean, with min-max for the rank and the 5-95 % range otherwise)."""
    from ..plotting import figure
    d = np.array([r["d"] for r in rows])
    span = rows[0]["span"]
    fig, (a, b, c) = figure(1, 3, width=10.0, height=3.0)
    rank = np.array([r["rank_mean"] for r in rows])
    a.errorbar(d, rank, yerr=[rank - [r["rank_min"] for r in rows], [r["rank_max"] for r in rows] - rank],
               marker="o", capsize=3, label="measured (min-max)")
    a.plot(d, np.minimum(d, span), "k:", lw=1, label=f"min(d, {span})")
    a.axhline(span, color="0.5", ls="--", lw=1)
    a.set(xlabel="d (frozen filters per channel)", ylabel="rank", title=f"span of the filters (of {span})")
    a.legend(fontsize=7)
    for ax, key, label in ((b, "condition", "condition number σmax/σmin"), (c, None, "smallest singular value")):
        if key:
            median = np.array([r["condition_median"] for r in rows])
            ax.fill_between(d, [r["condition_p05"] for r in rows], [r["condition_p95"] for r in rows], alpha=0.25,
                            label="5-95%")
            ax.plot(d, median, marker="o", label="median")
            ax.plot(d, [r["condition_mean"] for r in rows], "s--", ms=3, lw=1, label="mean")
            ax.set_yscale("log")
            ax.legend(fontsize=7)
        else:
            mean = np.array([r["smallest_mean"] for r in rows])
            ax.errorbar(d, mean, yerr=[r["smallest_sd"] for r in rows], marker="o", capsize=3)
            ax.set_ylim(0, None)
        ax.set(xlabel="d (frozen filters per channel)", ylabel=label)
    for ax in (a, b, c):
        ax.set_xticks(d)
    c.set_title(f"filters uniform ±1/3; {rows[0]['draws']} draws per d", fontsize=8)
    return fig


def envelope_frame(n: int, k: int = 8, grid: int = 128, vmax: float = 3.0):
    """One frame of the bank-size widget: the first filters of a random bank of ``n`` and its envelope."""
    from ..plotting import figure
    bank = random_bank(n, k, 2, seed=n)
    fig, (a, b) = figure(1, 2, width=6.0, height=2.8)
    show_filters(a, bank, f"{min(n, 32)} of {n} random {k}×{k} filters")
    env = spectra.spectral_envelope(bank, grid)
    image = show_envelope(b, env, f"envelope, coverage {spectra.coverage(env):.2f}", vmax)
    fig.colorbar(image, ax=b, shrink=0.8)
    return fig


def envelope_explorer(sizes=(1, 2, 4, 8, 16, 32, 64, 128)):
    """Widget (a), kernel-free: bank size → filters and spectral envelope."""
    from ..plotting import to_png
    from ..widgets import explorer
    frames = [to_png(envelope_frame(n), dpi=60) for n in sizes]
    return explorer(frames, [f"{n} filter{'s' if n > 1 else ''}" for n in sizes], description="bank size")


def _by_depth(results, selector_for_depth, depths, metric):
    means, sds = [], []
    for depth in depths:
        m, s = mean_sd(x[metric] for x in select(results, **selector_for_depth(depth)))
        means.append(m)
        sds.append(s)
    return np.asarray(means), np.asarray(sds)


def _depth_figure(results: list[dict], depths, curves: dict, depth_label: str):
    """Accuracy, training time and time per trainable parameter against depth, one curve per variant
    (``curves``: label → function of depth giving the results selector)."""
    from ..plotting import figure, provenance_footer
    fig, axes = figure(1, 3, width=10.0, height=3.0)
    for label, selector_for_depth in curves.items():
        for ax, metric in zip(axes, ("accuracy", "train_time_s", "time_per_trainable_parameter_us")):
            mean, sd = _by_depth(results, selector_for_depth, depths, metric)
            ax.errorbar(depths, mean, yerr=sd, marker="o", capsize=3, label=label)
    for ax in axes:
        ax.set_xticks(depths)
    axes[0].set(xlabel=depth_label, ylabel="test accuracy")
    axes[1].set(xlabel="depth", ylabel="training time (s)")
    axes[2].set(xlabel="depth", ylabel="training time per trainable parameter (µs)")
    axes[2].set_yscale("log")
    axes[0].legend()
    provenance_footer(fig, [x for x in results if x is not None])
    return fig


def resnet_figure(results: list[dict], profile: str):
    """Figs 2-3 / workshop Figs 3-5: accuracy, training time and time per trainable parameter against depth."""
    curves = {label: (lambda d, label=label: resnet_selector(label, d)) for label in RESNET_VARIANTS}
    return _depth_figure(results, SETTINGS[profile]["resnet"]["depths"], curves, "depth n (6n+2 layers)")


def static_figure(results: list[dict], profile: str):
    """Fig 5 / workshop Fig 6: accuracy of Full and of Chans with the Different, Same, Box, Identity banks."""
    from ..plotting import figure, provenance_footer
    depth = SETTINGS[profile]["resnet"]["headline_depth"]
    bars = {"Full": resnet_selector("Full", depth)}
    bars.update({label: resnet_selector("Chans (d=9)", depth, bank) for label, bank in STATIC_BANKS.items()})
    used = [x for sel in bars.values() for x in select(results, **sel)]
    fig, ax = figure(width=5.0, height=3.0)
    for i, (label, sel) in enumerate(bars.items()):
        values = [x["accuracy"] for x in select(results, **sel)]
        m, s = mean_sd(values)
        ax.bar(i, m, yerr=s, capsize=4, color=f"C{i}")
        ax.scatter([i] * len(values), values, color="k", s=8, zorder=3)
    ax.axhline(0.1, color="0.5", ls=":", lw=1)
    ax.set_xticks(range(len(bars)), list(bars))
    ax.set_ylabel("test accuracy")
    ax.set_title(f"separable ResNet, depth n={depth}: static depthwise banks")
    provenance_footer(fig, used)
    return fig


def convmixer_selector(mixing: str, depth: int, profile: str, keep: int | None = None) -> dict:
    c = SETTINGS[profile]["convmixer"]
    # patch_size is a key only classification ConvMixers have: un-shuffling runs of the same width, depth and mixing
    # must never be picked up here
    return {"mixing": mixing, "depth": depth, "dim": c["dim"], "patch_size": c["patch_size"],
            "smoothing_keep": None if keep in (None, c["kernel_size"]) else keep}


def convmixer_figure(results: list[dict], profile: str):
    """Figs 4, 6 / workshop Figs 7-9: ConvMixer accuracy, training time and time per trainable parameter."""
    curves = {label: (lambda d, mixing=mixing: convmixer_selector(mixing, d, profile))
              for label, mixing in CONVMIXER_VARIANTS.items()}
    return _depth_figure(results, SETTINGS[profile]["convmixer"]["depths"], curves, "depth (blocks)")


def learned_filters_figure(results: list[dict], profile: str, per_layer: int = 32):
    """Fig 7 / workshop Fig 12 (learned depthwise filters of the depth-4 ConvMixer, one row per layer) and workshop
    Fig 11 (their spectral envelopes next to the envelope of the random initial filters)."""
    from ..plotting import provenance_footer
    import matplotlib.pyplot as plt
    c = SETTINGS[profile]["convmixer"]
    found = select(results, **convmixer_selector("full", c["filters_depth"], profile))
    found = [x for x in found if "filters" in x][:1]
    if not found:
        raise ValueError("no stored learned filters: run the convmixer section first")
    layers, initial = found[0]["filters"], found[0]["initial_filters"]
    fig = plt.figure(figsize=(10, 2.2 * len(layers)), constrained_layout=True)
    left, right = fig.subfigures(1, 2, width_ratios=[1.6, 1])
    axes_f = left.subplots(len(layers), 1)
    axes_e = right.subplots(len(layers), 2)
    envs = [spectra.spectral_envelope(layer, 128) for layer in layers]
    env_random = [spectra.spectral_envelope(layer, 128) for layer in initial]
    vmax = max(e.max() for e in envs + env_random)
    for i, layer in enumerate(layers):
        show_filters(axes_f[i], layer, f"layer {i + 1}: learned {c['kernel_size']}×{c['kernel_size']} filters",
                     columns=16, limit=per_layer)
        show_envelope(axes_e[i, 0], envs[i], f"layer {i + 1} learned", vmax)
        show_envelope(axes_e[i, 1], env_random[i], "random (its init)", vmax)
    provenance_footer(fig, found)
    return fig


def fgsm_figure(results: list[dict], profile: str):
    """Fig 8 / workshop Fig 10: FGSM accuracy against ε for separable ResNets Full, Chans (d=9), Chans (d=3), Space."""
    from ..plotting import figure, provenance_footer
    r = SETTINGS[profile]["resnet"]
    fig, ax = figure(width=5.0, height=3.2)
    used = []
    for label in ("Standard", "Full", "Chans (d=9)", "Chans (d=3)", "Space"):
        found = [x for x in select(results, **resnet_selector(label, r["headline_depth"])) if x.get("fgsm_accuracy")]
        if not found:
            continue
        used += found
        curves = np.array([x["fgsm_accuracy"] for x in found])
        ax.errorbar(r["epsilons_255"], curves.mean(0), yerr=curves.std(0, ddof=1) if len(found) > 1 else None,
                    marker="o", capsize=3, label=label)
    ax.set(xlabel="ε (in 1/255)", ylabel="accuracy under FGSM",
           title=f"separable ResNets, depth n={r['headline_depth']}")
    ax.legend()
    provenance_footer(fig, used)
    return fig


def smoothing_curves(results: list[dict], profile: str) -> dict[int, tuple[np.ndarray, np.ndarray, list[dict]]]:
    """keep K → (mean FGSM curve, sd, results) of the smoothed ConvMixer-Chans models at the headline depth."""
    c = SETTINGS[profile]["convmixer"]
    out = {}
    for keep in c["keeps"]:
        found = [x for x in select(results, **convmixer_selector("chans", c["headline_depth"], profile, keep))
                 if x.get("fgsm_accuracy")]
        if found:
            curves = np.array([x["fgsm_accuracy"] for x in found])
            out[keep] = (curves.mean(0), curves.std(0, ddof=1) if len(found) > 1 else np.zeros(curves.shape[1]),
                         found)
    return out


def smoothing_figure(results: list[dict], profile: str):
    """Fig 9 / workshop Fig 14: FGSM accuracy against ε for ConvMixer-Chans with smoothed random filters, plus the
    fully learned ConvMixer for reference (workshop Fig 15)."""
    from ..plotting import figure, provenance_footer
    c = SETTINGS[profile]["convmixer"]
    fig, ax = figure(width=5.0, height=3.2)
    used = []
    for keep, (mean, sd, found) in smoothing_curves(results, profile).items():
        used += found
        ax.errorbar(c["epsilons_255"], mean, yerr=sd, marker="o", capsize=3,
                    label=f"Chans, smoothing index {smoothing_index(c['kernel_size'], keep)} ({keep}×{keep} kept)")
    full = [x for x in select(results, **convmixer_selector("full", c["headline_depth"], profile))
            if x.get("fgsm_accuracy")]
    if full:
        used += full
        curves = np.array([x["fgsm_accuracy"] for x in full])
        ax.plot(c["epsilons_255"], curves.mean(0), "k--", marker="s", label="Full (learned filters)")
    ax.set(xlabel="ε (in 1/255)", ylabel="accuracy under FGSM", title=f"ConvMixer depth {c['headline_depth']}")
    ax.legend(fontsize=7)
    provenance_footer(fig, used)
    return fig


def smoothed_envelopes_figure(profile: str, n: int = 16, grid: int = 128):
    """Workshop Fig 13: random 8×8 filters after DCT smoothing (top) and their envelopes (bottom)."""
    from ..plotting import figure
    c = SETTINGS[profile]["convmixer"]
    keeps = c["keeps"]
    fig, axes = figure(2, len(keeps), width=2.3 * len(keeps), height=4.6)
    banks = {keep: smoothed_bank(keep, 64, c["kernel_size"]) for keep in keeps}
    envs = {keep: spectra.spectral_envelope(bank, grid) for keep, bank in banks.items()}
    vmax = max(e.max() for e in envs.values())
    for i, keep in enumerate(keeps):
        show_filters(axes[0, i], banks[keep], f"index {smoothing_index(c['kernel_size'], keep)}", columns=4, limit=n)
        show_envelope(axes[1, i], envs[keep], f"coverage {spectra.coverage(envs[keep]):.2f}", vmax)
    return fig


def smoothing_frame(keep: int, curves: dict, profile: str, grid: int = 128):
    """One frame of widget (b): smoothed filters, their envelope, and the FGSM curve of the model trained with them."""
    from ..plotting import figure
    c = SETTINGS[profile]["convmixer"]
    bank = smoothed_bank(keep, 64, c["kernel_size"])
    fig, (a, b, d) = figure(1, 3, width=8.4, height=2.6)
    show_filters(a, bank, f"smoothing index {smoothing_index(c['kernel_size'], keep)}", columns=4, limit=16)
    env = spectra.spectral_envelope(bank, grid)
    reference = max(spectra.spectral_envelope(smoothed_bank(k, 64, c["kernel_size"]), grid).max() for k in c["keeps"])
    show_envelope(b, env, f"envelope, coverage {spectra.coverage(env):.2f}", reference)
    for k, (mean, sd, _) in curves.items():
        style = dict(color="C3", lw=2, marker="o") if k == keep else dict(color="0.75", lw=1)
        d.plot(c["epsilons_255"], mean, **style)
    d.set(xlabel="ε (in 1/255)", ylabel="FGSM accuracy", ylim=(0, None), title="trained model (red)")
    return fig


def smoothing_explorer(results: list[dict], profile: str):
    """Widget (b), kernel-free: smoothing index → smoothed filters, envelope and the precomputed FGSM curve."""
    from ..plotting import to_png
    from ..widgets import explorer
    c = SETTINGS[profile]["convmixer"]
    curves = smoothing_curves(results, profile)
    keeps = [k for k in c["keeps"] if k in curves]
    frames = [to_png(smoothing_frame(k, curves, profile), dpi=60) for k in keeps]
    labels = [f"index {smoothing_index(c['kernel_size'], k)} (keep {k}×{k})" for k in keeps]
    return explorer(frames, labels, description="smoothing")


def unshuffle_base(profile: str) -> dict:
    u = SETTINGS[profile]["unshuffle"]
    # image_scale is a key only un-shuffling runs have (see convmixer_selector)
    return {k: u[k] for k in ("dim", "depth", "kernel_size", "image_scale")}


def _oracle_of(oracle: list[dict] | None, dataset: str, depth: int, kernel_size: int) -> float:
    """The oracle PSNR of :func:`unshuffle_reach` rows for one model, NaN when absent or at the metric's cap."""
    for row in oracle or []:
        if (row["dataset"], row["depth"], row["kernel_size"]) == (dataset, depth, kernel_size):
            value = row["oracle PSNR (dB)"]
            return value if value < PSNR_CAP_DB - 1e-6 else math.nan
    return math.nan


def unshuffle_figure(results: list[dict], profile: str, oracle: list[dict] | None = None):
    """Test PSNR of Full / Chans / Space per dataset (base model), and PSNR against depth, width and kernel on
    CIFAR-10 (paper Fig 12). ``oracle``: rows of :func:`unshuffle_reach`, drawn as dotted lines (the PSNR of restoring
    every pixel within the receptive field exactly and the mean image elsewhere; not drawn where it is the cap)."""
    from ..plotting import figure, provenance_footer
    u = SETTINGS[profile]["unshuffle"]
    base = unshuffle_base(profile)
    datasets = [d for d in u["datasets"] if select(results, dataset=d)]
    fig, axes = figure(1, 4, width=11.0, height=3.0)
    used = []
    for j, (label, mixing) in enumerate(CONVMIXER_VARIANTS.items()):
        values = [mean_sd(x["psnr"] for x in select(results, dataset=d, mixing=mixing, **base)) for d in datasets]
        axes[0].bar(np.arange(len(datasets)) + 0.27 * (j - 1), [v[0] for v in values], 0.27, label=label)
    for i, d in enumerate(datasets):
        reference = mean_sd(x.get("mean_image_psnr") for x in select(results, dataset=d, **base))[0]
        axes[0].hlines(reference, i - 0.45, i + 0.45, colors="k", linestyles="--", lw=1,
                       label="mean image" if i == 0 else None)
        ceiling = _oracle_of(oracle, d, u["depth"], u["kernel_size"])
        if not math.isnan(ceiling):
            axes[0].hlines(ceiling, i - 0.45, i + 0.45, colors="C3", linestyles=":", lw=1.5,
                           label="reach oracle" if i == 0 else None)
    axes[0].set_xticks(range(len(datasets)), datasets)
    axes[0].set(ylabel="test PSNR (dB)", title="base model")
    # below the axes: inside, the legend hides the bars (all variants sit between the mean image and ~20 dB)
    axes[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, fontsize=7)
    for ax, (field, values) in zip(axes[1:], u["sweep"].items()):
        for label in ("Full", "Chans"):
            points = []
            for v in values:
                found = select(results, dataset="cifar10", mixing=CONVMIXER_VARIANTS[label], **{**base, field: v})
                used += found
                points.append(mean_sd(x["psnr"] for x in found)[0])
            ax.plot(values, points, marker="o", label=label)
        ceilings = [_oracle_of(oracle, "cifar10", v if field == "depth" else u["depth"],
                               v if field == "kernel_size" else u["kernel_size"]) for v in values]
        if not all(math.isnan(c) for c in ceilings):
            ax.plot(values, ceilings, color="C3", ls=":", marker=".", lw=1.5, label="reach oracle")
        ax.set_xticks(values)
        ax.set(xlabel={"dim": "width"}.get(field, field.replace("_", " ")), ylabel="PSNR (dB)", title="CIFAR-10")
        ax.legend()
    used += [x for x in results if x is not None and x["config"]["dataset"] != "cifar10"]
    provenance_footer(fig, list({id(x): x for x in used}.values()))
    return fig


def samples_figure(results: list[dict], profile: str, dataset: str, mixing: str = "chans"):
    """Figs 10, 11, 13: random test samples, shuffled / reconstructed / original (base model)."""
    from ..plotting import figure, provenance_footer
    found = select(results, dataset=dataset, mixing=mixing, **unshuffle_base(profile))[:1]
    if not found:
        raise ValueError(f"no un-shuffling result for {dataset!r} ({mixing}); run the unshuffle section first")
    samples = found[0]["samples"]
    n = len(samples["original"])
    fig, axes = figure(3, n, width=1.1 * n, height=3.6)
    for row, key in enumerate(("shuffled", "reconstructed", "original")):
        for i in range(n):
            image = samples[key][i].transpose(1, 2, 0)
            axes[row, i].imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
            axes[row, i].axis("off")
        axes[row, 0].set_title(key, loc="left", fontsize=8)
    fig.suptitle(f"{dataset}, {mixing}: PSNR {found[0]['psnr']:.1f} dB", fontsize=9)
    provenance_footer(fig, found)
    return fig
