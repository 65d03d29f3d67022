"""The linear theory of Godfrey et al. (2022), as code that can be checked numerically.

* Lemma 3.11 / 4.3: a linear CNN with full H×W circular convolutions and a final contraction equals, after the DFT, a
  network of per-frequency C_l × C_{l−1} matrix products; its collapsed predictor v̂ (eq. 4.4) gives the same outputs.
* Lemma B.13 / Theorem 4.9: the SVD factorisation (eq. B.17) of a matrix B into L factors has the penalty
  (1/L)·Σ|A_l|₂² = |B|_{2/L}^{2/L} (Schatten quasi-norm); other factorisations cost at least as much (proven for
  L = 2 and for 1×1 matrices; conjecture 4.13 otherwise). In this module's DFT convention (below) the least
  weight-decay cost λ Σ_l |w^l|₂² of a linear CNN with collapsed predictor v̂ is
  λ·L·(HW)^{−(L−1)/L}·Σ_ij |v̂_ij|_{2/L}^{2/L} (``weight_decay_penalty``), not the λ·L·Σ_ij |v̂_ij|_{2/L}^{2/L} of
  eq. 4.10: the effective λ is λ·(HW)^{−(L−1)/L} (``effective_lambda``).
* §4.1 / App. A: ridge regression and LASSO solved on DFT'd images, against the diagonal-covariance predictions
  τ/(λ+τ) (eq. 4.18) and |v̂_LS| − λ/τ (eq. A.7); ``depth_prediction`` is the same diagonal prediction for any number
  of layers L (Theorem 4.9's penalty, one frequency at a time).
* Fig 1 / App. C.1: image statistics in frequency space (standard deviation per frequency, covariance vs distance,
  the power law τ ≈ γ/(|i|^α + |j|^β)).

Conventions. ``dft`` is the orthonormal 2-D DFT of eq. 3.5 (``norm="ortho"``) over the last two axes. With it the
convolution theorem reads ``DFT(w * x) = ŵ · x̂`` with ``ŵ = fft2(w)`` *un-normalised* (= √(HW) × the orthonormal
DFT of w): the paper's eq. 3.7 absorbs that factor into its notation. Parseval (eq. 3.8) for real tensors reads
``Σ w x = Σ conj(ŵ) x̂``; ``conj(ŵ_ij) = ŵ_{−i,−j}`` is the index reversal that the paper's transpose ``−ᵀ`` denotes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import least_squares

# --- Lemma 3.11 and Lemma 4.3 ---------------------------------------------------------------------------------------


def dft(x: np.ndarray) -> np.ndarray:
    """Orthonormal 2-D DFT over the last two axes (eq. 3.5)."""
    return np.fft.fft2(x, norm="ortho")


def circular_convolution(weight: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(w * x)_cij = Σ_{m+m'=i, n+n'=j} Σ_d w_cmnd x_dm'n' (eq. 3.2), indices mod H and W, computed in pixel space.

    ``weight`` (C_out, C_in, H, W), ``x`` (N, C_in, H, W). Uses ``F.conv2d`` on a circularly padded input with the
    flipped kernel: an independent route from the FFT one it is compared with.
    """
    weight, x = np.asarray(weight, np.float64), np.asarray(x, np.float64)
    if weight.ndim != 4 or x.ndim != 4 or weight.shape[1] != x.shape[1] or weight.shape[2:] != x.shape[2:]:
        raise ValueError(f"weight must be (C_out, C_in, H, W) matching x (N, C_in, H, W); got {weight.shape} and "
                         f"{x.shape}")
    h, w = x.shape[-2:]
    xt = torch.from_numpy(x)
    # pad H−1 (W−1) pixels before: padded[t] = x[(t − (H−1)) mod H]; correlating with the flipped kernel sums w[m] x[i−m]
    padded = F.pad(xt, (w - 1, 0, h - 1, 0), mode="circular")
    flipped = torch.from_numpy(weight).flip(-2, -1)
    return F.conv2d(padded, flipped).numpy()


def linear_cnn(weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """The linear CNN of eq. 3.1: convolutions ``weights[:-1]`` then the contraction with ``weights[-1]`` (K, C, H, W).

    Returns (N, K).
    """
    h = np.asarray(x, np.float64)
    for weight in weights[:-1]:
        h = circular_convolution(weight, h)
    return np.einsum("kcij,ncij->nk", weights[-1], h)


def frequency_weights(weights: list[np.ndarray]) -> list[np.ndarray]:
    """ŵ for every layer: un-normalised FFT for convolutions (eq. 3.7), conj of the orthonormal DFT for the contraction."""
    return [np.fft.fft2(w) for w in weights[:-1]] + [np.conj(dft(weights[-1]))]


def frequency_cnn(weights_hat: list[np.ndarray], x_hat: np.ndarray) -> np.ndarray:
    """eq. 3.12: per-frequency channel-matrix products ŵ^l_ij · x̂_ij, then the contraction Σ_{d,i,j} ŵ^L x̂."""
    h = x_hat
    for w_hat in weights_hat[:-1]:
        h = np.einsum("odij,ndij->noij", w_hat, h)
    return np.einsum("kdij,ndij->nk", weights_hat[-1], h)


def collapsed_predictor(weights_hat: list[np.ndarray]) -> np.ndarray:
    """v̂ (K, C, H, W) with v̂_ij = ŵ^L_ij ŵ^{L−1}_ij ⋯ ŵ^1_ij at every frequency (eq. 4.4)."""
    v_hat = weights_hat[-1]
    for w_hat in reversed(weights_hat[:-1]):
        v_hat = np.einsum("kdij,dcij->kcij", v_hat, w_hat)
    return v_hat


def collapsed_output(v_hat: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
    """f(x) = v̂ᵀ x̂ = Σ_{c,i,j} v̂_kcij x̂_cij (N, K)."""
    return np.einsum("kcij,ncij->nk", v_hat, x_hat)


def random_linear_cnn(channels: list[int], classes: int, size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """Random weights for a linear CNN with input/hidden channels ``channels`` = [C, C_1, …, C_{L−1}] and K outputs."""
    rng = np.random.default_rng(seed)
    h, w = size
    weights = [rng.standard_normal((c_out, c_in, h, w)) / np.sqrt(c_in * h * w)
               for c_in, c_out in zip(channels[:-1], channels[1:])]
    return weights + [rng.standard_normal((classes, channels[-1], h, w)) / np.sqrt(channels[-1] * h * w)]


def lemma_check(channels: list[int], classes: int, size: tuple[int, int], n_images: int = 8, seed: int = 0) -> dict:
    """Largest relative differences between the spatial CNN, its frequency form (3.12) and the collapsed v̂ (4.4)."""
    weights = random_linear_cnn(channels, classes, size, seed)
    x = np.random.default_rng(seed + 1).standard_normal((n_images, channels[0], *size))
    spatial = linear_cnn(weights, x)
    w_hat = frequency_weights(weights)
    x_hat = dft(x)
    frequency = frequency_cnn(w_hat, x_hat)
    collapsed = collapsed_output(collapsed_predictor(w_hat), x_hat)
    scale = np.abs(spatial).max()
    return {"layers": len(weights), "channels": list(channels), "classes": classes, "size": list(size),
            "frequency_vs_spatial": float(np.abs(frequency - spatial).max() / scale),
            "collapsed_vs_spatial": float(np.abs(collapsed - spatial).max() / scale),
            "imaginary_part": float(np.abs(frequency.imag).max() / scale)}


# --- Lemma B.13 / Theorem 4.9 ---------------------------------------------------------------------------------------


def schatten_power(matrix: np.ndarray, p: float) -> float:
    """|B|_p^p = Σ σ_i^p (Definition 4.6); a quasi-norm for p < 1."""
    return float(np.sum(np.linalg.svd(matrix, compute_uv=False) ** p))


def svd_factorisation(matrix: np.ndarray, layers: int) -> list[np.ndarray]:
    """[A_1, …, A_L] with A_L ⋯ A_1 = B built from the SVD as in eq. B.17: A_1 = S^{1/L}V*, middles S^{1/L}, A_L = US^{1/L}."""
    if layers < 1:
        raise ValueError(f"layers must be at least 1, got {layers}")
    u, s, vh = np.linalg.svd(matrix, full_matrices=False)
    root = np.diag(s ** (1.0 / layers)).astype(matrix.dtype)
    if layers == 1:
        return [matrix.copy()]
    return [root @ vh] + [root.copy() for _ in range(layers - 2)] + [u @ root]


def product(factors: list[np.ndarray]) -> np.ndarray:
    """A_L ⋯ A_1 for factors listed [A_1, …, A_L]."""
    out = factors[0]
    for a in factors[1:]:
        out = a @ out
    return out


def factor_penalty(factors: list[np.ndarray]) -> float:
    """(1/L) Σ_l |A_l|₂² (Frobenius), the weight-decay cost of a factorisation (right side of eq. B.14)."""
    return float(sum(np.sum(np.abs(a) ** 2) for a in factors) / len(factors))


def random_complex(rng: np.random.Generator, shape) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)


def random_factorisation(matrix: np.ndarray, layers: int, inner: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random exact factorisation: random A_1 … A_{L−1} (inner width ≥ columns of B), A_L = B P⁺ with P = A_{L−1}⋯A_1.

    B P⁺ is the least-norm last factor for that P, so this is the cheapest completion of random first factors.
    """
    m, n = matrix.shape
    if layers < 2:
        raise ValueError("a factorisation needs at least 2 layers")
    if inner < n:
        raise ValueError(f"inner width {inner} must be at least the number of columns {n} so that P has full rank")
    firsts = [random_complex(rng, (inner, n))] + [random_complex(rng, (inner, inner)) for _ in range(layers - 2)]
    p = product(firsts)
    return firsts + [matrix @ np.linalg.pinv(p)]


def optimised_factorisation(matrix: np.ndarray, layers: int, inner: int, seed: int = 0, steps: int = 400,
                            lr: float = 0.03) -> tuple[float, float]:
    """Minimise the factor penalty over exact factorisations from a random start (Adam on A_1…A_{L−1}, A_L = B P⁺).

    Returns (final penalty, residual |A_L⋯A_1 − B| / |B|). Used to probe conjecture 4.13 where no proof exists.
    """
    rng = np.random.default_rng(seed)
    start = random_factorisation(matrix, layers, inner, rng)[:-1]
    params = [torch.tensor(a, dtype=torch.complex128, requires_grad=True) for a in start]
    target = torch.tensor(matrix, dtype=torch.complex128)
    optimiser = torch.optim.Adam(params, lr=lr)

    def completed():
        p = params[0]
        for a in params[1:]:
            p = a @ p
        return params + [target @ torch.linalg.pinv(p)]

    for _ in range(steps):
        optimiser.zero_grad()
        loss = sum((a.abs() ** 2).sum() for a in completed()) / layers
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        factors = [a.numpy() for a in completed()]
    residual = np.linalg.norm(product(factors) - matrix) / np.linalg.norm(matrix)
    return factor_penalty(factors), float(residual)


def effective_lambda(lam: float, layers: int, size: tuple[int, int]) -> float:
    """λ·(HW)^{−(L−1)/L}: the coefficient that multiplies L·Σ_ij |v̂_ij|_{2/L}^{2/L} in eq. 4.10 in our convention.

    ``lam`` is the λ of eq. 4.1 (cost λ Σ_l |w^l|₂²); SGD's ``weight_decay=wd`` adds wd·w to the gradient, i.e. it
    minimises (wd/2)|w|₂², so λ = wd/2. ``layers`` is L, the number of weight layers (L − 1 convolutions and the final
    contraction). E.g. on 32×32 images λ/32 for L = 2 and λ/474 for L = 9.
    """
    if layers < 1:
        raise ValueError(f"layers must be at least 1, got {layers}")
    height, width = size
    return float(lam * (height * width) ** (-(layers - 1) / layers))


def weight_decay_penalty(v_hat: np.ndarray, layers: int, lam: float = 1.0) -> float:
    """The least weight-decay cost λ Σ_l |w^l|₂² of a linear CNN (eq. 3.1) with collapsed predictor ``v_hat`` (eq. 4.4).

    ``v_hat`` (K, C, H, W) as ``collapsed_predictor(frequency_weights(weights))`` returns it; ``layers`` = L, the
    number of weight layers (L − 1 full H×W circular convolutions, then the contraction). Returns

        λ · L · (HW)^{−(L−1)/L} · Σ_ij |v̂_ij|_{2/L}^{2/L}     (Theorem 4.9 in our convention)

    Why the factor: the convolutions' ŵ^l = fft2(w^l) are un-normalised, so |w^l|₂² = Σ_ij |ŵ^l_ij|₂² / (HW) for
    l < L, while the contraction's ŵ^L (orthonormal DFT) has |w^L|₂² = Σ_ij |ŵ^L_ij|₂². The factors b_l = ŵ^l/√(HW)
    (l < L), b_L = ŵ^L multiply to (HW)^{−(L−1)/2} v̂_ij and cost Σ_l |b_l|₂², whose minimum is L·|·|_{2/L}^{2/L} of
    that product by Lemma B.13 (eq. B.9). The minimum is attained (SVD split per frequency, conjugate-symmetric, so
    the kernels are real); that nothing cheaper exists is proven for C = K = C_l = 1 and for L = 2, and rests on
    conjecture 4.13 otherwise.
    """
    v_hat = np.asarray(v_hat)
    if v_hat.ndim != 4:
        raise ValueError(f"v_hat must be shaped (K, C, H, W), got {v_hat.shape}")
    k, c, h, w = v_hat.shape
    per_frequency = v_hat.transpose(2, 3, 0, 1).reshape(h * w, k, c)   # one K × C matrix per frequency
    singular = np.linalg.svd(per_frequency, compute_uv=False)
    return float(layers * effective_lambda(lam, layers, (h, w)) * np.sum(singular ** (2.0 / layers)))


# --- image statistics in frequency space (Fig 1, App. C.1) ----------------------------------------------------------


def normalised_images(images, mean=None, std=None) -> np.ndarray:
    """uint8 (N, C, H, W) → float64, minus the per-channel mean and over the per-channel std (App. C.1 step 1)."""
    x = np.asarray(images, dtype=np.float64) / 255.0
    mean = x.mean(axis=(0, 2, 3)) if mean is None else np.asarray(mean, float)
    std = x.std(axis=(0, 2, 3)) if std is None else np.asarray(std, float)
    return (x - mean[None, :, None, None]) / std[None, :, None, None]


def frequency_variance(images) -> np.ndarray:
    """τ_cij: variance of the DFT'd normalised images per channel and frequency (C, H, W), un-shifted (App. C.1)."""
    x_hat = dft(normalised_images(images))
    return np.mean(np.abs(x_hat - x_hat.mean(0)) ** 2, axis=0)


def frequency_covariance(images) -> np.ndarray:
    """Σ̂ = E[(x̂ − μ̂)(x̂ − μ̂)^H] as a (C·H·W)² complex matrix, via Σ̂ = F Σ_pixels F^H (F orthonormal DFT)."""
    x = normalised_images(images)
    n, c, h, w = x.shape
    flat = (x - x.mean(0)).reshape(n, -1)
    # F on the first (c, i, j), F^H on the second (conj(F) = F⁻¹ for the orthonormal F)
    return frequency_covariance_from_pixels(flat.T @ flat / n, (c, h, w))


def covariance_by_distance(sigma_hat: np.ndarray, shape: tuple[int, int, int], modular: bool) -> tuple[np.ndarray, np.ndarray]:
    """E[|Σ̂_{cij,c'i'j'}| given |(c,i,j) − (c',i',j')| = r] (Fig 1a), or with torus distances (Fig 1b, eq. C.2).

    Indices are the DFT's own (0 … H−1, zero frequency first). Returns (r, mean |Σ̂|) for every distinct distance.
    """
    c, h, w = shape
    cc, ii, jj = (a.ravel() for a in np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij"))

    def axis_distance(a, size):
        d = np.abs(a[:, None] - a[None, :])
        return np.minimum(d, size - d) if modular else d

    squared = ((cc[:, None] - cc[None, :]) ** 2 + axis_distance(ii, h) ** 2 + axis_distance(jj, w) ** 2).ravel()
    sums = np.bincount(squared, weights=np.abs(sigma_hat).ravel())
    counts = np.bincount(squared)
    keep = counts > 0
    return np.sqrt(np.nonzero(keep)[0]), sums[keep] / counts[keep]


def signed_frequencies(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer frequencies i ∈ (−H/2, H/2], j likewise, on the un-shifted DFT grid (arrays shaped (H, 1), (1, W))."""
    return (np.fft.fftfreq(height) * height)[:, None], (np.fft.fftfreq(width) * width)[None, :]


def fit_power_law(tau: np.ndarray, max_radius: float | None = None) -> dict:
    """Fit τ_ij ≈ γ / (|i|^α + |j|^β) (§4.1) by least squares on log τ, leaving out the zero frequency.

    ``tau``: (H, W) or (C, H, W) (channels are averaged, as the law is channel-independent). ``max_radius``: fit
    only the frequencies with |(i, j)| ≤ max_radius (the fitted exponents depend on the range: say which). Returns
    alpha, beta, gamma, r2 (coefficient of determination of log τ) and the number of frequencies fitted.
    """
    tau = np.asarray(tau, float)
    if tau.ndim == 3:
        tau = tau.mean(0)
    fi, fj = signed_frequencies(*tau.shape)
    ai, aj = np.abs(np.broadcast_to(fi, tau.shape)), np.abs(np.broadcast_to(fj, tau.shape))
    mask = (ai + aj) > 0
    if max_radius is not None:
        mask &= np.hypot(ai, aj) <= max_radius + 1e-9
    ai, aj, log_tau = ai[mask], aj[mask], np.log(tau[mask])

    def residual(theta):
        log_gamma, alpha, beta = theta
        return log_gamma - np.log(ai ** alpha + aj ** beta) - log_tau

    fit = least_squares(residual, x0=[np.log(tau[mask].max()), 2.0, 2.0], bounds=([-50, 0.01, 0.01], [50, 8, 8]))
    log_gamma, alpha, beta = fit.x
    r2 = 1 - np.sum(fit.fun ** 2) / np.sum((log_tau - log_tau.mean()) ** 2)
    return {"alpha": float(alpha), "beta": float(beta), "gamma": float(np.exp(log_gamma)), "r2": float(r2),
            "frequencies": int(mask.sum()), "max_radius": None if max_radius is None else float(max_radius)}


def power_law(shape: tuple[int, int], alpha: float, beta: float, gamma: float) -> np.ndarray:
    """γ / (|i|^α + |j|^β) on the un-shifted grid (the zero frequency is set to NaN)."""
    fi, fj = signed_frequencies(*shape)
    with np.errstate(divide="ignore"):
        out = gamma / (np.abs(fi) ** alpha + np.abs(fj) ** beta)
    out[0, 0] = np.nan
    return out


def jpeg_roundtrip(images, quality: int = 75) -> np.ndarray:
    """Encode and decode every uint8 image (N, C, H, W) as JPEG at ``quality`` with PIL (to measure what JPEG removes)."""
    import io

    from PIL import Image

    images = np.asarray(images, np.uint8)
    out = np.empty_like(images)
    for k, image in enumerate(images):
        pil = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=quality)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
        out[k] = decoded[None] if decoded.ndim == 2 else decoded.transpose(2, 0, 1)
    return out


# --- ridge (§4.1) and LASSO (App. A) in frequency space ---------------------------------------------------------------


def design_matrix(images) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Centred, normalised images as rows (N, C·H·W) and their (C, H, W) shape."""
    x = normalised_images(images)
    return (x - x.mean(0)).reshape(len(x), -1), x.shape[1:]


def gram(x: np.ndarray) -> dict:
    """XᵀX/N and its eigendecomposition (torch's eigh: several times faster than numpy's here), shared by all solves."""
    sigma = x.T @ x / len(x)
    eigvals, eigvecs = torch.linalg.eigh(torch.from_numpy(sigma))
    return {"sigma": sigma, "eigvals": np.clip(eigvals.numpy(), 0, None), "eigvecs": eigvecs.numpy()}


def ridge_frequency(x: np.ndarray, y: np.ndarray, lambdas, shape, gram_matrix: dict | None = None) -> dict:
    """Closed-form ridge (λ + XᵀX/N) v = XᵀY/N (eq. 4.15) for every λ, returned as DFT'd predictors v̂ (λ, K, C, H, W).

    The DFT is unitary, so solving in pixel space and transforming is the same as solving on DFT'd data; one
    eigendecomposition of XᵀX/N serves every λ. Also returns the least-squares v̂_LS (λ = 0; requires N ≥ C·H·W)
    and τ (the diagonal of the frequency covariance).
    """
    n, d = x.shape
    if n < d:
        raise ValueError(f"least squares needs at least as many images as pixels ({d}); got {n}. Use more images or "
                         f"fewer channels")
    y = np.asarray(y, float).reshape(n, -1)
    y = y - y.mean(0)
    g = gram_matrix or gram(x)
    eigvals, eigvecs = g["eigvals"], g["eigvecs"]
    projected = eigvecs.T @ (x.T @ y / n)  # (D, K)

    floor = 1e-10 * eigvals.max()

    def solve(lam):
        # directions with no variance at all (e.g. Fashion-MNIST's always-black border) get the minimum-norm answer 0
        denominator = eigvals + lam
        inverse = np.where(denominator > floor, 1.0 / np.maximum(denominator, floor), 0.0)
        v = eigvecs @ (projected * inverse[:, None])
        return dft(v.T.reshape(-1, *shape))

    tau = np.real(np.mean(np.abs(dft(x.reshape(n, *shape))) ** 2, axis=0))
    v_hat = np.stack([solve(lam) for lam in lambdas]) if len(lambdas) else np.zeros((0, y.shape[1], *shape), complex)
    return {"v_hat": v_hat, "v_ls": solve(0.0), "tau": tau, "eigenvalues": eigvals}


def lasso_frequency(x: np.ndarray, y: np.ndarray, lam: float, shape, iterations: int = 300,
                    gram_matrix: dict | None = None) -> np.ndarray:
    """min (1/N)|y − Xv|² + 2λ Σ_cij |v̂_cij| (eq. A.1) by FISTA in frequency space; v̂ (C, H, W), complex.

    The smooth part's gradient is taken in pixel space and moved to frequency space (a unitary map), where the
    proximal step shrinks every |v̂_cij|. τ spans several decades, so one global step size would leave the
    low-variance frequencies unconverged: each frequency gets its own step 1/(2 Σ_b |Σ̂_ab|), a diagonal majoriser of
    the Hessian 2Σ̂ by Gershgorin's theorem, so the iteration still converges. The steps are equal for ±(i, j), so
    v̂ keeps the Hermitian symmetry of a real v.
    """
    n = len(x)
    y = np.asarray(y, float).reshape(n) - np.mean(y)
    g = gram_matrix or gram(x)
    sigma = g["sigma"]
    b = x.T @ y / n
    steps = 1.0 / (2 * np.abs(frequency_covariance_from_pixels(sigma, shape)).sum(1).reshape(shape))
    v = np.zeros(x.shape[1])
    momentum_point, t = v.copy(), 1.0
    for _ in range(iterations):
        gradient_hat = dft((2 * (sigma @ momentum_point - b)).reshape(shape))
        z_hat = dft(momentum_point.reshape(shape)) - steps * gradient_hat
        shrink = np.maximum(0.0, 1 - 2 * lam * steps / np.maximum(np.abs(z_hat), 1e-300))
        new_v = np.real(np.fft.ifft2(z_hat * shrink, norm="ortho")).ravel()
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        momentum_point = new_v + (t - 1) / t_next * (new_v - v)
        v, t = new_v, t_next
    return dft(v.reshape(shape))


def frequency_covariance_from_pixels(pixel_cov: np.ndarray, shape) -> np.ndarray:
    """Σ̂ = F Σ F^H for a pixel covariance Σ of images shaped (C, H, W); returns a (C·H·W)² complex matrix."""
    c, h, w = shape
    rows = np.fft.fft2(pixel_cov.reshape(c, h, w, c, h, w), axes=(1, 2), norm="ortho")
    return np.fft.ifft2(rows, axes=(4, 5), norm="ortho").reshape(c * h * w, c * h * w)


def diagonal_dominance(sigma_hat: np.ndarray) -> np.ndarray:
    """Per row of Σ̂: the diagonal entry's share of the row's absolute sum (1 where eq. 4.17 holds exactly)."""
    absolute = np.abs(sigma_hat)
    return np.diag(absolute) / absolute.sum(1)


# --- Theorem 4.9 under the diagonal assumption: the predicted |v̂| of a depth-L linear CNN -----------------------------


def depth_prediction(v_ls_abs: np.ndarray, tau: np.ndarray, lam: float, layers: int,
                     iterations: int = 200) -> np.ndarray:
    """argmin_{s ≥ 0} τ (s − s₀)² + λ L s^{2/L} elementwise, with s₀ = ``v_ls_abs`` and the given ``tau``.

    Under the diagonal assumption 4.17 the data term of min (1/N)|Y − Xv|² + λ L Σ_ij |v̂_ij|_{2/L}^{2/L} (eq. 4.10,
    with ``lam`` the *effective* λ of :func:`effective_lambda`) is Σ τ_ij |v̂_ij − v̂_LS,ij|², and for one input
    channel (a K × 1 matrix per frequency, whose singular value is its L2 norm over the K outputs) the problem splits
    into this scalar one per frequency, the minimiser pointing along v̂_LS,ij. L = 1 gives ridge, s = τ s₀/(τ + λ)
    (eq. 4.18); L = 2 soft thresholding, s = max(0, s₀ − λ/τ) (eq. A.7); for L ≥ 3 the penalty is concave in s and the
    minimiser is 0 or the larger root of τ (s − s₀) + λ s^{2/L−1} = 0 (found by bisection), whichever costs less.
    With several input channels apply it per channel (an approximation: the Schatten penalty couples the channels).
    Frequencies with τ = 0 (no variance) get 0, the minimum-norm answer.
    """
    if layers < 1:
        raise ValueError(f"layers must be at least 1, got {layers}")
    if lam < 0:
        raise ValueError(f"lam must be ≥ 0, got {lam}")
    s0 = np.asarray(v_ls_abs, dtype=np.float64)
    tau = np.broadcast_to(np.asarray(tau, dtype=np.float64), s0.shape)
    live = (tau > 0) & (s0 > 0)
    out = np.zeros_like(s0)
    if lam == 0:
        out[live] = s0[live]
        return out
    if layers == 1:
        out[live] = tau[live] * s0[live] / (tau[live] + lam)
        return out
    if layers == 2:
        out[live] = np.maximum(0.0, s0[live] - lam / tau[live])
        return out
    t, s, p = tau[live], s0[live], 2.0 / layers
    # g(s) = τ(s − s₀) + λ s^{p−1} is convex on s > 0 with its minimum at s*; a root exists iff g(s*) < 0
    turning = (lam * (1 - p) / t) ** (1 / (2 - p))
    g_turning = t * (turning - s) + lam * turning ** (p - 1)
    has_root = (turning < s) & (g_turning < 0)
    lo, hi = np.where(has_root, turning, s), s.copy()       # g(lo) < 0 < g(hi) = λ s₀^{p−1} where has_root
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        negative = t * (mid - s) + lam * mid ** (p - 1) < 0
        lo, hi = np.where(negative, mid, lo), np.where(negative, hi, mid)
    root = 0.5 * (lo + hi)
    cost_root = t * (root - s) ** 2 + lam * layers * root ** p
    out[live] = np.where(has_root & (cost_root < t * s ** 2), root, 0.0)
    return out
