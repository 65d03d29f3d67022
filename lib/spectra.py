"""Fourier views of filters: spectral envelopes (spatial mixing, Fig 1) and magnitude responses."""

from __future__ import annotations

import numpy as np


def _as_numpy(filters) -> np.ndarray:
    if hasattr(filters, "detach"):
        filters = filters.detach().cpu().numpy()
    return np.asarray(filters, dtype=np.float64)


def magnitude_response(filters, size: int = 512) -> np.ndarray:
    """|DFT| of each filter zero-padded to ``size`` (per axis), zero frequency centred.

    A bank shaped (n, k) gives (n, size); (n, k, k) gives (n, size, size).
    """
    bank = _as_numpy(filters)
    if bank.ndim not in (2, 3):
        raise ValueError(f"expected a bank shaped (n, k) or (n, k, k), got shape {bank.shape}")
    if max(bank.shape[1:]) > size:
        raise ValueError(f"filters of size {bank.shape[1:]} do not fit a {size}-point transform")
    axes = tuple(range(1, bank.ndim))
    spectrum = np.abs(np.fft.fftn(bank, s=(size,) * len(axes), axes=axes))
    return np.fft.fftshift(spectrum, axes=axes)


def spectral_envelope(filters, size: int = 512) -> np.ndarray:
    """Pointwise maximum of the magnitude responses of a bank: shape (size,) or (size, size), zero frequency centred."""
    return magnitude_response(filters, size).max(axis=0)


def coverage(envelope: np.ndarray) -> float:
    """Area under the envelope, as its mean over the frequency grid (comparable across grid sizes)."""
    return float(np.mean(envelope))


def frequencies(size: int) -> np.ndarray:
    """Normalised frequencies (cycles per sample, in [-0.5, 0.5)) matching the centred axes above."""
    return np.fft.fftshift(np.fft.fftfreq(size))
