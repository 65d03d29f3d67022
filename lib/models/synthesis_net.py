"""One small CIFAR backbone with a switch for each paper's model change (synthesis chapter).

The layout is MyrtleCNN's (Page 2018; the frequency-sensitivity chapter's model) with BatchNorm, so that a short
schedule trains it: a stem convolution (width w) at 32×32, then three stages, each one spatial-mixing unit doubling
the width followed by a 2× downsampling (32 → 16 → 8 → 4), global average pooling and a linear classifier. A unit is
``spatial mixing → BatchNorm → ReLU``. The switches, each reusing the chapters' layers (no second copy):

* ``kernel_size`` (3, 5, 7, ...) and ``window`` (None or a name of ``lib.filters.WINDOWS``): every spatial kernel is
  k×k, tapered in every forward pass by :class:`lib.layers.windowed.WindowedConv2d` when a window is given
  (spectral-leakage chapter);
* ``mixing``: ``"full"`` (a standard convolution), ``"separable"`` (learned depthwise k×k with depth multiplier d,
  then a learned pointwise 1×1: :class:`lib.models.separable_resnet.SeparableConv2d`) or ``"chans"`` (the same with
  the depthwise filters frozen at their random initial values; spatial-mixing chapter). The stem follows the switch;
  the convolutions have no bias (BatchNorm follows), BatchNorm stays learned and keeps updating its running
  statistics everywhere, as in the spatial-mixing chapter;
* ``pool``: ``"max"`` (strided max-pooling, the baseline) or ``"maxblur"`` (max-pool at stride 1, then a fixed
  low-pass ``filter`` such as ``("triangle", 5)`` at stride 2: :class:`lib.layers.blurpool.MaxBlurPool`;
  anti-aliasing chapter);
* ``padding``: ``"zeros"`` or ``"circular"`` for every spatial convolution (circular through the one-gather
  :class:`lib.layers.padding.CircularPadConv2d` path) and for the pooling layers (zero-padded networks pool with
  reflect padding, as the anti-aliasing chapter's VGG13 does).

``features_by_layer(x)`` gives every intermediate map by name (the per-layer equivariance lens of the anti-aliasing
chapter), ``spatial_kernels()`` every effective k×k bank (the coverage and leakage lenses).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Normalize
from ..layers.blurpool import make_pool
from ..layers.padding import use_fast_circular_padding_
from ..layers.windowed import WindowedConv2d
from .separable_resnet import SeparableConv2d

MIXINGS = ("full", "separable", "chans")
POOLS = ("max", "maxblur")
PADDINGS = ("zeros", "circular")
STAGES = 3


def _spatial(in_channels: int, out_channels: int, kernel_size: int, window: str | None, mixing: str,
             depth_multiplier: int) -> nn.Module:
    if mixing == "full":
        if window is not None:
            return WindowedConv2d(in_channels, out_channels, kernel_size, window, bias=False)
        return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
    layer = SeparableConv2d(in_channels, out_channels, kernel_size, 1, depth_multiplier)
    if window is not None:  # the depthwise part is the spatial one: taper it
        depthwise = WindowedConv2d(in_channels, in_channels * depth_multiplier, kernel_size, window,
                                   groups=in_channels, bias=False)
        layer.depthwise = depthwise
    return layer


class SynthesisNet(nn.Module):
    """Myrtle-style CIFAR CNN with BatchNorm and every switch of the module docstring."""

    def __init__(self, *, width: int = 16, kernel_size: int = 3, window: str | None = None, mixing: str = "full",
                 depth_multiplier: int = 9, pool: str = "max", filter=("triangle", 5), padding: str = "zeros",
                 in_channels: int = 3, num_classes: int = 10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)):
        super().__init__()
        if mixing not in MIXINGS:
            raise ValueError(f"unknown mixing {mixing!r}; choose one of {', '.join(MIXINGS)}")
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")
        if padding not in PADDINGS:
            raise ValueError(f"unknown padding {padding!r}; choose one of {', '.join(PADDINGS)}")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (3, 5, 7, ...) for symmetric padding, got {kernel_size!r}")
        if window is not None and padding == "circular":
            raise ValueError("WindowedConv2d pads with zeros only: a windowed variant needs padding='zeros'")
        if width < 1 or depth_multiplier < 1:
            raise ValueError("width and depth_multiplier must be positive integers")
        self.kernel_size, self.window, self.mixing, self.pool_kind, self.padding = (kernel_size, window, mixing,
                                                                                    pool, padding)
        self.normalize = Normalize(mean, std)
        channels = [width * 2 ** i for i in range(STAGES + 1)]
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        previous = in_channels
        for out in channels:
            self.convs.append(_spatial(previous, out, kernel_size, window, mixing, depth_multiplier))
            self.norms.append(nn.BatchNorm2d(out))
            previous = out
        pool_padding = "circular" if padding == "circular" else "reflect"
        self.pools = nn.ModuleList(make_pool(pool, None if pool == "max" else tuple(filter), pool_padding)
                                   for _ in range(STAGES))
        self.classifier = nn.Linear(previous, num_classes)
        if padding == "circular":
            for module in self.modules():
                if type(module) is nn.Conv2d and module.kernel_size[0] > 1:
                    module.padding_mode = "circular"
            use_fast_circular_padding_(self)
        if mixing == "chans":
            for module in self.modules():
                if isinstance(module, SeparableConv2d):
                    module.depthwise.weight.requires_grad_(False)

    def _units(self):
        """(name, conv, norm, pool or None) in forward order: the stem has no pool, each stage ends with one."""
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            yield ("stem" if i == 0 else f"conv{i}"), conv, norm, (self.pools[i - 1] if i > 0 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        for _, conv, norm, pool in self._units():
            x = torch.relu(norm(conv(x)))
            if pool is not None:
                x = pool(x)
        return self.classifier(x.mean(dim=(-2, -1)))

    @torch.no_grad()
    def features_by_layer(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``pix``, every unit's output, ``poolN (dense)`` / ``poolN (ds)`` (before / after subsampling),
        ``classifier`` and ``softmax`` (as N×C×1×1 maps), in forward order; the names are the same for every
        variant, so that per-layer profiles compare across variants."""
        out = {"pix": x}
        x = self.normalize(x)
        for i, (name, conv, norm, pool) in enumerate(self._units()):
            x = torch.relu(norm(conv(x)))
            out[name] = x
            if pool is not None:
                dense = pool.dense(x)
                out[f"pool{i} (dense)"] = dense
                x = pool(x)
                out[f"pool{i} (ds)"] = x
        logits = self.classifier(x.mean(dim=(-2, -1)))
        out["classifier"] = logits[..., None, None]
        out["softmax"] = F.softmax(logits, dim=1)[..., None, None]
        return out

    def spatial_kernels(self) -> list[tuple[str, torch.Tensor]]:
        """``(name, effective k×k bank)`` of every spatial convolution in forward order (windows applied; for a
        separable unit its depthwise bank, shaped (c·d, 1, k, k))."""
        found = []
        for name, conv, _, _ in self._units():
            module = conv.depthwise if isinstance(conv, SeparableConv2d) else conv
            weight = module.effective_weight if isinstance(module, WindowedConv2d) else module.weight
            found.append((name, weight.detach()))
        return found

    def depthwise_weights(self) -> list[torch.Tensor]:
        """The depthwise weights of every separable unit (empty for ``mixing="full"``)."""
        return [conv.depthwise.weight for _, conv, _, _ in self._units() if isinstance(conv, SeparableConv2d)]
