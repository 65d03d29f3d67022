"""Symmetric tapering windows and the classic measures of spectral leakage (spectral-leakage chapter).

Truncating a filter to ``k`` taps multiplies it by a rectangular window; in frequency that convolves the ideal response
with the window's transform, whose side lobes spill energy into bands the filter should reject (spectral leakage).
Tapered windows (Hamming, Hann, Blackman, Kaiser) trade a wider main lobe for much lower side lobes (Oppenheim &
Schafer, ch. 7; Prabhu 2013). Every window here is the *symmetric* one used for filter design: ``window("hamming", k)``
equals ``numpy.hamming(k)`` (``torch.hamming_window`` is the periodic variant unless ``periodic=False``).

Frequencies are in cycles per sample: 0 is DC, 0.5 is the Nyquist frequency.
"""

from __future__ import annotations

import numpy as np

WINDOWS = ("rect", "hamming", "hann", "blackman", "kaiser")
KAISER_BETA = 8.6  # Kaiser β giving side lobes close to Blackman's (Oppenheim & Schafer, Table 7.2)


def _check_size(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"window length must be a positive integer, got {k!r}; use e.g. k=3, 5, 7 or 9")
    return int(k)


def window(name: str, k: int, *, beta: float = KAISER_BETA) -> np.ndarray:
    """The symmetric ``k``-tap window ``name`` (one of :data:`WINDOWS`) as float64, peak 1 for odd ``k``.

    ``beta`` is only used by ``"kaiser"``. Hann and Blackman have zero end taps, so a 3-tap Hann or Blackman window
    keeps only the centre tap.
    """
    if name not in WINDOWS:
        raise ValueError(f"unknown window {name!r}; choose one of {', '.join(WINDOWS)}")
    k = _check_size(k)
    if name == "rect":
        return np.ones(k)
    if name == "hamming":
        return np.hamming(k)
    if name == "hann":
        return np.hanning(k)
    if name == "blackman":
        # numpy leaves -1e-17 rounding residue at the ends; a window is non-negative by definition
        return np.clip(np.blackman(k), 0.0, None)
    return np.kaiser(k, beta)


# controls that are not tapers (2-D only): ``"<window>_shuffled"`` puts the taps of the 2-D window in a fixed random
# order, so every tap is scaled by one of the window's own values (the same multiset, hence the same amount of
# shrinkage of the weights and of their learning rate) but the shape is gone: no smooth edge, no lower side lobes.
# What a tapered network gains over it is the taper's shape, not plain regularisation.
CONTROL_WINDOWS = ("hamming_shuffled",)
CONTROL_SEED = 0


def window2d(name: str, k: int, *, beta: float = KAISER_BETA) -> np.ndarray:
    """Separable ``k``×``k`` window: the outer product of the 1-D window with itself; for a name of
    :data:`CONTROL_WINDOWS` (``"hamming_shuffled"``) the taps of that outer product in a fixed random order
    (``numpy.random.default_rng(CONTROL_SEED)``), the centre tap excluded from staying in place when k > 1."""
    if name in CONTROL_WINDOWS:
        base = window2d(name.removesuffix("_shuffled"), k, beta=beta).ravel()
        order = np.random.default_rng(CONTROL_SEED).permutation(base.size)
        centre = base.size // 2
        if base.size > 1 and order[centre] == centre:  # the peak must move, or the control keeps the taper's centre
            order[[centre, (centre + 1) % base.size]] = order[[(centre + 1) % base.size, centre]]
        return base[order].reshape(k, k)
    w = window(name, k, beta=beta)
    return np.outer(w, w)


def ideal_lowpass(k: int, cutoff: float) -> np.ndarray:
    """The ideal low-pass impulse response ``2f_c·sinc(2f_c n)`` sampled at the ``k`` taps centred on zero.

    Keeping only these taps is exactly multiplying the infinite ideal response by a rectangular window.
    """
    k = _check_size(k)
    if not 0 < cutoff < 0.5:
        raise ValueError(f"cutoff must lie strictly between 0 and 0.5 cycles/sample, got {cutoff}")
    n = np.arange(k) - (k - 1) / 2
    return 2 * cutoff * np.sinc(2 * cutoff * n)


def windowed_lowpass(k: int, cutoff: float, name: str = "hamming", *, beta: float = KAISER_BETA) -> np.ndarray:
    """Window-method FIR low-pass: ideal response × window, scaled to unit gain at DC (as ``scipy.signal.firwin``)."""
    taps = ideal_lowpass(k, cutoff) * window(name, k, beta=beta)
    return taps / taps.sum()


# --- leakage measures ---------------------------------------------------------------------------------------------

def response_1d(taps, n_fft: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """``(frequencies, |H(f)|)`` on ``n_fft // 2 + 1`` points of [0, 0.5] for a 1-D filter (zero-padded DFT)."""
    taps = np.asarray(taps, dtype=np.float64)
    if taps.ndim != 1 or len(taps) > n_fft:
        raise ValueError(f"expected a 1-D filter shorter than n_fft={n_fft}, got shape {taps.shape}")
    return np.fft.rfftfreq(n_fft), np.abs(np.fft.rfft(taps, n_fft))


def to_db(magnitude, reference: float | None = None, floor_db: float = -150.0) -> np.ndarray:
    """20·log10(|H| / reference) (reference: the maximum), clipped below at ``floor_db``."""
    magnitude = np.abs(np.asarray(magnitude, dtype=np.float64))
    reference = magnitude.max() if reference is None else reference
    return np.maximum(20 * np.log10(np.maximum(magnitude, 1e-300) / reference), floor_db)


def _first_minimum(magnitude: np.ndarray) -> int | None:
    """Index of the first local minimum of a response that starts at its main-lobe peak (DC); None when monotone."""
    falling = np.diff(magnitude) < 0
    if falling.all() or np.ptp(magnitude) <= 1e-12 * magnitude.max():  # monotone, or flat (a single tap)
        return None
    return int(np.argmin(falling))  # first index where the response stops falling


def main_lobe_width(taps, n_fft: int = 4096) -> float:
    """Null-to-null width of the main lobe around DC (two-sided, cycles/sample).

    Rectangular: 2/k, Hamming and Hann: 4/k, Blackman: 6/k (for large k). When the response falls monotonically all the
    way to Nyquist (e.g. a 3-tap Hamming window) the main lobe fills the band and the width is 1.0.
    """
    freqs, magnitude = response_1d(taps, n_fft)
    first = _first_minimum(magnitude)
    return 1.0 if first is None else float(2 * freqs[first])


def peak_sidelobe_db(taps, n_fft: int = 4096) -> float:
    """Highest side lobe relative to the main-lobe peak, in dB (rect ≈ −13 dB, Hamming ≈ −43 dB for large k).

    ``-inf`` when there is no side lobe at all (the main lobe reaches Nyquist).
    """
    freqs, magnitude = response_1d(taps, n_fft)
    first = _first_minimum(magnitude)
    if first is None:
        return float("-inf")
    return float(20 * np.log10(magnitude[first:].max() / magnitude.max()))


def _spectra_2d(kernels, n_fft: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Power spectra |K(f)|² of a bank (n, k, k) on an n_fft×n_fft grid, with the frequency of every grid point."""
    bank = np.asarray(kernels.detach().cpu().numpy() if hasattr(kernels, "detach") else kernels, dtype=np.float64)
    if bank.ndim == 2:
        bank = bank[None]
    if bank.ndim != 3 or bank.shape[1] != bank.shape[2]:
        raise ValueError(f"expected square kernels shaped (n, k, k), got shape {bank.shape}")
    if bank.shape[1] > n_fft:
        raise ValueError(f"kernels of size {bank.shape[1]} do not fit an {n_fft}-point transform")
    power = np.abs(np.fft.fft2(bank, s=(n_fft, n_fft))) ** 2
    f = np.fft.fftfreq(n_fft)
    return power, f[:, None] + 0 * f[None, :], 0 * f[:, None] + f[None, :]


def out_of_band_energy(kernels, bandwidth: float = 0.125, n_fft: int = 64) -> np.ndarray:
    """Per kernel, the fraction of spectral energy farther than ``bandwidth`` (cycles/pixel) from its spectral peak.

    A learned kernel has no declared pass band, so its band is taken to be the neighbourhood of its strongest frequency
    ``f*`` (and of ``−f*``: real kernels have Hermitian spectra); the energy elsewhere is what a finite, untapered
    kernel spills into other bands. Distances wrap around the unit frequency torus. The same ``bandwidth`` is used for
    every kernel size, so a kernel too small to resolve a narrow band scores high, and a tapered kernel's wider main lobe
    counts as leakage: the measure depends on size and main-lobe width, not only on side lobes (use
    :func:`lib.spectra.side_lobes` for the leakage the paper means; this one is kept for comparison).
    """
    power, fy, fx = _spectra_2d(kernels, n_fft)
    flat = power.reshape(len(power), -1)
    peak = flat.argmax(axis=1)
    py, px = fy.reshape(-1)[peak], fx.reshape(-1)[peak]

    def wrapped(a):  # distance on the frequency circle [-0.5, 0.5)
        return np.abs((a + 0.5) % 1.0 - 0.5)

    # distances per axis first (n × n_fft each), combined by broadcasting: the grid is separable
    f = fy[:, 0]
    near = np.zeros_like(power, dtype=bool)
    for sign in (1.0, -1.0):
        dy = wrapped(f[None] - sign * py[:, None])
        dx = wrapped(f[None] - sign * px[:, None])
        near |= np.hypot(dy[:, :, None], dx[:, None, :]) <= bandwidth
    total = flat.sum(axis=1)
    inside = (power * near).reshape(len(power), -1).sum(axis=1)
    return np.where(total > 0, 1.0 - inside / np.maximum(total, 1e-300), 0.0)


def high_frequency_energy(kernels, cutoff: float = 0.25, n_fft: int = 64) -> np.ndarray:
    """Per kernel, the fraction of spectral energy at radial frequencies above ``cutoff`` (cycles/pixel)."""
    power, fy, fx = _spectra_2d(kernels, n_fft)
    high = np.hypot(fy, fx) > cutoff
    total = power.reshape(len(power), -1).sum(axis=1)
    return np.where(total > 0, (power * high).reshape(len(power), -1).sum(axis=1) / np.maximum(total, 1e-300), 0.0)
