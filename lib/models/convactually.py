"""ConvActually (Godfrey et al. 2022, §5 and App. C.5): the closest trainable relative of the linear CNN of eq. 3.1.

Blocks of full-image circular convolutions (32×32 kernels on 32×32 images, computed by FFT), each followed by a bias
and a ReLU, with constant width, no batch norm and no pooling; then flatten and one linear layer.

``activation="identity"`` drops the ReLUs: the **linear ConvActually**, the linear CNN of eq. 3.1 (plus biases and the
input normalisation), where the theory of §4 is exact. It computes ``f(x) = Σ v·x + b`` for one predictor ``v`` per
class; :func:`linear_predictor` reads ``v`` and ``b`` off the weights (no autograd), and
``lib.sensitivity.predictor_sensitivity(v)`` is then its frequency sensitivity exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..data import Normalize
from ..layers import CircularConv2d


ACTIVATIONS = ("relu", "identity")


class ConvActually(nn.Module):
    """``depth`` × [CircularConv2d(k = image size) → ReLU], flatten, linear; Kaiming-normal convolution weights.

    ``activation="identity"``: no ReLUs (the linear ConvActually); its convolutions get Kaiming's linear gain 1
    instead of the ReLU gain √2, which keeps the activations O(1) at every depth. The default (``"relu"``) builds
    exactly the model of earlier versions: same layers, same parameter names, same initialisation.
    """

    def __init__(self, depth: int = 1, width: int = 64, in_channels: int = 3, image_size: int = 32,
                 num_classes: int = 10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), kernel_size: int | None = None,
                 activation: str = "relu"):
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"ConvActually needs depth ≥ 1 and width ≥ 1, got depth={depth}, width={width}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        kernel_size = image_size if kernel_size is None else kernel_size
        if kernel_size > image_size:
            raise ValueError(f"kernel_size {kernel_size} exceeds image_size {image_size}; use at most {image_size}")
        layers: list[nn.Module] = [Normalize(mean, std)]
        channels = in_channels
        for _ in range(depth):
            conv = CircularConv2d(channels, width, kernel_size)
            # fan_in = channels·k² keeps activations O(1)
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu" if activation == "relu" else "linear")
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU() if activation == "relu" else nn.Identity()]
            channels = width
        layers += [nn.Flatten(), nn.Linear(channels * image_size * image_size, num_classes)]
        self.net = nn.Sequential(*layers)
        self.depth, self.width, self.activation = depth, width, activation
        self.in_channels, self.image_size = in_channels, image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@torch.no_grad()
def linear_predictor(model: ConvActually) -> tuple[np.ndarray, np.ndarray]:
    """``(v, b)`` with ``model(x) = Σ_{c,i,j} v[k, c, i, j] x[c, i, j] + b[k]`` for a linear ConvActually, in float64.

    ``x`` is the model's input (images in [0, 1]), so ``v`` includes the input normalisation's 1/std; ``v`` is then
    ∇ₓf_k, the same for every image. Computed from the weights alone, without autograd and without the layers' own
    FFT code: the final linear layer's weight is the contraction ``A`` (K, C_L, H, W), and every convolution is
    pulled back through its adjoint. ``CircularConv2d`` cross-correlates circularly, out_o[i] = Σ_{d,m} w_od[m]
    x_d[i + m − p] with p = (k − 1)//2, so its adjoint maps g to g'_d[j] = Σ_{o,m} w_od[m] g_o[j − m + p]: with the
    un-normalised FFT, ĝ'_d(u) = Σ_o ŵ_od(u) e^{2πi p (u_y/H + u_x/W)} ĝ_o(u) (kernel zero-padded to H×W). The bias
    is the output at x = 0: constant images stay constant through each layer (each channel pair scaled by the sum of
    its kernel), so ``b`` follows from the kernel sums, the biases and the normalisation's mean.
    """
    if getattr(model, "activation", "relu") != "identity":
        raise ValueError("linear_predictor needs a linear ConvActually (activation='identity'); with ReLUs the model "
                         "has no single predictor")
    convs = [m for m in model.net if isinstance(m, CircularConv2d)]
    normalise, linear = model.net[0], model.net[-1]
    size = model.image_size
    mean = normalise.mean.double().flatten().cpu().numpy()
    std = normalise.std.double().flatten().cpu().numpy()
    classes = linear.out_features
    g = linear.weight.double().cpu().numpy().reshape(classes, -1, size, size)      # ∂f/∂(last activation)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    for conv in reversed(convs):
        weight = conv.weight.double().cpu().numpy()
        k = weight.shape[-1]
        padded = np.zeros((*weight.shape[:2], size, size))
        padded[..., :k, :k] = weight
        phase = np.exp(2j * math.pi * ((k - 1) // 2) * (fy + fx))
        g_hat = np.einsum("kouv,oduv->kduv", np.fft.fft2(g), np.fft.fft2(padded) * phase)
        g = np.real(np.fft.ifft2(g_hat))
    v = g / std[None, :, None, None]                                                # z = (x − mean)/std
    # constants: z = −mean/std at x = 0, then h_o = Σ_d (Σ_m w_od[m]) h_d + bias_o per layer
    h = -mean / std
    for conv in convs:
        sums = conv.weight.double().cpu().numpy().sum(axis=(2, 3))
        bias = conv.bias.double().cpu().numpy() if conv.bias is not None else 0.0
        h = sums @ h + bias
    a_sums = linear.weight.double().cpu().numpy().reshape(classes, -1, size * size).sum(-1)
    b = a_sums @ h + linear.bias.double().cpu().numpy()
    return v, b
