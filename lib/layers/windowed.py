"""A convolution whose kernel is tapered by a fixed window in every forward pass (spectral-leakage chapter)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..filters.windows import CONTROL_WINDOWS, WINDOWS, window2d


class WindowedConv2d(nn.Conv2d):
    """``Conv2d`` with zero "same" padding whose weight is multiplied elementwise by a 2-D window at every call.

    The window (outer product of the symmetric 1-D window, e.g. ``numpy.hamming(k)``) is a buffer, not a parameter:
    the effective kernel is ``weight * window``, so gradients reach ``weight`` scaled by the window and the taper holds
    throughout training, not only at initialisation. ``window="rect"`` gives a plain convolution.
    Only odd kernel sizes are accepted, so that "same" padding is symmetric and the window is centred.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, window: str = "hamming", *,
                 stride: int = 1, dilation: int = 1, groups: int = 1, bias: bool = True, device=None, dtype=None):
        if isinstance(kernel_size, (tuple, list)):
            if len(set(kernel_size)) != 1:
                raise ValueError(f"WindowedConv2d needs a square kernel, got kernel_size={tuple(kernel_size)}")
            kernel_size = kernel_size[0]
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"WindowedConv2d needs an odd kernel size (3, 5, 7, ...) so that 'same' padding is "
                             f"symmetric and the window centred; got kernel_size={kernel_size!r}")
        if window not in WINDOWS + CONTROL_WINDOWS:
            raise ValueError(f"unknown window {window!r}; choose one of {', '.join(WINDOWS + CONTROL_WINDOWS)}")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=dilation * (kernel_size - 1) // 2, dilation=dilation, groups=groups, bias=bias,
                         padding_mode="zeros", device=device, dtype=dtype)
        self.window_name = window
        taper = torch.as_tensor(window2d(window, kernel_size), dtype=torch.float32, device=device)
        self.register_buffer("window", taper.view(1, 1, kernel_size, kernel_size))

    @property
    def effective_weight(self) -> torch.Tensor:
        """The kernel the layer actually applies: ``weight * window``."""
        return self.weight * self.window.to(self.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.effective_weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", window={self.window_name}"
