"""Circular ("wrap-around") padding as one gather, and the ``nn.Conv2d`` that uses it.

``F.pad(x, pad, mode="circular")`` (which ``nn.Conv2d(padding_mode="circular")`` calls) copies the centre and every
edge and corner separately, and its backward materialises a zero tensor of the padded size per slice: about 39
extra kernels per convolution per training step, and on a 2-core CPU a VGG13-w8 step took nearly twice as long as
with zero padding. Here the padded map is ``torch.gather`` of the flattened image with a precomputed index, so the
forward is one kernel and the backward one ``scatter_add`` (plus its zero fill); the values are the same as
``F.pad``'s (a copy), and the gradients equal its gradients up to the order of the ≤ 4 additions at wrapped pixels.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _flat_index(height: int, width: int, pad: Sequence[int], device) -> torch.Tensor:
    """Position in the flattened H×W image of every pixel of the padded map (row-major); wraps any number of times."""
    left, right, top, bottom = pad
    rows = torch.arange(-top, height + bottom, device=device) % height
    cols = torch.arange(-left, width + right, device=device) % width
    return (rows[:, None] * width + cols[None, :]).flatten()


@lru_cache(maxsize=256)
def _cached_flat_index(height: int, width: int, pad: tuple[int, ...], device: torch.device) -> torch.Tensor:
    # one small int64 buffer per (size, padding, device): building it costs ~6 kernels, more than the gather itself
    return _flat_index(height, width, pad, device)


def is_channels_last(x: torch.Tensor) -> bool:
    """A 4-D tensor stored channels_last (and not also NCHW-contiguous, as with one channel); False inside vmap."""
    try:
        return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    except RuntimeError:  # inside vmap, memory-format queries are not implemented: take the NCHW route
        return False


def circular_pad(x: torch.Tensor, pad: Sequence[int]) -> torch.Tensor:
    """``F.pad(x, pad, mode="circular")`` for ``pad = (left, right, top, bottom)`` ≥ 0, as one gather.

    Unlike ``F.pad`` it also wraps more than once (a pad larger than the map), and a channels_last input gives a
    channels_last output (``F.pad`` returns NCHW, so the next convolution converts the layout back).
    """
    pad = tuple(int(p) for p in pad)
    if len(pad) != 4 or min(pad) < 0:
        raise ValueError(f"pad must be four non-negative sizes (left, right, top, bottom), got {pad}")
    if not any(pad):
        return x
    *lead, height, width = x.shape
    out_h, out_w = height + pad[2] + pad[3], width + pad[0] + pad[1]
    if torch.compiler.is_compiling():  # let the compiler see (and fold) the index arithmetic
        index = _flat_index(height, width, pad, x.device)
    else:
        index = _cached_flat_index(height, width, pad, x.device)
    if is_channels_last(x):
        n, c = lead
        flat = x.permute(0, 2, 3, 1).reshape(n, height * width, c)  # a view: NHWC is contiguous
        # whole pixels (C contiguous values) at a time: 2.5× faster than torch.gather here on the CPU
        out = flat.index_select(1, index)
        return out.view(n, out_h, out_w, c).permute(0, 3, 1, 2)
    flat = x.reshape(*lead, height * width)
    out = torch.gather(flat, -1, index.expand(*lead, -1))
    return out.view(*lead, out_h, out_w)


class CircularPadConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same arguments, parameters and state_dict keys) whose circular padding is one gather.

    ``padding_mode`` defaults to ``"circular"``; any other mode behaves exactly like ``nn.Conv2d``. ``padding="same"``
    with an even kernel pads asymmetrically, as ``nn.Conv2d`` does (the extra pixel goes after).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "circular", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, bias=bias, padding_mode=padding_mode, device=device, dtype=dtype)

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode != "circular":
            return super()._conv_forward(input, weight, bias)
        return F.conv2d(circular_pad(input, self._reversed_padding_repeated_twice), weight, bias, self.stride, 0,
                        self.dilation, self.groups)


def use_fast_circular_padding_(model: nn.Module) -> int:
    """Turn every plain ``nn.Conv2d(padding_mode="circular")`` of ``model`` into a :class:`CircularPadConv2d` in place
    (same parameters, same state_dict); returns how many were converted."""
    converted = 0
    for module in model.modules():
        if type(module) is nn.Conv2d and module.padding_mode == "circular":
            module.__class__ = CircularPadConv2d  # no new state: only _conv_forward differs
            converted += 1
    return converted
