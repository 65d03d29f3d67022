"""DCT-II low-pass smoothing of small filters (spatial mixing, workshop version App. A.3).

Each k×k filter is projected on the orthonormal 2-D DCT-II basis, every coefficient outside the K×K lowest-order
block is zeroed, and the result is transformed back. Because the basis is orthonormal, ``keep=k`` returns the
filter unchanged and the smoothing is an orthogonal projection (applying it twice changes nothing). The paper's
"smoothing index" is the number of coefficients removed, ``k² − K²`` (8×8 → 7×7 removes 15, → 6×6 removes 28).
"""

from __future__ import annotations

import numpy as np
import scipy.fft


def _as_numpy(filters) -> tuple[np.ndarray, object]:
    if hasattr(filters, "detach"):  # a torch tensor: remember dtype and device to give the same kind back
        return filters.detach().cpu().double().numpy(), filters
    return np.asarray(filters, dtype=np.float64), None


def dct_lowpass(filters, keep: int):
    """Keep the ``keep``×``keep`` lowest DCT-II coefficients of every k×k filter in ``filters`` (shape (..., k, k)).

    Accepts NumPy arrays or torch tensors and returns the same kind (same dtype and device for tensors).
    ``keep = k`` is the identity; ``keep = 1`` leaves only the mean (a box filter).
    """
    bank, tensor = _as_numpy(filters)
    if bank.ndim < 2 or bank.shape[-1] != bank.shape[-2]:
        raise ValueError(f"dct_lowpass expects square filters shaped (..., k, k), got shape {tuple(bank.shape)}")
    k = bank.shape[-1]
    if not isinstance(keep, (int, np.integer)) or not 1 <= keep <= k:
        raise ValueError(f"keep must be an integer between 1 and the kernel size {k}, got {keep!r}")
    coefficients = scipy.fft.dctn(bank, type=2, norm="ortho", axes=(-2, -1))
    coefficients[..., keep:, :] = 0.0
    coefficients[..., :, keep:] = 0.0
    smoothed = scipy.fft.idctn(coefficients, type=2, norm="ortho", axes=(-2, -1))
    if tensor is not None:
        import torch
        return torch.as_tensor(smoothed, dtype=tensor.dtype, device=tensor.device)
    return smoothed


def smoothing_index(kernel_size: int, keep: int) -> int:
    """Number of DCT coefficients removed when keeping the ``keep``×``keep`` block of a k×k filter (the paper's index)."""
    if not 1 <= keep <= kernel_size:
        raise ValueError(f"keep must be between 1 and the kernel size {kernel_size}, got {keep}")
    return kernel_size ** 2 - keep ** 2
