"""Anti-aliased downsampling (Zhang 2019): blur with a fixed low-pass filter, then subsample.

- :class:`BlurPool`: depthwise convolution with the normalised outer product of 1-D taps, at a stride (the
  "BlurDownsample" of Eq. 3). Padding keeps ``ceil(H / stride)`` outputs; for an even kernel the extra pixel goes
  bottom/right. ``padding_mode="circular"`` makes the layer exactly equivariant to circular shifts by multiples of
  the stride, which is what the CIFAR experiments of the paper use.
- :class:`MaxBlurPool`: ``MaxPool(k, stride=1)`` then :class:`BlurPool` ("MaxPoolBlurDS", Eq. 3). With the delta
  filter it equals plain ``MaxPool(k, stride)`` (tested), so the baseline is the same module with ``taps=1``.
- :class:`BlurMaxPool`: the blur-before-pool variant of App. C: blur at stride 1, then ``MaxPool(k, stride)``.
- :class:`ConvBlurPool`: the replacement of a strided convolution ("ConvBlurPool", Sec. 3.3): the convolution at
  stride 1, (optional norm,) ReLU, then :class:`BlurPool` at the stride. Same output size as the strided conv.

The pooling modules give ``nn.MaxPool2d(k, stride)``'s output size for every input size, odd ones included (a 33×33
map gives 16×16). Every module also has ``dense(x)``: the signal just before subsampling (``forward(x)`` is
``dense(x)[..., ::s, ::s]``, cropped to that size), used to draw the "pool (dense)" and "pool (ds)" rows of Fig. 4.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..filters.blur import blur_filter
from .padding import circular_pad, is_channels_last

PADDING_MODES = ("reflect", "circular", "replicate", "zeros")


def _taps(filter) -> np.ndarray:
    """``("binomial", 5)``, a 1-D sequence of weights, or None (delta) → normalised 1-D taps."""
    if filter is None:
        return np.ones(1)
    if isinstance(filter, (tuple, list)) and len(filter) == 2 and isinstance(filter[0], str):
        return blur_filter(filter[0], filter[1])
    taps = np.asarray(filter, dtype=np.float64)
    if taps.ndim != 1 or taps.size == 0:
        raise ValueError(f"filter must be (family, taps) like ('binomial', 5) or 1-D weights, got {filter!r}")
    if abs(taps.sum()) < 1e-12:
        raise ValueError("filter weights sum to zero: a low-pass filter must pass the DC signal")
    return taps / taps.sum()


def _check_padding(mode: str) -> str:
    if mode not in PADDING_MODES:
        raise ValueError(f"unknown padding_mode {mode!r}; choose one of {', '.join(PADDING_MODES)}")
    return mode


def _pad(x: torch.Tensor, before: int, after: int, mode: str) -> torch.Tensor:
    if before == 0 and after == 0:
        return x
    pad = (before, after, before, after)
    if mode == "zeros":
        return F.pad(x, pad)
    if mode == "circular":
        # one gather (F.pad's circular mode costs a dozen kernels each way); also wraps more than once (a 7-tap blur
        # on a 2×2 map), which F.pad refuses
        return circular_pad(x, pad)
    if mode == "reflect" and max(before, after) >= min(x.shape[-2:]):
        mode = "replicate"  # reflection needs more pixels than tiny maps have
    return F.pad(x, pad, mode=mode)


def _max_pool_stride1(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """``F.max_pool2d(x, kernel_size, stride=1)``. On the CPU the NCHW kernel at stride 1 is 2–3× slower than the
    channels_last one (a fifth of a VGG13-w8 training step), which picks the same maxima (the first in scan order,
    ties included), so an NCHW map goes through channels_last and back: same values and gradients, bit for bit."""
    if x.device.type == "cpu" and x.dim() == 4 and not is_channels_last(x) and x.shape[1] > 1:
        try:
            x_cl = x.contiguous(memory_format=torch.channels_last)
        except RuntimeError:  # inside vmap: no memory formats
            return F.max_pool2d(x, kernel_size, stride=1)
        return F.max_pool2d(x_cl, kernel_size, stride=1).contiguous()
    return F.max_pool2d(x, kernel_size, stride=1)


class BlurPool(nn.Module):
    """Fixed low-pass filter applied to every channel separately, then subsampling by ``stride``.

    ``filter`` is ``(family, taps)`` for :func:`lib.filters.blur_filter` or explicit 1-D weights (normalised here).
    Works for any number of channels (the kernel is a buffer broadcast over channels; nothing is learned).
    ``separable=True`` filters columns, then rows, with the 1-D taps (2n instead of n² multiplies per pixel; equal
    to the 2-D kernel up to float rounding): the paper's layer is the 2-D kernel, the timing table measures both.
    """

    def __init__(self, filter=("binomial", 5), stride: int = 2, padding_mode: str = "reflect",
                 separable: bool = False):
        super().__init__()
        if int(stride) < 1:
            raise ValueError(f"stride must be at least 1, got {stride}")
        taps = _taps(filter)
        self.stride = int(stride)
        self.padding_mode = _check_padding(padding_mode)
        self.taps = len(taps)
        self.separable = bool(separable)
        self.register_buffer("kernel", torch.tensor(np.outer(taps, taps), dtype=torch.float32)[None, None])
        self.register_buffer("taps_1d", torch.tensor(taps, dtype=torch.float32))

    def extra_repr(self) -> str:
        return (f"taps={self.taps}, stride={self.stride}, padding_mode={self.padding_mode!r}"
                + (", separable=True" if self.separable else ""))

    def _blur(self, x: torch.Tensor, stride: int) -> torch.Tensor:
        if self.taps == 1:
            return x[..., ::stride, ::stride] if stride > 1 else x
        before = (self.taps - 1) // 2
        x = _pad(x, before, self.taps - 1 - before, self.padding_mode)
        channels = x.shape[1]
        if self.separable:
            taps = self.taps_1d.to(x.dtype)
            x = F.conv2d(x, taps.view(1, 1, -1, 1).expand(channels, 1, -1, -1), stride=(stride, 1), groups=channels)
            return F.conv2d(x, taps.view(1, 1, 1, -1).expand(channels, 1, -1, -1), stride=(1, stride),
                            groups=channels)
        kernel = self.kernel.to(x.dtype).expand(channels, 1, -1, -1)
        return F.conv2d(x, kernel, stride=stride, groups=channels)

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        """The blurred signal before subsampling (stride 1)."""
        return self._blur(x, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._blur(x, self.stride)


class MaxBlurPool(nn.Module):
    """Max-pooling evaluated densely (stride 1), then :class:`BlurPool` (Eq. 3: ``Downsample(Blur(MaxPool_k,1(X)))``).

    The dense max-pool pads ``kernel_size - 1`` pixels bottom/right (wrapping around when ``padding_mode`` is
    circular, replicating otherwise), so its output keeps the input size; the subsampled output is then cropped to
    ``nn.MaxPool2d(kernel_size, stride)``'s size, ``floor((H - k) / s) + 1`` (the padded pixels only matter on
    even-sized maps, inside the circular wrap), and ``taps=1`` reproduces ``nn.MaxPool2d`` exactly for every size.
    """

    def __init__(self, filter=("binomial", 5), kernel_size: int = 2, stride: int = 2, padding_mode: str = "reflect",
                 separable: bool = False):
        super().__init__()
        if int(kernel_size) < 1:
            raise ValueError(f"kernel_size must be at least 1, got {kernel_size}")
        self.kernel_size = int(kernel_size)
        self.blur = BlurPool(filter, stride, padding_mode, separable)
        self.stride = self.blur.stride

    def output_size(self, size: int) -> int:
        """``nn.MaxPool2d(kernel_size, stride)``'s output length for an input of ``size`` pixels; a map smaller than
        the window (the 1-pixel-high toy signal of Sec. 3.2), which ``nn.MaxPool2d`` rejects, keeps
        ``ceil(size / stride)`` outputs of the wrapped or replicated pooling."""
        if size < self.kernel_size:
            return -(-size // self.stride)
        return (size - self.kernel_size) // self.stride + 1

    def _crop(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        height, width = self.output_size(x.shape[-2]), self.output_size(x.shape[-1])
        if y.shape[-2] == height and y.shape[-1] == width:
            return y
        return y[..., :height, :width]

    def dense_pool(self, x: torch.Tensor) -> torch.Tensor:
        """Max-pooling at stride 1 (the shift-equivariant part of strided max-pooling)."""
        extra = self.kernel_size - 1
        if extra:
            mode = "circular" if self.blur.padding_mode == "circular" else "replicate"
            x = _pad(x, 0, extra, mode)
        return _max_pool_stride1(x, self.kernel_size)

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        return self.blur.dense(self.dense_pool(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._crop(self.blur(self.dense_pool(x)), x)


class BlurMaxPool(nn.Module):
    """Blur-before-pool (App. C): low-pass at stride 1, then ordinary strided max-pooling."""

    def __init__(self, filter=("binomial", 5), kernel_size: int = 2, stride: int = 2, padding_mode: str = "reflect",
                 separable: bool = False):
        super().__init__()
        self.blur = BlurPool(filter, 1, padding_mode, separable)
        self.pool = MaxBlurPool(None, kernel_size, stride, padding_mode)
        self.stride = self.pool.stride

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool.dense(self.blur(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blur(x))


class MaxPool(MaxBlurPool):
    """Plain strided max-pooling (the baseline), with ``dense`` for the equivariance analysis; forward is one
    ``max_pool2d`` call so that timings of the baseline are not inflated."""

    def __init__(self, kernel_size: int = 2, stride: int = 2, padding_mode: str = "circular"):
        super().__init__(None, kernel_size, stride, padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size == self.stride and x.shape[-1] % self.stride == 0 and x.shape[-2] % self.stride == 0:
            return F.max_pool2d(x, self.kernel_size, self.stride)
        return super().forward(x)


class ConvBlurPool(nn.Module):
    """A strided convolution made shift-equivariant (Sec. 3.3, "ConvBlurPool"): ``Conv(stride 1) → [norm] → ReLU →
    BlurPool(stride)`` in place of ``Conv(stride s) → [norm] → ReLU``. With the delta filter it *is* the strided
    layer (ReLU commutes with subsampling); its output size always equals the strided convolution's.

    Build it from the layer it replaces with :meth:`from_conv`, which keeps that layer's weights.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 2, padding: int = 0,
                 filter=("binomial", 5), padding_mode: str = "zeros", bias: bool = True,
                 norm: nn.Module | None = None):
        super().__init__()
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"unknown padding_mode {padding_mode!r}; choose one of {', '.join(PADDING_MODES)}")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=padding,
                              padding_mode=padding_mode, bias=bias)
        self.norm = norm if norm is not None else nn.Identity()
        # the blur pads like the convolution does (zeros → reflect: zero padding would darken the borders)
        self.blur = BlurPool(filter, stride, "reflect" if padding_mode == "zeros" else padding_mode)
        self.stride = self.blur.stride

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, filter=("binomial", 5), norm: nn.Module | None = None) -> "ConvBlurPool":
        """The anti-aliased replacement of ``conv`` (a strided ``nn.Conv2d``), with ``conv``'s weights and bias."""
        if conv.groups != 1 or conv.dilation != (1, 1) or not isinstance(conv.padding, tuple) \
                or conv.stride[0] != conv.stride[1] or conv.padding[0] != conv.padding[1] \
                or conv.kernel_size[0] != conv.kernel_size[1]:
            raise ValueError(f"from_conv needs a square, ungrouped, undilated conv with equal strides and padding, "
                             f"got {conv}")
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride[0], conv.padding[0],
                    filter, conv.padding_mode, conv.bias is not None, norm)
        with torch.no_grad():
            layer.conv.weight.copy_(conv.weight)
            if conv.bias is not None:
                layer.conv.bias.copy_(conv.bias)
        return layer

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        return self.blur.dense(torch.relu(self.norm(self.conv(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blur(torch.relu(self.norm(self.conv(x))))


def make_pool(kind: str, filter=None, padding_mode: str = "circular") -> nn.Module:
    """The pooling layer of a network by name: ``max`` (baseline), ``maxblur`` (proposed), ``blurmax`` (App. C)."""
    if kind == "max":
        return MaxPool(2, 2, padding_mode)
    if kind == "maxblur":
        return MaxBlurPool(filter, 2, 2, padding_mode)
    if kind == "blurmax":
        return BlurMaxPool(filter, 2, 2, padding_mode)
    raise ValueError(f"unknown pool {kind!r}; choose 'max', 'maxblur' or 'blurmax'")


POOLS: Sequence[str] = ("max", "maxblur", "blurmax")
