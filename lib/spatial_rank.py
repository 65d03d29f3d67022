"""How much of the space of k×k kernels a bank of frozen random depthwise filters spans (spatial-mixing chapter).

A separable convolution computes, for output channel o and input channel c, the effective kernel
K[o, c] = Σ_j P[o, c·d + j] · f[c, j]: a combination of the d frozen filters f[c, 0..d-1] of input channel c, with
learned pointwise weights P. When those d filters span the k²-dimensional space of k×k kernels (rank k², possible
only for d ≥ k²), every K[o, c] is reachable: with d = k² = 9 a "Chans" layer is an exact linear re-parametrisation
of a standard 3×3 convolution (same function class, same number of learned weights). Gradient descent on P is then
gradient descent on K preconditioned by FᵀF (F: the d×k² matrix of channel c's flattened filters), whose condition
number is cond(F)²; what the frozen filters change is the optimisation (this conditioning, the initial K, what weight
decay penalises), not what the network can express. With d < k² (the Chans d=3 ResNet; the ConvMixer, one filter per
channel) the effective kernels are confined to a d-dimensional subspace per input channel: those are the real tests
of "no learned spatial mixing".

:func:`frozen_banks` draws the banks exactly as the chapter's models do (the depthwise convolution of
:class:`lib.models.separable_resnet.SeparableConv2d`, PyTorch's default initialisation); :func:`bank_spectrum` gives
the rank, condition number and smallest singular value of one bank; :func:`rank_statistics` summarises many draws.
"""

from __future__ import annotations

import numpy as np
import torch

from .models.separable_resnet import SeparableConv2d


def frozen_banks(d: int, draws: int, k: int = 3, seed: int = 0) -> np.ndarray:
    """``draws`` independent banks of ``d`` k×k filters, shaped (draws, d, k, k), float64.

    Drawn by building one :class:`SeparableConv2d` with ``draws`` input channels and depth multiplier ``d``: its
    depthwise weight (draws·d, 1, k, k) holds, for every input channel, the d frozen filters a Chans model keeps
    (channel c owns rows c·d … c·d + d − 1; PyTorch's default init, i.i.d. uniform ±1/k). The global torch RNG is
    left untouched; the same ``seed`` gives the same banks."""
    if d < 1 or draws < 1 or k < 1:
        raise ValueError(f"d, draws and k must be positive, got d={d}, draws={draws}, k={k}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = SeparableConv2d(draws, 1, k, depth_multiplier=d)
    return layer.depthwise.weight.detach().to(torch.float64).view(draws, d, k, k).numpy()


def _tolerance(singular: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """numpy.linalg.matrix_rank's default threshold: σ_max · max(M, N) · eps."""
    return singular[..., :1] * max(shape) * np.finfo(np.float64).eps


def bank_spectrum(bank) -> dict:
    """Rank, condition number (σ_max / smallest *nonzero* σ) and smallest nonzero singular value of one bank.

    ``bank``: (d, k, k) filters or an already flattened (d, k²) matrix. "Nonzero" uses numpy's ``matrix_rank``
    threshold, so an exactly repeated filter lowers the rank instead of producing an infinite condition number."""
    matrix = np.asarray(bank, dtype=np.float64)
    matrix = matrix.reshape(matrix.shape[0], -1)
    singular = np.linalg.svd(matrix, compute_uv=False)
    nonzero = singular[singular > _tolerance(singular, matrix.shape)]
    if nonzero.size == 0:
        return {"rank": 0, "condition": float("nan"), "smallest": 0.0, "largest": 0.0}
    return {"rank": int(nonzero.size), "condition": float(nonzero[0] / nonzero[-1]), "smallest": float(nonzero[-1]),
            "largest": float(nonzero[0])}


def rank_statistics(ds=range(1, 10), draws: int = 2000, k: int = 3, seed: int = 0) -> list[dict]:
    """For every bank size d: rank, condition number and smallest singular value over ``draws`` random banks.

    Each row: ``d``, ``span`` (k², the dimension of the kernel space), ``rank_mean``, ``rank_min``, ``rank_max``,
    ``condition_mean``, ``condition_sd``, ``condition_median``, ``condition_p05``, ``condition_p95``,
    ``smallest_mean``, ``smallest_sd`` (singular values in the init's units: filters uniform ±1/k) and ``draws``.
    The condition number of a square random matrix (d = k²) is heavy-tailed: read the median and the 5-95 % range
    next to the mean. Deterministic: bank size d uses torch seed ``1000·seed + d``."""
    rows = []
    for d in ds:
        banks = frozen_banks(d, draws, k, seed=1000 * seed + d).reshape(draws, d, k * k)
        spectra = [bank_spectrum(bank) for bank in banks]
        rank = np.array([s["rank"] for s in spectra])
        condition = np.array([s["condition"] for s in spectra])
        smallest = np.array([s["smallest"] for s in spectra])
        rows.append({"d": int(d), "span": k * k, "draws": draws,
                     "rank_mean": float(rank.mean()), "rank_min": int(rank.min()), "rank_max": int(rank.max()),
                     "condition_mean": float(condition.mean()), "condition_sd": float(condition.std(ddof=1)),
                     "condition_median": float(np.median(condition)),
                     "condition_p05": float(np.percentile(condition, 5)),
                     "condition_p95": float(np.percentile(condition, 95)),
                     "smallest_mean": float(smallest.mean()), "smallest_sd": float(smallest.std(ddof=1))})
    return rows


def layer_condition(banks) -> float:
    """Condition number of a whole frozen depthwise layer seen as the block-diagonal map pointwise weights → effective
    kernels: max over channels of σ_max divided by min over channels of the smallest nonzero σ (``banks``:
    (channels, d, k, k))."""
    spectra = [bank_spectrum(bank) for bank in np.asarray(banks)]
    return float(max(s["largest"] for s in spectra) / min(s["smallest"] for s in spectra))


def layer_condition_comparison(channels: int = 16, layers: int = 300, d: int = 9, k: int = 3,
                               seed: int = 0) -> dict[str, dict]:
    """Condition number (:func:`layer_condition`) of ``layers`` random frozen depthwise layers of ``channels`` input
    channels, for the "Different" bank (every channel its own d random filters) and the "Same" bank (the first
    channel's d filters repeated, built by :func:`lib.models.separable_resnet.static_bank` from the same weights).
    Returns ``{"Different": {...}, "Same": {...}}`` with the median and the 5 % / 95 % percentiles."""
    from .models.separable_resnet import static_bank
    weights = frozen_banks(d, channels * layers, k, seed=seed).reshape(layers, channels * d, 1, k, k)
    out = {}
    for label, kind in (("Different", "random"), ("Same", "same")):
        values = []
        for weight in weights:
            bank = static_bank(kind, torch.from_numpy(weight), d) if kind != "random" else torch.from_numpy(weight)
            values.append(layer_condition(bank.numpy().reshape(channels, d, k, k)))
        values = np.asarray(values)
        out[label] = {"median": float(np.median(values)), "p05": float(np.percentile(values, 5)),
                      "p95": float(np.percentile(values, 95)), "layers": layers, "channels": channels}
    return out
