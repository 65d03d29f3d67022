"""Synthesis: every paper's lens on every paper's model, and one scoreboard of every chapter's claims (issue 18).

Each of the four papers brings a *model change* and a *lens* (a way to measure a network). Here one small CIFAR-10
backbone (:class:`lib.models.synthesis_net.SynthesisNet`) is trained with one common recipe in variants that switch
on each paper's change alone and in pairs (:data:`VARIANTS`), and every trained model is measured through every lens,
with the chapters' own implementations:

* shift consistency under random circular shifts and the per-layer equivariance profile (anti-aliasing chapter:
  :func:`lib.metrics.agreement`, :func:`lib.experiments.anti_aliasing.equivariance_maps`);
* the frequency-sensitivity map, its radial profile and moments, and its rank correlation with the training data's
  Fourier variance τ (:mod:`lib.sensitivity`, :func:`lib.linear_theory.frequency_variance`, the frequency-sensitivity
  chapter's Spearman ρ);
* spectral coverage of every learned spatial bank (:mod:`lib.spectra`, spatial-mixing chapter) and its leakage
  (:func:`lib.experiments.spectral_leakage.kernel_leakage`: side lobes, out-of-band and high-frequency energy);
* FGSM and PGD accuracy at a few ε with per-image outcomes (:func:`lib.attacks.correct_under_attack`).

:data:`PREDICTIONS` states the cross-paper predictions, with their direction, before any number is computed;
:func:`claims` measures and judges them through :mod:`lib.claims`. :func:`scoreboard` collects every chapter's claims
table from the results store, without computing anything.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from functools import lru_cache

import numpy as np
import torch

from . import Run
from .. import data, linear_theory, metrics, sensitivity, spectra
from ..attacks import correct_under_attack
from ..claims import (format_trend, judged, mean_sd, paired_outcomes, paired_values, trend_test, verdict_base,
                      verdict_equivalent, verdict_paired)
from ..models.synthesis_net import SynthesisNet
from ..training import count_parameters, fit, predict
from .anti_aliasing import equivariance_maps, shift_grid
from .frequency_sensitivity import _safe_moments, _spearman
from .spectral_leakage import _bits, _splits, _stem_examples, _train_config, kernel_leakage, unpack_bits

CHAPTER = "synthesis"

# variant name → (label, the switches of SynthesisNet it sets, whose change it is). The baseline is a plain 3×3 CNN
# with max-pooling and zero padding; every other variant changes only what its switches say.
VARIANTS = {
    "baseline": ("3×3 baseline", {}, "—"),
    "separable": ("3×3 separable (learned depthwise)", {"mixing": "separable"}, "spatial mixing"),
    "chans": ("Chans (frozen random depthwise)", {"mixing": "chans"}, "spatial mixing"),
    "blurpool": ("BlurPool", {"pool": "maxblur"}, "anti-aliasing"),
    "circular": ("circular padding", {"padding": "circular"}, "anti-aliasing"),
    "k7": ("7×7", {"kernel_size": 7}, "spectral leakage"),
    "k7_hamming": ("7×7 + Hamming", {"kernel_size": 7, "window": "hamming"}, "spectral leakage"),
    "chans_blurpool": ("Chans + BlurPool", {"mixing": "chans", "pool": "maxblur"}, "spatial mixing + anti-aliasing"),
    "k7_hamming_blurpool": ("7×7 + Hamming + BlurPool", {"kernel_size": 7, "window": "hamming", "pool": "maxblur"},
                            "spectral leakage + anti-aliasing"),
}

_CIFAR_EPSILONS = (1 / 255, 2 / 255, 4 / 255, 8 / 255)


def _train(epochs, lr, batch_size=128):
    """The common recipe: SGD (Nesterov), one-cycle, weight decay 5e-4, random crops (4 px, zero fill) and flips."""
    return {"epochs": epochs, "eval_every": epochs, "batch_size": batch_size, "optimizer": "sgd", "lr": lr,
            "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "schedule": "onecycle", "warmup_fraction": 0.2,
            "augment": {"translate": 4, "mode": "zeros", "flip": True}}


SETTINGS = {
    # CI: the whole chapter in a few minutes on a 2-core CPU (CIFAR-10 subsets, width 4, 2 seeds); the numbers only
    # show that every lens runs on every variant.
    "quick": {
        "seeds": (0, 1), "variants": tuple(VARIANTS),
        "width": 4, "depth_multiplier": 3, "blur_filter": ("triangle", 5),
        "n_train": 1000, "n_test": 500, "train": _train(epochs=2, lr=0.05, batch_size=100),
        "channels_last": True,
        "sensitivity_images": 50, "tau_images": 500, "equivariance_images": 2, "equivariance_range": 2,
        "n_attack": 100, "epsilons": _CIFAR_EPSILONS, "pgd_epsilons": (2 / 255, 4 / 255), "pgd_steps": 2,
    },
    # medium (the chapter's evidence; computed in the background by two runners of one thread each, committed under
    # results/medium/synthesis/): full CIFAR-10, width 16 (16-32-64-128 channels), d = 3, 3 epochs, 3 seeds, 9 variants
    # = 27 runs. Measured per training step (batch 128, one thread, process CPU time, channels_last, 4 steps after
    # construction, on this 2-core machine while the anti-aliasing medium sweep ran two processes beside it, so the
    # machine was loaded and these are upper-side numbers): baseline ≈ 300 ms, separable ≈ 330, Chans ≈ 290,
    # BlurPool ≈ 440, circular ≈ 330, 7×7 ≈ 1,050, 7×7 + Hamming ≈ 1,000; the pairs estimated as their parts:
    # Chans + BlurPool ≈ 430, 7×7 + Hamming + BlurPool ≈ 1,150. Sum over the 9 variants ≈ 5.3 s per step of each,
    # × 391 steps per epoch × 3 epochs ≈ 104 min per seed of training; the lenses (3 evaluations of the 10,000 test
    # images, sensitivity on 500 images = 10 backward passes each, FGSM at 4 ε and 10-step PGD at 2 ε on 1,000 images,
    # the 8-image × 64-shift equivariance grid, kernel spectra) ≈ 100 s per 3×3 run and ≈ 300 s per 7×7 run ≈ 25 min
    # per seed. 3 seeds: (104 + 25) × 3 ≈ 390 min ≈ 6.5 CPU-hours (the brief's cap is 8), ≈ 3.3 h of the machine
    # with two one-thread runners. 4 epochs would have cost ≈ 8.2 CPU-hours: over the cap.
    "medium": {
        "seeds": (0, 1, 2), "variants": tuple(VARIANTS),
        "width": 16, "depth_multiplier": 3, "blur_filter": ("triangle", 5),
        "n_train": None, "n_test": None, "train": _train(epochs=3, lr=0.1),
        "channels_last": True,
        "sensitivity_images": 500, "tau_images": 2000, "equivariance_images": 8, "equivariance_range": 4,
        "n_attack": 1000, "epsilons": _CIFAR_EPSILONS, "pgd_epsilons": (2 / 255, 4 / 255), "pgd_steps": 10,
    },
    # a larger version for a GPU (width 64 = MyrtleCNN's, d = 9 as in the spatial-mixing chapter, 15 epochs): only
    # tested at tiny scale, not run.
    "paper": {
        "seeds": (0, 1, 2), "variants": tuple(VARIANTS),
        "width": 64, "depth_multiplier": 9, "blur_filter": ("triangle", 5),
        "n_train": None, "n_test": None, "train": _train(epochs=15, lr=0.2, batch_size=512),
        "channels_last": None,
        "sensitivity_images": 1000, "tau_images": 5000, "equivariance_images": 16, "equivariance_range": 8,
        "n_attack": 1000, "epsilons": _CIFAR_EPSILONS, "pgd_epsilons": (2 / 255, 4 / 255), "pgd_steps": 10,
    },
}


def _settings(profile: str) -> dict:
    if profile not in SETTINGS:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(SETTINGS)}")
    return SETTINGS[profile]


def resolve(profile: str) -> str:
    """:func:`lib.experiments.resolve_profile` for this chapter (``auto``: the most complete committed profile, paper
    then medium, else quick)."""
    from . import resolve_profile
    return resolve_profile(profile, CHAPTER)


def scoreboard_profiles(profile: str) -> dict[str, str]:
    """The profile each chapter of the scoreboard is read at: ``profile`` itself, or for ``auto`` each chapter's own
    most complete profile (as each chapter's page resolves it)."""
    from . import resolve_profile
    return {c: (resolve(profile) if c == CHAPTER else resolve_profile(profile, c)) for c in SCOREBOARD_CHAPTERS}


def label(variant: str) -> str:
    return VARIANTS[variant][0]


def model_switches(s: dict, variant: str) -> dict:
    """Every keyword of :class:`SynthesisNet` for ``variant`` at the settings ``s`` (the baseline's, then its own)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    base = {"width": s["width"], "kernel_size": 3, "window": None, "mixing": "full",
            "depth_multiplier": s["depth_multiplier"], "pool": "max", "filter": list(s["blur_filter"]),
            "padding": "zeros"}
    return {**base, **VARIANTS[variant][1]}


def runs(profile: str, section: str | None = None) -> list[Run]:
    """One run per (variant, seed); the only section is ``"variants"`` (None: all)."""
    s = _settings(profile)
    if section not in (None, "variants"):
        raise ValueError(f"unknown section {section!r}; choose 'variants' or None")
    out = []
    for variant in s["variants"]:
        for seed in s["seeds"]:
            config = {"dataset": "cifar10", "seed": seed, "variant": variant, "model": model_switches(s, variant),
                      "n_train": s["n_train"], "n_test": s["n_test"], "train": s["train"],
                      "channels_last": s["channels_last"],
                      "lenses": {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items()
                                 if k in ("sensitivity_images", "tau_images", "equivariance_images",
                                          "equivariance_range", "n_attack", "epsilons", "pgd_epsilons",
                                          "pgd_steps")}}
            out.append(Run(CHAPTER, f"{variant}-s{seed}", config, train_and_measure, "variants"))
    return out


def describe(profile: str) -> str:
    """One paragraph (Markdown) on what ``profile`` trains."""
    s = _settings(profile)
    t = s["train"]
    return (f"Profile **{profile}**: CIFAR-10 ({s['n_train'] or 'all 50,000'} training images, "
            f"{s['n_test'] or 'all 10,000'} test images), SynthesisNet width {s['width']} (depth multiplier "
            f"{s['depth_multiplier']} for the separable variants, {s['blur_filter'][0].title()}-{s['blur_filter'][1]} "
            f"for BlurPool), {t['epochs']} epochs, batch {t['batch_size']}, SGD lr {t['lr']} one-cycle, crops ± 4 px "
            f"and flips; seeds {tuple(s['seeds'])}; {len(s['variants'])} variants: "
            + ", ".join(label(v) for v in s["variants"])
            + f". Sensitivity on {s['sensitivity_images']} test images, attacks on {s['n_attack']}.")


# --- one run ------------------------------------------------------------------------------------------------------

def build_model(config: dict) -> SynthesisNet:
    mean, std = data.stats(config["dataset"])
    switches = dict(config["model"])
    switches["filter"] = tuple(switches["filter"])
    return SynthesisNet(**switches, mean=mean, std=std)


@lru_cache(maxsize=2)
def _tau(dataset: str, n_train, n_images: int) -> np.ndarray:
    """τ (C, H, W) of the training images (a class-balanced subset, data seed 2, as the frequency chapter takes)."""
    (x_train, y_train), _ = _splits(dataset, n_train, 1)
    return linear_theory.frequency_variance(data.subset(x_train, y_train, n_images, seed=2)[0].numpy())


def kernel_spectra(model: SynthesisNet, size: int = 32, max_kernels: int = 512) -> dict:
    """Spectral coverage of every spatial bank (each kernel scaled to unit energy: BatchNorm follows, so only the
    shape of a filter matters), with the leakage measures of the spectral-leakage chapter beside it."""
    generator = torch.Generator().manual_seed(0)
    layers, cover = [], []
    for name, weight in model.spatial_kernels():
        bank = weight.float().cpu().reshape(-1, *weight.shape[-2:])
        if len(bank) > max_kernels:
            bank = bank[torch.randperm(len(bank), generator=generator)[:max_kernels]]
        bank = bank / bank.pow(2).sum((1, 2), keepdim=True).sqrt().clamp_min(1e-12)
        layers.append(name)
        cover.append(spectra.coverage(spectra.spectral_envelope(bank, size=size)))
    return {"layers": layers, "coverage": cover, "mean_coverage": float(np.mean(cover)),
            "leakage": kernel_leakage(model)}


def _stem_envelope(model: SynthesisNet, size: int = 32) -> np.ndarray:
    _, weight = model.spatial_kernels()[0]
    bank = weight.float().cpu().reshape(-1, *weight.shape[-2:])
    bank = bank / bank.pow(2).sum((1, 2), keepdim=True).sqrt().clamp_min(1e-12)
    return spectra.spectral_envelope(bank, size=size).astype(np.float32)


def high_frequency_sensitivity(sens: np.ndarray, cutoff: float = 0.25) -> float:
    """Fraction of the sensitivity map's mass at radial frequencies above ``cutoff`` cycles/pixel."""
    height, width = sens.shape[-2:]
    fy, fx = np.fft.fftfreq(height), np.fft.fftfreq(width)
    high = np.hypot(fy[:, None], fx[None, :]) > cutoff
    total = float(sens.sum())
    return float(sens[..., high].sum() / total) if total > 0 else float("nan")


def _attacks(model, lenses: dict, x_test, y_test, seed: int, device) -> dict:
    """FGSM at every ε and PGD at ``pgd_epsilons`` on a fixed class-balanced subset (data seed 2), per image."""
    x, y = data.subset(x_test, y_test, lenses["n_attack"], seed=2)
    clean = correct_under_attack(model, x, y, [0.0], attack="fgsm", device=device)
    fgsm = correct_under_attack(model, x, y, lenses["epsilons"], attack="fgsm", device=device)
    pgd = correct_under_attack(model, x, y, lenses["pgd_epsilons"], attack="pgd", device=device,
                               steps=lenses["pgd_steps"], generator=torch.Generator().manual_seed(seed))
    return {"n": int(len(y)), "epsilons": list(lenses["epsilons"]), "pgd_epsilons": list(lenses["pgd_epsilons"]),
            "clean": float(clean.mean()), "clean_bits": _bits(clean),
            "fgsm": [float(v) for v in fgsm.mean(1)], "fgsm_bits": _bits(fgsm),
            "pgd": [float(v) for v in pgd.mean(1)], "pgd_bits": _bits(pgd)}


def train_and_measure(config: dict, device) -> dict:
    """Train one variant with the common recipe, then measure it through every lens (module docstring)."""
    lenses = config["lenses"]
    train, test = _splits(config["dataset"], config["n_train"], config["n_test"])
    model = build_model(config)
    at_init = kernel_spectra(model)
    trained = fit(model, train, test, config=_train_config(config["train"], config["channels_last"]),
                  seed=config["seed"], device=device, progress=False, description=label(config["variant"]))
    model.eval()
    model.to(memory_format=torch.contiguous_format)
    x_test, y_test = test
    # fp32 evaluation on every device (the anti-aliasing chapter: bf16 flipped ~1 % of shifted predictions)
    evaluation = dict(device=device, amp=False, channels_last=config["channels_last"])
    correct = (predict(model, x_test, **evaluation).argmax(1) == y_test).numpy()
    # consistency (anti-aliasing chapter): two independent random circular shifts in [-16, 16)² per test image; the
    # shifts depend on the seed only, so models of one seed see the same shifted images (paired tests)
    generator = torch.Generator().manual_seed(config["seed"] + 1)
    size = x_test.shape[-1]
    first, second = (torch.randint(-size // 2, size // 2, (2, len(x_test)), generator=generator) for _ in range(2))
    pred_a = predict(model, data.circular_shift(x_test, first[0], first[1]), **evaluation).argmax(1)
    pred_b = predict(model, data.circular_shift(x_test, second[0], second[1]), **evaluation).argmax(1)
    consistent = (pred_a == pred_b).numpy()
    eq_x, _ = data.subset(x_test, y_test, lenses["equivariance_images"], seed=2)
    equivariance = equivariance_maps(model, eq_x, shift_grid(lenses["equivariance_range"]), device)
    relative = (np.asarray(equivariance["maps"]).mean(axis=(1, 2))
                / np.maximum(np.asarray(equivariance["different_images"]), 1e-12))
    # frequency sensitivity (frequency-sensitivity chapter)
    images, _ = data.subset(x_test, y_test, lenses["sensitivity_images"], seed=1)
    sens = sensitivity.frequency_sensitivity(model, images, device=device)
    radii, radial = sensitivity.radial_profile(sens)
    moment = _safe_moments(sens)
    tau = _tau(config["dataset"], config["n_train"], lenses["tau_images"])
    kernels = kernel_spectra(model)
    stem_weight = model.spatial_kernels()[0][1]
    return {
        "variant": config["variant"], "label": label(config["variant"]),
        "accuracy": float(correct.mean()), "correct_bits": _bits(correct), "n_test": int(len(y_test)),
        "history": trained["history"], "train_time_s": trained["train_time_s"],
        "parameters": trained["parameters"], "trainable_parameters": count_parameters(model, trainable_only=True),
        "consistency": metrics.agreement(pred_a.numpy(), pred_b.numpy()), "consistent_bits": _bits(consistent),
        "accuracy_random_shift": float((pred_a == y_test).float().mean()),
        "equivariance": equivariance, "equivariance_relative": relative,
        "equivariance_mean": float(np.mean(relative[1:])),   # every layer but the pixels (0 by construction)
        "sensitivity": sens.astype(np.float32), "radii": radii, "radial": radial,
        "moment1": moment[1], "moment2": moment[2], "sensitivity_high": high_frequency_sensitivity(sens),
        "rho_tau": _spearman(sens, tau),
        "kernels": kernels, "kernels_at_init": at_init,
        "stem_kernels": _stem_examples(model, 8), "stem_envelope": _stem_envelope(model),
        "stem_shape": list(stem_weight.shape),
        "attacks": _attacks(model, lenses, x_test, y_test, config["seed"], device),
    }


# --- summaries ----------------------------------------------------------------------------------------------------

def group(results: list[dict], variant: str) -> list[dict]:
    """The results of one variant, sorted by seed (missing results, ``None``, are skipped)."""
    return sorted((r for r in results if r is not None and r["config"]["variant"] == variant),
                  key=lambda r: r["config"]["seed"])


def variants_in(results: list[dict]) -> list[str]:
    present = {r["config"]["variant"] for r in results if r is not None}
    return [v for v in VARIANTS if v in present]


def fgsm_middle(r: dict) -> float:
    a = r["attacks"]
    return a["fgsm"][len(a["epsilons"]) // 2]


def pgd_last(r: dict) -> float:
    return r["attacks"]["pgd"][-1]


# lens → (label, value of one result, display scale, digits)
LENSES = {
    "accuracy": ("test accuracy (%)", lambda r: r["accuracy"], 100, 1),
    "consistency": ("shift consistency (%)", lambda r: r["consistency"], 100, 1),
    "equivariance": ("equivariance distance (rel.)", lambda r: r["equivariance_mean"], 1, 3),
    "moment1": ("sensitivity moment 1", lambda r: r["moment1"], 1, 2),
    "moment2": ("sensitivity moment 2", lambda r: r["moment2"], 1, 1),
    "sensitivity_high": ("high-freq. sensitivity (%)", lambda r: r["sensitivity_high"], 100, 1),
    "rho_tau": ("ρ(sensitivity, τ)", lambda r: r["rho_tau"], 1, 2),
    "coverage": ("kernel coverage", lambda r: r["kernels"]["mean_coverage"], 1, 3),
    "kernel_high": ("kernel high-freq. energy (%)", lambda r: r["kernels"]["leakage"]["mean_high_frequency"], 100, 1),
    "sidelobe": ("side-lobe energy (%)", lambda r: r["kernels"]["leakage"]["mean_sidelobe_energy"], 100, 1),
    "out_of_band": ("out-of-band energy (%)", lambda r: r["kernels"]["leakage"]["mean_out_of_band"], 100, 1),
    "fgsm": ("FGSM accuracy, middle ε (%)", fgsm_middle, 100, 1),
    "pgd": ("PGD accuracy, largest ε (%)", pgd_last, 100, 1),
}


def lens_matrix(results: list[dict]) -> dict:
    """``{"lenses", "variants", "mean", "sd", "n"}``: mean and sd over seeds of every lens for every variant."""
    variants = variants_in(results)
    mean = np.full((len(LENSES), len(variants)), np.nan)
    sd, n = mean.copy(), np.zeros_like(mean, dtype=int)
    for j, v in enumerate(variants):
        members = group(results, v)
        for i, (_, value, _, _) in enumerate(LENSES.values()):
            values = [x for x in (value(r) for r in members) if x is not None and np.isfinite(x)]
            mean[i, j], sd[i, j], n[i, j] = mean_sd(values)
    return {"lenses": list(LENSES), "variants": variants, "mean": mean, "sd": sd, "n": n}


def lens_table(results: list[dict]) -> list[dict]:
    """The raw lens × model table: one row per variant, one column per lens, mean ± sd over seeds."""
    m = lens_matrix(results)
    rows = []
    for j, v in enumerate(m["variants"]):
        row = {"variant": label(v), "seeds": int(m["n"][:, j].max())}
        for i, key in enumerate(m["lenses"]):
            name, _, scale, digits = LENSES[key]
            mu, s, k = m["mean"][i, j], m["sd"][i, j], m["n"][i, j]
            row[name] = "—" if k == 0 else (f"{mu * scale:.{digits}f}" + (f" ± {s * scale:.{digits}f}" if k > 1
                                                                           else ""))
        rows.append(row)
    return rows


# --- the cross-paper predictions (stated before any number) ---------------------------------------------------------
#
# kind "items": per-image outcomes compared image by image between variants of one seed (the seeds' spread plus the
# test sample's noise: lib.claims.paired_outcomes / paired_values, verdict_paired). kind "values": one number per model,
# paired per seed (verdict_paired over seeds). kind "trend": a correlation over every variant, within seeds, with a
# permutation p and a bootstrap interval over seeds (lib.claims.trend_test). kind "additive": the interaction
# pair − first − second + baseline, within ±margin (lib.claims.verdict_equivalent).
PREDICTIONS = (
    {"id": "blur_sensitivity", "models": "anti-aliasing", "lens": "frequency sensitivity",
     "prediction": "blurring before downsampling lowers high-frequency sensitivity: BlurPool's sensitivity moment 1 "
                   "is below the baseline's", "kind": "values", "candidate": "blurpool", "reference": "baseline",
     "measure": "moment1", "direction": -1},
    {"id": "blur_sensitivity_high", "models": "anti-aliasing", "lens": "frequency sensitivity",
     "prediction": "BlurPool puts a smaller share of its sensitivity above 0.25 cycles/pixel than the baseline",
     "kind": "values", "candidate": "blurpool", "reference": "baseline", "measure": "sensitivity_high",
     "direction": -1},
    {"id": "blur_consistency", "models": "anti-aliasing", "lens": "anti-aliasing",
     "prediction": "BlurPool is more shift-consistent than the baseline (the anti-aliasing paper's own claim, on "
                   "this backbone)", "kind": "items", "candidate": "blurpool", "reference": "baseline",
     "measure": "consistent", "direction": 1},
    {"id": "circular_consistency", "models": "anti-aliasing", "lens": "anti-aliasing",
     "prediction": "circular padding is more consistent under circular shifts than zero padding",
     "kind": "items", "candidate": "circular", "reference": "baseline", "measure": "consistent", "direction": 1},
    {"id": "blur_fgsm", "models": "anti-aliasing", "lens": "spatial mixing / spectral leakage (FGSM)",
     "prediction": "BlurPool loses less accuracy to FGSM (middle ε) than the baseline", "kind": "items",
     "candidate": "blurpool", "reference": "baseline", "measure": "fgsm_drop", "direction": -1},
    {"id": "hamming_sensitivity", "models": "spectral leakage", "lens": "frequency sensitivity",
     "prediction": "Hamming-windowed 7×7 kernels shift sensitivity to lower frequencies: moment 1 below plain 7×7's",
     "kind": "values", "candidate": "k7_hamming", "reference": "k7", "measure": "moment1", "direction": -1},
    {"id": "hamming_leakage", "models": "spectral leakage", "lens": "spectral leakage",
     "prediction": "Hamming-windowed 7×7 kernels leak less after training than plain 7×7 (side-lobe energy)",
     "kind": "values", "candidate": "k7_hamming", "reference": "k7", "measure": "sidelobe", "direction": -1},
    {"id": "hamming_consistency", "models": "spectral leakage", "lens": "anti-aliasing",
     "prediction": "Hamming-windowed 7×7 kernels (a low-pass taper) are more shift-consistent than plain 7×7",
     "kind": "items", "candidate": "k7_hamming", "reference": "k7", "measure": "consistent", "direction": 1},
    {"id": "chans_high", "models": "spatial mixing", "lens": "spatial mixing / spectral leakage",
     "prediction": "frozen random depthwise filters keep more high-frequency energy than learned ones (Chans vs "
                   "learned separable)", "kind": "values", "candidate": "chans", "reference": "separable",
     "measure": "kernel_high", "direction": 1},
    {"id": "chans_coverage", "models": "spatial mixing", "lens": "spatial mixing",
     "prediction": "frozen random depthwise filters cover more of the spectrum than learned ones (coverage)",
     "kind": "values", "candidate": "chans", "reference": "separable", "measure": "coverage", "direction": 1},
    {"id": "chans_consistency", "models": "spatial mixing", "lens": "anti-aliasing",
     "prediction": "frozen random depthwise filters are less shift-consistent than learned ones", "kind": "items",
     "candidate": "chans", "reference": "separable", "measure": "consistent", "direction": -1},
    {"id": "moment_robustness", "models": "all variants", "lens": "frequency sensitivity → robustness",
     "prediction": "across all variants, FGSM accuracy (middle ε) falls as the sensitivity's moment 1 rises "
                   "(rank correlation within seeds)", "kind": "trend", "x": "moment1", "y": "fgsm", "direction": -1},
    {"id": "additive_chans_blur", "models": "spatial mixing + anti-aliasing", "lens": "anti-aliasing",
     "prediction": "Chans and BlurPool add their effects on consistency (interaction within ±1 pp)",
     "kind": "additive", "pair": "chans_blurpool", "first": "chans", "second": "blurpool", "reference": "baseline",
     "measure": "consistent", "margin": 0.01},
    {"id": "additive_hamming_blur", "models": "spectral leakage + anti-aliasing", "lens": "frequency sensitivity",
     "prediction": "Hamming 7×7 and BlurPool add their effects on sensitivity moment 1 (interaction within ±5 % of "
                   "the baseline's moment 1)", "kind": "additive", "pair": "k7_hamming_blurpool",
     "first": "k7_hamming", "second": "blurpool", "reference": "baseline", "measure": "moment1", "margin": 0.05},
)

# per-image outcomes by measure: (boolean or float per attacked / test image)
def _items(r: dict, measure: str) -> np.ndarray:
    if measure == "consistent":
        return unpack_bits(r["consistent_bits"], (r["n_test"],))
    if measure == "correct":
        return unpack_bits(r["correct_bits"], (r["n_test"],))
    a = r["attacks"]
    clean = unpack_bits(a["clean_bits"], (1, a["n"]))[0]
    fgsm = unpack_bits(a["fgsm_bits"], (len(a["epsilons"]), a["n"]))[len(a["epsilons"]) // 2]
    if measure == "fgsm_drop":
        return clean.astype(float) - fgsm.astype(float)
    raise ValueError(f"unknown per-image measure {measure!r}")


def _by_seed(results, variant, value) -> dict:
    return {r["config"]["seed"]: value(r) for r in group(results, variant)}


def _value(measure: str):
    return LENSES[measure][1]


def _fmt_diff(differences, scale: float, unit: str, digits: int = 2) -> str:
    m, s, n = mean_sd(differences)
    if n == 0:
        return "not run"
    return f"{m * scale:+.{digits}f}" + (f" ± {s * scale:.{digits}f}" if n > 1 else "") + f"{unit} (n={n})"


def _judge(p: dict, results: list[dict]) -> tuple[str, str]:
    kind = p["kind"]
    if kind in ("items", "values"):
        cand, ref = p["candidate"], p["reference"]
        if not group(results, cand) or not group(results, ref):
            return "not run", "not run"
        if kind == "items":
            reference = _by_seed(results, ref, lambda r: _items(r, p["measure"]))
            candidate = _by_seed(results, cand, lambda r: _items(r, p["measure"]))
            booleans = all(np.asarray(v).dtype == bool for v in list(reference.values()) + list(candidate.values()))
            c = paired_outcomes(reference, candidate) if booleans else paired_values(reference, candidate)
            verdict = verdict_paired(c["differences"], direction=p["direction"],
                                     sampling_variances=c["sampling_variances"])
            text = f"{label(cand)} − {label(ref)}: " + _fmt_diff(c["differences"], 100, " pp")
            if c["p_values"]:
                text += f"; McNemar p < 0.05 in {sum(q < 0.05 for q in c['p_values'])} of {len(c['p_values'])} seeds"
            return text, verdict
        value = _value(p["measure"])
        a, b = _by_seed(results, cand, value), _by_seed(results, ref, value)
        seeds = sorted(set(a) & set(b))
        d = [a[s] - b[s] for s in seeds]
        name, _, scale, digits = LENSES[p["measure"]]
        text = (f"{label(cand)} − {label(ref)}, {name}: " + _fmt_diff(d, scale, "", digits + 1)
                + f"; {label(cand)} {_fmt_diff([a[s] for s in seeds], scale, '', digits)}")
        return text, verdict_paired(d, direction=p["direction"])
    if kind == "trend":
        xs, ys, seeds = [], [], []
        for v in variants_in(results):
            for r in group(results, v):
                xs.append(_value(p["x"])(r)), ys.append(_value(p["y"])(r)), seeds.append(r["config"]["seed"])
        if not xs:
            return "not run", "not run"
        t = trend_test(xs, ys, seeds, direction=p["direction"])
        return f"Spearman {format_trend(t)} (bootstrap over seeds)", t["verdict"]
    if kind == "additive":
        names = (p["pair"], p["first"], p["second"], p["reference"])
        if not all(group(results, v) for v in names):
            return "not run", "not run"
        if p["measure"] == "consistent":
            per = [_by_seed(results, v, lambda r: _items(r, "consistent").astype(float)) for v in names]
            seeds = sorted(set.intersection(*(set(x) for x in per)))
            inter = [per[0][s] - per[1][s] - per[2][s] + per[3][s] for s in seeds]
            d = [float(i.mean()) for i in inter]
            variances = [float(i.var() / i.size) for i in inter]
            text = "interaction (pair − first − second + baseline): " + _fmt_diff(d, 100, " pp")
            return text, verdict_equivalent(d, margin=p["margin"], sampling_variances=variances)
        value = _value(p["measure"])
        per = [_by_seed(results, v, value) for v in names]
        seeds = sorted(set.intersection(*(set(x) for x in per)))
        d = [(per[0][s] - per[1][s] - per[2][s] + per[3][s]) / per[3][s] for s in seeds]
        text = "interaction / baseline (pair − first − second + baseline): " + _fmt_diff(d, 100, " %", 1)
        return text, verdict_equivalent(d, margin=p["margin"])
    raise ValueError(f"unknown prediction kind {kind!r}")


def claims(results: list[dict], profile: str) -> list[dict]:
    """One row per prediction of :data:`PREDICTIONS`: the prediction (stated before the numbers), whose model and
    whose lens, our measurement and a verdict computed by :mod:`lib.claims` (apply :func:`lib.claims.judged` to show
    them: at quick every verdict is withheld). ``profile`` is recorded in each row."""
    results = [r for r in results if r is not None]
    rows = []
    for p in PREDICTIONS:
        ours, verdict = _judge(p, results)
        seeds = {r["config"]["seed"] for r in results}
        rows.append({"claim": p["prediction"], "paper": f"prediction: {p['models']} model, {p['lens']} lens",
                     "ours": ours, "verdict": verdict, "id": p["id"], "profile": profile, "n seeds": len(seeds)})
    return rows


def closing_note(results: list[dict], profile: str) -> list[str]:
    """One line per prediction with its measured verdict (as the reader sees it at ``profile``)."""
    return [f"{row['claim']}: {row['ours']} → **{row['verdict']}**" for row in judged(claims(results, profile),
                                                                                       profile)]


# --- the scoreboard: every chapter's claims, read from the store ---------------------------------------------------

def _load(module, profile: str, section: str | None):
    """Stored results of ``module.runs(profile, section)``; :class:`MissingResultsError` naming how many are absent
    (missing or unreadable) when any is. The store is inspected first (:func:`lib.experiments.statuses` moves and
    computes nothing), so an incomplete chapter, or one whose sweep is still writing, is left exactly as it is."""
    from . import MissingResultsError, execute, statuses
    wanted = module.runs(profile, section)
    absent = sum(1 for found in statuses(wanted, profile) if found.state not in ("present", "stale"))
    if absent:
        raise MissingResultsError(f"{absent} of {len(wanted)} {profile}-profile results"
                                  + (f" of section {section!r}" if section else "") + " are not in the store")
    return execute(wanted, profile, allow_compute=False, progress=False)


def _chapter_claims(chapter: str, profile: str) -> tuple[list[dict], list[dict]]:
    """(claims rows, the results they were computed from) of ``chapter`` at ``profile``, exactly as its notebook
    builds them, from stored results only (raises :class:`MissingResultsError` when some are absent)."""
    from . import chapter_module
    if chapter == CHAPTER:
        results = _load(sys.modules[__name__], profile, None)
        return claims(results, profile), results
    module = chapter_module(chapter)
    if chapter == "spatial_mixing":
        results = [r for s in ("resnet", "static", "convmixer", "smoothing", "unshuffle", "timing")
                   for r in _load(module, profile, s)]
        return module.claims(results, profile), results
    if chapter == "anti_aliasing":
        table1 = _load(module, profile, "table1")
        bbp = _load(module, profile, "blur_before_pool")
        padding = [r for r in _load(module, profile, "padding") if r is not None]
        timing = _load(module, profile, "timing")[0]
        used = table1 + [r for r in bbp if r["config"]["pool"] == "blurmax"]
        return module.claims(used, timing, profile, padding=padding), table1 + bbp + padding + [timing]
    if chapter == "frequency_sensitivity":
        theory = _load(module, profile, "theory")[0]
        stats = _load(module, profile, "statistics")
        ridge = _load(module, profile, "ridge")[0]
        names = ("depth", "decay_convactually", "decay_myrtle", "residual", "decay_residual", "data", "plain",
                 "linear", "untrained")
        sections = {name: _load(module, profile, name) for name in names}
        everything = [theory, ridge, *stats] + [r for rs in sections.values() for r in rs]
        return module.claims(theory, stats, ridge, sections), everything
    if chapter == "spectral_leakage":
        results = _load(module, profile, None)
        return module.claims(results, profile), results
    raise ValueError(f"chapter {chapter!r} has no claims table")


SCOREBOARD_CHAPTERS = ("spatial_mixing", "anti_aliasing", "frequency_sensitivity", "spectral_leakage", CHAPTER)
_N_SEEDS = re.compile(r"\bn\s*=\s*(\d+)")


def _seeds_of(results: list[dict]) -> int:
    return len({r["config"].get("seed") for r in results if r is not None and "config" in r})


def scoreboard(profile_per_chapter: dict[str, str]) -> dict:
    """Every chapter's claims table in one: ``{"rows", "counts", "notes"}``.

    ``profile_per_chapter`` maps a chapter (of :data:`SCOREBOARD_CHAPTERS`) to the profile to read (e.g.
    ``resolve_profile("auto", chapter)``). Nothing is computed: a chapter whose results are missing at that profile
    gets one row saying so (verdict "not run"). Each row: chapter, claim, paper, ours, verdict (as the chapter shows
    it: :func:`lib.claims.judged`), profile, n seeds (the ``n=`` of the measurement where it states one, else the
    number of seeds among the chapter's results, marked "(chapter)"). ``counts``: rows per verdict base word.
    """
    from . import MissingResultsError, ProfileUndefinedError, defines
    rows, notes = [], []
    for chapter, profile in profile_per_chapter.items():
        if chapter not in SCOREBOARD_CHAPTERS:
            raise ValueError(f"chapter {chapter!r} has no claims table; choose from {', '.join(SCOREBOARD_CHAPTERS)}")
        if chapter != CHAPTER and not defines(chapter, profile) or chapter == CHAPTER and profile not in SETTINGS:
            rows.append(_missing_row(chapter, profile, f"the chapter defines no {profile} profile"))
            continue
        try:
            found, results = _chapter_claims(chapter, profile)
        except (MissingResultsError, ProfileUndefinedError) as error:
            rows.append(_missing_row(chapter, profile, f"{profile}-profile results missing: {error}"))
            notes.append(f"{chapter}: {error}")
            continue
        stale = sum(1 for r in results if r is not None and r.get("stale"))
        if stale:
            notes.append(f"{chapter}: {stale} {profile}-profile result(s) are stale (computed by other code); their "
                         "rows are shown as stored")
        seeds = _seeds_of(results)
        for row in judged(found, profile):
            ours = str(row.get("ours", ""))
            match = _N_SEEDS.search(ours)
            rows.append({"chapter": chapter, "claim": row.get("claim", ""), "paper": row.get("paper", "—"),
                         "ours": ours, "verdict": row.get("verdict", ""), "profile": profile,
                         "n seeds": match.group(1) if match else f"{seeds} (chapter)"})
    counts = Counter(verdict_base(r["verdict"]) or r["verdict"] for r in rows)
    return {"rows": rows, "counts": dict(counts), "notes": notes}


def _missing_row(chapter: str, profile: str, why: str) -> dict:
    return {"chapter": chapter, "claim": "(the whole claims table)", "paper": "—", "ours": why, "verdict": "not run",
            "profile": profile, "n seeds": "0"}


def scoreboard_counts(board: dict) -> list[dict]:
    """Rows per verdict, in the vocabulary's order, per chapter and in all."""
    from ..claims import VERDICTS
    chapters = list(dict.fromkeys(r["chapter"] for r in board["rows"]))
    out = []
    for word in VERDICTS:
        row = {"verdict": word}
        for chapter in chapters:
            row[chapter] = sum(1 for r in board["rows"] if r["chapter"] == chapter
                               and (verdict_base(r["verdict"]) or r["verdict"]) == word)
        row["all"] = board["counts"].get(word, 0)
        out.append(row)
    return out


def sorted_rows(board: dict, by: str = "verdict") -> list[dict]:
    """The scoreboard's rows sorted by one column (verdict: in the vocabulary's order)."""
    from ..claims import VERDICTS
    order = {w: i for i, w in enumerate(VERDICTS)}
    if by == "verdict":
        return sorted(board["rows"], key=lambda r: (order.get(verdict_base(r["verdict"]) or "", 99), r["chapter"]))
    return sorted(board["rows"], key=lambda r: str(r.get(by, "")))


def scoreboard_html(board: dict, columns=("chapter", "claim", "paper", "ours", "verdict", "profile", "n seeds")) -> str:
    """The scoreboard as an HTML table whose column headers sort it on click (a few lines of JavaScript in the page:
    no kernel needed); rows start sorted by verdict."""
    import html
    rows = sorted_rows(board, "verdict")
    head = "".join(f'<th style="cursor:pointer" title="sort" onclick="bookSortTable(this)">{html.escape(c)} ↕</th>'
                   for c in columns)
    def cell(value) -> str:
        # `$...$` math (as in the Markdown tables) becomes MathJax's inline math; everything else is escaped text
        parts = re.split(r"\$([^$]+)\$", str(value))
        return "".join(html.escape(part) if i % 2 == 0 else
                       f'<span class="math notranslate nohighlight">\\({html.escape(part)}\\)</span>'
                       for i, part in enumerate(parts))
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    script = ("<script>function bookSortTable(th){var table=th.closest('table'),body=table.tBodies[0],"
              "i=Array.prototype.indexOf.call(th.parentNode.children,th),up=th.dataset.up!=='1';"
              "Array.from(body.rows).sort(function(a,b){var x=a.cells[i].textContent,y=b.cells[i].textContent,"
              "p=parseFloat(x),q=parseFloat(y);var c=(!isNaN(p)&&!isNaN(q))?p-q:x.localeCompare(y);"
              "return up?c:-c;}).forEach(function(r){body.appendChild(r);});th.dataset.up=up?'1':'0';}</script>")
    return (f'<table class="book-scoreboard"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            + script)


# --- figures (called by the notebook) ------------------------------------------------------------------------------

def plot_matrix(results: list[dict]):
    """The lens × model matrix: every lens (row) normalised to [0, 1] over the variants (min → 0, max → 1), with
    mean ± sd over seeds written in each cell."""
    from ..plotting import figure
    m = lens_matrix(results)
    mean = m["mean"]
    low, high = np.nanmin(mean, axis=1, keepdims=True), np.nanmax(mean, axis=1, keepdims=True)
    normalised = (mean - low) / np.where(high - low > 0, high - low, 1.0)
    fig, ax = figure(1, 1, width=1.15 * len(m["variants"]) + 3.2, height=0.42 * len(m["lenses"]) + 1.8)
    ax.imshow(normalised, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for i, key in enumerate(m["lenses"]):
        _, _, scale, digits = LENSES[key]
        for j in range(len(m["variants"])):
            if m["n"][i, j] == 0:
                continue
            text = f"{mean[i, j] * scale:.{digits}f}" + (f"\n±{m['sd'][i, j] * scale:.{digits}f}"
                                                         if m["n"][i, j] > 1 else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=6,
                    color="black" if normalised[i, j] > 0.6 else "white")
    ax.set_xticks(range(len(m["variants"])), [label(v) for v in m["variants"]], rotation=35, ha="right", fontsize=7)
    ax.set_yticks(range(len(m["lenses"])), [LENSES[k][0] for k in m["lenses"]], fontsize=7)
    ax.grid(False)
    ax.set_title("every lens (rows, normalised per row: dark = lowest, yellow = highest) on every model", fontsize=9)
    return fig


def plot_profiles(results: list[dict]):
    """Per variant (mean over seeds): the radial sensitivity profile (normalised to unit mass) and the per-layer
    equivariance distance relative to the distance between different images."""
    from ..plotting import figure
    fig, (ax_s, ax_e) = figure(1, 2, width=10.0, height=3.4)
    for j, v in enumerate(variants_in(results)):
        members = group(results, v)
        radii = np.asarray(members[0]["radii"])
        radial = np.mean([np.asarray(r["radial"]) / max(np.sum(r["radial"]), 1e-30) for r in members], axis=0)
        ax_s.plot(radii, radial, color=f"C{j}", label=label(v))
        profile = np.mean([np.asarray(r["equivariance_relative"]) for r in members], axis=0)
        ax_e.plot(np.clip(profile, 0, None), "o-", ms=3, color=f"C{j}", label=label(v))
    ax_s.set(yscale="log", xlabel="radial frequency |(i, j)|", ylabel="share of sensitivity",
             title="radial sensitivity profile")
    layers = group(results, variants_in(results)[0])[0]["equivariance"]["layers"]
    ax_e.set_xticks(range(len(layers)), layers, rotation=70, fontsize=7)
    ax_e.set(ylabel="distance / different images", title="per-layer equivariance distance")
    ax_s.legend(fontsize=6)
    return fig


def widget_frames(results: list[dict], seed: int | None = None, dpi: int = 100) -> tuple[list[bytes], list[str]]:
    """One PNG frame per variant (seed ``seed``, default the smallest): its sensitivity map (log10, zero frequency in
    the centre), its first-layer filters (summed over input channels) with the spectral envelope of the whole
    first-layer bank, and its consistency / robustness numbers."""
    import matplotlib.pyplot as plt
    from ..plotting import DIVERGING, new_figure, to_png
    frames, labels = [], []
    for v in variants_in(results):
        members = group(results, v)
        run = next((r for r in members if seed is None or r["config"]["seed"] == seed), members[0])
        fig = new_figure(9.0, 2.6, layout="constrained")
        grid = fig.add_gridspec(2, 7, width_ratios=[2.2, 0.1, 0.55, 0.55, 0.55, 0.55, 2.2])
        ax_map = fig.add_subplot(grid[:, 0])
        sens = sensitivity.centred(np.asarray(run["sensitivity"]).mean(0))
        ax_map.imshow(np.log10(np.maximum(sens / max(sens.mean(), 1e-30), 1e-6)), cmap="magma",
                      extent=(-0.5, 0.5, -0.5, 0.5), origin="lower")
        ax_map.set(title=f"sensitivity (log10), m1 = {run['moment1']:.2f}", xticks=[], yticks=[])
        kernels = np.asarray(run["stem_kernels"])[:8]
        for i, kernel in enumerate(kernels):
            ax = fig.add_subplot(grid[i // 4, 2 + i % 4])
            limit = max(np.abs(kernel).max(), 1e-12)
            ax.imshow(kernel, cmap=DIVERGING, vmin=-limit, vmax=limit)
            ax.set(xticks=[], yticks=[])
            if i == 1:
                ax.set_title("first-layer filters", fontsize=8, loc="left")
        ax_env = fig.add_subplot(grid[:, 6])
        ax_env.imshow(np.asarray(run["stem_envelope"]), cmap="viridis", extent=(-0.5, 0.5, -0.5, 0.5),
                      origin="lower")
        ax_env.set(title=f"their envelope, coverage {run['kernels']['coverage'][0]:.2f}", xticks=[], yticks=[])
        for ax in fig.axes:
            ax.grid(False)
        a = run["attacks"]
        fig.suptitle(f"{label(v)} (seed {run['config']['seed']})\naccuracy {100 * run['accuracy']:.1f} %, "
                     f"consistency {100 * run['consistency']:.1f} %, FGSM {100 * fgsm_middle(run):.1f} % "
                     f"(ε = {255 * a['epsilons'][len(a['epsilons']) // 2]:.0f}/255), PGD "
                     f"{100 * pgd_last(run):.1f} % (ε = {255 * a['pgd_epsilons'][-1]:.0f}/255)", fontsize=8)
        frames.append(to_png(fig, dpi=dpi))
        labels.append(label(v))
    return frames, labels
