"""ConvActually (Godfrey et al. 2022, §5 and App. C.5): the closest trainable relative of the linear CNN of eq. 3.1.

Blocks of full-image circular convolutions (32×32 kernels on 32×32 images, computed by FFT), each followed by a bias
and a ReLU, with constant width, no batch norm and no pooling; then flatten and one linear layer.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data import Normalize
from ..layers import CircularConv2d


class ConvActually(nn.Module):
    """``depth`` × [CircularConv2d(k = image size) → ReLU], flatten, linear; Kaiming-normal convolution weights."""

    def __init__(self, depth: int = 1, width: int = 64, in_channels: int = 3, image_size: int = 32,
                 num_classes: int = 10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), kernel_size: int | None = None):
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"ConvActually needs depth ≥ 1 and width ≥ 1, got depth={depth}, width={width}")
        kernel_size = image_size if kernel_size is None else kernel_size
        if kernel_size > image_size:
            raise ValueError(f"kernel_size {kernel_size} exceeds image_size {image_size}; use at most {image_size}")
        layers: list[nn.Module] = [Normalize(mean, std)]
        channels = in_channels
        for _ in range(depth):
            conv = CircularConv2d(channels, width, kernel_size)
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")  # fan_in = channels·k² keeps activations O(1)
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU()]
            channels = width
        layers += [nn.Flatten(), nn.Linear(channels * image_size * image_size, num_classes)]
        self.net = nn.Sequential(*layers)
        self.depth, self.width = depth, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
