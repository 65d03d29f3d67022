"""Frequency sensitivity of any image classifier (Godfrey et al. 2022, §5 and App. C.2), radial profiles and moments.

The sensitivity of ``f`` to Fourier component ``(c, i, j)`` at an image ``x`` is the size of the directional
derivative of ``f`` along the orthonormal Fourier basis vector ``ê_cij``. With the orthonormal DFT ``x̂ = F x`` and
``g_k = ∇_x f_k(x)`` (real), the derivative of ``f_k`` with respect to ``x̂_cij`` is ``conj(ĝ_k,cij)``, so

    S_cij = E_x [ ( Σ_k |ĝ_k,cij|² )^½ ]          (L2 norm over the K outputs, mean over images)

where ``ĝ_k = fft2(g_k, norm="ortho")``. Works on any model whose input is an image batch in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch

from .data import to_unit

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 names it trapz


def frequency_sensitivity(model: torch.nn.Module, images: torch.Tensor, *, batch_size: int = 250,
                          device: torch.device | str | None = None, outputs: int | None = None) -> np.ndarray:
    """E[|∇ₓf(x)ᵀê_cij|] per channel and frequency: array (C, H, W), zero frequency at [.., 0, 0] (un-shifted).

    ``images``: uint8 or [0, 1] floats shaped (N, C, H, W). ``outputs``: how many logits to use (default: all).
    The model is evaluated in eval mode (BatchNorm uses its running statistics, so images do not interact).
    """
    if images.dim() != 4:
        raise ValueError(f"images must be shaped (N, C, H, W), got {tuple(images.shape)}")
    if len(images) == 0:
        raise ValueError("no images given: pass at least one image")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = None
    for start in range(0, len(images), batch_size):
        x = to_unit(images[start:start + batch_size]).to(device).requires_grad_(True)
        logits = model(x).float()
        if logits.dim() != 2:
            raise ValueError(f"the model must return (N, K) outputs, got {tuple(logits.shape)}")
        k = logits.shape[1] if outputs is None else min(outputs, logits.shape[1])
        squared = torch.zeros(x.shape, device=device)
        for cls in range(k):
            # images are independent in eval mode, so one backward of the batch sum gives every per-image gradient
            (grad,) = torch.autograd.grad(logits[:, cls].sum(), x, retain_graph=cls < k - 1)
            squared += torch.fft.fft2(grad.float(), norm="ortho").abs() ** 2
        batch_sum = squared.sqrt().sum(0).double().cpu()
        total = batch_sum if total is None else total + batch_sum
    model.train(was_training)
    return (total / len(images)).numpy()


def predictor_sensitivity(v: np.ndarray) -> np.ndarray:
    """The frequency sensitivity of a linear model ``f_k(x) = Σ v[k]·x + b_k`` exactly: (C, H, W), un-shifted.

    ``v`` (K, C, H, W) in the input's units (images in [0, 1]); the gradient is ``v`` at every image, so
    ``S_cij = (Σ_k |v̂_k,cij|²)^½`` with ``v̂ = fft2(v, norm="ortho")`` — what :func:`frequency_sensitivity` returns
    for such a model (the same normalisation, the L2 norm over the K outputs). Use it as an autograd-free check.
    """
    v = np.asarray(v)
    if v.ndim != 4:
        raise ValueError(f"v must be shaped (K, C, H, W), got {v.shape}")
    return np.sqrt((np.abs(np.fft.fft2(v, norm="ortho")) ** 2).sum(0))


def centred(image: np.ndarray) -> np.ndarray:
    """Move the zero frequency of a (…, H, W) spectrum to the centre (for display)."""
    return np.fft.fftshift(image, axes=(-2, -1))


def _signed_indices(size: int) -> np.ndarray:
    """The signed frequency of every DFT index (0, 1, …, −1) as exact integers."""
    return np.rint(np.fft.fftfreq(size) * size).astype(np.int64)


def radius_grid(height: int, width: int) -> np.ndarray:
    """|(i, j)| for every DFT index, with i, j the signed frequencies (−H/2 … H/2), un-shifted layout."""
    fi, fj = _signed_indices(height), _signed_indices(width)
    return np.sqrt(fi[:, None] ** 2 + fj[None, :] ** 2).astype(np.float64)


def radial_profile(image: np.ndarray, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Average of a (C, H, W) or (H, W) un-shifted spectrum over channels and rings of equal radius.

    ``exact=False`` (for plots): rings ``round(|(i, j)|) = r``, every integer radius from 0 to the largest occupied
    one, so that every ring holds several frequencies. ``exact=True`` (App. C.2, and what ``map_moments`` uses): one
    ring per distinct exact radius √(i² + j²), grouped on the integer i² + j² (no floating-point ties).
    Returns ``(radii, profile)``, radii increasing.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ValueError(f"expected a (C, H, W) or (H, W) array, got shape {image.shape}")
    height, width = image.shape[-2:]
    if exact:
        fi, fj = _signed_indices(height), _signed_indices(width)
        squared = (fi[:, None] ** 2 + fj[None, :] ** 2).ravel()
        distinct, rings = np.unique(squared, return_inverse=True)
        sums = np.bincount(rings, weights=image.mean(0).ravel())
        return np.sqrt(distinct.astype(np.float64)), sums / np.bincount(rings)
    rings = np.rint(radius_grid(height, width)).astype(int).ravel()
    sums = np.bincount(rings, weights=image.mean(0).ravel())
    counts = np.bincount(rings)
    radii = np.arange(len(sums))
    keep = counts > 0
    return radii[keep].astype(float), sums[keep] / counts[keep]


def moments(radii: np.ndarray, profile: np.ndarray, orders=(1, 2)) -> dict[int, float]:
    """k-th moments ∫ rᵏ g(r) dr / ∫ g(r) dr of a non-negative radial profile (eq. 5.1; trapezoid rule).

    For the moments of a sensitivity map use ``map_moments``, which builds the profile at exact radii: the rounded
    rings of ``radial_profile(image)`` shift the moments by up to about 6 % (measured on smooth low-pass maps).
    """
    radii, profile = np.asarray(radii, float), np.asarray(profile, float)
    if np.any(profile < 0):
        raise ValueError("moments need a non-negative profile")
    mass = _trapezoid(profile, radii)
    if mass <= 0:
        raise ValueError("the profile has zero mass; moments are undefined")
    return {k: float(_trapezoid(radii ** k * profile, radii) / mass) for k in orders}


def map_moments(image: np.ndarray, orders=(1, 2)) -> dict[int, float]:
    """Eq. 5.1 moments of a (C, H, W) or (H, W) un-shifted map's radial average at exact radii √(i² + j²).

    The profile averages every (c, i, j) with √(i² + j²) = r (App. C.2); the integrals run over those radii by the
    trapezoid rule. A map that is non-zero at one radius r₀ only has moments exactly r₀ᵏ.
    """
    return moments(*radial_profile(image, exact=True), orders=orders)


def log_normalised(radii: np.ndarray, profile: np.ndarray, smooth: int = 3) -> np.ndarray:
    """Fig 3a post-processing: divide by the integral, take the log, average with ``smooth`` neighbours either side."""
    profile = np.asarray(profile, float)
    logged = np.log(profile / _trapezoid(profile, radii))
    if smooth <= 0:
        return logged
    out = np.empty_like(logged)
    for i in range(len(logged)):  # edge windows are truncated rather than padded
        out[i] = logged[max(0, i - smooth): i + smooth + 1].mean()
    return out
