"""Fourier views of filters: spectral envelopes (spatial mixing, Fig 1), magnitude responses, and side-lobe leakage
(main lobe vs side lobes of any 1-D or 2-D filter; spectral-leakage chapter)."""

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


# --- side-lobe leakage of arbitrary (learned) filters ---------------------------------------------------------------
#
# Leakage in the filter-design sense is what a finite filter lets through its *side lobes*, the hills of its response
# beyond the first nulls around the main lobe. A tapered window lowers the side lobes and pays with a wider main lobe,
# so a leakage measure must not count the main lobe, however wide it is (a fixed band around the peak does: see
# ``lib.filters.windows.out_of_band_energy``). Here the main lobe of any filter, 1-D or 2-D, peaked at DC or not, is
# the catchment basin of its spectral peak on the zero-padded |DFT|: the frequencies from which steepest ascent climbs
# to the peak. It is bounded by the valleys around the peak (in 1-D: the first minima on either side), and everything
# outside it belongs to the hills of other local maxima, the side lobes.

TIE_RTOL = 1e-9    # values this close (relative to the peak) are equal: the ±f* pair of a real filter, flat spectra
MIN_DIP_DB = 0.1   # a hill is a side lobe only if the pass between it and the main lobe dips at least this far


def _bank(filters) -> np.ndarray:
    """A bank shaped (n, k) (1-D filters) or (n, k, k) (2-D); a single 1-D filter (k,) becomes (1, k)."""
    bank = _as_numpy(filters)
    if bank.ndim == 1:
        bank = bank[None]
    if bank.ndim not in (2, 3):
        raise ValueError(f"expected a bank shaped (n, k) or (n, k, k), got shape {bank.shape}")
    return bank


def _wrap(array: np.ndarray) -> np.ndarray:
    """``array`` (n, *grid) padded by one point on every side of its periodic grid, for :func:`_neighbour`."""
    return np.pad(array, [(0, 0)] + [(1, 1)] * (array.ndim - 1), mode="wrap")


def _neighbour(wrapped: np.ndarray, offset: tuple) -> np.ndarray:
    """View of a :func:`_wrap`-ped array holding, at every grid point p, the value at the neighbour p + offset."""
    return wrapped[(slice(None),) + tuple(slice(1 + o, wrapped.shape[i + 1] - 1 + o) for i, o in enumerate(offset))]


def main_lobe(filters, size: int = 64, min_dip_db: float = MIN_DIP_DB) -> tuple[np.ndarray, np.ndarray]:
    """``(|K|, mask)`` of every filter on its ``size``-point (per axis) zero-padded DFT grid, zero frequency first (not
    centred); ``mask`` marks the main lobe.

    The grid is periodic (frequencies wrap around at ±0.5). Every grid point points to its highest neighbour (2 of them
    in 1-D, 8 in 2-D) when that neighbour is higher than itself, so following the pointers climbs to a local maximum.
    The main lobe is every point whose climb ends at the global maximum or at a point tied with it (within
    :data:`TIE_RTOL`), which for a real filter includes the mirror peak −f*. A hill whose pass to the main lobe dips
    less than ``min_dip_db`` below its own top is a ripple on the main lobe, not a lobe beyond a null, and joins it
    (repeatedly); ``min_dip_db=0`` keeps the bare watershed. A flat spectrum (one tap, a zero kernel) is all main lobe.

    * 1-D: the main lobe runs from the peak to the first local minimum on either side: the first-null rule of
      ``lib.filters.windows.peak_sidelobe_db``, for any peak frequency;
    * a separable kernel ``outer(u, v)``: the main lobe is the product of the 1-D main lobes of ``u`` and ``v`` (the
      highest of the 8 neighbours of ``U(f_y) V(f_x)`` is the best step of each factor), so its peak side-lobe level
      is the higher of the two 1-D levels;
    * unchanged by the filter's scale and sign and by a shift of its taps (a phase ramp).
    """
    bank = _bank(filters)
    axes = tuple(range(1, bank.ndim))
    if max(bank.shape[1:]) > size:
        raise ValueError(f"filters of size {bank.shape[1:]} do not fit a {size}-point transform")
    magnitude = np.abs(np.fft.fftn(bank, s=(size,) * len(axes), axes=axes))
    n, shape = len(bank), magnitude.shape
    peak = magnitude.reshape(n, -1).max(axis=1).reshape((n,) + (1,) * len(axes))
    tol = TIE_RTOL * peak
    offsets = [tuple(c - 1 for c in s) for s in np.ndindex(*(3,) * len(axes)) if any(c != 1 for c in s)]
    index = np.broadcast_to(np.arange(size ** len(axes), dtype=np.int32).reshape((1,) + (size,) * len(axes)), shape)
    # steepest ascent: each point's highest neighbour, if higher than the point itself
    wrapped_mag, wrapped_index = _wrap(magnitude), _wrap(index[:1])
    best_value, pointer = magnitude.copy(), index.copy()
    for offset in offsets:
        value = _neighbour(wrapped_mag, offset)
        higher = value > best_value + tol
        np.copyto(best_value, value, where=higher)
        np.copyto(pointer, np.broadcast_to(_neighbour(wrapped_index, offset), shape), where=higher)
    seeds = magnitude >= peak - tol
    np.copyto(pointer, index, where=seeds)  # the peaks end every climb that reaches them
    pointer, seeds = pointer.reshape(n, -1), seeds.reshape(n, -1)
    # pointer jumping: after j rounds every point points 2^j steps up its ascent path, ending at its hill's top
    while True:
        jumped = np.take_along_axis(pointer, pointer, axis=1)
        if np.array_equal(jumped, pointer):
            break
        pointer = jumped
    mask = np.take_along_axis(seeds, pointer, axis=1).reshape(shape)
    if min_dip_db > 0:
        _absorb_ripples(magnitude, pointer.reshape(shape), mask, offsets, 10 ** (min_dip_db / 20))
    return magnitude, mask


def _absorb_ripples(magnitude, top, mask, offsets, ratio):
    """Join into the main lobe (``mask``, updated in place) every hill whose pass to it, the highest
    ``min(|K(p)|, |K(q)|)`` over adjacent points p inside and q on the hill, is less than ``ratio`` below the hill's
    top (``top``: the grid index of every point's hill top); repeat while hills join (a joined hill brings its own
    neighbours)."""
    active = np.flatnonzero(~mask.reshape(len(mask), -1).all(axis=1))
    while len(active):
        mag, inside, tops = magnitude[active], mask[active], top[active]
        n = len(active)
        wrapped_mag, wrapped_inside, wrapped_top = _wrap(mag), _wrap(inside), _wrap(tops)
        passes = np.zeros((n, mag[0].size))  # per filter, at the top of every neighbouring hill: its pass
        for offset in offsets:
            boundary = inside & ~_neighbour(wrapped_inside, offset)
            if boundary.any():
                rows = np.nonzero(boundary)[0]
                height = np.minimum(mag[boundary], _neighbour(wrapped_mag, offset)[boundary])
                np.maximum.at(passes, (rows, _neighbour(wrapped_top, offset)[boundary]), height)
        flat = mag.reshape(n, -1)
        joins = (passes > 0) & (flat < passes * ratio)  # set only at hill tops, where ``flat`` is the hill's height
        grown = inside | np.take_along_axis(joins, tops.reshape(n, -1), axis=1).reshape(inside.shape)
        changed = (grown != inside).reshape(n, -1).any(axis=1)
        mask[active] = grown
        active = active[changed]


def side_lobes(filters, size: int = 64, min_dip_db: float = MIN_DIP_DB) -> dict[str, np.ndarray]:
    """Leakage of every filter of a bank through its side lobes (everything outside :func:`main_lobe`), per filter:

    * ``peak_sidelobe_db``: the highest magnitude outside the main lobe relative to the peak, in dB, i.e. the top of
      the highest side lobe (rectangular window ≈ −13 dB, Hamming ≈ −43 dB for long windows); ``-inf`` when there is
      no side lobe (the main lobe fills the band, e.g. a 3- or 5-tap Hamming window);
    * ``sidelobe_energy``: the fraction of the spectral energy Σ|K|² outside the main lobe (0 without side lobes);
    * ``main_lobe_area``: the fraction of the frequency band (1-D) or plane (2-D) the main lobe covers: the resolution a
      taper or a short kernel gives up, reported beside the leakage, not counted in it.

    No bandwidth is chosen in advance, so a wide main lobe (a short or a tapered kernel) is not leakage. ``size`` is the
    transform length per axis; 64 resolves the lobes of kernels up to about 15 taps (a 9-tap rectangle's side lobes
    are 7 grid points wide).
    """
    magnitude, mask = main_lobe(filters, size, min_dip_db)
    n = len(magnitude)
    flat, inside = magnitude.reshape(n, -1), mask.reshape(n, -1)
    top = flat.max(axis=1)
    outside = np.where(inside, 0.0, flat).max(axis=1)
    with np.errstate(divide="ignore"):
        psl = np.where(inside.all(axis=1), -np.inf, 20 * np.log10(outside / np.where(top > 0, top, 1.0)))
    power = flat ** 2
    total = power.sum(axis=1)
    energy = np.where(total > 0, np.where(inside, 0.0, power).sum(axis=1) / np.where(total > 0, total, 1.0), 0.0)
    return {"peak_sidelobe_db": psl, "sidelobe_energy": energy, "main_lobe_area": inside.mean(axis=1)}


def peak_sidelobe_level(filters, size: int = 64, min_dip_db: float = MIN_DIP_DB) -> np.ndarray:
    """Per filter, the peak side-lobe level in dB relative to the spectral peak (see :func:`side_lobes`)."""
    return side_lobes(filters, size, min_dip_db)["peak_sidelobe_db"]


def sidelobe_energy(filters, size: int = 64, min_dip_db: float = MIN_DIP_DB) -> np.ndarray:
    """Per filter, the fraction of spectral energy outside the main lobe (see :func:`side_lobes`)."""
    return side_lobes(filters, size, min_dip_db)["sidelobe_energy"]
