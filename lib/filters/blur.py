"""Low-pass (anti-aliasing) filters of Zhang (2019), Table 1.

``blur_filter(family, taps)`` returns the normalised 1-D taps (they sum to 1); the 2-D kernel a ``BlurPool`` layer
applies is their outer product (``blur_kernel_2d``), so every kernel is separable. ``taps=1`` is the delta (no blur)
for every family, which turns ``MaxBlurPool`` back into the baseline max-pooling.

- ``rect``: box filter, ``[1, ..., 1]`` (Rect-2 followed by subsampling is average pooling).
- ``triangle``: two equal boxes convolved (odd taps only): Triangle-5 = Rect-3 * Rect-3 = [1, 2, 3, 2, 1].
- ``binomial``: ``[1, 1]`` convolved with itself ``taps - 1`` times (Burt & Adelson pyramids).
- ``window``: window-method FIR design, ``scipy.signal.firwin(taps, 0.5, window="boxcar")`` (cut-off at half Nyquist).
- ``least_squares``: ``scipy.signal.firls(taps, [0, 0.4, 0.6, 1], [1, 1, 0, 0])`` (odd taps only).

The last two reproduce the printed weights of Table 1 to two decimals (checked in the tests).
"""

from __future__ import annotations

from math import comb

import numpy as np

BLUR_FAMILIES = ("rect", "triangle", "binomial", "window", "least_squares")

FAMILY_NAMES = {"delta": "Delta", "rect": "Rectangle", "triangle": "Triangle", "binomial": "Binomial",
                "window": "Window", "least_squares": "Least Squares"}

# Table 1 of the paper, row by row: (family, taps) and the printed (unnormalised) weights.
TABLE1 = (
    ("rect", 1, (1,)),
    ("rect", 2, (1, 1)), ("rect", 3, (1, 1, 1)), ("rect", 4, (1, 1, 1, 1)), ("rect", 5, (1, 1, 1, 1, 1)),
    ("rect", 6, (1, 1, 1, 1, 1, 1)), ("rect", 7, (1, 1, 1, 1, 1, 1, 1)),
    ("triangle", 3, (1, 2, 1)), ("triangle", 5, (1, 2, 3, 2, 1)), ("triangle", 7, (1, 2, 3, 4, 3, 2, 1)),
    ("binomial", 4, (1, 3, 3, 1)), ("binomial", 5, (1, 4, 6, 4, 1)), ("binomial", 6, (1, 5, 10, 10, 5, 1)),
    ("binomial", 7, (1, 6, 15, 20, 15, 6, 1)),
    ("window", 3, (1, 1.57, 1)), ("window", 6, (-1, 1.67, 5, 5, 1.67, -1)), ("window", 7, (-1, 0, 3, 4.71, 3, 0, -1)),
    ("least_squares", 3, (1, 1.63, 1)), ("least_squares", 7, (-1, 0, 3.80, 6.13, 3.80, 0, -1)),
)
MAX_TAPS = 32


def _check(family: str, taps) -> int:
    if family not in BLUR_FAMILIES and family != "delta":
        raise ValueError(f"unknown blur filter family {family!r}; choose one of {', '.join(BLUR_FAMILIES)} "
                         f"(or 'delta')")
    if isinstance(taps, bool) or not isinstance(taps, (int, np.integer)):
        raise ValueError(f"taps must be a positive integer, got {taps!r}")
    taps = int(taps)
    if not 1 <= taps <= MAX_TAPS:
        raise ValueError(f"taps must be between 1 and {MAX_TAPS}, got {taps}")
    if family == "delta" and taps != 1:
        raise ValueError(f"the delta filter has exactly 1 tap, got {taps}; use taps=1")
    if family in ("triangle", "least_squares") and taps % 2 == 0:
        raise ValueError(f"a {family} filter needs an odd number of taps, got {taps}; use {taps - 1} or {taps + 1}")
    return taps


def blur_filter(family: str, taps: int) -> np.ndarray:
    """Normalised 1-D low-pass taps (float64, sum 1) of ``family`` with ``taps`` taps; ``taps=1`` is the delta."""
    taps = _check(family, taps)
    if taps == 1:
        return np.ones(1)
    if family == "rect":
        weights = np.ones(taps)
    elif family == "triangle":
        half = (taps + 1) // 2
        weights = np.convolve(np.ones(half), np.ones(half))
    elif family == "binomial":
        weights = np.array([comb(taps - 1, k) for k in range(taps)], dtype=np.float64)
    elif family == "window":
        from scipy.signal import firwin
        weights = firwin(taps, 0.5, window="boxcar")
    else:
        from scipy.signal import firls
        weights = firls(taps, [0, 0.4, 0.6, 1], [1, 1, 0, 0])
    weights = np.asarray(weights, dtype=np.float64)
    weights[np.abs(weights) < 1e-12] = 0.0  # exact zeros instead of 1e-16 round-off (Window-7, LS-7)
    return weights / weights.sum()


def blur_kernel_2d(family: str, taps: int) -> np.ndarray:
    """The separable 2-D kernel (outer product of the 1-D taps), summing to 1."""
    weights = blur_filter(family, taps)
    return np.outer(weights, weights)


def filter_label(family: str, taps: int) -> str:
    """Readable name as in Table 1, e.g. ``Triangle-5``; every 1-tap filter is the ``Delta`` baseline."""
    taps = _check(family, taps)
    return "Delta" if taps == 1 else f"{FAMILY_NAMES[family]}-{taps}"


def printed_weights(weights: np.ndarray) -> np.ndarray:
    """Weights scaled the way Table 1 prints them: the outermost tap becomes ±1."""
    weights = np.asarray(weights, dtype=np.float64)
    return weights / abs(weights[0])


def table1_filters() -> list[tuple[str, int]]:
    """The 19 ``(family, taps)`` rows of Table 1 in the paper's order (Delta first)."""
    return [(family, taps) for family, taps, _ in TABLE1]
