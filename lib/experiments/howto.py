"""Experiments of the "How to read and re-run this book" page: a small demonstration of every moving part.

``envelope``: spectral coverage of banks of random 3×3 filters as the bank grows (no data, no training).
``training``: a small CNN on Fashion-MNIST over several seeds, through the shared trainer and the results store.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import data, spectra
from ..models.simple import SimpleCNN
from ..training import TrainConfig, fit
from . import Run

CHAPTER = "howto"

SETTINGS = {
    # quick: 6,000 training images, 3 epochs, 2 seeds — about 1 minute on a 2-core CPU
    "quick": {"train_size": 6000, "test_size": None, "epochs": 3, "width": 16, "seeds": [0, 1],
              "bank_sizes": [1, 2, 4, 8, 16, 32, 64], "bank_seeds": 10, "grid": 64},
    # paper: all 60,000 images, 15 epochs, 3 seeds — well under a minute on one H100
    "paper": {"train_size": None, "test_size": None, "epochs": 15, "width": 32, "seeds": [0, 1, 2],
              "bank_sizes": [1, 2, 4, 8, 16, 32, 64], "bank_seeds": 50, "grid": 128},
}


def random_bank(n: int, k: int = 3, seed: int = 0) -> np.ndarray:
    """``n`` random k×k filters with i.i.d. standard normal taps."""
    return np.random.default_rng(seed).standard_normal((n, k, k))


def envelope_coverage(config: dict, device: torch.device) -> dict:
    """Coverage (mean of the spectral envelope) for each bank size, over ``bank_seeds`` independent banks.

    Filters are normalised to unit energy so that coverage measures how well a bank fills the spectrum, not how large
    its taps are.
    """
    rows = []
    for n in config["bank_sizes"]:
        values = []
        for s in range(config["bank_seeds"]):
            bank = random_bank(n, config["k"], seed=1000 * n + s)
            bank /= np.sqrt((bank ** 2).sum(axis=(1, 2), keepdims=True))
            values.append(spectra.coverage(spectra.spectral_envelope(bank, size=config["grid"])))
        rows.append(values)
    coverage = np.asarray(rows)
    return {"bank_sizes": config["bank_sizes"], "coverage_mean": coverage.mean(1), "coverage_sd": coverage.std(1)}


def train_small_cnn(config: dict, device: torch.device) -> dict:
    """Train ``SimpleCNN`` on (a class-balanced subset of) Fashion-MNIST; returns the trainer's history."""
    x_train, y_train = data.subset(*data.load(config["dataset"], "train"), config["train_size"], seed=config["seed"])
    x_test, y_test = data.subset(*data.load(config["dataset"], "test"), config["test_size"], seed=0)
    mean, std = data.stats(config["dataset"])
    model = SimpleCNN(in_channels=1, width=config["width"], depth=2, mean=mean, std=std)
    train_config = TrainConfig(**config["train"])
    out = fit(model, (x_train, y_train), (x_test, y_test), config=train_config, seed=config["seed"], device=device,
              description=f"SimpleCNN seed {config['seed']}")
    return out


SECTIONS = ("envelope", "training")


def runs(profile: str, section: str | None = None) -> list[Run]:
    if profile not in SETTINGS:
        raise ValueError(f"unknown profile {profile!r} for chapter {CHAPTER}; choose one of {', '.join(SETTINGS)}")
    if section is not None and section not in SECTIONS:
        raise ValueError(f"unknown section {section!r}; choose one of {', '.join(SECTIONS)}")
    s = SETTINGS[profile]
    out = [Run(CHAPTER, "envelope", {"k": 3, "bank_sizes": s["bank_sizes"], "bank_seeds": s["bank_seeds"],
                                     "grid": s["grid"], "seed": 0}, envelope_coverage, "envelope")]
    for seed in s["seeds"]:
        config = {"dataset": "fashion_mnist", "train_size": s["train_size"], "test_size": s["test_size"],
                  "width": s["width"], "seed": seed,
                  "train": {"epochs": s["epochs"], "batch_size": 128, "optimizer": "sgd", "lr": 0.05,
                            "momentum": 0.9, "weight_decay": 5e-4, "schedule": "onecycle"}}
        out.append(Run(CHAPTER, "training", config, train_small_cnn, "training"))
    return [r for r in out if section in (None, r.section)]


# --- figures --------------------------------------------------------------------------------------------------------

def envelope_figure(n: int, k: int = 3, seed: int = 0, grid: int = 128):
    """Left: the first filters of a bank of ``n`` random k×k filters; right: the bank's spectral envelope."""
    from ..plotting import figure
    bank = random_bank(n, k, seed)
    bank /= np.sqrt((bank ** 2).sum(axis=(1, 2), keepdims=True))
    envelope = spectra.spectral_envelope(bank, size=grid)
    fig, (ax_filters, ax_env) = figure(1, 2, width=6.0, height=2.8)
    shown = bank[:16]
    tiles = np.full((4 * (k + 1), 4 * (k + 1)), np.nan)
    for i, f in enumerate(shown):
        r, c = divmod(i, 4)
        tiles[r * (k + 1):r * (k + 1) + k, c * (k + 1):c * (k + 1) + k] = f
    ax_filters.imshow(tiles, cmap="RdBu_r", vmin=-1, vmax=1)
    ax_filters.set_title(f"{min(n, 16)} of {n} random {k}×{k} filters")
    ax_filters.axis("off")
    freq = spectra.frequencies(grid)
    image = ax_env.imshow(envelope, extent=(freq[0], freq[-1], freq[-1], freq[0]), vmin=0, vmax=2.5)
    ax_env.set_title(f"spectral envelope, coverage {spectra.coverage(envelope):.2f}")
    ax_env.set_xlabel("horizontal frequency (cycles/pixel)")
    ax_env.set_ylabel("vertical frequency")
    ax_env.grid(False)
    fig.colorbar(image, ax=ax_env, shrink=0.8)
    return fig


def envelope_explorer(sizes=(1, 2, 4, 8, 16, 32, 64)):
    """Kernel-free widget: bank size → filters and envelope."""
    from ..plotting import to_png
    from ..widgets import explorer
    frames = [to_png(envelope_figure(n)) for n in sizes]
    return explorer(frames, [f"{n} filter{'s' if n > 1 else ''}" for n in sizes], description="bank size")


def coverage_figure(result: dict):
    from ..plotting import figure, provenance_footer
    fig, ax = figure(width=4.5, height=3.0)
    sizes, mean, sd = np.asarray(result["bank_sizes"]), result["coverage_mean"], result["coverage_sd"]
    ax.errorbar(sizes, mean, yerr=sd, marker="o", capsize=3)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("number of random 3×3 filters")
    ax.set_ylabel("coverage (mean of envelope)")
    provenance_footer(fig, [result])
    return fig


def training_figure(results: list[dict]):
    from ..plotting import figure, provenance_footer
    fig, (ax_loss, ax_acc) = figure(1, 2, width=7.0, height=3.0)
    for r in results:
        epochs = [h["epoch"] for h in r["history"]]
        label = f"seed {r['config']['seed']}"
        ax_loss.plot(epochs, [h["train_loss"] for h in r["history"]], marker="o", label=label)
        ax_acc.plot(epochs, [h["test_accuracy"] for h in r["history"]], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="training loss")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy")
    ax_acc.legend()
    provenance_footer(fig, results)
    return fig


def training_summary(results: list[dict]) -> list[dict]:
    """One row per seed plus the mean ± sd row that claims tables use."""
    rows = [{"seed": r["config"]["seed"], "test accuracy": r["final"]["accuracy"],
             "train time (s)": r["train_time_s"], "device": r["provenance"]["device"]} for r in results]
    accuracies = np.array([r["final"]["accuracy"] for r in results])
    summary = (f"{accuracies.mean():.4f} ± {accuracies.std(ddof=1):.4f}" if len(accuracies) > 1 else
               f"{accuracies.mean():.4f} (1 seed)")   # one seed has no spread to show: never "± 0.0000"
    rows.append({"seed": "mean ± sd" if len(accuracies) > 1 else "value", "test accuracy": summary,
                 "train time (s)": float(np.mean([r["train_time_s"] for r in results])), "device": ""})
    return rows
