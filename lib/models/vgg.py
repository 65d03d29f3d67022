"""VGG13 for 32×32 CIFAR images with circular convolutions and a switchable pooling layer (Zhang 2019, §4.1).

Five blocks of two conv3×3-BatchNorm-ReLU chunks, each followed by a pooling layer that halves the resolution
(32 → 16 → 8 → 4 → 2 → 1), then one linear layer to the classes (torchvision's VGG13 feature extractor; the 512×1×1
output makes its 4096-wide ImageNet classifier pointless, so, as in common CIFAR ports, a single linear layer
classifies; 9.4 M parameters at full width, the paper's "9M"). Convolutions pad circularly so that, with circular
shifts of the input, any loss of shift-equivariance comes from the downsampling alone.

``pool``: ``"max"`` (baseline MaxPool 2×2 stride 2), ``"maxblur"`` (MaxPool stride 1 → BlurPool, proposed) or
``"blurmax"`` (blur → MaxPool, App. C). ``width`` is the channel count of the first block (64 in the paper); the
quick profile uses a narrow network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Normalize
from ..layers.blurpool import make_pool
from ..layers.padding import CircularPadConv2d

BLOCK_MULTIPLIERS = (1, 2, 4, 8, 8)  # VGG13 channels 64, 128, 256, 512, 512 at width 64


class VGG13(nn.Module):
    """VGG13 for CIFAR (see module docstring); ``features_by_layer(x)`` returns every intermediate map by name."""

    def __init__(self, num_classes: int = 10, width: int = 64, pool: str = "max", filter=None,
                 mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), in_channels: int = 3, circular: bool = True):
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be a positive channel count, got {width}")
        padding_mode = "circular" if circular else "zeros"
        self.normalize = Normalize(mean, std)
        self.blocks = nn.ModuleList()
        self.pools = nn.ModuleList()
        channels = in_channels
        for multiplier in BLOCK_MULTIPLIERS:
            out = width * multiplier
            chunks = []
            for _ in range(2):
                chunks.append(nn.Sequential(
                    # CircularPadConv2d: nn.Conv2d with a one-gather circular padding (same parameters and keys)
                    CircularPadConv2d(channels, out, 3, padding=1, padding_mode=padding_mode, bias=False),
                    nn.BatchNorm2d(out), nn.ReLU(inplace=True)))
                channels = out
            self.blocks.append(nn.ModuleList(chunks))
            self.pools.append(make_pool(pool, filter, "circular" if circular else "reflect"))
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        for chunks, pool in zip(self.blocks, self.pools):
            for chunk in chunks:
                x = chunk(x)
            x = pool(x)
        # a 32×32 input is 1×1 here; averaging keeps other sizes usable
        return self.classifier(x.mean(dim=(-2, -1)))

    def conv_layers(self) -> dict[str, nn.Conv2d]:
        """The learned convolutions by name (``conv1_1`` ... ``conv5_2``)."""
        return {f"conv{b + 1}_{c + 1}": chunk[0] for b, chunks in enumerate(self.blocks)
                for c, chunk in enumerate(chunks)}

    @torch.no_grad()
    def features_by_layer(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every map of Fig. 4 in order: ``pix``, ``convB_C``, ``poolB (dense)``, ``poolB (ds)``, ``classifier``,
        ``softmax`` (the last ones as N×C×1×1 maps). ``poolB (ds)`` equals the pooling layer's output."""
        out = {"pix": x}
        x = self.normalize(x)
        for b, (chunks, pool) in enumerate(zip(self.blocks, self.pools), start=1):
            for c, chunk in enumerate(chunks, start=1):
                x = chunk(x)
                out[f"conv{b}_{c}"] = x
            dense = pool.dense(x)
            out[f"pool{b} (dense)"] = dense
            x = dense[..., ::pool.stride, ::pool.stride]
            out[f"pool{b} (ds)"] = x
        logits = self.classifier(x.mean(dim=(-2, -1)))
        out["classifier"] = logits[..., None, None]
        out["softmax"] = F.softmax(logits, dim=1)[..., None, None]
        return out
