"""Experiments of the anti-aliasing chapter (Zhang 2019, "Making convolutional networks shift-invariant again").

One run trains one VGG13 on CIFAR-10 (circular convolutions) with a given pooling layer and filter, with or without
circular-shift augmentation, and then measures everything the chapter's figures need on that model, since the store
keeps metrics and small arrays, never weights: test accuracy unshifted and under random shifts, classification
consistency, per-image classification variation, accuracy for every shift of a grid (Fig. 11 heatmap and diagonal,
App. B adversary curve), the normalised total variation of every learned conv layer (Fig. 7), and for a few models
the per-layer equivariance heatmaps of Fig. 4. A separate run times forward passes (Table 2).
"""

from __future__ import annotations

import io
import time

import numpy as np
import torch

from .. import data, metrics
from ..claims import (format_mean_sd, format_paired, mean_sd, paired_outcomes, verdict_paired,
                      verdict_paired_outcomes)
from ..filters.blur import filter_label, table1_filters
from ..models.vgg import VGG13
from ..training import TrainConfig, fit, predict
from . import Run

CHAPTER = "anti_aliasing"

CIFAR10_TEST_IMAGES = 10_000  # a config's test_size None means the whole test set
QUICK_FILTERS = [("rect", 1), ("rect", 2), ("triangle", 3), ("binomial", 5), ("binomial", 7)]

SETTINGS = {
    # ≤ 8 min on a 2-core CPU: a VGG13 with 8 channels in its first block (1/8 of the paper's width), 3,000
    # training images, 3 epochs; shift analyses on a window of shifts of a few test images. Numbers are for checking
    # that every piece works and for seeing the trends, not for comparing with the paper's percentages.
    "quick": {
        "dataset": "cifar10", "train_size": 3000, "test_size": 500, "width": 8,
        "epochs": 3, "batch_size": 64, "lr": 0.05, "weight_decay": 5e-4,
        "filters": QUICK_FILTERS,
        "headline": ("binomial", 5),          # the blurred model of the claims table and of Fig. 4
        "blur_before_pool_filters": [("binomial", 5)],
        "seeds": [0], "headline_seeds": [0],
        "grid_images": 40, "grid_range": 4,   # shifts (dh, dw) in [-4, 4)²: 64 shifts
        "equivariance_images": 4, "equivariance_range": 4,
        "timing": {"width": 8, "batch": 100, "repeats": 8, "filters": [("binomial", 3), ("binomial", 5),
                                                                          ("binomial", 7)]},
    },
    # medium (the book's evidence until paper results exist; ≈ 4 h of a 2-core CPU, computed in the background and
    # committed): full CIFAR-10 train and test sets, a VGG13 with the paper's layout at 1/4 of its width (16 channels
    # in the first block, 128 in the last), 6 epochs one-cycle. Measured on this CPU with channels_last: 82 s per
    # epoch for MaxBlurPool-B5 (65 s for the max-pool baseline) and ~0.9 ms per image per evaluation, so a run costs
    # ≈ 9 minutes of compute (13–16 min of wall clock with two runs side by side, one thread each) and the 24 runs of
    # the claims (baseline, Triangle-5, Binomial-5, Binomial-7; without and with augmentation; 3 seeds each) ≈ 3.4 h
    # of the machine; blur-before-pool for the three filters (both settings) and the zero-padded baseline (with
    # augmentation) add one seed each: 32 runs ≈ 4.2 h. Consistency on the full test set with random shifts in [-16, 16)²; the per-shift grid (variation,
    # adversary, Fig. 11) on 250 class-balanced test images over the 256 shifts [-8, 8)² (all residues modulo 16 of
    # the first four poolings; 1,000 images × 1,024 shifts would cost ~15 min per run).
    "medium": {
        "dataset": "cifar10", "train_size": None, "test_size": None, "width": 16,
        "epochs": 6, "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4, "channels_last": True,
        "filters": [("rect", 1), ("triangle", 5), ("binomial", 5), ("binomial", 7)],
        "headline": ("triangle", 5),
        "blur_before_pool_filters": [("triangle", 5), ("binomial", 5), ("binomial", 7)],
        # the paper reports the circular-padding cost with augmentation only (93.8% zero-padded vs 93.4%)
        "zero_padding_seeds": [0], "zero_padding_augment": [True],
        "seeds": [0, 1, 2], "headline_seeds": [0, 1, 2],
        "grid_images": 250, "grid_range": 8,
        "equivariance_images": 8, "equivariance_range": 8,
        "timing": {"width": 16, "batch": 100, "repeats": 20, "filters": [("binomial", 3), ("binomial", 5),
                                                                           ("binomial", 7)]},
    },
    # Full CIFAR-10, VGG13 at the paper's width, all 19 filters of Table 1 with and without augmentation (3 seeds for
    # the baseline and Triangle-5, the claims' pair; 1 for the others), and blur-before-pool for 4 filters: 54
    # trainings. The paper trains 200 epochs (100 at lr 0.1, then 0.01 and 0.001); to fit about 30 GPU-minutes we
    # train 10 epochs with a one-cycle schedule (bf16, channels_last). We expect that to land a few points below the
    # paper's 93.4% baseline; this profile has only been tested at tiny scale, not run, so that is unverified.
    # Accuracy and consistency use the full test set; the per-shift analyses all 32×32 circular shifts of 500 test
    # images.
    "paper": {
        "dataset": "cifar10", "train_size": None, "test_size": None, "width": 64,
        "epochs": 10, "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4,
        "filters": table1_filters(),
        "headline": ("triangle", 5),
        "blur_before_pool_filters": [("rect", 2), ("triangle", 3), ("binomial", 5), ("binomial", 7)],
        "seeds": [0], "headline_seeds": [0, 1, 2],
        "grid_images": 500, "grid_range": 16,    # all 1,024 circular shifts of a 32×32 image
        "equivariance_images": 32, "equivariance_range": 16,
        "timing": {"width": 64, "batch": 100, "repeats": 50, "filters": [("binomial", 3), ("binomial", 5),
                                                                           ("binomial", 7)]},
    },
}

FIG2_IMAGES = 6  # images whose p(correct class) under every shift is kept for Fig. 2
SHIFT_AUGMENT = data.Augment(translate=4, mode="circular", flip=True)
FLIP_ONLY = data.Augment(flip=True)


def unpack_bits(result: dict, field: str) -> np.ndarray:
    """Per-test-image booleans stored bit-packed (``correct_bits``, ``consistent_bits``); ``grid_correct_bits``
    comes back as ``[grid image, shift]`` (shifts in :func:`shift_grid` order)."""
    bits = np.unpackbits(np.asarray(result[field], dtype=np.uint8))
    if field == "grid_correct_bits":
        images = result["config"]["grid_images"]
        shifts = (2 * result["config"]["grid_range"]) ** 2
        return bits[:images * shifts].reshape(images, shifts).astype(bool)
    return bits[:result["n_test"]].astype(bool)


def _settings(profile: str) -> dict:
    if profile not in SETTINGS:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(SETTINGS)}")
    return SETTINGS[profile]


def model_label(pool: str, family: str, taps: int) -> str:
    """``Baseline`` for the max-pool, else the filter name (``Binomial-5``), ``(blur→pool)`` for App. C models."""
    if pool == "max":
        return "Baseline"
    label = filter_label(family, taps)
    return f"{label} (blur→pool)" if pool == "blurmax" else label


def shift_grid(grid_range: int) -> np.ndarray:
    """All shifts (dh, dw) with both components in [-r, r) (r = 16 is every circular shift of a 32×32 image)."""
    values = np.arange(-grid_range, grid_range)
    dh, dw = np.meshgrid(values, values, indexing="ij")
    return np.stack([dh.ravel(), dw.ravel()], axis=1)


def build_model(config: dict) -> VGG13:
    """The VGG13 a run's config describes (circular convolutions; the first layer normalises with config mean/std)."""
    pool = config["pool"]
    filter = None if pool == "max" else (config["family"], config["taps"])
    # zero padding only for the non-circular control (the paper: circular convs cost 0.4 points, 93.8 vs 93.4)
    return VGG13(num_classes=10, width=config["width"], pool=pool, filter=filter,
                 mean=config["mean"], std=config["std"], circular=config.get("circular", True))


def _train_data(config: dict):
    x_train, y_train = data.load(config["dataset"], "train")
    x_test, y_test = data.load(config["dataset"], "test")
    x_train, y_train = data.subset(x_train, y_train, config["train_size"], seed=0)
    x_test, y_test = data.subset(x_test, y_test, config["test_size"], seed=0)
    return (x_train, y_train), (x_test, y_test)


@torch.no_grad()
def _shifted_predictions(model, images, shifts, device, chunk: int = 4096, channels_last: bool | None = None):
    """Softmax outputs ``[image, shift, class]`` of ``images`` under every circular shift in ``shifts``."""
    images = images.to(device)
    n = len(images)
    per_chunk = max(1, chunk // n)
    out = []
    for start in range(0, len(shifts), per_chunk):
        block = shifts[start:start + per_chunk]
        batch = torch.cat([data.circular_shift(images, int(dh), int(dw)) for dh, dw in block])
        # fp32 on every device: bf16 moved the median variation by 14 % and flipped 0.94 % of shifted predictions
        probs = predict(model, batch, batch_size=1000, device=device, amp=False,
                        channels_last=channels_last).softmax(1)
        out.append(probs.reshape(len(block), n, -1).transpose(0, 1))
    return torch.cat(out, dim=1).numpy()


@torch.no_grad()
def equivariance_maps(model, images, shifts, device) -> dict:
    """Fig. 4: per layer, mean cosine distance between Shift(F̃(X)) and F̃(Shift(X)) for every shift of the grid.

    F̃ is each layer's output upsampled (periodically, bilinear) to the input resolution. Also returns, per layer,
    the mean distance between F̃ of two *different* images (the paper's colour scale: red = half of it).
    """
    model.eval().to(device)
    x = data.to_unit(images).to(device)
    size = x.shape[-1]

    def upsampled(features):
        # channels_last keeps the per-position reductions over channels fast
        return {name: metrics.upsample_circular(f.float().contiguous(memory_format=torch.channels_last), size)
                for name, f in features.items()}

    base = upsampled(model.features_by_layer(x))
    names = list(base)
    maps = np.zeros((len(names), len(shifts)))
    for s, (dh, dw) in enumerate(shifts):
        shifted = upsampled(model.features_by_layer(data.circular_shift(x, int(dh), int(dw))))
        for i, name in enumerate(names):
            # d(Shift(F(X)), F(Shift(X))) = d(F(X), Shift⁻¹(F(Shift(X)))): the mean over positions ignores the roll
            back = torch.roll(shifted[name], (-int(dh), -int(dw)), dims=(-2, -1))
            maps[i, s] = float(metrics.cosine_distance(base[name], back).mean())
    reference = [float(metrics.cosine_distance(base[n], torch.roll(base[n], 1, dims=0)).mean()) for n in names]
    side = int(round(np.sqrt(len(shifts))))
    return {"layers": names, "maps": maps.reshape(len(names), side, side), "different_images": np.array(reference)}


def train_and_analyse(config: dict, device: torch.device) -> dict:
    """Train one VGG13 (config: pool, family, taps, augment, seed, sizes) and measure every shift metric on it."""
    train, test = _train_data(config)
    model = build_model(config)
    augment = SHIFT_AUGMENT if config["augment"] else FLIP_ONLY
    train_config = TrainConfig(epochs=config["epochs"], batch_size=config["batch_size"], lr=config["lr"],
                               weight_decay=config["weight_decay"], schedule="onecycle", augment=augment,
                               eval_every=config["epochs"], channels_last=config.get("channels_last"))
    history = fit(model, train, test, config=train_config, seed=config["seed"], device=device, progress=False)
    model.eval()
    x_test, y_test = test
    generator = torch.Generator().manual_seed(config["seed"] + 1)
    size = x_test.shape[-1]

    def random_shifts():
        return torch.randint(-size // 2, size // 2, (2, len(x_test)), generator=generator)

    evaluation = dict(device=device, amp=False, channels_last=config.get("channels_last"))
    logits = predict(model, x_test, **evaluation)
    first, second = random_shifts(), random_shifts()
    pred_a = predict(model, data.circular_shift(x_test, first[0], first[1]), **evaluation).argmax(1)
    pred_b = predict(model, data.circular_shift(x_test, second[0], second[1]), **evaluation).argmax(1)
    # the random shifts depend only on the seed: models of one seed see the same shifted test images, so per-image
    # outcomes allow paired tests (McNemar) between them
    correct_unshifted = (logits.argmax(1) == y_test).numpy()
    consistent = (pred_a == pred_b).numpy()

    # the grid: every shift of a window, on the first grid_images test images (class-balanced subset)
    grid_x, grid_y = data.subset(x_test, y_test, config["grid_images"], seed=1)
    shifts = shift_grid(config["grid_range"])
    probs = _shifted_predictions(model, grid_x, shifts, device, channels_last=config.get("channels_last"))
    labels = grid_y.numpy()
    predicted = probs.argmax(2)
    correct = predicted == labels[:, None]
    side = 2 * config["grid_range"]
    # the adversary's window [-m, m]² must lie inside the grid [-r, r)²: m ≤ r - 1, unless the grid holds every
    # circular shift (2r = image size), where +r is the same shift as -r
    reach = config["grid_range"] if side == x_test.shape[-1] else config["grid_range"] - 1
    max_shifts = list(range(0, reach + 1))

    result = {
        "label": config["label"],
        "history": history["history"],
        "train_time_s": history["train_time_s"],
        "parameters": history["parameters"],
        "accuracy": float((logits.argmax(1) == y_test).float().mean()),
        "accuracy_random_shift": float((pred_a == y_test).float().mean()),
        "consistency": float((pred_a == pred_b).float().mean()),
        "consistency_grid": metrics.consistency_over_grid(predicted, probs.shape[2]),
        "variation": metrics.classification_variation(probs[np.arange(len(labels)), :, labels]),
        "accuracy_by_shift": correct.mean(0).reshape(side, side),
        "shift_values": np.arange(-config["grid_range"], config["grid_range"]),
        "adversary_max_shift": np.array(max_shifts),
        "adversary_accuracy": metrics.adversary_accuracy(correct, shifts, max_shifts),
        "total_variation": {name: metrics.total_variation(conv.weight) for name, conv in model.conv_layers().items()},
        # per test image, bit-packed (1,250 bytes for 10,000 images): correct unshifted, consistent under two shifts
        "correct_bits": np.packbits(correct_unshifted.astype(np.uint8)),
        "consistent_bits": np.packbits(consistent.astype(np.uint8)),
        "n_test": int(len(y_test)),
        # per grid image × shift, bit-packed row-major (8 kB for 250 × 256): paired tests and bootstrap intervals
        # over images for variation-free metrics (adversary, Fig. 11) between models of one seed
        "grid_correct_bits": np.packbits(correct.astype(np.uint8).ravel()),
        # Fig. 2: p(correct class) against every grid shift, for the first few grid images
        "p_correct_by_shift": probs[np.arange(min(FIG2_IMAGES, len(labels))), :, labels[:FIG2_IMAGES]]
        .reshape(-1, side, side).astype(np.float32),
    }
    if config.get("equivariance"):
        eq_x, _ = data.subset(x_test, y_test, config["equivariance_images"], seed=2)
        result["equivariance"] = equivariance_maps(model, eq_x, shift_grid(config["equivariance_range"]), device)
    return result


@torch.no_grad()
def time_forward(config: dict, device: torch.device) -> dict:
    """Table 2: forward time of a batch of 32×32 images for the baseline, dense pooling and blurred pooling (each
    filter as the paper's 2-D kernel and, as a variant of ours, separable). The variants run interleaved, each round
    once each, after a warm-up; every round's time is kept, so that medians and their confidence intervals (and
    paired ratios to the baseline of the same round) are computed when the table is drawn."""
    variants = [("Baseline", "max", None, False), ("+ dense pool", "maxblur", ("rect", 1), False)]
    for family, taps in config["filters"]:
        variants.append((f"+ dense pool + {taps}×{taps} filter", "maxblur", (family, taps), False))
        variants.append((f"+ dense pool + {taps}×{taps} filter (separable)", "maxblur", (family, taps), True))
    x = torch.rand(config["batch"], 3, 32, 32, device=device)
    cuda = device.type == "cuda"
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    models = []
    for name, pool, filter, separable in variants:
        model = VGG13(width=config["width"], pool=pool, filter=filter).to(device).eval()
        for module in model.modules():
            if hasattr(module, "separable"):
                module.separable = separable
        if cuda:
            model = model.to(memory_format=torch.channels_last)
        models.append((name, model))
    times = {name: [] for name, _ in models}
    for _ in range(3):                               # warm-up (cuDNN autotuning, allocator)
        for _, model in models:
            model(x)
    # interleave the variants so that drifting load on a shared machine hits them alike
    for _ in range(config["repeats"]):
        for name, model in models:
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(x)
            if cuda:
                torch.cuda.synchronize()
            times[name].append(1000 * (time.perf_counter() - start))
    base = float(np.median(times["Baseline"]))
    rows = [{"model": name, "median_ms": float(np.median(t)), "mean_ms": float(np.mean(t)),
             "added_percent": 100 * (float(np.median(t)) / base - 1), "times_ms": [float(v) for v in t]}
            for name, t in times.items()]
    return {"rows": rows, "batch": config["batch"], "width": config["width"], "device": device.type,
            "repeats": config["repeats"]}


def _train_run(s: dict, pool: str, family: str, taps: int, augment: bool, seed: int,
               section: str, equivariance: bool = False, circular: bool = True) -> Run:
    label = model_label(pool, family, taps) + ("" if circular else " (zero padding)")
    config = {"dataset": s["dataset"], "train_size": s["train_size"], "test_size": s["test_size"],
              "width": s["width"], "epochs": s["epochs"], "batch_size": s["batch_size"], "lr": s["lr"],
              "weight_decay": s["weight_decay"], "pool": pool, "family": family, "taps": taps,
              "augment": augment, "seed": seed, "label": label, "grid_images": s["grid_images"],
              "grid_range": s["grid_range"], "mean": s["mean"], "std": s["std"]}
    if equivariance:
        config.update(equivariance=True, equivariance_images=s["equivariance_images"],
                      equivariance_range=s["equivariance_range"])
    if s.get("channels_last") is not None:  # only where set, so that other profiles keep their run keys
        config["channels_last"] = s["channels_last"]
    if not circular:
        config["circular"] = False
    tag = f"{pool}-{family}{taps}-{'aug' if augment else 'noaug'}{'' if circular else '-zeropad'}-s{seed}"
    return Run(CHAPTER, f"vgg13-{tag}", config, train_and_analyse, section)


# Normalisation constants of the first layer: the usual CIFAR-10 training statistics (the JPEG mirror matches the
# mean to 3 decimals and has a ~1% lower std; BatchNorm follows the first conv, so this only sets the input scale).
# Fixed numbers keep ``runs()`` from loading the dataset just to build run keys.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def _with_normalisation(s: dict) -> dict:
    return {**s, "mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD)}


def _pool_of(family: str, taps: int) -> str:
    return "max" if taps == 1 else "maxblur"


SECTIONS = ("table1", "equivariance", "blur_before_pool", "padding", "timing")


def runs(profile: str, section: str | None = None) -> list[Run]:
    """Every run of the chapter at ``profile``; ``section`` (one of ``SECTIONS``) narrows them for a figure."""
    if section is not None and section not in SECTIONS:
        raise ValueError(f"unknown section {section!r}; choose one of {', '.join(SECTIONS)}")
    s = _with_normalisation(_settings(profile))
    headline = tuple(s["headline"])
    equivariant = {("rect", 1), headline}
    out: list[Run] = []
    for family, taps in s["filters"]:
        seeds = s["headline_seeds"] if (family, taps) in equivariant else s["seeds"]
        for augment in (False, True):
            for seed in seeds:
                # Fig. 4's maps for the baseline and the headline filter without augmentation, every seed at
                # medium (its claims need seeds), the first seed elsewhere
                eq = (family, taps) in equivariant and not augment and (seed == seeds[0] or profile == "medium")
                run = _train_run(s, _pool_of(family, taps), family, taps, augment, seed, "table1", eq)
                if section in (None, "table1") or (section == "equivariance" and eq):
                    out.append(run)
    if section in (None, "blur_before_pool"):
        for family, taps in s["blur_before_pool_filters"]:
            for augment in (False, True):
                out.append(_train_run(s, "blurmax", family, taps, augment, s["seeds"][0],
                                      "blur_before_pool"))
                # the proposed ordering with the same filter, for the comparison (same key as in table1)
                if section == "blur_before_pool":
                    out.append(_train_run(s, "maxblur", family, taps, augment, s["seeds"][0], "table1",
                                          (family, taps) in equivariant and not augment))
    if section in (None, "padding"):
        # the non-circular control: the paper reports zero padding 0.4 points above circular (93.8 vs 93.4)
        for augment in s.get("zero_padding_augment", (False, True)):
            for seed in s.get("zero_padding_seeds", []):
                out.append(_train_run(s, "max", "rect", 1, augment, seed, "padding", circular=False))
    if section in (None, "timing"):
        out.append(Run(CHAPTER, "timing", {**s["timing"], "seed": 0}, time_forward,
                       "timing"))
    return out


# --- the paper's numbers ------------------------------------------------------------------------------------------

# Table 1: (family, taps) → accuracy none, accuracy random, consistency; without augmentation, then with (percent)
PAPER_TABLE1 = {
    ("rect", 1): (91.6, 87.4, 88.1, 93.4, 93.7, 96.6), ("rect", 2): (92.8, 89.3, 90.5, 93.9, 93.8, 97.6),
    ("rect", 3): (93.4, 91.8, 94.5, 93.6, 93.7, 97.9), ("rect", 4): (93.2, 92.9, 97.7, 93.4, 93.4, 98.5),
    ("rect", 5): (92.2, 92.1, 98.3, 92.4, 92.5, 98.7), ("rect", 6): (91.4, 91.2, 97.3, 91.4, 91.5, 98.9),
    ("rect", 7): (90.8, 90.7, 98.8, 90.5, 90.5, 99.0), ("triangle", 3): (93.1, 91.4, 93.9, 93.6, 93.5, 98.0),
    ("triangle", 5): (93.3, 93.0, 98.2, 93.3, 93.2, 98.6), ("triangle", 7): (92.3, 92.3, 98.8, 92.4, 92.3, 99.0),
    ("binomial", 4): (93.0, 91.1, 93.2, 93.4, 93.3, 98.1), ("binomial", 5): (93.2, 92.6, 96.3, 93.1, 93.2, 98.4),
    ("binomial", 6): (93.0, 92.4, 96.9, 93.4, 93.3, 98.6), ("binomial", 7): (93.0, 93.0, 98.1, 93.2, 93.2, 98.8),
    ("window", 3): (93.3, 91.5, 94.2, 93.5, 93.5, 98.0), ("window", 6): (92.9, 90.2, 91.0, 93.4, 93.5, 98.1),
    ("window", 7): (92.4, 91.1, 94.0, 93.4, 93.5, 97.8), ("least_squares", 3): (93.1, 91.4, 93.8, 93.7, 93.8, 98.0),
    ("least_squares", 7): (92.7, 91.0, 93.9, 93.4, 93.5, 97.9),
}
# Table 2 (GTX 1080 Ti, batch 100, VGG13): forward time in ms
PAPER_TABLE2 = {"Baseline": 10.19, "+ dense pool": 10.50, "+ dense pool + 3×3 filter": 11.06,
                "+ dense pool + 5×5 filter": 11.27, "+ dense pool + 7×7 filter": 11.45}
# its "% added" column as printed (12.3%, where 11.45 / 10.19 gives 12.4%: the paper rounds from unrounded times)
PAPER_TABLE2_ADDED = {"Baseline": "+0.00%", "+ dense pool": "+3.04%", "+ dense pool + 3×3 filter": "+8.52%",
                      "+ dense pool + 5×5 filter": "+10.6%", "+ dense pool + 7×7 filter": "+12.3%"}

FAMILY_COLOURS = {"delta": "black", "rect": "tab:blue", "triangle": "tab:orange", "binomial": "tab:green",
                  "window": "tab:purple", "least_squares": "tab:brown"}
TAP_MARKERS = {1: "*", 2: "o", 3: "^", 4: "D", 5: "p", 6: "h", 7: (7, 0, 0)}


# --- reading results ------------------------------------------------------------------------------------------------

def _key(result: dict) -> tuple:
    c = result["config"]
    return c["pool"], c["family"], int(c["taps"]), bool(c["augment"])


def group(results: list[dict]) -> dict[tuple, list[dict]]:
    """Training results grouped by ``(pool, family, taps, augment)`` (a list over seeds)."""
    out: dict[tuple, list[dict]] = {}
    for r in results:
        # the zero-padded control shares the baseline's key: it is compared on its own (``claims(padding=...)``)
        if r is not None and "pool" in r.get("config", {}) and r["config"].get("circular", True):
            out.setdefault(_key(r), []).append(r)
    return out


def _filter_of(key: tuple) -> tuple[str, int]:
    return ("delta", 1) if key[2] == 1 else (key[1], key[2])


FAMILY_COLOURMAPS = {"rect": "Blues", "triangle": "Oranges", "binomial": "Greens", "window": "Purples",
                     "least_squares": "copper_r"}


def filter_colour(family: str, taps: int):
    """Colour of a filter in every figure: hue = family, darker = more taps; black for the baseline."""
    if taps == 1 or family == "delta":
        return "black"
    import matplotlib
    return matplotlib.colormaps[FAMILY_COLOURMAPS[family]](0.35 + 0.65 * min(taps, 7) / 7)


def _colour(key: tuple):
    return filter_colour(key[1], key[2])


def _ordered(groups: dict, pool: str = "maxblur", augment: bool | None = None) -> list[tuple]:
    """Keys in Table 1 order: the baseline first, then the filters (of ``pool``), optionally one augment setting."""
    order = {f: i for i, f in enumerate(table1_filters())}
    keys = [k for k in groups if (k[0] == pool or k[0] == "max") and (augment is None or k[3] == augment)]
    if pool == "blurmax":
        keys = [k for k in groups if k[0] == "blurmax" and (augment is None or k[3] == augment)]
    return sorted(keys, key=lambda k: (order.get((k[1], k[2]), 99), k[3]))


def _compact(values) -> str:
    """``93.1`` for one seed, ``93.1±0.2`` for several (percent)."""
    mean, sd, n = mean_sd(100 * np.asarray(values, dtype=np.float64))
    return f"{mean:.1f}" if n == 1 else f"{mean:.1f}±{sd:.1f}"


def table1_rows(results: list[dict]) -> list[dict]:
    """Table 1 rebuilt from our runs next to the paper's numbers: accuracy unshifted / under a random shift /
    consistency, in percent (mean±sd when there are several seeds)."""
    groups = group(results)
    rows = []
    for family, taps in table1_filters():
        pool = "max" if taps == 1 else "maxblur"
        row = {"filter": model_label(pool, family, taps)}
        found_any = False
        for augment, offset, tag in ((False, 0, "no aug"), (True, 3, "aug")):
            found = groups.get((pool, family, taps, augment), [])
            found_any |= bool(found)
            paper = PAPER_TABLE1[(family, taps)][offset:offset + 3]
            row[f"{tag}: ours"] = " / ".join(_compact([r[f] for r in found]) for f in
                                             ("accuracy", "accuracy_random_shift", "consistency")) if found else "–"
            row[f"{tag}: paper"] = " / ".join(f"{v:.1f}" for v in paper)
            row[f"{tag}: seeds"] = len(found)
        if found_any:
            rows.append(row)
    return rows


# --- figures --------------------------------------------------------------------------------------------------------

def plot_toy(filter=("triangle", 3)):
    """Fig. 3: strided max-pooling of the toy signal for shifts 0 and 1, the dense max-pool, blurred downsampling."""
    from ..plotting import figure
    signal = np.array(metrics.TOY_SIGNAL)
    n = len(signal)
    fig, axes = figure(2, 2, width=8, height=4.6, sharex=True, sharey=True)
    positions = np.arange(n)
    colours = ("tab:blue", "tab:red")
    dense_colours = ("tab:green", "tab:pink")
    for ax in axes.flat:
        ax.bar(positions, signal, color="0.85", width=0.9, label="input")
    for shift, colour in zip((0, 1), colours):
        # shift the output grid back so both results sit on the original signal's positions
        pooled = metrics.toy_max_pool(signal, shift)
        ax = axes[0, shift]
        ax.plot(np.arange(0, n, 2) - shift, pooled, "o-", color=colour, ms=7,
                label=f"max-pool k=2 s=2, shift {shift}: {np.round(pooled, 2).tolist()}")
        dense = metrics.toy_dense_max_pool(signal, 0)
        axes[1, 0].plot(positions, dense, "k-", lw=3 if shift == 0 else 0, alpha=0.6)
        axes[1, 0].plot(np.arange(0, n, 2) - shift, pooled, "o", color=colour, ms=7,
                        label=f"samples, shift {shift}")
        blurred = metrics.toy_max_blur_pool(signal, filter, shift)
        axes[1, 1].plot(np.arange(0, n, 2) - shift, blurred, "s", color=dense_colours[shift], ms=7,
                        label=f"blurred samples, shift {shift}: {np.round(blurred, 2).tolist()}")
    axes[1, 0].plot([], [], "k-", lw=3, alpha=0.6, label="dense max-pool (k=2, s=1)")
    axes[1, 1].plot(positions, metrics.toy_max_blur_pool(signal, filter, 0, dense=True), "k-", lw=3, alpha=0.6,
                    label=f"dense max-pool, blurred ({filter_label(*filter)})")
    titles = ("max-pool", "shift by one, then max-pool", "both sample the dense max-pool",
              "sample the blurred dense max-pool")
    for ax, title in zip(axes.flat, titles):
        ax.set_title(title)
        ax.legend(loc="lower center", fontsize=7)
        ax.set_ylim(-0.7, 1.25)
    return fig


def plot_filters(filters=None):
    """The 2-D kernels and the 1-D magnitude responses of Table 1's filters."""
    from ..plotting import figure
    from ..filters.blur import blur_filter, blur_kernel_2d
    from ..spectra import frequencies, magnitude_response
    filters = filters or table1_filters()
    cols = 10
    rows = int(np.ceil(len(filters) / cols))
    fig_k, axes = figure(rows, cols, width=10, height=1.25 * rows)
    for ax in axes.flat:
        ax.axis("off")
    # every kernel centred on one 7×7 canvas, grey outside it: with each scaled to its own maximum alone, Delta
    # and every Rect-N would look identical; the titles give that maximum
    kernels = [blur_kernel_2d(family, taps) for family, taps in filters]
    canvas = max(k.shape[0] for k in kernels)
    image = None
    for ax, (family, taps), kernel in zip(axes.flat, filters, kernels):
        padded = np.full((canvas, canvas), np.nan)   # grey outside the kernel
        start = (canvas - kernel.shape[0]) // 2
        padded[start:start + kernel.shape[0], start:start + kernel.shape[1]] = kernel
        limit = np.abs(kernel).max()
        image = ax.imshow(padded / limit, cmap=_kernel_cmap(), vmin=-1, vmax=1)
        ax.set_title(f"{filter_label(family, taps)}\nmax {limit:.3f}", fontsize=7)
    fig_k.colorbar(image, ax=list(axes.flat), shrink=0.8, label="weight / kernel's max")
    families = ["rect", "triangle", "binomial", "window", "least_squares"]
    fig_f, faxes = figure(1, len(families), width=10, height=2.4, sharey=True)
    freqs = frequencies(256)
    keep = freqs >= 0
    for ax, family in zip(faxes, families):
        members = [t for f, t in filters if f == family and t > 1]
        for i, taps in enumerate(members):
            response = magnitude_response(blur_filter(family, taps)[None], 256)[0]
            ax.plot(freqs[keep], response[keep], color=FAMILY_COLOURS[family], alpha=0.4 + 0.6 * (i + 1) / len(members),
                    label=f"{taps} taps")
        ax.plot(freqs[keep], np.ones(keep.sum()), color="black", lw=0.8, ls=":", label="delta")
        ax.axvline(0.25, color="0.5", lw=0.8, ls="--")
        ax.set_title(filter_label(family, max(members)).split("-")[0])
        ax.set_xlabel("frequency (cycles/sample)")
        ax.legend(fontsize=6)
    faxes[0].set_ylabel("|H(f)|")
    return fig_k, fig_f


def _kernel_cmap():
    import matplotlib
    cmap = matplotlib.colormaps["RdBu_r"].copy()
    cmap.set_bad("0.8")  # the canvas around a kernel smaller than 7×7
    return cmap


MIN_AXIS_SPAN = 3.0  # percentage points: a narrower axis makes one test image look like a trend


def _error_bar(found: list[dict], field: str) -> float:
    """Half-width drawn around a point: the seeds' sd, or with one seed the test sample's binomial sd."""
    values = [r[field] for r in found]
    if len(values) > 1:
        return 100 * float(np.std(values, ddof=1))
    n = found[0].get("n_test") or found[0]["config"].get("test_size") or CIFAR10_TEST_IMAGES
    return 100 * float(np.sqrt(values[0] * (1 - values[0]) / n))


def _min_span(ax, span: float) -> None:
    for get, set_ in ((ax.get_xlim, ax.set_xlim), (ax.get_ylim, ax.set_ylim)):
        low, high = get()
        if high - low < span:
            middle = (low + high) / 2
            set_(middle - span / 2, middle + span / 2)


def plot_consistency_vs_accuracy(results: list[dict], pools=("maxblur",), grey_pool: str | None = None):
    """Fig. 5 (and Fig. 10 with ``grey_pool="blurmax"``): consistency against accuracy, marker = taps, colour =
    family; without (left) and with (right) shift augmentation. Bars: the seeds' sd (one seed: the test sample's
    binomial sd); axes span at least ``MIN_AXIS_SPAN`` points."""
    from ..plotting import figure
    groups = group(results)
    fig, axes = figure(1, 2, width=9, height=3.6)
    for ax, augment in zip(axes, (False, True)):
        for key in _ordered(groups, augment=augment):
            family, taps = _filter_of(key)
            found = groups[key]
            acc = 100 * np.mean([r["accuracy"] for r in found])
            cons = 100 * np.mean([r["consistency"] for r in found])
            ax.errorbar(acc, cons, xerr=_error_bar(found, "accuracy"), yerr=_error_bar(found, "consistency"),
                        color=FAMILY_COLOURS[family], lw=0.8, zorder=2)
            ax.scatter(acc, cons, marker=TAP_MARKERS.get(taps, "o"), s=90 if taps == 1 else 60,
                       color=FAMILY_COLOURS[family], edgecolor="black", linewidth=0.5, zorder=3,
                       label=model_label(key[0], key[1], key[2]))
            if grey_pool:
                other = groups.get((grey_pool, key[1], key[2], augment))
                if other:
                    o_acc = 100 * np.mean([r["accuracy"] for r in other])
                    o_cons = 100 * np.mean([r["consistency"] for r in other])
                    ax.scatter(o_acc, o_cons, marker=TAP_MARKERS.get(taps, "o"), s=60, color="0.6", zorder=2)
                    ax.annotate("", (o_acc, o_cons), (acc, cons),
                                arrowprops=dict(arrowstyle="->", color="0.6", lw=0.8))
        ax.set_xlabel("test accuracy, unshifted (%)")
        ax.set_title("with shift augmentation" if augment else "without shift augmentation")
        _min_span(ax, MIN_AXIS_SPAN)
    axes[0].set_ylabel("classification consistency (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    if grey_pool:
        handles.append(axes[0].scatter([], [], color="0.6", marker="o"))
        labels.append("blur → pool (grey)")
    fig.legend(handles, labels, loc="outside right center", fontsize=7)
    return fig


def equivariance_scale(results: list[dict]) -> np.ndarray:
    """Per-layer colour limit shared by the Fig. 4 heatmaps of several models: the largest distance any of them
    reaches in that layer (so that the baseline and the blurred model are drawn on the same scale)."""
    return np.max([r["equivariance"]["maps"].max(axis=(1, 2)) for r in results], axis=0)


def plot_equivariance(result: dict, title: str, scale: np.ndarray | None = None):
    """Fig. 4 for one model: the equivariance distance of every layer for every shift of the grid.

    ``scale`` gives each layer's red end (see :func:`equivariance_scale`); by default it is the paper's, half the
    mean distance between two different images, which a weakly trained network never gets near.
    """
    from ..plotting import figure
    eq = result["equivariance"]
    layers = eq["layers"]
    scale = eq["different_images"] / 2 if scale is None else scale
    cols = 8
    rows = int(np.ceil(len(layers) / cols))
    fig, axes = figure(rows, cols, width=10, height=1.45 * rows)
    values = result["config"]["equivariance_range"]
    extent = (-values - 0.5, values - 0.5, values - 0.5, -values - 0.5)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name, heat, limit in zip(axes.flat, layers, eq["maps"], scale):
        # blue = 0 (exactly equivariant), red = the layer's limit; the maps are drawn as a fraction of it, so that
        # one colour bar serves every layer (the limit in each title)
        image = ax.imshow(np.clip(heat, 0, None) / max(float(limit), 1e-6), cmap="RdBu_r", vmin=0, vmax=1,
                          extent=extent)
        ax.set_title(f"{name}\n" + (f"red = {float(limit):.2g}" if limit > 1e-6 else "exact (0)"), fontsize=6)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=list(axes.flat), shrink=0.8, label="distance / layer's red")
    fig.suptitle(title, fontsize=9)
    return fig


def plot_equivariance_profile(results: list[dict]):
    """Mean equivariance distance per layer (relative to the distance between different images), per model."""
    from ..plotting import figure
    fig, ax = figure(1, 1, width=9, height=3.2)
    for r in results:
        eq = r["equivariance"]
        relative = eq["maps"].mean(axis=(1, 2)) / np.maximum(eq["different_images"], 1e-12)
        ax.plot(np.clip(relative, 0, None), "o-", ms=3, color=filter_colour(r["config"]["family"], r["config"]["taps"]),
                label=r["label"])
    layers = results[0]["equivariance"]["layers"]
    ax.set_xticks(range(len(layers)), layers, rotation=70, fontsize=7)
    ax.set_ylabel("distance / distance between\ndifferent images")
    ax.legend()
    return fig


def _by_augment_panels(results, draw, ylabel: str, xlabel: str, width: float = 9, pool: str = "maxblur"):
    from ..plotting import figure
    groups = group(results)
    fig, axes = figure(1, 2, width=width, height=3.3, sharey=True)
    for ax, augment in zip(axes, (False, True)):
        for key in _ordered(groups, pool=pool, augment=augment):
            draw(ax, key, groups[key])
        ax.set_title("with shift augmentation" if augment else "without shift augmentation")
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel(ylabel)
    axes[1].legend(fontsize=7, loc="best")
    return fig


def plot_variation(results: list[dict]):
    """Fig. 6: distribution (empirical CDF) of per-image classification variation."""
    def draw(ax, key, found):
        values = np.sort(np.concatenate([r["variation"] for r in found]))
        ax.step(values, np.arange(1, len(values) + 1) / len(values), where="post", color=_colour(key),
                label=found[0]["label"], lw=1.2)
    fig = _by_augment_panels(results, draw, "fraction of test images", "classification variation (std of p_correct)")
    for ax in fig.axes:
        ax.set_xscale("symlog", linthresh=1e-3)
    return fig


def plot_total_variation(results: list[dict]):
    """Fig. 7: normalised total variation of the learned filters, per conv layer."""
    def draw(ax, key, found):
        layers = list(found[0]["total_variation"])
        values = np.mean([[r["total_variation"][layer] for layer in layers] for r in found], axis=0)
        ax.plot(range(len(layers)), values, "o-", ms=3, color=_colour(key), label=found[0]["label"])
        ax.set_xticks(range(len(layers)), layers, rotation=70, fontsize=7)
    return _by_augment_panels(results, draw, "normalised TV (lower = smoother)", "")


def plot_adversary(results: list[dict]):
    """Fig. 9: accuracy when every shift up to a maximum must be classified correctly."""
    def draw(ax, key, found):
        curve = np.mean([r["adversary_accuracy"] for r in found], axis=0)
        ax.plot(found[0]["adversary_max_shift"], 100 * curve, "o-", ms=3, color=_colour(key),
                label=found[0]["label"])
    return _by_augment_panels(results, draw, "accuracy under shift adversary (%)", "maximum shift (pixels)")


def plot_accuracy_by_shift(results: list[dict], augment: bool = False):
    """Fig. 11: test accuracy for every shift of the grid (heatmaps) and along the diagonal dh = dw."""
    from ..plotting import figure
    groups = group(results)
    keys = _ordered(groups, augment=augment)
    fig, axes = figure(1, len(keys) + 1, width=min(2.0 * (len(keys) + 1), 10), height=2.6)
    values = groups[keys[0]][0]["shift_values"]
    extent = (values[0] - 0.5, values[-1] + 0.5, values[-1] + 0.5, values[0] - 0.5)
    heats = {k: 100 * np.mean([r["accuracy_by_shift"] for r in groups[k]], axis=0) for k in keys}
    low = min(h.min() for h in heats.values())
    high = max(h.max() for h in heats.values())
    for ax, key in zip(axes, keys):
        image = ax.imshow(heats[key], vmin=low, vmax=high, extent=extent, cmap="magma")
        ax.set_title(groups[key][0]["label"], fontsize=8)
        ax.set_xlabel("Δw")
        ax.grid(False)
    axes[0].set_ylabel("Δh")
    fig.colorbar(image, ax=axes[len(keys) - 1], shrink=0.8, label="accuracy (%)")
    ax = axes[-1]
    for key in keys:
        ax.plot(values, np.diag(heats[key]), "o-", ms=2, color=_colour(key), label=groups[key][0]["label"])
    ax.set_xlabel("diagonal shift Δh = Δw")
    ax.set_title("diagonal", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=6, loc="lower center")
    return fig


def plot_shift_probability(results: list[dict], augment: bool = False, images: int = FIG2_IMAGES):
    """Fig. 2: probability of the correct class against horizontal and diagonal shifts for a few test images,
    baseline against each blurred model (the first seed of each; all trained without augmentation by default)."""
    from ..plotting import figure
    groups = group(results)
    keys = [k for k in _ordered(groups, augment=augment) if "p_correct_by_shift" in groups[k][0]]
    if not keys:
        raise ValueError("no stored result has p_correct_by_shift: recompute the table1 runs")
    first = {k: min(groups[k], key=lambda r: r["config"]["seed"]) for k in keys}
    shown = min(images, min(len(first[k]["p_correct_by_shift"]) for k in keys))
    fig, axes = figure(2, shown, width=10, height=3.6, sharey=True)
    values = first[keys[0]]["shift_values"]
    centre = int(np.flatnonzero(values == 0)[0])
    for i in range(shown):
        for row, (name, pick) in enumerate((("horizontal shift Δw (Δh = 0)", lambda p: p[centre]),
                                            ("diagonal shift Δh = Δw", np.diag))):
            ax = axes[row, i]
            for key in keys:
                probability = np.asarray(first[key]["p_correct_by_shift"][i])
                ax.plot(values, pick(probability), "-", lw=1.2, color=_colour(key), label=first[key]["label"])
            ax.set_ylim(-0.02, 1.02)
            if i == 0:
                ax.set_ylabel(f"p(correct)\n{name.split(' Δ')[0]}", fontsize=7)
            if row == 0:
                ax.set_title(f"test image {i + 1}", fontsize=8)
            else:
                ax.set_xlabel("shift (pixels)", fontsize=7)
    axes[0, -1].legend(fontsize=6, loc="lower right")
    return fig


def timing_rows(result: dict) -> list[dict]:
    """Table 2: our forward times (median over interleaved rounds; added time as the median paired ratio to the
    baseline with its 95% interval) next to the paper's."""
    rows = []
    baseline = next(row for row in result["rows"] if row["model"] == "Baseline")
    for row in result["rows"]:
        paper = PAPER_TABLE2.get(row["model"])
        ratio = timing_ratio(row, baseline)
        interval = "" if not np.isfinite(ratio["low"]) else f" [{ratio['low']:+.1f}, {ratio['high']:+.1f}]"
        rows.append({"model": row["model"], "ours [ms]": f"{row['median_ms']:.2f}",
                     "ours % added (95% CI)": "–" if row is baseline else f"{ratio['median']:+.1f}%{interval}",
                     "paper [ms]": f"{paper:.2f}" if paper else "–",
                     "paper % added": PAPER_TABLE2_ADDED.get(row["model"], "–")})
    return rows


# --- the widget (no results needed) ---------------------------------------------------------------------------------

def filter_frame(family: str, taps: int, dpi: int = 100) -> bytes:
    """One widget frame: a filter's 2-D kernel, its magnitude response, and the toy signal max-blur-pooled at every
    shift (a shift-invariant result would give the same samples for all shifts)."""
    import matplotlib.pyplot as plt
    from ..filters.blur import blur_filter, blur_kernel_2d
    from ..spectra import frequencies, magnitude_response
    from ..plotting import new_figure, to_png
    # at reading width (legible text, lib.plotting); constrained layout makes room for the 9-pt text
    fig = new_figure(9.6, 3.0, layout="constrained")
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [0.8, 1, 1.2]})
    kernel = blur_kernel_2d(family, taps)
    # on the 7×7 canvas of the largest filter, outside the kernel grey (its size visible), colours scaled to its
    # own largest weight (printed: the shape visible too)
    canvas = np.full((7, 7), np.nan)
    start = (7 - taps) // 2
    canvas[start:start + taps, start:start + taps] = kernel
    limit = np.abs(kernel).max()
    axes[0].imshow(canvas, cmap=_kernel_cmap(), vmin=-limit, vmax=limit)
    axes[0].set_title(f"{filter_label(family, taps)}: {taps}×{taps} kernel\n(max weight {kernel.max():.2f})",
                      fontsize=9)
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    axes[0].grid(False)
    freqs = frequencies(256)
    keep = freqs >= 0
    axes[1].plot(freqs[keep], magnitude_response(blur_filter(family, taps)[None], 256)[0][keep],
                 color=FAMILY_COLOURS["delta" if taps == 1 else family])
    axes[1].axvline(0.25, color="0.5", ls="--", lw=0.8)
    axes[1].set_ylim(0, 1.1)
    axes[1].set_title("magnitude response")
    axes[1].set_xlabel("cycles/sample (output Nyquist: 0.25)")
    signal = np.array(metrics.TOY_SIGNAL)
    outputs = np.array([metrics.toy_max_blur_pool(signal, (family, taps), shift) for shift in range(len(signal))])
    cmap = plt.get_cmap("viridis", len(signal))
    for shift, row in enumerate(outputs):
        axes[2].plot(row, "o-", color=cmap(shift), ms=4, lw=1.2)
    axes[2].set_ylim(-0.05, 1.05)
    axes[2].set_xticks(range(outputs.shape[1]))
    axes[2].set_xlabel("output sample")
    axes[2].set_title(f"toy output, one line per input shift\n(spread {outputs.std(axis=0).mean():.2f})", fontsize=9)
    # a discrete colour bar instead of an 8-entry legend
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=plt.Normalize(-0.5, len(signal) - 0.5), cmap=cmap), ax=axes[2],
                       ticks=range(len(signal)), fraction=0.08, pad=0.03)
    bar.set_label("input shift (samples)")
    return to_png(fig, dpi=dpi)


def widget_frames(dpi: int = 100) -> tuple[list[bytes], list[str]]:
    """Frames and labels of the filter explorer: all 19 filters of Table 1."""
    filters = table1_filters()
    return [filter_frame(f, t, dpi) for f, t in filters], [filter_label(f, t) for f, t in filters]


# --- claims ---------------------------------------------------------------------------------------------------------

def layer_stride(name: str) -> int | None:
    """Accumulated subsampling factor of a VGG13 layer of Fig. 4 (``conv3_1`` → 4, ``pool3 (ds)`` → 8);
    ``None`` for the pixels and the 1×1 classifier outputs."""
    if name.startswith("conv"):
        return 2 ** (int(name[4]) - 1)
    if name.startswith("pool"):
        return 2 ** (int(name[4]) - (0 if name.endswith("(ds)") else 1))
    return 1 if name == "pix" else None


def modulo_equivariance_error(result: dict) -> float:
    """Largest Fig. 4 distance at the nonzero grid shifts that are multiples of each layer's accumulated stride
    (every layer of a circular network is exactly equivariant there, up to float rounding); NaN when no layer
    has such a shift in the grid."""
    eq = result["equivariance"]
    values = np.arange(-result["config"]["equivariance_range"], result["config"]["equivariance_range"])
    worst = []
    for name, heatmap in zip(eq["layers"], np.asarray(eq["maps"])):
        stride = layer_stride(name)
        if stride is None:
            continue
        on = (values % stride == 0)
        mask = on[:, None] & on[None, :]
        mask[values == 0, values == 0] = False  # the zero shift is trivially equivariant
        if mask.any():
            worst.append(float(np.abs(heatmap[mask]).max()))
    return max(worst) if worst else float("nan")


def _relative_equivariance(result: dict) -> dict[str, float]:
    """Per layer: mean Fig. 4 distance over the grid relative to the distance between different images."""
    eq = result["equivariance"]
    return {name: float(np.mean(m) / max(ref, 1e-12))
            for name, m, ref in zip(eq["layers"], np.asarray(eq["maps"]), eq["different_images"])}


def _combine(verdicts: list[str]) -> str:
    """One verdict for a claim about every case, from the per-case verdicts: ``supported`` when all are,
    ``contradicted`` when all are, ``partly supported`` when some are supported and none contradicted, else
    ``inconclusive`` (``inconclusive (1 seed)`` when that is the reason)."""
    if not verdicts or all(v == "not run" for v in verdicts):
        return "not run"
    verdicts = [v for v in verdicts if v != "not run"]
    if all(v == "supported" for v in verdicts):
        return "supported"
    if all(v == "contradicted" for v in verdicts):
        return "contradicted"
    if any(v == "supported" for v in verdicts) and not any(v == "contradicted" for v in verdicts):
        return "partly supported"
    if all(v == "inconclusive (1 seed)" for v in verdicts):
        return "inconclusive (1 seed)"
    return "inconclusive"


def _by_seed(found: list[dict], value) -> dict[int, object]:
    return {int(r["config"]["seed"]): value(r) for r in found}


def _adversary_outcomes(result: dict) -> np.ndarray:
    """Per grid image: right at every shift of the adversary's largest window (App. B)."""
    correct = unpack_bits(result, "grid_correct_bits")
    reach = np.abs(shift_grid(result["config"]["grid_range"])).max(axis=1)
    return correct[:, reach <= int(result["adversary_max_shift"][-1])].all(axis=1)


def _shift_spread(result: dict) -> float:
    """Fig. 11's degradation: best minus worst accuracy over the grid of shifts."""
    grid = np.asarray(result["accuracy_by_shift"])
    return float(grid.max() - grid.min())


def claims(results: list[dict], timing: dict | None, profile: str,
           padding: list[dict] | None = None) -> list[dict]:
    """The chapter's claims table: the paper's claim and number (for the filter we measured), ours, and a verdict.

    Comparisons are paired: models of one seed saw the same training order, the same test images and the same random
    test shifts, so each seed gives a difference of per-image outcomes (with its exact McNemar p-value), and the
    verdict is the interval of those differences over the seeds widened by the shared test sample's noise
    (:func:`lib.claims.verdict_paired`); one seed gives ``inconclusive (1 seed)`` whatever its p-value. Medians of
    variation, total variation and equivariance distances are compared over seeds only. Claims about every filter or layer combine the per-case
    verdicts (:func:`_combine`). ``padding``: the zero-padded baseline runs, for the circular-padding row.
    """
    s = _settings(profile)
    groups = group(results)
    blurred = [tuple(f) for f in s["filters"] if f[1] > 1]
    rows = []

    def add(claim, paper, ours, verdict, exact=False):
        rows.append({"claim": claim, "paper": paper, "ours": ours, "verdict": verdict, "exact": exact})

    def fmt(found, field):
        return format_mean_sd([100 * r[field] for r in found], digits=1, unit="%")

    def bits(key, field):
        return _by_seed(groups.get(key, []), lambda r: unpack_bits(r, field))

    def compare(reference_key, candidate_key, field, margin=0.0):
        comparison = paired_outcomes(bits(reference_key, field), bits(candidate_key, field))
        return comparison, verdict_paired_outcomes(comparison, margin)

    def base(augment):
        return ("max", "rect", 1, augment)

    def paper_row(filter):
        return PAPER_TABLE1.get(filter)

    # Table 1 / Fig. 5, per filter we trained: the four comparisons of §4.2, with the paper's row for that filter
    for filter in blurred:
        label, key = filter_label(*filter), lambda augment: ("maxblur",) + filter + (augment,)
        paper = paper_row(filter)
        specs = [
            ("No augmentation: blurring raises accuracy", False, False, "accuracy", "correct_bits", 0, 0.0),
            ("No augmentation: blurring raises consistency", False, False, "consistency", "consistent_bits", 2, 0.0),
            ("With augmentation: blurring raises consistency", True, True, "consistency", "consistent_bits", 5, 0.0),
            ("With augmentation: blurring keeps accuracy (at most 1 point lower)", True, True, "accuracy",
             "correct_bits", 3, 0.01),
            ("Blurring replaces shift augmentation: baseline *with* it vs blurred *without*, consistency", True, False,
             "consistency", "consistent_bits", None, 0.0),
        ]
        for claim, base_aug, blur_aug, field, bit_field, column, margin in specs:
            b, f = groups.get(base(base_aug), []), groups.get(key(blur_aug), [])
            comparison, verdict = compare(base(base_aug), key(blur_aug), bit_field, margin)
            if paper is None:
                paper_text = "–"
            elif column is None:
                paper_text = f"{PAPER_TABLE1[('rect', 1)][5]:.1f}% vs {paper[2]:.1f}%"
            else:
                paper_text = f"{PAPER_TABLE1[('rect', 1)][column]:.1f}% → {paper[column]:.1f}%"
            arrow = " vs " if column is None else " → "
            add(f"{claim} ({label})", paper_text,
                f"{fmt(b, field)}{arrow}{fmt(f, field)}; paired {format_paired(comparison)}" if b and f else "not run",
                verdict if b and f else "not run")

    # the zero-padded control (§4.1: circular convolutions cost 0.4 points with augmentation, 93.8% vs 93.4%)
    padded = [r for r in (padding or []) if r is not None and r["config"].get("circular") is False
              and r["config"]["augment"]]
    if padded:
        circular = groups.get(base(True), [])
        comparison = paired_outcomes(_by_seed(circular, lambda r: unpack_bits(r, "correct_bits")),
                                     _by_seed(padded, lambda r: unpack_bits(r, "correct_bits")))
        add("Zero padding instead of circular costs little: baseline with augmentation, zero-padded vs circular",
            "93.8% vs 93.4% (+0.4 pt)", f"{fmt(padded, 'accuracy')} vs {fmt(circular, 'accuracy')}; paired "
            f"{format_paired(comparison)}", verdict_paired_outcomes(comparison))

    # Fig. 6: every blurred model has a lower median variation than the baseline of its setting (paired seeds)
    cases = []
    for filter in blurred:
        for augment in (False, True):
            b, f = groups.get(base(augment), []), groups.get(("maxblur",) + filter + (augment,), [])
            if b and f:
                medians_b = _by_seed(b, lambda r: float(np.median(r["variation"])))
                medians_f = _by_seed(f, lambda r: float(np.median(r["variation"])))
                seeds = sorted(set(medians_b) & set(medians_f))
                cases.append(verdict_paired([medians_b[k] - medians_f[k] for k in seeds]))
    add("Blurring lowers the median classification variation (each filter × setting vs the baseline)",
        "every filter (Fig. 6)", f"{cases.count('supported')} of {len(cases)} cases supported by paired seeds",
        _combine(cases))

    # Fig. 6 and §4.2: "as the filter size is increased, the output classification variation decreases"
    binomials = sorted(t for f, t in blurred if f == "binomial")
    if len(binomials) >= 2:
        small, large = binomials[0], binomials[-1]
        cases, texts = [], []
        for augment in (False, True):
            a = _by_seed(groups.get(("maxblur", "binomial", small, augment), []),
                         lambda r: float(np.median(r["variation"])))
            b = _by_seed(groups.get(("maxblur", "binomial", large, augment), []),
                         lambda r: float(np.median(r["variation"])))
            seeds = sorted(set(a) & set(b))
            cases.append(verdict_paired([a[k] - b[k] for k in seeds]))
            texts.append(f"{'aug' if augment else 'no aug'}: {format_mean_sd([a[k] for k in seeds], digits=4)} → "
                         f"{format_mean_sd([b[k] for k in seeds], digits=4)}")
        add(f"A larger filter lowers variation further (median, Binomial-{small} → Binomial-{large}, both settings)",
            "decreasing with filter size (Fig. 6)", "; ".join(texts), _combine(cases))

    # Fig. 7: per conv layer, normalised TV lower with each blur than with the baseline (paired seeds)
    for filter in blurred[:1] if profile == "quick" else blurred:
        cases = []
        for augment in (False, True):
            b, f = groups.get(base(augment), []), groups.get(("maxblur",) + filter + (augment,), [])
            if b and f:
                tv_b, tv_f = _by_seed(b, lambda r: r["total_variation"]), _by_seed(f, lambda r: r["total_variation"])
                seeds = sorted(set(tv_b) & set(tv_f))
                for layer in b[0]["total_variation"]:
                    cases.append(verdict_paired([tv_b[k][layer] - tv_f[k][layer] for k in seeds]))
        add(f"Learned filters get smoother: normalised TV lower with {filter_label(*filter)} (every conv layer, both "
            f"settings)", "lower in every layer (Fig. 7)",
            f"{cases.count('supported')} of {len(cases)} layer × setting cases supported, "
            f"{cases.count('contradicted')} contradicted", _combine(cases))

    # Fig. 4: exact properties of circular networks, and blurring keeping more equivariance
    with_maps = [r for found in groups.values() for r in found if "equivariance" in r]
    if with_maps:
        before = max(float(np.abs(m).max()) for r in with_maps
                     for name, m in zip(r["equivariance"]["layers"], np.asarray(r["equivariance"]["maps"]))
                     if name in ("pix", "conv1_1", "conv1_2", "pool1 (dense)"))
        add("Every layer before the first downsampling is exactly shift-equivariant (circular network)",
            "distance 0 at all shifts (Fig. 4)", f"largest distance {before:.1e} over {len(with_maps)} models",
            "supported" if before < 1e-4 else "contradicted", exact=True)
        modulo = max(modulo_equivariance_error(r) for r in with_maps)
        add("Modulo-N equivariance: distance 0 at shifts that are multiples of each layer's accumulated stride "
            "(N doubling with each downsampling)", "holds (Fig. 4a)",
            f"largest distance {modulo:.1e} at those shifts", "supported" if modulo < 1e-4 else "contradicted",
            exact=True)
        base_maps = _by_seed([r for r in groups.get(base(False), []) if "equivariance" in r], _relative_equivariance)
        for filter in blurred:
            blur_maps = _by_seed([r for r in groups.get(("maxblur",) + filter + (False,), []) if "equivariance" in r],
                                 _relative_equivariance)
            seeds = sorted(set(base_maps) & set(blur_maps))
            if not seeds:
                continue
            # the layers after the first subsampling, where the two networks differ
            layers = [n for n in base_maps[seeds[0]] if layer_stride(n) is None or layer_stride(n) > 1]
            cases = [verdict_paired([base_maps[k][n] - blur_maps[k][n] for k in seeds]) for n in layers]
            lower = sum(np.mean([blur_maps[k][n] for k in seeds]) < np.mean([base_maps[k][n] for k in seeds])
                        for n in layers)
            add(f"Blurred pooling keeps features more shift-equivariant ({filter_label(*filter)} vs baseline, no "
                f"augmentation; every layer from pool1 (ds) on)", "better preserved in every layer (Fig. 4b)",
                f"mean relative distance lower in {lower} of {len(layers)} layers (n={len(seeds)})",
                _combine(cases))
            dense_jump = [np.mean([base_maps[k][f"pool{b} (ds)"] - base_maps[k][f"pool{b} (dense)"] for k in seeds])
                          for b in range(1, 6) if f"pool{b} (ds)" in base_maps[seeds[0]]]
            break
        else:
            dense_jump = []
        if base_maps and dense_jump:
            seeds = sorted(base_maps)
            cases = [verdict_paired([base_maps[k][f"pool{b} (ds)"] - base_maps[k][f"pool{b} (dense)"] for k in seeds])
                     for b in range(1, 4)]
            add("Equivariance is lost at subsampling, not at dense max-pooling: baseline pool1–3, distance after "
                "(ds) above before (dense)", "lost in pool (ds) (Fig. 4a)",
                "jump " + ", ".join(f"{100 * j:+.1f}" for j in dense_jump[:3]) + " % of the different-image distance",
                _combine(cases))

    # App. B: the shift adversary at the grid's largest window, per grid image (paired McNemar within a seed)
    def adversary(key):
        return _by_seed([r for r in groups.get(key, []) if "grid_correct_bits" in r], _adversary_outcomes)

    if binomials:
        largest = binomials[-1]
        reference, candidate = adversary(base(True)), adversary(("maxblur", "binomial", largest, False))
        comparison = paired_outcomes(reference, candidate)
        reach = next((int(r["adversary_max_shift"][-1]) for found in groups.values() for r in found), s["grid_range"])
        add(f"Shift adversary (max shift {reach}): Binomial-{largest} without augmentation beats the baseline with "
            f"augmentation", "Binomial-7 above the baseline (Fig. 9)",
            f"paired {format_paired(comparison)}" if comparison["seeds"] else "not run",
            verdict_paired_outcomes(comparison))
        if len(binomials) >= 2:
            cases, texts = [], []
            for augment in (False, True):
                comparison = paired_outcomes(adversary(("maxblur", "binomial", binomials[0], augment)),
                                             adversary(("maxblur", "binomial", largest, augment)))
                cases.append(verdict_paired_outcomes(comparison))
                texts.append(f"{'aug' if augment else 'no aug'} {format_paired(comparison)}")
            add(f"A larger binomial resists the adversary more (Binomial-{binomials[0]} → Binomial-{largest}, both "
                f"settings)", "increasing with filter size (Fig. 9)", "; ".join(texts), _combine(cases))

    # App. D, Fig. 11: without augmentation the baseline's accuracy varies with the shift more than a blurred model's
    cases, texts = [], []
    spread_base = _by_seed(groups.get(base(False), []), _shift_spread)
    for filter in blurred:
        spread = _by_seed(groups.get(("maxblur",) + filter + (False,), []), _shift_spread)
        seeds = sorted(set(spread) & set(spread_base))
        if seeds:
            cases.append(verdict_paired([spread_base[k] - spread[k] for k in seeds]))
            texts.append(f"{filter_label(*filter)} {format_mean_sd([100 * spread[k] for k in seeds], digits=1)}")
    if cases:
        add("Accuracy degrades with shift less after blurring: best − worst accuracy over the shift grid, no "
            "augmentation (points)", "baseline degrades quickly; Binomial-7 largely flat (Fig. 11)",
            f"baseline {format_mean_sd([100 * v for v in spread_base.values()], digits=1)}; " + "; ".join(texts),
            _combine(cases))

    # App. C: blur → downsample (maxblur) against blur → pool (blurmax), per filter and setting
    cases, texts = [], []
    for key, found in sorted(groups.items()):
        if key[0] != "blurmax":
            continue
        for field, bit_field in (("accuracy", "correct_bits"), ("consistency", "consistent_bits")):
            comparison, verdict = compare(key, ("maxblur",) + key[1:], bit_field)
            if comparison["seeds"]:
                cases.append(verdict)
                texts.append(comparison)
    if cases:
        wins = sum(np.mean(c["differences"]) > 0 for c in texts)
        significant = sum(all(p < 0.05 for p in c["p_values"]) and np.mean(c["differences"]) > 0 for c in texts)
        add("Blur-then-downsample beats blur-then-pool (App. C; accuracy and consistency, each filter and setting)",
            "blur→pool lower for most filters (Fig. 10)",
            f"{wins} of {len(texts)} comparisons won by blur→downsample ({significant} with McNemar p < 0.05)",
            _combine(cases))

    # Table 1, with augmentation: very large rectangles trade accuracy for consistency
    large = [f for f in blurred if f[0] == "rect" and f[1] >= 5]
    moderate = [f for f in blurred if f[0] == "rect" and 2 <= f[1] <= 4]
    if large and moderate:
        def mean_of(filters, field):
            return [np.mean([r[field] for r in groups.get(("maxblur",) + f + (True,), [])]) for f in filters
                    if groups.get(("maxblur",) + f + (True,))]
        n_seeds = min(len(groups.get(("maxblur",) + f + (True,), [])) for f in large + moderate)
        acc_l, acc_m = mean_of(large, "accuracy"), mean_of(moderate, "accuracy")
        con_l, con_m = mean_of(large, "consistency"), mean_of(moderate, "consistency")
        holds = np.mean(acc_l) < np.mean(acc_m) and np.mean(con_l) > np.mean(con_m)
        add("With augmentation, very large rectangles (Rect-5–7) buy consistency with accuracy (vs Rect-2–4)",
            "e.g. Rect-7 90.5% / 99.0% vs Rect-3 93.6% / 97.9%",
            f"accuracy {100 * np.mean(acc_l):.1f}% vs {100 * np.mean(acc_m):.1f}%, consistency "
            f"{100 * np.mean(con_l):.1f}% vs {100 * np.mean(con_m):.1f}%",
            ("inconclusive (1 seed)" if n_seeds < 2 else ("supported" if holds else "contradicted")))
    else:
        add("With augmentation, very large rectangles (Rect-5–7) buy consistency with accuracy (vs Rect-2–4)",
            "e.g. Rect-7 90.5% / 99.0% vs Rect-3 93.6% / 97.9%",
            f"not run (the {profile} profile trains {', '.join(filter_label(*f) for f in blurred)})", "not run")

    if timing is not None:
        rows_by_model = {row["model"]: row for row in timing["rows"]}
        filtered = [k for k in rows_by_model if "filter" in k and "separable" not in k]
        largest_row = max(filtered, key=lambda k: int(k.split("+ ")[-1].split("×")[0]))
        ratio = timing_ratio(rows_by_model[largest_row], rows_by_model["Baseline"])
        paper_added = float(PAPER_TABLE2_ADDED[largest_row].strip("+%")) if largest_row in PAPER_TABLE2_ADDED \
            else float("nan")
        interval = (f"[{ratio['low']:+.1f}, {ratio['high']:+.1f}] (95% CI of the median of paired rounds)"
                    if np.isfinite(ratio["low"]) else "(too few rounds for an interval)")
        ours = f"{ratio['median']:+.1f}% {interval}; {timing.get('device', 'cpu').upper()}, width {timing['width']}"
        if timing.get("device", "cpu") != "cuda":
            verdict = "not judged (CPU timing; the paper's claim is about a GPU)"
        elif not np.isfinite(ratio["low"]):
            verdict = "inconclusive (too few rounds)"
        elif ratio["high"] <= 2 * paper_added:
            verdict = "supported"
        elif ratio["low"] > 2 * paper_added:
            verdict = "contradicted"
        else:
            verdict = "inconclusive"
        add(f"Timing: the largest filter adds little per forward pass ({largest_row.split('+ ')[-1]}; within 2× of "
            f"the paper's overhead)", f"+{paper_added:.1f}% (GTX 1080 Ti)", ours, verdict)
    return rows


def timing_ratio(row: dict, baseline: dict, confidence: float = 0.95) -> dict:
    """Added time of a variant over the baseline in percent: the median over rounds of the paired ratio (the
    variants ran interleaved, one round each), with a distribution-free confidence interval for that median from
    the order statistics of the binomial(n, ½) law. Falls back to the medians' ratio without per-round times."""
    from scipy.stats import binom
    if "times_ms" not in row or "times_ms" not in baseline:
        value = 100 * (row["median_ms"] / baseline["median_ms"] - 1)
        return {"median": value, "low": float("nan"), "high": float("nan")}
    ratios = np.sort(100 * (np.asarray(row["times_ms"]) / np.asarray(baseline["times_ms"]) - 1))
    n = len(ratios)
    # [x_(k), x_(n-k+1)] covers the median with probability 1 - 2 P(B <= k - 1), B ~ Bin(n, 1/2): the largest such k
    k = 0
    while k + 1 <= n // 2 and binom.cdf(k, n, 0.5) <= (1 - confidence) / 2:
        k += 1
    if k == 0:  # too few rounds for any interval at this confidence
        return {"median": float(np.median(ratios)), "low": float("nan"), "high": float("nan")}
    return {"median": float(np.median(ratios)), "low": float(ratios[k - 1]), "high": float(ratios[n - k])}
