"""Pixel un-shuffling (spatial mixing, later version §4.4): one fixed random permutation of pixel positions.

The same permutation σ of the H·W positions is applied to every image (all channels of a pixel move together); a
model learns to map σ(x) back to x. :class:`PixelPermutation` is a callable, so it serves directly as the
``input_transform`` of :func:`lib.training.fit` (the target stays the original image).
"""

from __future__ import annotations

import torch


class PixelPermutation:
    """A fixed permutation of the ``height``×``width`` pixel positions, drawn from ``seed``."""

    def __init__(self, height: int, width: int, seed: int = 0):
        if height < 1 or width < 1:
            raise ValueError(f"image size must be positive, got {height}×{width}")
        generator = torch.Generator().manual_seed(seed)
        self.height, self.width, self.seed = height, width, seed
        self.order = torch.randperm(height * width, generator=generator)  # output position i takes pixel order[i]
        self.inverse = torch.argsort(self.order)
        self._on_device: dict = {}  # (name, device) → copy there: as the training loop's input_transform it runs
        #                             every step, and a host-to-device copy per step is a blocking sync on CUDA

    def _index(self, name: str, device: torch.device) -> torch.Tensor:
        index = getattr(self, name)
        if device == index.device:
            return index
        key = (name, device)
        if key not in self._on_device:
            self._on_device[key] = index.to(device)
        return self._on_device[key]

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[-2:]) != (self.height, self.width):
            raise ValueError(f"expected images shaped N×C×{self.height}×{self.width}, got {tuple(x.shape)}")

    def shuffle(self, x: torch.Tensor) -> torch.Tensor:
        """σ(x): pixels of N×C×H×W images moved to their permuted positions."""
        self._check(x)
        flat = x.flatten(2)
        return flat[..., self._index("order", x.device)].view_as(x)

    def unshuffle(self, x: torch.Tensor) -> torch.Tensor:
        """σ⁻¹(x): the inverse permutation (``unshuffle(shuffle(x)) == x``)."""
        self._check(x)
        flat = x.flatten(2)
        return flat[..., self._index("inverse", x.device)].view_as(x)

    __call__ = shuffle
