"""A small plain CNN used by the how-to chapter and by tests of the shared trainer."""

from __future__ import annotations

import torch
from torch import nn

from ..data import Normalize


class SimpleCNN(nn.Module):
    """``depth`` blocks of conv3×3 → BN → ReLU → max-pool 2, average-pool to 4×4, flatten, linear classifier."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32, depth: int = 2,
                 mean=(0.5,), std=(0.25,)):
        super().__init__()
        layers: list[nn.Module] = [Normalize(mean, std)]
        channels = in_channels
        for i in range(depth):
            out = width * 2 ** i
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            channels = out
        layers += [nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16 * channels, num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
