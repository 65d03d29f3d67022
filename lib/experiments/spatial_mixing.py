"""Experiments of the chapter "Spatial mixing" (Cazenavette, Julin & Lucey: workshop and later versions).

Sections (``runs(profile, section)``):

* ``resnet``: separable pre-activation ResNets (standard / Full / Chans d=9 / Chans d=3 / Space) over depths, with
  training time and an FGSM curve per model (paper Figs 2, 3, 8; workshop Figs 3-5, 10);
* ``static``: Chans ResNets whose frozen depthwise bank is Same / Box / Identity (paper Fig 5, workshop Fig 6);
* ``convmixer``: ConvMixer Full / Chans / Space over depths (paper Figs 4, 6, 7; workshop Figs 7-9, 11, 12);
* ``smoothing``: ConvMixer-Chans with DCT-smoothed random filters and their FGSM curves (paper Fig 9, workshop
  Figs 13-14);
* ``unshuffle``: patch-1 ConvMixers that undo a fixed pixel permutation (later version §4.4, Figs 10-13).
* ``timing``: compute time per training step of every ResNet and ConvMixer variant, interleaved in an isolated loop
  (:func:`step_times`: process CPU time on one thread, CUDA events on a GPU), for the timing claims.

The spectral-envelope figures need no training; :func:`random_bank`, :func:`named_bank` and :func:`coverage_curve`
compute them directly; so do the rank of the frozen filter banks (:mod:`lib.spatial_rank`, :func:`rank_figure`) and
the reach of the un-shuffling networks (:func:`unshuffle_reach`: pixels outside the receptive field, oracle PSNR).
:func:`claims` turns stored results into the closing claims table: paired per-seed comparisons of per-image outcomes
through :mod:`lib.claims`, with margins stated in advance (:data:`ACC_MARGIN` …).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from .. import data, spectra
from ..attacks import correct_under_attack
from ..claims import (format_mean_sd, format_paired, mcnemar_p, paired_outcomes, paired_values, verdict_equivalent,
                      qualify, verdict_paired, verdict_paired_margin)
from ..claims import mean_sd as _mean_sd_count
from ..filters.dct import dct_lowpass, smoothing_index
from ..models.convmixer import ConvMixer
from ..models.separable_resnet import SeparableResNet
from ..training import (TrainConfig, channels_last_unsafe_convs, count_parameters, fit, make_optimizer, predict,
                        psnr)
from ..unshuffle import PixelPermutation
from . import Run

CHAPTER = "spatial_mixing"
SECTIONS = ("resnet", "static", "convmixer", "smoothing", "unshuffle", "timing")

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
# the smoothing the claims judge, fixed before any result was seen: keep the 6×6 lowest DCT coefficients of the 8×8
# filters, smoothing index 28, the larger of the two indices App. A.3 names (the papers do not say which index their
# "over 25 %" refers to)
SMOOTHING_KEEP = 6

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
                   "epsilons_255": _EPS_255, "pgd_epsilons_255": [8], "pgd_steps": 3,
                   "train": {"epochs": 2, "batch_size": 32, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 5e-4,
                             "schedule": "onecycle", "warmup_fraction": 0.2, "channels_last": True}},
        "convmixer": {"dataset": "cifar10", "image_size": 32, "train_size": 2560, "test_size": 500, "dim": 32,
                      "depths": [2, 4], "headline_depth": 2, "filters_depth": 4, "kernel_size": 8, "patch_size": 2,
                      "seeds": [0, 1], "attack_size": 100, "epsilons_255": _EPS_255,
                      "pgd_epsilons_255": [8], "pgd_steps": 3, "keeps": [8, 7, 6, 4],
                      "train": {"epochs": 3, "batch_size": 64, "optimizer": "adamw", "lr": 5e-3,
                                "weight_decay": 1e-2, "schedule": "onecycle", "warmup_fraction": 0.2,
                                "channels_last": True}},
        "unshuffle": {"datasets": ["fashion_mnist", "cifar10"], "image_scale": 2, "train_size": 5000,
                      "test_size": 100, "dim": 32, "depth": 4, "kernel_size": 5, "variants": ["Full", "Chans", "Space"],
                      "seeds": [0], "sweep": {"depth": [2, 4], "dim": [16, 32], "kernel_size": [3, 5]}, "samples": 6,
                      "psnr_items": 100,
                      "train": {"epochs": 5, "batch_size": 64, "optimizer": "adamw", "lr": 1e-2,
                                "weight_decay": 0.0, "schedule": "onecycle", "warmup_fraction": 0.2,
                                "loss": "mse", "channels_last": True}},
        "timing": {"steps": 6, "warmup": 2},
    },
    # medium: full CIFAR-10 (50,000 / 10,000) and full Fashion-MNIST (60,000 / 10,000), sized for ≤ ~8 single-thread
    # CPU-hours (two runners of one thread each). Per training step, batch 128, process CPU time on one thread of
    # this 2-core machine while both cores were busy (2026-12-01): separable ResNet n=1, width 16, 16×16 images:
    # Standard 91 ms, Full 415, Chans d=9 342, Chans d=3 158, Space 344; ConvMixer-64/4, patch 2, k 8, 32×32: Full
    # 518, Chans 364, Space 466; un-shuffler 32/5, k 7, 14×14: Full 264, Chans 192, Space 275 (width 64: 620,
    # kernel 9: 268). With 391 steps per CIFAR epoch and 4 epochs: ResNets 186 min (24 runs, 2.4-11 min each),
    # ConvMixers 153 min (17 runs, 9.5-13.5 min each); un-shuffling, 469 steps per epoch, 2 epochs: ~73 min (17
    # runs); evaluation and attacks ~+11 %: ~7.5 h in all. The ResNets use 16×16 images (average-pooled) because at
    # 32×32 a Full step takes 1,270 ms: the ~15 epochs a ResNet-8 needs for 75 % would take ~2.1 h per run, ~50 h for
    # the 24 ResNet runs; 75 % is out of this budget, 4 epochs is what fits (the accuracy reached is in the closing
    # note). fit_many is not used: it steps in NCHW, where a Full ResNet step takes 530 ms instead of 415 (vmap gains
    # 1.1-1.4× on this CPU), and a 3-seed run would be 3× longer, which unbalances the two runners. Recipe (the
    # ConvMixer authors', shortened): AdamW, one-cycle, random translation (the crop augmentation lib.data.Augment
    # supports in place of their scale augmentation) and flips, for both families. Only the headline depth is trained;
    # 3 seeds for every arm a claim compares; the smoothing indices 15 and 48 (figure only) 1 seed. Un-shuffling on
    # 14×14 Fashion-MNIST with depth 5, kernel 7: receptive field ±15 ≥ 13, every pixel in reach.
    "medium": {
        "resnet": {"dataset": "cifar10", "image_size": 16, "train_size": None, "test_size": None, "width": 16,
                   "depths": [1], "headline_depth": 1, "seeds": [0, 1, 2], "static_seeds": [0, 1, 2],
                   "attack_size": 1000, "epsilons_255": _EPS_255, "pgd_epsilons_255": [2, 8], "pgd_steps": 5,
                   "train": {"epochs": 4, "batch_size": 128, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 5e-4,
                             "schedule": "onecycle", "warmup_fraction": 0.2, "channels_last": True, "eval_every": 4,
                             "augment": {"translate": 2, "mode": "zeros", "flip": True}}},
        "convmixer": {"dataset": "cifar10", "image_size": 32, "train_size": None, "test_size": None, "dim": 64,
                      "depths": [4], "headline_depth": 4, "filters_depth": 4, "kernel_size": 8, "patch_size": 2,
                      "seeds": [0, 1, 2], "attack_size": 1000, "epsilons_255": _EPS_255,
                      "pgd_epsilons_255": [2, 8], "pgd_steps": 5, "keeps": [8, 7, 6, 4], "figure_only_seeds": [0],
                      "train": {"epochs": 4, "batch_size": 128, "optimizer": "adamw", "lr": 5e-3,
                                "weight_decay": 1e-2, "schedule": "onecycle", "warmup_fraction": 0.2,
                                "channels_last": True, "eval_every": 4,
                                "augment": {"translate": 4, "mode": "zeros", "flip": True}}},
        "unshuffle": {"datasets": ["fashion_mnist"], "sweep_dataset": "fashion_mnist", "image_scale": 2,
                      "train_size": None, "test_size": None, "dim": 32, "depth": 5, "kernel_size": 7,
                      "variants": ["Full", "Chans", "Space"], "seeds": [0, 1, 2],
                      "sweep": {"depth": [5, 7], "dim": [16, 32, 64], "kernel_size": [7, 9]}, "samples": 6,
                      "psnr_items": 2000,
                      "train": {"epochs": 2, "batch_size": 128, "optimizer": "adamw", "lr": 1e-2,
                                "weight_decay": 0.0, "schedule": "onecycle", "warmup_fraction": 0.2,
                                "loss": "mse", "channels_last": True, "eval_every": 2}},
        "timing": {"steps": 15, "warmup": 3},
    },
    # paper: full CIFAR-10 / Fashion-MNIST, the papers' architectures (ResNet base width 16 and d=9; ConvMixer-128,
    # kernel 8, patch 1), 3 seeds at the headline depth. Hyper-parameters are ours (the papers give none): SGD+Nesterov
    # one-cycle for the ResNets; the ConvMixer authors' CIFAR recipe (AdamW, one-cycle, lr 0.01, wd 0.01) shortened.
    "paper": {
        "resnet": {"dataset": "cifar10", "image_size": 32, "train_size": None, "test_size": None, "width": 16,
                   "depths": [1, 2, 3], "headline_depth": 3, "seeds": [0, 1, 2], "attack_size": 2000,
                   "epsilons_255": [0, 0.5, 1, 2, 4, 8], "pgd_epsilons_255": [2, 8], "pgd_steps": 10,
                   "train": {"epochs": 6, "batch_size": 256, "optimizer": "sgd", "lr": 0.2, "momentum": 0.9,
                             "nesterov": True, "weight_decay": 5e-4, "schedule": "onecycle",
                             "warmup_fraction": 0.2, "augment": {"translate": 4, "mode": "zeros", "flip": True}}},
        "convmixer": {"dataset": "cifar10", "image_size": 32, "train_size": None, "test_size": None, "dim": 128,
                      "depths": [2, 4, 6], "headline_depth": 4, "filters_depth": 4, "kernel_size": 8,
                      "patch_size": 1, "seeds": [0, 1, 2], "attack_size": 2000,
                      "epsilons_255": [0, 0.5, 1, 2, 4, 8], "pgd_epsilons_255": [2, 8], "pgd_steps": 10,
                      "keeps": [8, 7, 6, 4],
                      "train": {"epochs": 6, "batch_size": 512, "optimizer": "adamw", "lr": 1e-2,
                                "weight_decay": 1e-2, "schedule": "onecycle", "warmup_fraction": 0.2,
                                "augment": {"translate": 4, "mode": "zeros", "flip": True}}},
        "unshuffle": {"datasets": ["fashion_mnist", "cifar10", "mnist"], "image_scale": 1, "train_size": None,
                      "test_size": None,
                      "dim": 128, "depth": 4, "kernel_size": 7, "variants": ["Full", "Chans", "Space"],
                      "seeds": [0], "sweep": {"depth": [2, 4, 8], "dim": [64, 128, 256], "kernel_size": [3, 5, 7]},
                      "samples": 8, "psnr_items": 2000,
                      # the later paper's best model (Fig 13), on CIFAR-10: its receptive field (±48) spans 32×32
                      "best": {"depth": 16, "dim": 512, "kernel_size": 7},
                      "train": {"epochs": 3, "batch_size": 256, "optimizer": "adamw", "lr": 2e-3,
                                "weight_decay": 0.0, "schedule": "onecycle", "warmup_fraction": 0.1,
                                "loss": "mse"}},
        "timing": {"steps": 30, "warmup": 5},
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


def _attacks(model, test, config, device) -> dict:
    """FGSM at every budget of ``epsilons_255`` and PGD (random start, ``pgd_steps`` steps; the check for gradient
    masking) at ``pgd_epsilons_255``, on the same ``attack_size`` test images (data seed 1) for every model."""
    if not config.get("epsilons_255"):
        return {"fgsm_accuracy": None}
    device = torch.device(device)
    x, y = data.subset(*test, config["attack_size"], seed=1)
    budgets = lambda key: [e / 255 for e in config[key]]
    # booleans (budgets × images), eval mode: models compare paired on the same images
    fgsm_ok = correct_under_attack(model, x, y, budgets("epsilons_255"), attack="fgsm", batch_size=250, device=device)
    out = {"fgsm_accuracy": fgsm_ok.mean(1).tolist(), "fgsm_bits": np.packbits(fgsm_ok.ravel()),
           "attack_images": len(x)}
    if config.get("pgd_epsilons_255"):
        # the random start draws from a generator of the run's seed: reruns give the same attack
        generator = torch.Generator().manual_seed(int(config.get("seed", 0)))
        pgd_ok = correct_under_attack(model, x, y, budgets("pgd_epsilons_255"), attack="pgd", batch_size=250,
                                      device=device, steps=config.get("pgd_steps", 10), generator=generator)
        out.update(pgd_accuracy=pgd_ok.mean(1).tolist(), pgd_bits=np.packbits(pgd_ok.ravel()))
    return out


def _summary(out: dict, model, test, config, device) -> dict:
    trainable = count_parameters(model, trainable_only=True)
    # per-image outcomes on the full test split: paired comparisons between models of one seed (lib.claims)
    correct = (predict(model, test[0], device=torch.device(device)).argmax(1) == test[1]).numpy()
    return {"accuracy": out["final"]["accuracy"], "history": out["history"], "train_time_s": out["train_time_s"],
            "trainable_parameters": trainable, "parameters": count_parameters(model),
            "time_per_trainable_parameter_us": 1e6 * out["train_time_s"] / max(trainable, 1),
            "correct_bits": np.packbits(correct), "n_test": len(correct), **_attacks(model, test, config, device)}


def unpack(result: dict, field: str) -> np.ndarray:
    """Per-image booleans stored bit-packed: ``correct_bits`` (test images), ``fgsm_bits`` / ``pgd_bits``
    (budgets × attacked images, in the order of ``epsilons_255`` / ``pgd_epsilons_255``)."""
    bits = np.unpackbits(np.asarray(result[field], dtype=np.uint8)).astype(bool)
    if field == "correct_bits":
        return bits[:result["n_test"]]
    budgets = len(result["config"]["epsilons_255" if field == "fgsm_bits" else "pgd_epsilons_255"])
    n = result["attack_images"]
    return bits[:budgets * n].reshape(budgets, n)


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
    items = x_test[:config.get("psnr_items", len(x_test))]
    per_image = psnr(predict(model, items, input_transform=permutation, device=torch.device(device)), items)
    return {"psnr": out["final"]["psnr"], "mean_image_psnr": float(psnr(mean_image, x_test).mean()),
            # centi-dB as int16: a small, exact-enough record for paired per-image comparisons between models
            "psnr_items_cdb": (100 * per_image).round().clamp(-32768, 32767).to(torch.int16).numpy(),
            "history": out["history"], "train_time_s": out["train_time_s"],
            "trainable_parameters": trainable, "parameters": count_parameters(model),
            "samples": {"shuffled": to_uint8(shuffled), "reconstructed": to_uint8(reconstructed),
                        "original": to_uint8(originals)}}


# --- compute time per training step (no wall time of a shared machine) ----------------------------------------------

def step_times(models: dict, batch: tuple[torch.Tensor, torch.Tensor], config: TrainConfig, *, steps: int = 20,
               warmup: int = 3, device="cpu", input_transform=None) -> dict[str, list[float]]:
    """Seconds of compute per training step (forward, loss, backward, optimiser step) of every model on one fixed
    batch: label → ``steps`` samples taken after ``warmup`` untimed rounds.

    Isolated loop (no data loading, no evaluation), variants interleaved (each round times one step of every model,
    the order rotated from round to round) so that a slow phase of the machine hits all of them alike. The clock is
    CUDA events on a GPU and the process CPU time on a CPU (``time.process_time``: the compute of this process only,
    not the waiting of a loaded machine; single-threaded when the caller sets one thread, as :func:`measure_timing`
    does). Round r of every label is paired: ``samples[a][r]`` and ``samples[b][r]`` ran back to back."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be ≥ 1 and warmup ≥ 0, got {steps}, {warmup}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    channels_last = cuda if config.channels_last is None else config.channels_last
    if channels_last and not cuda and any(channels_last_unsafe_convs(m) for m in models.values()):
        channels_last = False  # as lib.training.fit does: the oneDNN backward of these convolutions is broken
    amp = cuda if config.amp is None else config.amp
    x = data.to_unit(batch[0].to(device))
    if input_transform is not None:
        x = input_transform(x)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = batch[1].to(device)
    target = data.to_unit(y) if config.loss == "mse" else y
    state = {}
    for label, model in models.items():
        model.to(device).train()
        if channels_last:
            model.to(memory_format=torch.channels_last)
        state[label] = (model, make_optimizer(model, config))
    labels = list(models)
    samples = {label: [] for label in labels}
    for round_ in range(warmup + steps):
        shift = round_ % len(labels)
        for label in labels[shift:] + labels[:shift]:
            model, optimizer = state[label]
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            else:
                t0 = time.process_time()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = model(x)
            loss = (F.mse_loss(out.float(), target) if config.loss == "mse"
                    else F.cross_entropy(out.float(), target))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if cuda:
                end.record()
                end.synchronize()
                seconds = start.elapsed_time(end) / 1000
            else:
                seconds = time.process_time() - t0
            if round_ >= warmup:
                samples[label].append(seconds)
    return samples


def _timing_models(config: dict, mean, std, in_channels: int) -> dict:
    if config["family"] == "resnet":
        return {label: SeparableResNet(config["depth"], conv=v["conv"], mixing=v["mixing"],
                                       depth_multiplier=v["depth_multiplier"], width=config["width"],
                                       in_channels=in_channels, mean=mean, std=std)
                for label, v in RESNET_VARIANTS.items()}
    return {label: ConvMixer(config["dim"], config["depth"], kernel_size=config["kernel_size"],
                             patch_size=config["patch_size"], mixing=mixing, in_channels=in_channels, mean=mean,
                             std=std) for label, mixing in CONVMIXER_VARIANTS.items()}


def measure_timing(config: dict, device) -> dict:
    """Run function of the ``timing`` section: :func:`step_times` of every variant of one family (the headline
    models, their batch size and optimiser) on one batch of real training images; one thread on a CPU."""
    device = torch.device(device)
    images, labels = data.subset(*data.load(config["dataset"], "train"), config["train"]["batch_size"], seed=0)
    images = _resize(images, config["image_size"])
    mean, std = data.stats(config["dataset"])
    torch.manual_seed(config["seed"])
    models = _timing_models(config, mean, std, images.shape[1])
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)  # per-step CPU time of one thread: what the medium runners use, load-independent
    try:
        samples = step_times(models, (images, labels), _train_config(config), steps=config["steps"],
                             warmup=config["warmup"], device=device)
    finally:
        torch.set_num_threads(threads)
    return {"clock": "CUDA events" if device.type == "cuda" else "process CPU time, 1 thread",
            "device_type": device.type,
            "variants": {label: {"samples_s": samples[label], "median_s": float(np.median(samples[label])),
                                 "trainable_parameters": count_parameters(m, trainable_only=True),
                                 "parameters": count_parameters(m)} for label, m in models.items()}}


# --- the runs of every section ---------------------------------------------------------------------------------------

_OPTIONAL = ("pgd_epsilons_255", "pgd_steps")  # keys a profile may leave out (then no PGD)


def _resnet_config(s: dict, depth: int, seed: int, variant: dict, filters: str = "random") -> dict:
    config = {k: s[k] for k in ("dataset", "image_size", "train_size", "test_size", "width", "attack_size",
                                "epsilons_255", "train") + _OPTIONAL if k in s}
    return {**config, **variant, "depth": depth, "seed": seed, "filters": filters}


def _convmixer_config(s: dict, depth: int, seed: int, mixing: str, keep: int | None = None) -> dict:
    config = {k: s[k] for k in ("dataset", "image_size", "train_size", "test_size", "dim", "kernel_size",
                                "patch_size", "attack_size", "epsilons_255", "train") + _OPTIONAL if k in s}
    # only the figure's model keeps its filters (Fig 7: seed 0, Full): k² floats per channel and layer, twice (learned
    # and initial), would otherwise weigh ~0.4 MB per committed medium result
    config.update(depth=depth, seed=seed, mixing=mixing,
                  keep_filters=depth == s["filters_depth"] and mixing == "full" and seed == s["seeds"][0])
    if keep is not None and keep != s["kernel_size"]:
        config["smoothing_keep"] = keep  # keep = k is the plain random model: same config, same stored result
    return config


def _unshuffle_config(s: dict, dataset: str, mixing: str, seed: int, **overrides) -> dict:
    config = {k: s[k] for k in ("image_scale", "train_size", "test_size", "dim", "depth", "kernel_size", "samples",
                                "psnr_items", "train") if k in s}
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
            # the index the claims judge gets every seed; the others only draw the figure's curve
            seeds = c["seeds"] if keep == SMOOTHING_KEEP else c.get("figure_only_seeds", c["seeds"])
            for seed in seeds:
                out.append(Run(CHAPTER, "convmixer", _convmixer_config(c, c["headline_depth"], seed, "chans", keep),
                               train_convmixer, "smoothing"))
    for dataset in [d for d in u["datasets"] if d != "mnist" or _available(d)]:
        for label in u["variants"]:
            for seed in u["seeds"]:
                out.append(Run(CHAPTER, "unshuffle", _unshuffle_config(u, dataset, CONVMIXER_VARIANTS[label], seed),
                               train_unshuffle, "unshuffle"))
    sweep_dataset = u.get("sweep_dataset", "cifar10")
    for field, values in u["sweep"].items():
        for value in values:
            for label in ("Full", "Chans"):
                config = _unshuffle_config(u, sweep_dataset, CONVMIXER_VARIANTS[label], u["seeds"][0],
                                           **{field: value})
                out.append(Run(CHAPTER, "unshuffle", config, train_unshuffle, "unshuffle"))
    if u.get("best"):  # the later paper's best un-shuffler, Full and Chans
        for label in ("Full", "Chans"):
            config = _unshuffle_config(u, "cifar10", CONVMIXER_VARIANTS[label], u["seeds"][0], **u["best"])
            out.append(Run(CHAPTER, "unshuffle", config, train_unshuffle, "unshuffle"))
    t = SETTINGS[profile]["timing"]
    for family, base in (("resnet", _resnet_config(r, r["headline_depth"], 0, {})),
                         ("convmixer", _convmixer_config(c, c["headline_depth"], 0, "full"))):
        config = {k: base[k] for k in ("dataset", "image_size", "width", "dim", "kernel_size", "patch_size", "depth",
                                       "seed", "train") if k in base}
        out.append(Run(CHAPTER, "timing", {**config, "family": family, "timing": True, **t}, measure_timing,
                       "timing"))
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
            rows.append({"depth n": depth, "layers": 6 * depth + 2, "model": label, "predicted (the formulas)": predicted,
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
    sweep = u.get("sweep_dataset", "cifar10")
    for field in ("depth", "kernel_size"):
        for value in u["sweep"].get(field, []):
            depth = value if field == "depth" else u["depth"]
            kernel = value if field == "kernel_size" else u["kernel_size"]
            if (depth, kernel) != (u["depth"], u["kernel_size"]):
                models.append((sweep, f"sweep {field.replace('_', ' ')} {value}", depth, kernel))
    models.append((sweep, "papers' best (width 512)", BEST_UNSHUFFLER["depth"], BEST_UNSHUFFLER["kernel_size"]))
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

# Margins of the verbal claims, stated before any result was seen. Accuracy in fractions, PSNR in dB, time as a log
# ratio. Every verdict is a paired comparison (lib.claims): models of one seed saw the same batches and are scored on
# the same test images, so each seed gives a difference of per-image outcomes; the interval over the seeds is widened
# by the test sample's noise, and one seed is "inconclusive (1 seed)".
ACC_MARGIN = 0.02            # "barely below", "competitive", "≈": at most 2 accuracy points
FAR_MARGIN = 0.05            # "significantly worse", "large drop", "completely out-classed": more than 5 points
CLEAN_MARGIN = 0.01          # "not hurting clean accuracy at all": at most 1 point lower
PSNR_MARGIN_DB = 1.0         # un-shuffling "shockingly close": Chans at most 1 dB below Full
TIME_MARGIN = math.log(1.2)  # "minimal time save": per-step times within 20 % of each other
RELATIVE_GAIN = 1.25         # smoothing: "relative performance increase of over 25 %"


def _seeded(found: list[dict], value) -> dict:
    return {int(r["config"]["seed"]): value(r) for r in found}


def _having(found: list[dict], field: str) -> list[dict]:
    return [r for r in found if r.get(field) is not None]


def _robust_items(result: dict, attack: str = "fgsm") -> np.ndarray:
    """Per attacked image: the fraction of the budgets ε > 0 at which it stays right (FGSM or PGD): the robustness
    the claims compare, over the whole curve rather than at a budget picked after looking."""
    field, budgets = (("fgsm_bits", "epsilons_255") if attack == "fgsm" else ("pgd_bits", "pgd_epsilons_255"))
    mask = np.asarray(result["config"][budgets], dtype=float) > 0
    return unpack(result, field)[mask].mean(0)


def _at_budget(result: dict, epsilon_255: float, attack: str = "fgsm") -> np.ndarray:
    field, budgets = (("fgsm_bits", "epsilons_255") if attack == "fgsm" else ("pgd_bits", "pgd_epsilons_255"))
    return unpack(result, field)[list(result["config"][budgets]).index(epsilon_255)]


def _accuracy_comparison(reference: list[dict], candidate: list[dict]) -> dict:
    reference, candidate = _having(reference, "correct_bits"), _having(candidate, "correct_bits")
    return paired_outcomes(_seeded(reference, lambda r: unpack(r, "correct_bits")),
                           _seeded(candidate, lambda r: unpack(r, "correct_bits")))


def _robust_comparison(reference: list[dict], candidate: list[dict], attack: str = "fgsm",
                       reference_scale: float = 1.0) -> dict:
    field = "fgsm_bits" if attack == "fgsm" else "pgd_bits"
    reference, candidate = _having(reference, field), _having(candidate, field)
    return paired_values(_seeded(reference, lambda r: _robust_items(r, attack)),
                         _seeded(candidate, lambda r: _robust_items(r, attack)), reference_scale)


def _paired_text(comparison: dict, scale: float = 100.0, unit: str = " pt", digits: int = 1) -> str:
    """``paired +1.2 ± 0.3 pt (n=3)``, with the McNemar count when per-image outcomes are booleans."""
    if not comparison["differences"]:
        return "not run"
    if comparison["p_values"]:
        return "paired " + format_paired(comparison, scale=scale, digits=digits, unit=unit)
    mean, sd, n = _mean_sd_count(comparison["differences"])
    return f"paired {scale * mean:+.{digits}f}{f' ± {scale * sd:.{digits}f}' if n > 1 else ''}{unit} (n={n})"


def _verdict(comparison: dict, kind: str, margin: float = 0.0) -> str:
    """``kind``: "greater" (difference > margin), "not_worse" (difference > −margin) or "equivalent" (|difference|
    < margin), from the per-seed differences and their sampling variances."""
    d, v = comparison["differences"], comparison["sampling_variances"]
    if not d:
        return "not run"
    if len(d) > 1 and np.ptp(d) == 0 and not any(v):
        # shifting identical differences by a margin leaves a round-off spread (~1e-35) that verdict_paired would
        # read as certainty: identical outcomes decide nothing, whatever the margin
        return "inconclusive (no spread)"
    if kind == "equivalent":
        return verdict_equivalent(d, margin=margin, sampling_variances=v)
    return verdict_paired_margin(d, margin=-margin if kind == "greater" else margin, sampling_variances=v)


def _arm_text(found: list[dict], field: str = "accuracy", scale: float = 100, unit: str = "%") -> str:
    return format_mean_sd([scale * r[field] for r in found if r.get(field) is not None], unit=unit)


def timing_by_family(results: list[dict]) -> dict[str, dict]:
    """family ("resnet", "convmixer") → the stored :func:`measure_timing` result."""
    return {r["config"]["family"]: r for r in results if r is not None and r["config"].get("timing")}


def _timing_row(timing: dict | None, slow: str, fast: str, kind: str = "greater", per_parameter: bool = False):
    """(ours, verdict) for "``slow`` takes longer per step than ``fast``" (or, ``kind="equivalent"``, "within
    :data:`TIME_MARGIN`"), from the interleaved rounds of :func:`step_times` paired round by round (log ratios)."""
    if timing is None:
        return "not run", "not run"
    a, b = timing["variants"][slow], timing["variants"][fast]
    d = np.log(np.asarray(a["samples_s"])) - np.log(np.asarray(b["samples_s"]))
    what = "per step"
    if per_parameter:  # time per trainable parameter: log(t_a / p_a) − log(t_b / p_b)
        d = d - math.log(a["trainable_parameters"] / b["trainable_parameters"])
        what = "per step and trainable parameter"
    ratio = math.exp(float(np.median(d)))
    ours = (f"{slow} {1000 * a['median_s']:.1f} ms, {fast} {1000 * b['median_s']:.1f} ms per step (median of "
            f"{len(d)} interleaved steps); {slow}/{fast} {what}: ×{ratio:.2f}")
    if per_parameter:
        ours += f" ({a['trainable_parameters']:,} vs {b['trainable_parameters']:,} trainable parameters)"
    verdict = (verdict_equivalent(d, margin=TIME_MARGIN) if kind == "equivalent" else verdict_paired(d))
    if timing.get("device_type") == "cuda":
        verdict = qualify(verdict, "GPU compute time, CUDA events")
    else:  # the papers timed GPUs: a CPU's cost ratios (slow depthwise kernels) need not carry over
        verdict = qualify(verdict, "for CPU compute time, 1 thread; it cannot judge the paper's GPU-time claim")
    return ours, verdict


def _reach_text(profile: str, dataset: str, depth: int, kernel_size: int) -> str:
    u = SETTINGS[profile]["unshuffle"]
    size = NATIVE_SIZE[dataset] // u["image_scale"]
    before, after = unshuffle_window(depth, kernel_size)
    seed = _unshuffle_config(u, dataset, "chans", u["seeds"][0])["permutation_seed"]
    mask = out_of_reach_mask(PixelPermutation(size, size, seed=seed).order, size, size, before, after)
    return f"{100 * float(mask.float().mean()):.0f}% of pixels out of reach"


def _psnr_row(profile: str, results: list[dict], dataset: str, model: dict, label: str):
    """The un-shuffling row for one model: Chans at most :data:`PSNR_MARGIN_DB` below Full, paired per image."""
    full = select(results, dataset=dataset, mixing="full", **model)
    chans = select(results, dataset=dataset, mixing="chans", **model)
    space = select(results, dataset=dataset, mixing="space", **model)
    if not full or not chans:
        return None
    items = lambda r: np.asarray(r["psnr_items_cdb"], dtype=float) / 100
    comparison = paired_values(_seeded(_having(full, "psnr_items_cdb"), items),
                               _seeded(_having(chans, "psnr_items_cdb"), items))
    reference = _mean_sd_count(r["mean_image_psnr"] for r in full + chans if "mean_image_psnr" in r)[0]
    verdict = _verdict(comparison, "not_worse", PSNR_MARGIN_DB)
    if not math.isnan(reference) and _mean_sd_count(r["psnr"] for r in full)[0] <= reference + 1.0:
        verdict = "inconclusive (Full does not beat the mean image by 1 dB)"
    ours = (f"Full {_arm_text(full, 'psnr', 1, ' dB')}, Chans {_arm_text(chans, 'psnr', 1, ' dB')}"
            + (f", Space {_arm_text(space, 'psnr', 1, ' dB')}" if space else "")
            + f"; Chans − Full {_paired_text(comparison, 1, ' dB', 2)}; mean image {reference:.1f} dB; "
            + _reach_text(profile, dataset, model["depth"], model["kernel_size"]))
    return {"claim": f"Un-shuffling ({dataset}, {label}): Chans at most {PSNR_MARGIN_DB:.0f} dB below Full (PSNR)",
            "paper": "test results 'shockingly close' (Figs 10-13)", "ours": ours, "verdict": verdict}


def claims(results: list[dict], profile: str) -> list[dict]:
    """The claims table: claim (with its margin), the paper's statement, ours (mean ± sd over seeds and the paired
    difference) and a verdict from :mod:`lib.claims`. ``results``: every run of the chapter (timing runs included)."""
    s = SETTINGS[profile]
    r, c = s["resnet"], s["convmixer"]
    rd, cd = r["headline_depth"], c["headline_depth"]
    results = [x for x in results if x is not None]
    rn = {label: select(results, **resnet_selector(label, rd)) for label in RESNET_VARIANTS}
    cm = {label: select(results, **convmixer_selector(m, cd, profile)) for label, m in CONVMIXER_VARIANTS.items()}
    banks = {label: select(results, **resnet_selector("Chans (d=9)", rd, bank)) for label, bank in STATIC_BANKS.items()}
    rows = []

    def add(claim, paper, ours, verdict):
        rows.append({"claim": claim, "paper": paper, "ours": ours, "verdict": verdict})

    def accuracy_row(claim, paper, reference, candidate, kind, margin, names):
        comparison = _accuracy_comparison(reference, candidate)
        ours = (f"{names[1]} {_arm_text(candidate)}, {names[0]} {_arm_text(reference)}; {names[1]} − {names[0]} "
                f"{_paired_text(comparison)}")
        add(claim, paper, ours, _verdict(comparison, kind, margin))

    def robust_row(claim, paper, reference, candidate, attack, names, kind="greater", margin=0.0, scale=1.0):
        comparison = _robust_comparison(reference, candidate, attack, scale)
        field = "fgsm_accuracy" if attack == "fgsm" else "pgd_accuracy"
        mean_of = lambda x: float(np.mean([a for a, e in zip(x[field], x["config"][
            "epsilons_255" if attack == "fgsm" else "pgd_epsilons_255"]) if e > 0]))
        arms = [format_mean_sd([100 * mean_of(x) for x in _having(found, field)], unit="%")
                for found in (candidate, reference)]
        ours = (f"{names[1]} {arms[0]}, {names[0]} {arms[1]} (mean over ε > 0); "
                f"{names[1]} − {'%.2f × ' % scale if scale != 1 else ''}{names[0]} {_paired_text(comparison)}")
        add(claim, paper, ours, _verdict(comparison, kind, margin))

    pt = lambda m: f"{100 * m:.0f} point{'' if round(100 * m) == 1 else 's'}"
    # --- classification accuracy
    accuracy_row(f"ResNet: Chans (d=9) at most {pt(ACC_MARGIN)} below Full (accuracy)",
                 "the gap is 'barely there at all' (Fig 2 / workshop Fig 3)", rn["Full"], rn["Chans (d=9)"],
                 "not_worse", ACC_MARGIN, ("Full", "Chans"))
    accuracy_row(f"ResNet: Space more than {pt(FAR_MARGIN)} below Chans (d=9)",
                 "Space 'significantly worse', 'lag very far behind' (Fig 2)", rn["Space"], rn["Chans (d=9)"],
                 "greater", FAR_MARGIN, ("Space", "Chans"))
    accuracy_row(f"ResNet: Standard ≈ Chans (d=9), within ±{pt(ACC_MARGIN)} (same trainable parameters)",
                 "'given the same number of trainable parameters, the gap ... is barely there' (workshop Fig 3)",
                 rn["Standard"], rn["Chans (d=9)"], "equivalent", ACC_MARGIN, ("Standard", "Chans"))
    accuracy_row(f"Frozen banks: Different more than {pt(FAR_MARGIN)} above Same",
                 "'large performance drop' from Different to Same (Fig 5 / workshop Fig 6)", banks["Same"],
                 banks["Different"], "greater", FAR_MARGIN, ("Same", "Different"))
    accuracy_row("Frozen banks: Box above Identity", "Box below Same, Identity lowest (Fig 5)", banks["Identity"],
                 banks["Box"], "greater", 0.0, ("Identity", "Box"))
    accuracy_row(f"ConvMixer: Chans at most {pt(ACC_MARGIN)} below Full (accuracy)",
                 "Chans 'remain competitive' (Fig 4 / workshop Fig 7)", cm["Full"], cm["Chans"], "not_worse",
                 ACC_MARGIN, ("Full", "Chans"))
    accuracy_row(f"ConvMixer: Space more than {pt(FAR_MARGIN)} below Chans",
                 "Space 'completely out-classed' (Fig 4)", cm["Space"], cm["Chans"], "greater", FAR_MARGIN,
                 ("Space", "Chans"))
    # --- adversarial robustness (FGSM, and PGD next to it: a gap that PGD erases would be gradient masking)
    for attack in ("fgsm", "pgd"):
        robust_row(f"ResNet: Chans (d=9) more robust than Full ({attack.upper()})",
                   "Chans 'clearly more robust' (Fig 8 / workshop Fig 10)", rn["Full"], rn["Chans (d=9)"], attack,
                   ("Full", "Chans"))
    robust_row(f"ResNet: Chans (d=3) at most {pt(ACC_MARGIN)} less robust than Chans (d=9) (FGSM)",
               "'nearly just as robust ... with only a third of the trainable parameters' (workshop Fig 10)",
               rn["Chans (d=9)"], rn["Chans (d=3)"], "fgsm", ("Chans-9", "Chans-3"), "not_worse", ACC_MARGIN)
    d3, d9 = (x[0]["trainable_parameters"] if x else None for x in (rn["Chans (d=3)"], rn["Chans (d=9)"]))
    ratio = d3 / d9 if d3 and d9 else 1.0
    robust_row("ResNet: Chans (d=3) more robust per trainable parameter than Chans (d=9) (FGSM)",
               "'even more robust per parameter' (workshop Fig 10)", rn["Chans (d=9)"], rn["Chans (d=3)"], "fgsm",
               ("Chans-9", "Chans-3"), scale=ratio)
    smooth = select(results, **convmixer_selector("chans", cd, profile, SMOOTHING_KEEP))
    index = smoothing_index(c["kernel_size"], SMOOTHING_KEEP)
    top = c["epsilons_255"][-1]
    gain = paired_values(_seeded(_having(cm["Chans"], "fgsm_bits"), lambda x: _at_budget(x, top)),
                         _seeded(_having(smooth, "fgsm_bits"), lambda x: _at_budget(x, top)), RELATIVE_GAIN)
    at_top = lambda found: format_mean_sd([100 * x["fgsm_accuracy"][-1] for x in _having(found, "fgsm_accuracy")],
                                          unit="%")
    add(f"ConvMixer-Chans: smoothing (index {index}) raises FGSM accuracy at ε = {top}/255 by more than 25 %",
        "'relative performance increase of over 25%' at the highest ε (Fig 9 / workshop Fig 14)",
        f"index 0 {at_top(cm['Chans'])}, index {index} {at_top(smooth)}; smoothed − 1.25 × unsmoothed "
        f"{_paired_text(gain)}", _verdict(gain, "greater"))
    accuracy_row(f"ConvMixer-Chans: smoothing (index {index}) costs at most {pt(CLEAN_MARGIN)} of clean accuracy",
                 "'while not hurting performance on clean data at all' (Fig 9)", cm["Chans"], smooth, "not_worse",
                 CLEAN_MARGIN, ("index 0", f"index {index}"))
    for attack in ("fgsm", "pgd"):
        robust_row(f"ConvMixer: smoothed Chans (index {index}) more robust than Full ({attack.upper()})",
                   "smoothed random filters beat 'even fully-learned networks' (workshop Fig 15)", cm["Full"], smooth,
                   attack, ("Full", f"Chans index {index}"))
    # gradient masking: PGD starts inside the ε-ball and takes several steps; it must find at least what FGSM finds
    attacked = [x for x in results if x.get("pgd_bits") is not None and x.get("fgsm_bits") is not None]
    shared = [x for x in attacked if set(x["config"]["pgd_epsilons_255"]) & set(x["config"]["epsilons_255"])]
    excess = []
    for x in shared:
        e = max(set(x["config"]["pgd_epsilons_255"]) & set(x["config"]["epsilons_255"]))
        f_ok, p_ok = _at_budget(x, e, "fgsm"), _at_budget(x, e, "pgd")
        excess.append((p_ok.mean() - f_ok.mean(), mcnemar_p(f_ok, p_ok)))
    masked = sum(d > 0 and p < 0.05 for d, p in excess)
    add("Check (not a paper claim): no gradient masking — PGD leaves no more images right than FGSM",
        "PGD is the stronger attack; a model that resists FGSM only would be masking gradients",
        f"{len(excess)} attacked models; PGD significantly above FGSM (McNemar p < 0.05) in {masked}; "
        f"largest PGD − FGSM {100 * max((d for d, _ in excess), default=math.nan):+.1f} pt" if excess else "not run",
        ("contradicted" if masked else "supported") if excess else "not run")
    # --- compute time per step (interleaved, isolated loop; never the wall time of a shared machine)
    timing = timing_by_family(results)
    tr, tc = timing.get("resnet"), timing.get("convmixer")
    for claim, paper, args in [
            ("ResNet: Full slower per step than Chans (d=9)",
             "Full 'take significantly longer to train' than frozen variants (Fig 3 / workshop Fig 4)",
             (tr, "Full", "Chans (d=9)")),
            ("ResNet: Space costs more time per trainable parameter than Chans (d=9)",
             "Space has a 'much higher' time per trainable parameter (Fig 3 right / workshop Fig 5)",
             (tr, "Space", "Chans (d=9)", "greater", True)),
            ("ResNet: Chans (d=9) slower per step than Standard",
             "static separable nets 'held back by the overhead of converting the standard convolutions' (workshop "
             "Fig 4)", (tr, "Chans (d=9)", "Standard")),
            ("ConvMixer: Full slower per step than Chans",
             "'significant speedup when not learning the spatial mixing' (Fig 6 / workshop Fig 9)",
             (tc, "Full", "Chans")),
            (f"ConvMixer: Space ≈ Full per step (within ±{100 * (math.exp(TIME_MARGIN) - 1):.0f} %)",
             "'only a minimal time save by not learning the channel mixing' (workshop Fig 9)",
             (tc, "Space", "Full", "equivalent")),
            ("ConvMixer: Space slower per step than Chans",
             "Space 'significantly longer train time' despite fewer trainable parameters (workshop Fig 8)",
             (tc, "Space", "Chans"))]:
        add(claim, paper, *_timing_row(*args))
    # --- un-shuffling
    u = s["unshuffle"]
    for dataset in u["datasets"]:
        row = _psnr_row(profile, results, dataset, unshuffle_base(profile), "base model")
        if row:
            rows.append(row)
    if u.get("best"):
        row = _psnr_row(profile, results, "cifar10", {**unshuffle_base(profile), **u["best"]},
                        "papers' best model 16/512/7")
        if row:
            rows.append(row)
    return rows


def closing_note(results: list[dict], profile: str) -> list[str]:
    """The headline numbers (mean ± sd over seeds, n) of every arm the claims compare, and the compute spent."""
    s = SETTINGS[profile]
    r, c = s["resnet"], s["convmixer"]
    results = [x for x in results if x is not None]
    lines = []
    arms = [(f"ResNet n={r['headline_depth']} {label}", resnet_selector(label, r["headline_depth"]))
            for label in RESNET_VARIANTS]
    arms += [(f"ResNet Chans (d=9), {label} bank", resnet_selector("Chans (d=9)", r["headline_depth"], bank))
             for label, bank in STATIC_BANKS.items() if bank != "random"]
    arms += [(f"ConvMixer-{c['dim']}/{c['headline_depth']} {label}",
              convmixer_selector(mixing, c["headline_depth"], profile)) for label, mixing in CONVMIXER_VARIANTS.items()]
    arms.append((f"ConvMixer Chans, smoothing index {smoothing_index(c['kernel_size'], SMOOTHING_KEEP)}",
                 convmixer_selector("chans", c["headline_depth"], profile, SMOOTHING_KEEP)))
    for label, selector in arms:
        found = select(results, **selector)
        fgsm_last = _arm_text([{"v": x["fgsm_accuracy"][-1]} for x in _having(found, "fgsm_accuracy")], "v")
        lines.append(f"{label}: test accuracy {_arm_text(found)}; FGSM ε = {r['epsilons_255'][-1]}/255 {fgsm_last}")
    u = s["unshuffle"]
    for dataset in u["datasets"]:
        for label, mixing in CONVMIXER_VARIANTS.items():
            found = select(results, dataset=dataset, mixing=mixing, **unshuffle_base(profile))
            if found:
                lines.append(f"un-shuffling {dataset} {label}: PSNR {_arm_text(found, 'psnr', 1, ' dB')}")
    seconds = sum(x["provenance"]["wall_time_s"] for x in results if "provenance" in x)
    threads = sorted({x["provenance"].get("threads") for x in results if "provenance" in x} - {None})
    lines.append(f"compute: {seconds / 3600:.2f} hours of run time over {len(results)} runs "
                 f"(threads per run: {', '.join(map(str, threads)) or 'unknown'}; one thread per run makes these "
                 f"CPU-hours)")
    return lines


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
    fig = __import__("lib.plotting", fromlist=["new_figure"]).new_figure(9.6, 4.6, constrained_layout=True)
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
    frames = [to_png(envelope_frame(n)) for n in sizes]
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
    # wall time of whole runs on a shared machine: shown for orientation only; the timing claims use the
    # per-step compute times of the timing section
    axes[1].set(xlabel="depth", ylabel="wall training time (s)")
    axes[2].set(xlabel="depth", ylabel="wall time per trainable parameter (µs)")
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
    from ..plotting import new_figure, provenance_footer
    import matplotlib.pyplot as plt
    c = SETTINGS[profile]["convmixer"]
    found = select(results, **convmixer_selector("full", c["filters_depth"], profile))
    found = [x for x in found if "filters" in x][:1]
    if not found:
        raise ValueError("no stored learned filters: run the convmixer section first")
    layers, initial = found[0]["filters"], found[0]["initial_filters"]
    fig = new_figure(10, 2.2 * len(layers), constrained_layout=True)
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
        line = ax.errorbar(r["epsilons_255"], curves.mean(0), yerr=curves.std(0, ddof=1) if len(found) > 1 else None,
                           marker="o", capsize=3, label=label)
        pgd_found = [x for x in found if x.get("pgd_accuracy")]
        if pgd_found:  # PGD next to FGSM: an FGSM gap that PGD closes would be gradient masking
            ax.plot(r["pgd_epsilons_255"], np.mean([x["pgd_accuracy"] for x in pgd_found], 0), ls="none",
                    marker="x", ms=7, color=line[0].get_color())
    if any(x.get("pgd_accuracy") for x in used):
        ax.plot([], [], ls="none", marker="x", color="k", label=f"PGD ({r.get('pgd_steps', 10)} steps)")
    ax.set(xlabel="ε (in 1/255)", ylabel="accuracy under FGSM (o) / PGD (x)",
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
    frames = [to_png(smoothing_frame(k, curves, profile)) for k in keeps]
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
    sweep_dataset = u.get("sweep_dataset", "cifar10")
    for j, (label, mixing) in enumerate(CONVMIXER_VARIANTS.items()):
        values = [mean_sd(x["psnr"] for x in select(results, dataset=d, mixing=mixing, **base)) for d in datasets]
        # points with seed sd, not bars from 0 dB: the variants differ by fractions of a dB on a ~10-30 dB scale
        axes[0].errorbar(np.arange(len(datasets)) + 0.2 * (j - 1), [v[0] for v in values],
                         yerr=[0.0 if math.isnan(v[1]) else v[1] for v in values], fmt="o", capsize=3, label=label)
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
                found = select(results, dataset=sweep_dataset, mixing=CONVMIXER_VARIANTS[label], **{**base, field: v})
                used += found
                points.append(mean_sd(x["psnr"] for x in found)[0])
            ax.plot(values, points, marker="o", label=label)
        ceilings = [_oracle_of(oracle, sweep_dataset, v if field == "depth" else u["depth"],
                               v if field == "kernel_size" else u["kernel_size"]) for v in values]
        if not all(math.isnan(c) for c in ceilings):
            ax.plot(values, ceilings, color="C3", ls=":", marker=".", lw=1.5, label="reach oracle")
        ax.set_xticks(values)
        ax.set(xlabel={"dim": "width"}.get(field, field.replace("_", " ")), ylabel="PSNR (dB)", title=sweep_dataset)
        ax.legend()
    used += [x for x in results if x is not None and x["config"]["dataset"] != sweep_dataset]
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


def timing_table(results: list[dict]) -> list[dict]:
    """Per family and variant: median compute time per training step (interquartile range), trainable parameters and
    time per trainable parameter, from the ``timing`` runs."""
    rows = []
    for family, found in timing_by_family(results).items():
        for label, v in found["variants"].items():
            q1, q3 = np.percentile(v["samples_s"], [25, 75])
            rows.append({"family": family, "variant": label, "ms per step (median)": f"{1000 * v['median_s']:.1f}",
                         "IQR (ms)": f"{1000 * q1:.1f}-{1000 * q3:.1f}", "steps timed": len(v["samples_s"]),
                         "trainable parameters": f"{v['trainable_parameters']:,}",
                         "ns per step and trainable parameter":
                             f"{1e9 * v['median_s'] / v['trainable_parameters']:.1f}",
                         "clock": found["clock"]})
    return rows


def timing_figure(results: list[dict]):
    """Median compute time per training step of every variant (bars: interquartile range), one panel per family."""
    from ..plotting import figure, provenance_footer
    timing = timing_by_family(results)
    fig, axes = figure(1, 2, width=9.0, height=3.0)
    for ax, family in zip(axes, ("resnet", "convmixer")):
        found = timing.get(family)
        if found is None:
            ax.set_title(f"{family}: not run")
            continue
        labels = list(found["variants"])
        samples = [1000 * np.asarray(found["variants"][k]["samples_s"]) for k in labels]
        medians = [np.median(x) for x in samples]
        low = [m - np.percentile(x, 25) for m, x in zip(medians, samples)]
        high = [np.percentile(x, 75) - m for m, x in zip(medians, samples)]
        ax.bar(range(len(labels)), medians, yerr=[low, high], capsize=3, color=[f"C{i}" for i in range(len(labels))])
        ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=7)
        ax.set(ylabel="ms per training step", title=f"{family} ({found['clock']})")
    provenance_footer(fig, list(timing.values()))
    return fig


def mnist_note(profile: str) -> str | None:
    """One line when a profile's un-shuffling would use MNIST but it cannot be read here (it is then left out)."""
    u = SETTINGS[profile]["unshuffle"]
    if "mnist" in u["datasets"] and not _available("mnist"):
        return ("MNIST is left out: it is not on this machine (DATA_DIR or the download cache). Where there is "
                "network, `lib.data.load('mnist')` downloads it through torchvision, and the MNIST runs then join.")
    if "mnist" not in u["datasets"]:
        return (f"MNIST is not part of the {profile} profile (Fashion-MNIST stands for it); the paper profile adds it "
                "where torchvision can download it.")
    return None
