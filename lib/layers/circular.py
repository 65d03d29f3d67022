"""Circular ("wrap-around") convolution computed in the Fourier domain (frequency-sensitivity chapter).

``CircularConv2d`` has the parameters of ``nn.Conv2d`` and computes exactly what
``nn.Conv2d(..., padding="same", padding_mode="circular")`` computes with the same weight and bias, but through
``rfft2`` → a ``C_out × C_in`` matrix product at every frequency → ``irfft2``. For the full-image kernels of the
ConvActually models (32×32 on 32×32 images) a direct convolution costs ``H·W`` multiply-adds per output pixel and
channel pair, the FFT route about ``log(H·W)``: measured on one CPU thread, a 16-channel forward pass ran 16× faster
(the gap grows with the channel count and on GPUs, where the direct route has no fast kernel for 32×32 filters).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous: bmm on a permuted gradient falls back to a
    per-matrix loop on the CPU, which made the backward pass ~10× slower than the forward.

    Written in the ``forward`` without ctx + ``setup_context`` style, with a ``jvp`` and a generated vmap rule, so that
    ``torch.func`` (``grad``, ``jvp``, ``jacrev``, ``jacfwd``, ``vmap``) works through the layer. The backward is built
    from differentiable ops (``contiguous``), so double backward (e.g. a gradient penalty) works too.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass  # nothing to save: the derivative of the identity needs no input

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()

    @staticmethod
    def jvp(ctx, tangent):
        # forward returns a view of its input, so the output tangent must be the same view of the input tangent
        return tangent.view_as(tangent)


class CircularConv2d(nn.Module):
    """``nn.Conv2d(in_channels, out_channels, kernel_size, padding="same", padding_mode="circular")`` via the FFT.

    ``weight`` is shaped (out, in, k, k) and ``bias`` (out,), initialised like ``nn.Conv2d``. ``kernel_size`` may
    equal the image size (a full H×W circular convolution); it may not exceed it.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True):
        super().__init__()
        if isinstance(kernel_size, (tuple, list)):
            if len(set(kernel_size)) != 1:
                raise ValueError(f"CircularConv2d takes a square kernel, got kernel_size={kernel_size}; "
                                 f"pass one integer")
            kernel_size = kernel_size[0]
        if int(kernel_size) != kernel_size or kernel_size < 1:
            raise ValueError(f"kernel_size must be a positive integer, got {kernel_size!r}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channel counts must be positive, got in={in_channels}, out={out_channels}")
        self.in_channels, self.out_channels, self.kernel_size = int(in_channels), int(out_channels), int(kernel_size)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the same default as nn.Conv2d, so that swapping the layers changes nothing but the speed
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_channels * self.kernel_size ** 2
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"bias={self.bias is not None}, fft")

    def frequency_response(self, height: int, width: int) -> torch.Tensor:
        """The kernel's transfer matrices: complex (height, width//2+1, out, in), one C_out × C_in matrix per frequency.

        nn.Conv2d cross-correlates: out[i] = Σ_m w[m] x[i + m − left], with left = (k−1)//2 for "same" padding.
        That is a convolution with the flipped kernel, so its transfer function is conj(FFT(w)) times the phase of a
        shift by ``left``.
        """
        k = self.kernel_size
        if k > height or k > width:
            raise ValueError(f"kernel_size {k} exceeds the input size {height}×{width}; a circular convolution "
                             f"needs kernel_size ≤ image size")
        left = (k - 1) // 2  # what padding="same" puts before the image (PyTorch puts the odd pixel after)
        spectrum = torch.fft.rfft2(self.weight.float(), s=(height, width))  # (out, in, H, W//2+1)
        fy = torch.fft.fftfreq(height, device=self.weight.device)[:, None]
        fx = torch.fft.rfftfreq(width, device=self.weight.device)[None, :]
        shift = torch.exp(-2j * math.pi * left * (fy + fx))  # out[i] = c[i − left]: a delay by `left` pixels
        transfer = spectrum.conj() * shift
        return transfer.permute(2, 3, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input shaped (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        # FFTs and complex products stay in float32 even under autocast (bfloat16 FFTs are not supported/accurate)
        with torch.autocast(device_type=x.device.type, enabled=False):
            spectrum = torch.fft.rfft2(x.float())                                   # (N, in, H, W')
            # complex products as one real batched matmul: complex bmm (and its backward) is slow on CPU
            n, freqs = x.shape[0], spectrum.shape[-2] * spectrum.shape[-1]
            stacked = torch.cat([spectrum.real, spectrum.imag], dim=1).reshape(n, 2 * self.in_channels, freqs)
            stacked = stacked.permute(2, 0, 1).contiguous()                         # (F, N, 2in)
            transfer = self.frequency_response(height, width).reshape(freqs, self.out_channels, self.in_channels)
            real_t, imag_t = transfer.real.transpose(1, 2), transfer.imag.transpose(1, 2)  # (F, in, out)
            block = torch.cat([torch.cat([real_t, imag_t], dim=2), torch.cat([-imag_t, real_t], dim=2)], dim=1)
            mixed = _ContiguousGrad.apply(torch.bmm(stacked, block.contiguous()))   # (F, N, 2out): [re, im]
            mixed = mixed.permute(1, 2, 0).reshape(n, 2, self.out_channels, *spectrum.shape[-2:])
            out = torch.fft.irfft2(torch.complex(mixed[:, 0], mixed[:, 1]), s=(height, width))
            if self.bias is not None:
                out = out + self.bias.float().view(1, -1, 1, 1)
        return out.contiguous()
