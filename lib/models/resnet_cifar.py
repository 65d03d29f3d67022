"""CIFAR ResNets (He et al. 2016, §4.2; the family of MosaicML composer's ``resnet_20/56``): the residual counter-example.

Depth 6n+2: a 3×3 stem, three stages of n basic blocks (widths w, 2w, 4w; stride 2 at the start of stages 2 and 3),
global average pooling, linear. With ``residual=False`` the skip connections are removed (a plain CNN of the same
shape), so that the chapter can show what the skips change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Normalize


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input (1×1 strided projection when the shape changes), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, residual: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.residual = residual
        self.shortcut = nn.Identity()
        if residual and (stride != 1 or in_channels != out_channels):
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.residual:
            out = out + self.shortcut(x)
        return F.relu(out)


class ResNetCIFAR(nn.Module):
    """ResNet-(6n+2) for 32×32 inputs: ``depth`` ∈ {8, 14, 20, 32, 44, 56, ...}."""

    def __init__(self, depth: int = 20, width: int = 16, in_channels: int = 3, num_classes: int = 10,
                 mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), residual: bool = True):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has depth 6n+2 (8, 14, 20, 32, 44, 56, ...), got {depth}")
        blocks_per_stage = (depth - 2) // 6
        layers: list[nn.Module] = [Normalize(mean, std), nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU()]
        channels = width
        for stage in range(3):
            out = width * 2 ** stage
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(channels, out, stride, residual))
                channels = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
        self.net = nn.Sequential(*layers)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
