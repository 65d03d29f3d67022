"""CIFAR-style ResNet with a switch for the kernel size and the tapering window of every spatial convolution.

Tomen & van Gemert (2021) replace the 3×3 kernels of standard CNNs by larger kernels multiplied by a Hamming window.
Their code is not public; this follows the usual CIFAR ResNet-18 (He et al. 2016; a 3×3 stride-1 stem, no max-pool,
four stages of BasicBlocks, widths w·(1, 2, 4, 8)) and changes only the spatial kernels: the stem and both convolutions
of every block become k×k (zero "same" padding), windowed or not. The 1×1 projection shortcuts stay 1×1.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data import Normalize
from ..layers.windowed import WindowedConv2d


def spatial_conv(in_channels: int, out_channels: int, kernel_size: int, window: str | None,
                 stride: int = 1) -> nn.Module:
    """A bias-free k×k convolution (BatchNorm follows): plain ``Conv2d`` when ``window`` is None."""
    if window is None:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (3, 5, 7, ...) for symmetric 'same' padding, got {kernel_size}")
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
    return WindowedConv2d(in_channels, out_channels, kernel_size, window, stride=stride, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, kernel_size: int, window: str | None):
        super().__init__()
        self.conv1 = spatial_conv(in_channels, out_channels, kernel_size, window, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = spatial_conv(out_channels, out_channels, kernel_size, window)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class LeakageResNet(nn.Module):
    """ResNet for small images: ``blocks`` BasicBlocks per stage, widths ``width·(1, 2, 4, 8)``, k×k spatial kernels.

    ``blocks=(2, 2, 2, 2)`` and ``width=64`` is ResNet-18. ``window`` (None, or a name of ``lib.filters.WINDOWS``)
    tapers every spatial kernel through :class:`~lib.layers.WindowedConv2d`.
    """

    def __init__(self, kernel_size: int = 3, window: str | None = None, *, width: int = 64,
                 blocks: tuple[int, ...] = (2, 2, 2, 2), in_channels: int = 3, num_classes: int = 10,
                 mean=(0.5,), std=(0.25,)):
        super().__init__()
        if width < 1 or not blocks or any(b < 1 for b in blocks):
            raise ValueError(f"width and every stage's block count must be positive, got width={width}, "
                             f"blocks={tuple(blocks)}")
        self.kernel_size, self.window = kernel_size, window
        self.normalize = Normalize(mean, std)
        self.stem = nn.Sequential(spatial_conv(in_channels, width, kernel_size, window), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        stages, channels = [], width
        for i, count in enumerate(blocks):
            out = width * 2 ** i
            for j in range(count):
                stages.append(BasicBlock(channels, out, 2 if (i > 0 and j == 0) else 1, kernel_size, window))
                channels = out
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(self.normalize(x))))

    def spatial_kernels(self) -> list[tuple[str, torch.Tensor]]:
        """``(name, effective kernel)`` of every k×k convolution (window applied), in forward order."""
        found = []
        for name, module in self.named_modules():
            if isinstance(module, nn.Conv2d) and module.kernel_size[0] == self.kernel_size and self.kernel_size > 1:
                weight = module.effective_weight if isinstance(module, WindowedConv2d) else module.weight
                found.append((name, weight.detach()))
        return found


def parameter_count(kernel_size: int, width: int, blocks: tuple[int, ...] = (2, 2, 2, 2), in_channels: int = 3,
                    num_classes: int = 10) -> int:
    """Number of parameters of a :class:`LeakageResNet` (built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        model = LeakageResNet(kernel_size, None, width=width, blocks=blocks, in_channels=in_channels,
                              num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())


def matched_width(kernel_size: int, *, base_kernel: int = 3, base_width: int = 64,
                  blocks: tuple[int, ...] = (2, 2, 2, 2), in_channels: int = 3, num_classes: int = 10) -> int:
    """The width whose k×k network has the parameter count closest to the ``base_kernel`` network of ``base_width``.

    Parameters grow about as k²·w², so the answer is close to ``base_width · base_kernel / kernel_size``.
    """
    target = parameter_count(base_kernel, base_width, blocks, in_channels, num_classes)
    guess = max(1, round(base_width * base_kernel / kernel_size))
    candidates = range(max(1, guess - 3), guess + 4)
    return min(candidates, key=lambda w: (abs(parameter_count(kernel_size, w, blocks, in_channels, num_classes)
                                              - target), w))
