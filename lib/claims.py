"""Claims tables: per-seed summaries, the rules that turn measurements into verdicts, and the book's verdict words.

Every chapter ends with a table — the paper's claim, our measurement (mean ± sd over seeds) and a verdict. The
verdict is computed here from the per-seed values, never typed in, and uses only the words of :data:`VERDICTS`
("supported", "partly supported", "contradicted", "inconclusive", "not judged", "not run"), optionally followed by
one parenthesised qualifier that says why or by which rule ("inconclusive (1 seed)", "supported (exact
computation)"). At the quick profile the numbers only prove that the code runs, so :func:`judged` replaces every
statistical verdict by :data:`QUICK_VERDICT`; exact computations (identities checked to round-off, rows marked
``"exact": True``) keep theirs at every scale. :func:`verdict_legend` renders the vocabulary as the how-to chapter's
legend; the tests check every chapter's claims rows against it.
"""

from __future__ import annotations

import math

import numpy as np

# The whole book's verdict vocabulary: base word → what it means. A verdict is a base word, optionally followed by one
# parenthesised qualifier ("inconclusive (1 seed)"); nothing else. The how-to chapter prints this as its legend.
VERDICTS = {
    "supported": "the measurement agrees with the claim by the row's stated rule: the 95 % interval of the paired "
                 "differences lies on the claimed side of the threshold, or an exact computation holds to round-off",
    "partly supported": "a claim about several cases (filters, layers, settings, λ): some cases are supported and "
                        "none is contradicted; or the claim holds only approximately (the qualifier says which)",
    "contradicted": "the measurement goes against the claim by the same rule: the interval lies entirely on the "
                    "other side, or an exact computation fails",
    "inconclusive": "the interval straddles the threshold, or the design cannot decide (one seed, no spread, too few "
                    "settings; the qualifier names the reason)",
    "not judged": "measured, but this scale or machine cannot decide the claim (quick profile: the numbers only "
                  "show that the code runs; a CPU timing of a claim about GPUs)",
    "not run": "the runs this claim needs are not part of this profile (or the data are not available offline)",
}

QUICK_VERDICT = "not judged (quick scale)"


def verdict_base(verdict: str) -> str | None:
    """The base word of a verdict (``"inconclusive (1 seed)"`` → ``"inconclusive"``), ``None`` when it is not in
    :data:`VERDICTS` or its qualifier is not one parenthesised note at the end."""
    for base in sorted(VERDICTS, key=len, reverse=True):
        if verdict == base:
            return base
        rest = verdict[len(base):]
        if verdict.startswith(base) and rest.startswith(" (") and rest.endswith(")"):
            depth = 0
            for i, char in enumerate(rest[1:], 1):  # the bracket opened after the base word must close last
                depth += {"(": 1, ")": -1}.get(char, 0)
                if depth == 0 and i < len(rest) - 1:
                    return None
            return base if depth == 0 else None
    return None


def qualify(verdict: str, note: str) -> str:
    """``verdict`` with ``note`` added to its qualifier: ``"supported"`` → ``"supported (note)"``,
    ``"inconclusive (1 seed)"`` → ``"inconclusive (1 seed; note)"``."""
    if verdict.endswith(")") and verdict_base(verdict) not in (None, verdict):
        return f"{verdict[:-1]}; {note})"
    return f"{verdict} ({note})"


def verdict_legend_rows() -> list[dict]:
    """The vocabulary as table rows (``verdict``, ``meaning``), generated from :data:`VERDICTS`: the how-to chapter's
    legend, rendered with the book's table renderer (``lib.plotting.table``)."""
    rows = [{"verdict": word, "meaning": meaning} for word, meaning in VERDICTS.items()]
    rows.append({"verdict": QUICK_VERDICT, "meaning": "the quick profile's verdict for every statistical claim (exact "
                                                      "computations keep theirs)"})
    return rows


def judged(rows: list[dict], profile: str) -> list[dict]:
    """Claims rows as a chapter shows them at ``profile``: quick-profile statistical verdicts are withheld."""
    out = []
    for row in rows:
        row = dict(row)
        exact = row.pop("exact", False)
        if profile == "quick" and not exact and "verdict" in row:
            row["verdict"] = QUICK_VERDICT
        out.append(row)
    return out


def mean_sd(values) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for a single value) and count."""
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan"), 0
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0, int(values.size)


def format_mean_sd(values, scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
    """``"93.1 ± 0.2% (n=3)"`` for a list of per-seed values (``"93.1% (n=1)"`` for a single one)."""
    mean, sd, n = mean_sd(values)
    if n == 0:
        return "not run"
    if n == 1:
        return f"{mean * scale:.{digits}f}{unit} (n=1)"
    return f"{mean * scale:.{digits}f} ± {sd * scale:.{digits}f}{unit} (n={n})"


def _error(sides, sampling_n: int | None) -> float | None:
    """Two standard errors of a difference of means. Each side contributes its seeds' variance over n and, for
    proportions measured on ``sampling_n`` test items, the binomial variance p(1-p)/(sampling_n·n) of the test
    sample. ``None`` when the noise cannot be estimated: a side with one seed and no ``sampling_n``."""
    variance = 0.0
    for mean, sd, n in sides:
        if n < 2 and sampling_n is None:
            return None
        variance += (sd ** 2 if n > 1 else 0.0) / n
        if sampling_n is not None:
            p = min(max(mean, 0.0), 1.0)
            variance += p * (1 - p) / (sampling_n * n)
    return 2 * math.sqrt(variance)


def verdict_greater(better, worse, margin: float = 0.0, sampling_n: int | None = None) -> str:
    """Verdict on the claim "``better`` > ``worse``" from per-seed values.

    ``supported`` when the mean difference exceeds ``margin`` plus two standard errors, ``contradicted`` when it is
    below ``-margin`` minus two standard errors, ``inconclusive`` otherwise. The standard errors come from the seeds'
    spread and, for proportions (accuracy, consistency) given ``sampling_n`` test items, from the test sample; with a
    single seed and no ``sampling_n`` nothing estimates the noise and the verdict is ``inconclusive (1 seed)``.
    """
    b, w = mean_sd(better), mean_sd(worse)
    if not b[2] or not w[2]:
        return "not run"
    error = _error((b, w), sampling_n)
    if error is None:
        return "inconclusive (1 seed)"
    difference = b[0] - w[0]
    if difference > margin + error:
        return "supported"
    if difference < -margin - error:
        return "contradicted"
    return "inconclusive"


def verdict_not_worse(candidate, reference, tolerance: float, sampling_n: int | None = None) -> str:
    """Verdict on "``candidate`` keeps ``reference``'s level": ``supported`` when the mean is at most ``tolerance``
    below it, ``contradicted`` when it is lower by more than ``tolerance`` plus two standard errors (as in
    :func:`verdict_greater`), ``inconclusive`` in between (``inconclusive (1 seed)`` when the noise is unknown)."""
    c, r = mean_sd(candidate), mean_sd(reference)
    if not c[2] or not r[2]:
        return "not run"
    difference = c[0] - r[0]
    if difference >= -tolerance:
        return "supported"
    error = _error((c, r), sampling_n)
    if error is None:
        return "inconclusive (1 seed)"
    return "contradicted" if difference < -tolerance - error else "inconclusive"


def verdict_paired(differences, *, direction: int = 1, confidence: float = 0.95,
                   sampling_variances=None) -> str:
    """Verdict from paired per-seed differences ``ours − baseline`` (``direction``: the sign the paper claims).

    The claim is "supported" when the two-sided ``confidence`` interval of the mean difference lies entirely on the
    claimed side of zero, "contradicted" when it lies entirely on the other side, and "inconclusive" otherwise or with
    fewer than 2 seeds. The interval is Student-t over the seeds; ``sampling_variances`` (per seed, the variance of
    that seed's difference from the finite test sample, e.g. from :func:`paired_outcomes`) widen it: every seed is
    scored on the *same* test images, so that noise does not average out over seeds and its mean is added whole.
    Differences with no spread at all and no sampling variance decide nothing (identical seeds are more often a bug
    than a certainty): "inconclusive (no spread)".
    """
    from scipy.stats import t as student_t
    d = np.asarray(list(differences), dtype=float) * direction
    if d.size == 0:
        return "not run"
    if d.size < 2:
        return "inconclusive (1 seed)"
    seed_variance = d.var(ddof=1) / d.size
    sampling = float(np.mean(sampling_variances)) if sampling_variances is not None and len(sampling_variances) else 0.0
    variance = seed_variance + sampling
    if variance <= 0:
        return "inconclusive (no spread)"
    # Welch–Satterthwaite degrees of freedom: the seeds' variance is estimated from n − 1 degrees of freedom, the test
    # sample's from thousands of items (taken as known), so t tends to the normal as the latter dominates
    dof = (d.size - 1) * (variance / seed_variance) ** 2 if seed_variance > 0 else float("inf")
    half_width = student_t.ppf(0.5 + confidence / 2, dof) * math.sqrt(variance)
    if d.mean() - half_width > 0:
        return "supported"
    if d.mean() + half_width < 0:
        return "contradicted"
    return "inconclusive"


def mcnemar_p(a, b) -> float:
    """Exact two-sided McNemar test of paired per-item outcomes (booleans of the same test images under two
    models): the binomial test of the discordant pairs, ``P(|B − n/2| ≥ |b − n/2|)`` with ``B ~ Bin(n, 1/2)``,
    where ``n`` items are right under one model only and ``b`` of them under ``b``'s. 1.0 without discordant pairs."""
    from scipy.stats import binomtest
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes must have the same shape, got {a.shape} and {b.shape}")
    only_b, only_a = int((b & ~a).sum()), int((a & ~b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_b, only_a + only_b, 0.5).pvalue)


def paired_outcomes(reference: dict, candidate: dict) -> dict:
    """Per-seed paired comparison of per-item outcomes: ``reference`` and ``candidate`` map seed → booleans over the
    same items (same test images, same shifts). Only seeds present on both sides count. Returns the per-seed
    differences of the means (candidate − reference), their McNemar p-values, and the seeds used."""
    seeds = sorted(set(reference) & set(candidate))
    per_item = [np.asarray(candidate[s], float) - np.asarray(reference[s], float) for s in seeds]
    return {"seeds": seeds, "differences": [float(d.mean()) for d in per_item],
            # the test sample's noise on each seed's difference: the variance of the mean of per-item differences
            "sampling_variances": [float(d.var() / d.size) for d in per_item],
            "p_values": [mcnemar_p(reference[s], candidate[s]) for s in seeds]}


def verdict_paired_margin(differences, *, margin: float = 0.0, direction: int = 1,
                          confidence: float = 0.95, sampling_variances=None) -> str:
    """:func:`verdict_paired` for "the difference exceeds ``-margin``" in ``direction`` (non-inferiority: "at most
    ``margin`` worse"; ``margin=0`` is the plain claim)."""
    d = np.asarray(list(differences), dtype=float) * direction + margin
    return verdict_paired(d, confidence=confidence, sampling_variances=sampling_variances)


def verdict_paired_outcomes(comparison: dict, margin: float = 0.0) -> str:
    """The verdict of a :func:`paired_outcomes` comparison: seeds' spread plus the test sample's noise."""
    return verdict_paired_margin(comparison["differences"], margin=margin,
                                 sampling_variances=comparison["sampling_variances"])


def format_paired(comparison: dict, scale: float = 100.0, digits: int = 1, unit: str = " pt") -> str:
    """``"+1.2 ± 0.3 pt (n=3; McNemar p < 0.05 in 3 of 3 seeds)"``: mean ± sd of the paired differences."""
    d = comparison["differences"]
    if not d:
        return "not run"
    mean, sd, n = mean_sd(d)
    significant = sum(p < 0.05 for p in comparison["p_values"])
    spread = f" ± {sd * scale:.{digits}f}" if n > 1 else ""
    return (f"{mean * scale:+.{digits}f}{spread}{unit} (n={n}; McNemar p < 0.05 in {significant} of {n} "
            f"seed{'s' if n > 1 else ''})")


def verdict_equivalent(differences, *, margin: float, confidence: float = 0.95, sampling_variances=None) -> str:
    """Verdict on "≈": the paired differences lie within ±``margin`` (an equivalence claim with a stated margin).

    "supported" when the two-sided ``confidence`` interval of the mean difference (as in :func:`verdict_paired`:
    Student-t over the seeds, widened by the test sample's noise) lies inside (−margin, +margin); "contradicted" when
    it lies entirely outside, beyond +margin or below −margin; "inconclusive" otherwise, and "inconclusive (1 seed)"
    with a single seed. A wider spread never makes "≈" easier to pass: it widens the interval."""
    if margin < 0:
        raise ValueError(f"margin must be non-negative, got {margin}")
    d = np.asarray(list(differences), dtype=float)
    kwargs = dict(confidence=confidence, sampling_variances=sampling_variances)
    if d.size == 0:
        return "not run"
    if d.size < 2:
        return "inconclusive (1 seed)"
    sampling = np.asarray(sampling_variances if sampling_variances is not None else [0.0], dtype=float)
    if np.ptp(d) == 0 and not sampling.any():  # shifted by ±margin, identical values would leave round-off spread
        return "inconclusive (no spread)"
    above = verdict_paired_margin(d, margin=margin, direction=-1, **kwargs)   # d < +margin
    below = verdict_paired_margin(d, margin=margin, direction=1, **kwargs)    # d > −margin
    if above == "supported" and below == "supported":
        return "supported"
    if above == "contradicted" or below == "contradicted":
        return "contradicted"
    return "inconclusive"


def paired_values(reference: dict, candidate: dict, reference_scale: float = 1.0) -> dict:
    """:func:`paired_outcomes` for real-valued per-item values (per-image PSNR, per-image robust accuracy averaged over
    budgets): seed → values over the same items on both sides. Per seed: the mean of ``candidate − reference_scale ·
    reference`` (``reference_scale`` = 1.25 tests "25 % higher") and its sampling variance (variance of the per-item
    differences over the number of items). No McNemar test (the values need not be booleans): ``p_values`` is empty."""
    seeds = sorted(set(reference) & set(candidate))
    per_item = [np.asarray(candidate[s], float) - reference_scale * np.asarray(reference[s], float) for s in seeds]
    return {"seeds": seeds, "differences": [float(d.mean()) for d in per_item],
            "sampling_variances": [float(d.var() / d.size) for d in per_item], "p_values": []}


def trend_test(settings, values, seeds, *, direction: int = -1, alpha: float = 0.05, permutations: int = 20000,
               bootstrap: int = 2000, seed: int = 0) -> dict:
    """Seed-aware test of a monotone trend of ``values`` with ``settings`` (e.g. a moment against depth or decay).

    One entry per run: its setting, its measured value and its seed. The statistic is the mean over seeds of the
    Spearman ρ between setting and value *within* each seed (a seed's offset cancels, so seeds are the replicates).
    Null hypothesis: no trend, i.e. within each seed the values are exchangeable across settings; the p-value
    (two-sided) is the fraction of within-seed permutations whose |statistic| reaches the observed one — enumerated
    exactly when there are at most ``permutations`` of them, else drawn at random (with the observed one counted).
    A bootstrap over seeds gives a 95 % interval of the statistic. Verdict on the claim "values move in
    ``direction`` (−1: fall, +1: rise) as the setting grows": "supported" / "contradicted" when p < ``alpha`` with the
    statistic on that / the other side, "inconclusive" otherwise, and "inconclusive (…)" when the design cannot
    reach p < ``alpha`` at all: fewer than 2 seeds with ≥ 2 settings, fewer than 3 settings, or a smallest
    attainable p above ``alpha``.
    """
    import itertools
    from scipy.stats import rankdata
    settings, values = np.asarray(settings, float), np.asarray(values, float)
    seeds = np.asarray(list(seeds))
    if not (len(settings) == len(values) == len(seeds)):
        raise ValueError("trend_test needs one setting, value and seed per run")
    keep = np.isfinite(values) & np.isfinite(settings)
    settings, values, seeds = settings[keep], values[keep], seeds[keep]
    blocks = []  # per seed: (setting ranks, values)
    for s in sorted(set(seeds.tolist()), key=str):
        mask = seeds == s
        if len(np.unique(settings[mask])) >= 2:
            blocks.append((rankdata(settings[mask]), values[mask]))
    out = {"statistic": float("nan"), "p_value": float("nan"), "ci": (float("nan"), float("nan")),
           "n_seeds": len(blocks), "n_settings": int(len(np.unique(settings))), "per_seed": [],
           "min_p": float("nan")}

    def rho(x_rank, y):
        y_rank = rankdata(y)
        if np.ptp(y_rank) == 0:
            return 0.0
        return float(np.corrcoef(x_rank, y_rank)[0, 1])

    if not blocks:
        return {**out, "verdict": "not run" if len(values) == 0 else "inconclusive (fewer than 2 settings)"}
    per_seed = np.array([rho(x, y) for x, y in blocks])
    statistic = float(per_seed.mean())
    out.update(statistic=statistic, per_seed=per_seed.tolist())
    if len(blocks) < 2:
        return {**out, "verdict": "inconclusive (1 seed)"}
    if out["n_settings"] < 3:
        return {**out, "verdict": "inconclusive (fewer than 3 settings)"}
    sizes = [len(y) for _, y in blocks]
    total = math.prod(math.factorial(n) for n in sizes)
    if total <= permutations:  # exact: every combination of within-seed orders
        null_seeds = [np.array([rho(x, y[list(order)]) for order in itertools.permutations(range(len(y)))])
                      for x, y in blocks]
        grids = np.meshgrid(*null_seeds, indexing="ij")
        null = np.mean(grids, axis=0).ravel()
        p = float(np.mean(np.abs(null) >= abs(statistic) - 1e-12))
        min_p = float(np.mean(np.abs(null) >= np.abs(null).max() - 1e-12))
    else:
        rng = np.random.default_rng(seed)
        null = np.array([np.mean([rho(x, rng.permutation(y)) for x, y in blocks]) for _ in range(permutations)])
        p = float((1 + np.sum(np.abs(null) >= abs(statistic) - 1e-12)) / (1 + permutations))
        min_p = 1.0 / (1 + permutations)
    rng = np.random.default_rng(seed + 1)
    boot = np.array([per_seed[rng.integers(0, len(per_seed), len(per_seed))].mean() for _ in range(bootstrap)])
    out.update(p_value=p, min_p=min_p, ci=(float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))))
    if min_p >= alpha:
        return {**out, "verdict": f"inconclusive (smallest attainable p = {min_p:.2g} ≥ {alpha:g})"}
    if p < alpha:
        return {**out, "verdict": "supported" if np.sign(statistic) == np.sign(direction) else "contradicted"}
    return {**out, "verdict": "inconclusive"}


def format_trend(result: dict) -> str:
    """``"ρ̄ = −0.93 [−1.00, −0.80], p = 0.002 (3 seeds, 4 settings)"`` for a :func:`trend_test` result."""
    if not np.isfinite(result["statistic"]):
        return "not run"
    text = f"ρ̄ = {result['statistic']:+.2f}"
    if np.isfinite(result["p_value"]):
        lo, hi = result["ci"]
        text += f" [{lo:+.2f}, {hi:+.2f}], p = {result['p_value']:.2g}"
    return text + f" ({result['n_seeds']} seed{'s' if result['n_seeds'] != 1 else ''}, {result['n_settings']} settings)"
