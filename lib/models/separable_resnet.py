"""Pre-activation CIFAR ResNets (He et al. 2016, identity mappings) with standard or separable convolutions.

A depth-n network has a 3×3 stem, three stages of n basic blocks (two convolutions each; widths w, 2w, 4w, the last
two stages start with stride 2) and a linear classifier: 6n + 2 layers. With ``conv="separable"`` every 3×3
convolution (the stem included) becomes a depthwise k×k convolution with depth multiplier d followed by a pointwise
1×1 convolution (eq. 2 of the paper). One switch says what is learned:

* ``mixing="full"``: everything;
* ``mixing="chans"``: only channel mixing. Every depthwise filter stays frozen at its initial value;
* ``mixing="space"``: only spatial mixing. Every pointwise convolution, and the 1×1 projection shortcuts (also channel
  mixing), stay frozen at their random initial values.

Decisions the papers leave open (documented in the chapter): the classifier is learned in every variant (a frozen
random read-out would make the comparison about the read-out, not about mixing); BatchNorm scale and shift are
per-channel (neither spatial nor channel mixing) and stay learned everywhere, and their running statistics are updated,
so a BatchNorm after a frozen random convolution re-normalises its output (the filters' overall scale is irrelevant).
The convolutions have no bias (BatchNorm follows), so there is no frozen-bias question here.

``filters`` chooses the frozen depthwise bank of a ``chans`` model (paper Fig 5, workshop Fig 6): ``"random"``
(PyTorch's default init, called "Different"), ``"same"`` (one set of d random kernels repeated for every input
channel), ``"box"`` (every kernel the k×k average) and ``"identity"`` (a centred unit impulse).
"""

from __future__ import annotations

import torch
from torch import nn

from ..data import Normalize

CONVS = ("standard", "separable")
MIXINGS = ("full", "chans", "space")
FILTERS = ("random", "same", "box", "identity")


class SeparableConv2d(nn.Module):
    """Depthwise k×k convolution with depth multiplier d (c_in → c_in·d channels), then a pointwise 1×1 (→ c_out)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 depth_multiplier: int = 9):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels * depth_multiplier, kernel_size, stride=stride,
                                   padding=kernel_size // 2, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels * depth_multiplier, out_channels, 1, bias=False)
        self.depth_multiplier = depth_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def static_bank(kind: str, weight: torch.Tensor, depth_multiplier: int) -> torch.Tensor:
    """A depthwise weight (c·d, 1, k, k) filled with the ``kind`` bank, starting from the random ``weight``."""
    if kind not in FILTERS:
        raise ValueError(f"unknown static filter bank {kind!r}; choose one of {', '.join(FILTERS)}")
    out = weight.detach().clone()
    k = out.shape[-1]
    if kind == "same":  # the first channel's d random kernels, repeated for every input channel
        groups = out.shape[0] // depth_multiplier
        out = out[:depth_multiplier].repeat(groups, 1, 1, 1)
    elif kind == "box":
        out = torch.full_like(out, 1.0 / (k * k))
    elif kind == "identity":
        out = torch.zeros_like(out)
        out[..., k // 2, k // 2] = 1.0
    return out


def _conv(in_channels: int, out_channels: int, stride: int, conv: str, depth_multiplier: int,
          kernel_size: int = 3) -> nn.Module:
    if conv == "standard":
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
    return SeparableConv2d(in_channels, out_channels, kernel_size, stride, depth_multiplier)


class PreActBlock(nn.Module):
    """BN → ReLU → conv → BN → ReLU → conv, plus the identity (or a strided 1×1 projection when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, conv: str, depth_multiplier: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv(in_channels, out_channels, stride, conv, depth_multiplier)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv(out_channels, out_channels, 1, conv, depth_multiplier)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


class SeparableResNet(nn.Module):
    """CIFAR pre-activation ResNet with 6·depth + 2 layers; see the module docstring for ``conv``/``mixing``/``filters``."""

    def __init__(self, depth: int = 3, *, conv: str = "separable", mixing: str = "full", depth_multiplier: int = 9,
                 filters: str = "random", width: int = 16, in_channels: int = 3, num_classes: int = 10,
                 mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)):
        super().__init__()
        if conv not in CONVS:
            raise ValueError(f"unknown conv {conv!r}; choose one of {', '.join(CONVS)}")
        if mixing not in MIXINGS:
            raise ValueError(f"unknown mixing {mixing!r}; choose one of {', '.join(MIXINGS)}")
        if filters not in FILTERS:
            raise ValueError(f"unknown static filter bank {filters!r}; choose one of {', '.join(FILTERS)}")
        if conv == "standard" and mixing != "full":
            raise ValueError(f"a standard convolution entangles both mixings: mixing={mixing!r} needs "
                             "conv='separable'")
        if filters != "random" and mixing != "chans":
            raise ValueError(f"filters={filters!r} is a frozen depthwise bank: it needs mixing='chans'")
        if depth < 1 or depth_multiplier < 1 or width < 1:
            raise ValueError("depth, depth_multiplier and width must be positive integers")
        self.conv, self.mixing, self.filters = conv, mixing, filters
        self.normalize = Normalize(mean, std)
        self.stem = _conv(in_channels, width, 1, conv, depth_multiplier)
        blocks, channels = [], width
        for stage in range(3):
            out = width * 2 ** stage
            for i in range(depth):
                blocks.append(PreActBlock(channels, out, 2 if stage > 0 and i == 0 else 1, conv, depth_multiplier))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(channels)
        self.classifier = nn.Linear(channels, num_classes)
        self._apply_switch(depth_multiplier)

    def _apply_switch(self, depth_multiplier: int) -> None:
        for module in self.modules():
            if isinstance(module, SeparableConv2d):
                if self.filters != "random":
                    module.depthwise.weight.data.copy_(static_bank(self.filters, module.depthwise.weight,
                                                                   module.depth_multiplier))
                if self.mixing == "chans":
                    module.depthwise.weight.requires_grad_(False)
                if self.mixing == "space":
                    module.pointwise.weight.requires_grad_(False)
            if isinstance(module, PreActBlock) and module.shortcut is not None and self.mixing == "space":
                module.shortcut.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.stem(self.normalize(x)))
        out = torch.relu(self.bn(out)).mean(dim=(2, 3))
        return self.classifier(out)

    def depthwise_filters(self) -> list[torch.Tensor]:
        """The depthwise banks (c·d, k, k) of every separable layer, in forward order."""
        return [m.depthwise.weight.detach()[:, 0] for m in self.modules() if isinstance(m, SeparableConv2d)]


# --- parameter counts of the paper (eqs. 1-4) --------------------------------------------------------------------

def p_conv(c_in: int, c_out: int, k: int) -> int:
    """Eq. (1): trainable parameters of a standard k×k convolution without bias."""
    return c_in * c_out * k * k


def p_sep(c_in: int, c_out: int, k: int, d: int) -> int:
    """Eq. (2): depthwise (c_in·k²·d) plus pointwise (c_in·d·c_out) parameters of a separable convolution."""
    return c_in * k * k * d + c_in * d * c_out


def p_static(c_in: int, c_out: int, d: int) -> int:
    """Eq. (3): trainable parameters of a separable convolution whose depthwise filters are frozen (pointwise only)."""
    return c_in * d * c_out


def p_space(c_in: int, k: int, d: int) -> int:
    """Trainable parameters of a separable convolution whose pointwise part is frozen (depthwise only)."""
    return c_in * k * k * d


def layer_shapes(depth: int, width: int = 16, in_channels: int = 3) -> list[tuple[int, int, int]]:
    """``(c_in, c_out, stride)`` of every 3×3 convolution of a depth-n CIFAR ResNet, stem first."""
    shapes, channels = [(in_channels, width, 1)], width
    for stage in range(3):
        out = width * 2 ** stage
        for i in range(depth):
            shapes += [(channels, out, 2 if stage > 0 and i == 0 else 1), (out, out, 1)]
            channels = out
    return shapes


def predicted_trainable(depth: int, *, conv: str, mixing: str, depth_multiplier: int = 9, width: int = 16,
                        k: int = 3, in_channels: int = 3, num_classes: int = 10) -> int:
    """Trainable parameters of :class:`SeparableResNet` computed from eqs. (1)-(3), plus BatchNorm, shortcuts, classifier."""
    total = 0
    for c_in, c_out, _ in layer_shapes(depth, width, in_channels):
        if conv == "standard":
            total += p_conv(c_in, c_out, k)
        elif mixing == "full":
            total += p_sep(c_in, c_out, k, depth_multiplier)
        elif mixing == "chans":
            total += p_static(c_in, c_out, depth_multiplier)
        else:
            total += p_space(c_in, k, depth_multiplier)
    # 1×1 projection shortcuts at the two stage transitions (channel mixing: frozen in "space")
    if not (conv == "separable" and mixing == "space"):
        total += sum(width * 2 ** (s - 1) * width * 2 ** s for s in (1, 2))
    bn_channels = [c for c_in, c_out, _ in layer_shapes(depth, width, in_channels)[1::2] for c in (c_in, c_out)]
    total += 2 * sum(bn_channels) + 2 * width * 4  # two BN per block, and the final BN
    total += width * 4 * num_classes + num_classes  # classifier
    return total
