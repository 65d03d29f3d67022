"""ConvMixer (Trockman & Kolter, "Patches are all you need?") with a switch for what is learned.

Patch stem (p×p conv, stride p) → GELU → BN; ``depth`` blocks of a residual depthwise k×k conv ("same" padding) →
GELU → BN, then a pointwise 1×1 conv → GELU → BN; then either global average pooling and a linear classifier
(``head="classify"``) or a 1×1 projection back to the image channels (``head="image"``, pixel un-shuffling; needs
patch 1 so that the output has the input's size).

``mixing``: ``"full"`` learns everything; ``"chans"`` freezes every depthwise conv (weight *and* bias: the layer stays
exactly at its random initial state); ``"space"`` freezes every pointwise conv (weight and bias). The stem and the
head are the model's interface to pixels and labels; they are learned in every variant (with patch 1 the stem is a
3→dim linear map). BatchNorm scale/shift are per-channel and learned everywhere.

``smoothing_keep=K`` low-passes every depthwise filter at initialisation with :func:`lib.filters.dct_lowpass`
(keep the K×K lowest DCT-II coefficients; workshop App. A.3); with ``mixing="chans"`` they stay smoothed.
Even kernels with "same" padding pad asymmetrically (k=8: 3 pixels before, 4 after), as PyTorch does.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data import Normalize
from ..filters.dct import dct_lowpass

MIXINGS = ("full", "chans", "space")
HEADS = ("classify", "image")


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


class ConvMixer(nn.Module):
    """ConvMixer-``dim``/``depth`` with kernel ``kernel_size`` and patch ``patch_size``; see the module docstring."""

    def __init__(self, dim: int = 128, depth: int = 4, *, kernel_size: int = 8, patch_size: int = 1,
                 mixing: str = "full", head: str = "classify", in_channels: int = 3, num_classes: int = 10,
                 smoothing_keep: int | None = None, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)):
        super().__init__()
        if mixing not in MIXINGS:
            raise ValueError(f"unknown mixing {mixing!r}; choose one of {', '.join(MIXINGS)}")
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
        if head == "image" and patch_size != 1:
            raise ValueError(f"head='image' reconstructs pixels and needs patch_size=1, got {patch_size}")
        if kernel_size < 1 or patch_size < 1 or dim < 1 or depth < 0:
            raise ValueError("kernel_size, patch_size and dim must be positive and depth non-negative")
        if smoothing_keep is not None and not 1 <= smoothing_keep <= kernel_size:
            raise ValueError(f"smoothing_keep must be between 1 and kernel_size={kernel_size}, got {smoothing_keep}")
        self.mixing, self.head_kind = mixing, head
        self.normalize = Normalize(mean, std)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, dim, patch_size, stride=patch_size), nn.GELU(),
                                  nn.BatchNorm2d(dim))
        self.blocks = nn.Sequential(*[nn.Sequential(
            Residual(nn.Sequential(nn.Conv2d(dim, dim, kernel_size, groups=dim, padding="same"), nn.GELU(),
                                   nn.BatchNorm2d(dim))),
            nn.Conv2d(dim, dim, 1), nn.GELU(), nn.BatchNorm2d(dim)) for _ in range(depth)])
        if head == "classify":
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(dim, num_classes))
        else:
            self.head = nn.Conv2d(dim, in_channels, 1)
        if smoothing_keep is not None:
            for conv in self.depthwise_convs():
                conv.weight.data.copy_(dct_lowpass(conv.weight.data, smoothing_keep))
        frozen = self.depthwise_convs() if mixing == "chans" else self.pointwise_convs() if mixing == "space" else []
        for conv in frozen:
            conv.requires_grad_(False)

    def depthwise_convs(self) -> list[nn.Conv2d]:
        return [block[0].fn[0] for block in self.blocks]

    def pointwise_convs(self) -> list[nn.Conv2d]:
        return [block[1] for block in self.blocks]

    def depthwise_filters(self) -> list[torch.Tensor]:
        """Depthwise filters of every block, each (dim, k, k)."""
        return [conv.weight.detach()[:, 0].clone() for conv in self.depthwise_convs()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(self.normalize(x))))
