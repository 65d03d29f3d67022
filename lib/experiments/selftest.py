"""A tiny sweep that exercises the runner without data or minutes of compute: for tests of launchers and locking.

Three runs, each training a two-layer CNN for a few steps on synthetic images drawn from its seed, through the book's
one trainer. Not a page of the book: ``python -m lib.reproduce --chapter selftest`` runs it on request only.
"""

from __future__ import annotations

import torch

from ..models.simple import SimpleCNN
from ..training import TrainConfig, fit
from . import Run

CHAPTER = "selftest"
SETTINGS = {"quick": {"seeds": [0, 1, 2], "n": 256, "size": 12, "epochs": 2},
            "medium": {"seeds": [0, 1, 2], "n": 512, "size": 12, "epochs": 2}}


def synthetic(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class is the brightest of four quadrants: learnable in a few steps."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 160, (n, 1, size, size), generator=generator, dtype=torch.uint8)
    y = torch.randint(0, 4, (n,), generator=generator)
    half = size // 2
    for c, (i, j) in enumerate([(0, 0), (0, half), (half, 0), (half, half)]):
        x[y == c, :, i:i + half, j:j + half] += 90
    return x, y


def train_tiny(config: dict, device: torch.device) -> dict:
    x, y = synthetic(config["n"], config["size"], config["seed"])
    model = SimpleCNN(in_channels=1, width=4, depth=1, num_classes=4, mean=(0.5,), std=(0.25,))
    out = fit(model, (x, y), (x[:64], y[:64]), seed=config["seed"], device=device, progress=False,
              config=TrainConfig(epochs=config["epochs"], batch_size=64, lr=0.05, schedule="constant"))
    return {"final": out["final"], "train_loss": [h["train_loss"] for h in out["history"]],
            "weight_sum": float(sum(p.detach().double().sum() for p in model.parameters()))}


def runs(profile: str, section: str | None = None) -> list[Run]:
    if profile not in SETTINGS:
        raise ValueError(f"unknown profile {profile!r} for {CHAPTER}; choose one of {', '.join(SETTINGS)}")
    s = SETTINGS[profile]
    return [Run(CHAPTER, "tiny", {"n": s["n"], "size": s["size"], "epochs": s["epochs"], "seed": seed}, train_tiny,
                "tiny") for seed in s["seeds"]]
