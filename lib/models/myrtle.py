"""MyrtleCNN (Page 2018, as used by Godfrey et al. 2022, App. C.5, table b): small kernels, ReLU, max-pooling, no BN."""

from __future__ import annotations

import torch
from torch import nn

from ..data import Normalize


class MyrtleCNN(nn.Module):
    """conv3×3 (w) → ReLU, then 3 × [conv3×3 doubling the width → ReLU → max-pool 2], max-pool 4, flatten, linear.

    With ``width=64`` on CIFAR-10 this has the paper's 1,556,106 parameters.
    """

    def __init__(self, width: int = 64, in_channels: int = 3, num_classes: int = 10, mean=(0.5, 0.5, 0.5),
                 std=(0.25, 0.25, 0.25)):
        super().__init__()
        if width < 1:
            raise ValueError(f"MyrtleCNN needs width ≥ 1, got {width}")
        layers: list[nn.Module] = [Normalize(mean, std), nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU()]
        channels = width
        for _ in range(3):
            layers += [nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels *= 2
        # 32 → 4 after three pools; the final pool-by-4 leaves one value per channel
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
