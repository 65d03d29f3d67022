"""Shift-invariance metrics of Zhang (2019) §4.2, filter smoothness, the 1-D toy example of Fig. 3, and claim verdicts.

Conventions: a shift ``(dh, dw)`` moves content down/right with wrap-around (Eq. 4, ``torch.roll``); ``probs`` are
softmax outputs; arrays indexed ``[image, shift]`` hold one value per image and shift of an evaluation grid.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# --- the toy example (Fig. 3) ---------------------------------------------------------------------------------------

TOY_SIGNAL = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0)


def _as_row_image(signal) -> torch.Tensor:
    """A 1-D signal as a 1×1×1×N image, so the 2-D layers of ``lib.layers`` act on it as a 1-D operator."""
    return torch.as_tensor(np.asarray(signal, dtype=np.float32)).reshape(1, 1, 1, -1)


def toy_max_pool(signal, shift: int = 0, stride: int = 2) -> np.ndarray:
    """Strided max-pooling (k=2, circular) of ``signal`` rolled by ``shift`` samples."""
    from .layers.blurpool import MaxBlurPool
    x = torch.roll(_as_row_image(signal), shift, dims=-1)
    return MaxBlurPool(None, 2, stride, "circular")(x).flatten().numpy().astype(np.float64)


def toy_dense_max_pool(signal, shift: int = 0) -> np.ndarray:
    """Max-pooling evaluated densely (k=2, stride 1, circular): the signal every strided max-pool samples from."""
    from .layers.blurpool import MaxBlurPool
    x = torch.roll(_as_row_image(signal), shift, dims=-1)
    return MaxBlurPool(None, 2, 2, "circular").dense_pool(x).flatten().numpy().astype(np.float64)


def toy_max_blur_pool(signal, filter=("triangle", 3), shift: int = 0, stride: int = 2, dense: bool = False):
    """MaxPool(k=2, stride 1) → blur → subsample (Eq. 3) of the rolled signal; ``dense=True`` skips the subsampling."""
    from .layers.blurpool import MaxBlurPool
    x = torch.roll(_as_row_image(signal), shift, dims=-1)
    layer = MaxBlurPool(filter, 2, stride, "circular")
    out = layer.dense(x) if dense else layer(x)
    return out.flatten().numpy().astype(np.float64)


# --- classification metrics (§4.2) ----------------------------------------------------------------------------------

def agreement(labels_a, labels_b) -> float:
    """Classification consistency from two predictions of the same images under two shifts: P(argmax equal)."""
    a, b = np.asarray(labels_a), np.asarray(labels_b)
    if a.shape != b.shape:
        raise ValueError(f"predictions must have the same shape, got {a.shape} and {b.shape}")
    return float(np.mean(a == b))


def consistency_over_grid(predicted: np.ndarray, num_classes: int) -> float:
    """Exact expected agreement of two independent uniform shifts drawn from a grid.

    ``predicted[i, s]`` is the class predicted for image i under shift s. For each image the probability that two
    shifts agree is ``sum_c q_c²`` with ``q_c`` the fraction of shifts predicting c; the mean over images is the
    consistency of §4.2 without sampling noise (pairs may coincide, as with random sampling).
    """
    predicted = np.asarray(predicted)
    counts = np.stack([(predicted == c).mean(axis=1) for c in range(num_classes)], axis=1)
    return float(np.mean((counts ** 2).sum(axis=1)))


def classification_variation(correct_class_probs: np.ndarray) -> np.ndarray:
    """Per-image standard deviation of the correct-class probability over shifts (§4.2; lower is more invariant)."""
    return np.asarray(correct_class_probs, dtype=np.float64).std(axis=1)


def adversary_accuracy(correct: np.ndarray, shifts: np.ndarray, max_shifts) -> np.ndarray:
    """App. B: fraction of images classified correctly at *every* shift with ``max(|dh|, |dw|) <= m``, per m.

    ``correct[i, s]`` says whether image i is right under ``shifts[s] = (dh, dw)``; m = 0 is the unshifted accuracy.
    Shifts are taken modulo the grid (a shift of -16 and +16 are the same circular shift of a 32-pixel image).
    """
    correct = np.asarray(correct, dtype=bool)
    reach = np.abs(np.asarray(shifts)).max(axis=1)
    out = []
    for m in max_shifts:
        window = reach <= m
        if not window.any():
            raise ValueError(f"no evaluated shift lies within max shift {m}")
        out.append(float(correct[:, window].all(axis=1).mean()))
    return np.array(out)


# --- feature equivariance (Fig. 4) ----------------------------------------------------------------------------------

def upsample_circular(features: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear upsampling of N×C×h×w maps to ``size``×``size`` treating them as periodic (§3.1's F̃).

    Periodic padding keeps the exact modulo-N equivariance of circular networks: a shift of the input by the layer's
    total stride N moves the upsampled map by exactly N pixels.
    """
    h, w = features.shape[-2:]
    if h == size and w == size:
        return features
    if size % h or size % w:
        raise ValueError(f"cannot upsample {h}×{w} maps to {size}×{size} by an integer factor")
    if h == 1 and w == 1:
        return features.expand(*features.shape[:-2], size, size)
    factor = size // h
    padded = torch.cat([features[..., -1:, :], features, features[..., :1, :]], dim=-2)
    padded = torch.cat([padded[..., -1:], padded, padded[..., :1]], dim=-1)
    up = F.interpolate(padded, scale_factor=factor, mode="bilinear", align_corners=False)
    return up[..., factor:factor + size, factor:factor + size]


def cosine_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-image cosine distance ``1 - cos`` between N×C×H×W maps, taken across channels at every position and
    averaged over positions. Where both maps are zero (post-ReLU) the distance is 0; where only one is, it is 1 —
    a feature that appears or vanishes under a shift is exactly what aliasing produces."""
    # reduce over the last axis of an N×H×W×C view: fast when the maps are channels_last in memory
    a, b = a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1)
    dot = (a * b).sum(-1)
    a_norm, b_norm = a.norm(dim=-1), b.norm(dim=-1)
    both_zero = (a_norm <= eps) & (b_norm <= eps)
    distance = 1 - dot / (a_norm.clamp_min(eps) * b_norm.clamp_min(eps))
    return torch.where(both_zero, torch.zeros_like(distance), distance).flatten(1).mean(1)


# --- smoothness of learned filters (Fig. 7) -------------------------------------------------------------------------

def total_variation(weight) -> float:
    """Normalised total variation of conv filters (Ruderman et al. 2018), averaged over every k×k kernel slice.

    For one kernel ``w``: ``TV = (sum |w[i+1,j]-w[i,j]| + sum |w[i,j+1]-w[i,j]|) / sum |w|``. Scale-free, 0 for a
    constant kernel; lower is smoother. ``weight`` is out×in×k×k (a torch or NumPy array).
    """
    w = torch.as_tensor(np.asarray(weight.detach().cpu() if torch.is_tensor(weight) else weight), dtype=torch.float64)
    if w.dim() != 4:
        raise ValueError(f"expected conv weights shaped out×in×k×k, got {tuple(w.shape)}")
    w = w.flatten(0, 1)
    variation = (w[:, 1:, :] - w[:, :-1, :]).abs().sum((1, 2)) + (w[:, :, 1:] - w[:, :, :-1]).abs().sum((1, 2))
    return float((variation / w.abs().sum((1, 2)).clamp_min(1e-12)).mean())
