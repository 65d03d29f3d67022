"""Tests of the spatial-mixing chapter: DCT smoothing, parameter counts (eqs. 1-4), the mixing switch, static banks,
FGSM against its definition, pixel permutations, spectral envelopes, verdict rules, tiny end-to-end runs, the rank of
frozen filter banks and the reach of the un-shuffling networks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F

from lib import spatial_rank as sr
from lib import spectra
from lib.attacks import fgsm
from lib.experiments import execute
from lib.experiments import spatial_mixing as sm
from lib.filters import dct_lowpass
from lib.filters.dct import smoothing_index
from lib.models.convmixer import ConvMixer
from lib.models.separable_resnet import (SeparableConv2d, SeparableResNet, p_conv, p_sep, p_static,
                                         predicted_trainable, static_bank)
from lib.training import count_parameters
from lib.unshuffle import PixelPermutation


# --- DCT smoothing (App. A.3) ---------------------------------------------------------------------------------------

def _dct_matrix(k: int) -> np.ndarray:
    """Orthonormal DCT-II matrix written from its definition (rows are basis vectors)."""
    n = np.arange(k)
    c = np.sqrt(2 / k) * np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * k))
    c[0] /= np.sqrt(2)
    return c


def test_dct_lowpass_matches_explicit_basis_projection():
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((5, 8, 8))
    c = _dct_matrix(8)
    for keep in (1, 4, 6, 7):
        mask = np.zeros((8, 8))
        mask[:keep, :keep] = 1
        expected = np.stack([c.T @ ((c @ f @ c.T) * mask) @ c for f in bank])
        np.testing.assert_allclose(dct_lowpass(bank, keep), expected, atol=1e-12)


def test_dct_lowpass_identity_projection_and_mean():
    rng = np.random.default_rng(1)
    bank = rng.standard_normal((3, 2, 8, 8))  # any leading shape
    np.testing.assert_allclose(dct_lowpass(bank, 8), bank, atol=1e-12)  # K = k changes nothing
    once = dct_lowpass(bank, 6)
    np.testing.assert_allclose(dct_lowpass(once, 6), once, atol=1e-12)  # a projection: idempotent
    assert np.all((once ** 2).sum((-1, -2)) <= (bank ** 2).sum((-1, -2)) + 1e-12)  # orthogonal: energy never grows
    # the coefficients outside the kept block are zero
    coefficients = scipy.fft.dctn(once, norm="ortho", axes=(-2, -1))
    assert np.abs(coefficients[..., 6:, :]).max() < 1e-12 and np.abs(coefficients[..., :, 6:]).max() < 1e-12
    # keep = 1 leaves only the DC term: a constant filter equal to the mean
    np.testing.assert_allclose(dct_lowpass(bank, 1), np.broadcast_to(bank.mean((-1, -2), keepdims=True), bank.shape),
                               atol=1e-12)


def test_dct_lowpass_keeps_torch_type_and_index_values():
    weight = torch.randn(4, 1, 8, 8, dtype=torch.float32)
    out = dct_lowpass(weight, 7)
    assert torch.is_tensor(out) and out.dtype == torch.float32 and out.shape == weight.shape
    np.testing.assert_allclose(out.numpy(), dct_lowpass(weight.double().numpy(), 7), atol=1e-6)
    assert [smoothing_index(8, k) for k in (8, 7, 6, 5, 4)] == [0, 15, 28, 39, 48]  # the paper's indices


@pytest.mark.parametrize("keep, shape, match", [(0, (2, 8, 8), "keep must be"), (9, (2, 8, 8), "keep must be"),
                                                 (2.5, (2, 8, 8), "keep must be"), (2, (2, 8, 7), "square")])
def test_dct_lowpass_rejects_bad_input(keep, shape, match):
    with pytest.raises(ValueError, match=match):
        dct_lowpass(np.zeros(shape), keep)


# --- parameter counts (eqs. 1-4) -----------------------------------------------------------------------------------

def test_parameter_equations_known_values_and_equivalence():
    assert p_conv(16, 32, 3) == 16 * 32 * 9 == 4608
    assert p_sep(16, 32, 3, 9) == 16 * 9 * 9 + 16 * 9 * 32 == 5904
    assert p_static(16, 32, 9) == 4608 == p_conv(16, 32, 3)  # eq. (4): d = k² makes them equal
    assert 3 * p_static(16, 32, 3) == p_conv(16, 32, 3)       # d = 3: a third


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("conv, mixing, d", [("standard", "full", 1), ("separable", "full", 9),
                                              ("separable", "chans", 9), ("separable", "chans", 3),
                                              ("separable", "space", 9)])
def test_models_have_the_predicted_trainable_parameters(depth, conv, mixing, d):
    model = SeparableResNet(depth, conv=conv, mixing=mixing, depth_multiplier=d, width=8)
    assert count_parameters(model, trainable_only=True) == predicted_trainable(depth, conv=conv, mixing=mixing,
                                                                               depth_multiplier=d, width=8)


def test_chans_d9_learns_as_many_parameters_as_standard():
    rows = sm.parameter_table([1, 3])
    for depth in (1, 3):
        by = {r["model"]: r for r in rows if r["depth n"] == depth}
        assert by["Chans (d=9)"]["counted"] == by["Standard"]["counted"]
        assert all(r["match"] == "yes" for r in by.values())
        assert by["Space (d=9)"]["counted"] < by["Chans (d=3)"]["counted"] < by["Chans (d=9)"]["counted"]


# --- the mixing switch -----------------------------------------------------------------------------------------------

def test_separable_conv_equals_standard_conv_with_composed_kernel():
    torch.manual_seed(0)
    layer = SeparableConv2d(3, 5, 3, stride=1, depth_multiplier=2)
    x = torch.randn(2, 3, 7, 7)
    depthwise = layer.depthwise.weight[:, 0]                  # (c·d, k, k)
    pointwise = layer.pointwise.weight[:, :, 0, 0]           # (c_out, c·d)
    composed = torch.einsum("om,mij->omij", pointwise, depthwise).view(5, 3, 2, 3, 3).sum(2)
    torch.testing.assert_close(layer(x), F.conv2d(x, composed, padding=1), atol=1e-5, rtol=1e-5)


def _frozen_names(model):
    return {n for n, p in model.named_parameters() if not p.requires_grad}


def test_resnet_switch_freezes_exactly_one_kind_of_mixing():
    chans = SeparableResNet(1, mixing="chans", width=4)
    space = SeparableResNet(1, mixing="space", width=4)
    full = SeparableResNet(1, mixing="full", width=4)
    assert _frozen_names(full) == set()
    assert _frozen_names(chans) and all("depthwise" in n for n in _frozen_names(chans))
    assert all("pointwise" in n or "shortcut" in n for n in _frozen_names(space))
    assert any("shortcut" in n for n in _frozen_names(space))
    for model in (chans, space):  # BatchNorm and classifier stay learned
        assert all(p.requires_grad for n, p in model.named_parameters() if "bn" in n or "classifier" in n)
    # a training step leaves the frozen filters unchanged and changes the learned ones
    before = {n: p.detach().clone() for n, p in chans.named_parameters()}
    optimizer = torch.optim.SGD([p for p in chans.parameters() if p.requires_grad], lr=0.1)
    F.cross_entropy(chans(torch.rand(4, 3, 8, 8)), torch.tensor([0, 1, 2, 3])).backward()
    optimizer.step()
    for n, p in chans.named_parameters():
        assert torch.equal(p, before[n]) == ("depthwise" in n), n


def test_static_banks_have_their_structure():
    torch.manual_seed(0)
    weight = torch.randn(4 * 9, 1, 3, 3)
    same = static_bank("same", weight, 9).view(4, 9, 3, 3)
    assert all(torch.equal(same[g], same[0]) for g in range(4)) and not torch.equal(same[0, 0], same[0, 1])
    assert torch.allclose(static_bank("box", weight, 9), torch.full_like(weight, 1 / 9))
    identity = SeparableResNet(1, mixing="chans", filters="identity", width=4)
    layer = identity.stem
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(layer.depthwise(x), x.repeat_interleave(9, dim=1))  # impulse: no spatial mixing
    with pytest.raises(ValueError, match="unknown static filter bank"):
        static_bank("gabor", weight, 9)


@pytest.mark.parametrize("kwargs, match", [({"mixing": "both"}, "unknown mixing"),
                                           ({"conv": "standard", "mixing": "chans"}, "conv='separable'"),
                                           ({"filters": "box", "mixing": "full"}, "needs mixing='chans'"),
                                           ({"conv": "dilated"}, "unknown conv")])
def test_resnet_rejects_bad_switches(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SeparableResNet(1, **kwargs)


def test_convmixer_switch_smoothing_and_image_head():
    chans = ConvMixer(8, 2, kernel_size=8, patch_size=2, mixing="chans", smoothing_keep=6)
    frozen = _frozen_names(chans)
    assert frozen == {f"blocks.{i}.0.fn.0.{w}" for i in range(2) for w in ("weight", "bias")}  # weights and biases
    for filters in chans.depthwise_filters():
        coefficients = scipy.fft.dctn(filters.double().numpy(), norm="ortho", axes=(-2, -1))
        assert np.abs(coefficients[:, 6:, :]).max() < 1e-5
    space = ConvMixer(8, 2, kernel_size=5, mixing="space")
    assert _frozen_names(space) == {f"blocks.{i}.1.{w}" for i in range(2) for w in ("weight", "bias")}
    assert chans(torch.rand(2, 3, 16, 16)).shape == (2, 10)
    image = ConvMixer(8, 1, kernel_size=5, head="image", in_channels=1, mean=(0.5,), std=(0.25,))
    assert image(torch.rand(2, 1, 14, 14)).shape == (2, 1, 14, 14)
    with pytest.raises(ValueError, match="patch_size=1"):
        ConvMixer(8, 1, patch_size=2, head="image")
    with pytest.raises(ValueError, match="smoothing_keep"):
        ConvMixer(8, 1, kernel_size=8, smoothing_keep=9)


# --- FGSM against eq. (5) -------------------------------------------------------------------------------------------

def test_fgsm_matches_its_definition_on_a_linear_model():
    torch.manual_seed(0)
    linear = torch.nn.Linear(12, 4)
    model = torch.nn.Sequential(torch.nn.Flatten(), linear)
    x = torch.rand(5, 3, 2, 2) * 0.8 + 0.1
    y = torch.tensor([0, 1, 2, 3, 0])
    epsilon = 0.05
    # analytic gradient of the mean cross-entropy of a linear model: Wᵀ(softmax − onehot)/N
    probabilities = torch.softmax(linear(x.flatten(1)), 1)
    gradient = ((probabilities - F.one_hot(y, 4)) @ linear.weight / len(x)).view_as(x)
    expected = (x + epsilon * gradient.sign()).clamp(0, 1)
    torch.testing.assert_close(fgsm(model, x, y, epsilon), expected)
    assert torch.equal(fgsm(model, x, y, 0.0), x)
    assert (fgsm(model, x, y, 0.5) - x).abs().max() <= 0.5 + 1e-6


# --- pixel permutations ---------------------------------------------------------------------------------------------

def test_pixel_permutation_is_a_fixed_invertible_permutation():
    perm = PixelPermutation(5, 6, seed=3)
    x = torch.rand(4, 3, 5, 6)
    shuffled = perm.shuffle(x)
    torch.testing.assert_close(perm.unshuffle(shuffled), x)
    assert not torch.equal(shuffled, x)
    torch.testing.assert_close(shuffled.flatten(2).sort(-1).values, x.flatten(2).sort(-1).values)  # same pixels
    # the same permutation for every image and every channel: a pixel's channels move together
    positions = torch.arange(30.).view(1, 1, 5, 6).expand(4, 3, 5, 6)
    moved = perm(positions)
    assert torch.equal(moved, moved[:1, :1].expand_as(moved))
    assert torch.equal(PixelPermutation(5, 6, seed=3).order, perm.order)  # deterministic for a seed
    with pytest.raises(ValueError, match="expected images shaped"):
        perm.shuffle(torch.rand(2, 3, 6, 5))


# --- spectra --------------------------------------------------------------------------------------------------------

def test_random_bank_envelopes_grow_and_respect_parseval():
    bank = sm.random_bank(64, 8, 2, seed=0)
    assert bank.shape == (64, 8, 8)
    np.testing.assert_allclose((bank ** 2).sum((1, 2)), 1.0)
    power = spectra.magnitude_response(bank[:3], 64) ** 2
    np.testing.assert_allclose(power.mean((1, 2)), 1.0, rtol=1e-9)  # Parseval on the zero-padded grid
    coverages = [spectra.coverage(spectra.spectral_envelope(bank[:n], 64)) for n in (1, 4, 16, 64)]
    assert all(a < b for a, b in zip(coverages, coverages[1:]))  # nested banks: the max can only grow
    one = sm.named_bank("box", 1, 3)
    np.testing.assert_allclose(spectra.spectral_envelope(sm.named_bank("box", 16, 3), 64),
                               spectra.spectral_envelope(one, 64))  # copies add no coverage
    np.testing.assert_allclose(spectra.spectral_envelope(sm.named_bank("identity", 4, 3), 32), 1.0)  # flat
    same = sm.named_bank("same", 40, 3, same_size=9)
    assert np.allclose(same[9:18], same[:9])
    with pytest.raises(ValueError, match="unknown bank"):
        sm.named_bank("gauss", 4)
    with pytest.raises(ValueError, match="dims must be"):
        sm.random_bank(4, 3, dims=3)


# --- verdict rules ------------------------------------------------------------------------------------------------

def _bits(rng, p, n):
    return rng.random(n) < p


def _synthetic(profile, probability, seeds=None, flip=None, timing=None):
    """Fake stored results for every run of ``profile``: per-image outcomes drawn per seed. ``probability(config)``
    gives an arm's P(correct) (clean, and under attack at every ε > 0), or the name of an arm whose outcomes it
    copies; ``flip(config)`` a fraction of copied outcomes to flip. ``timing``: family → label → per-step seconds."""
    out = []
    runs = [r for r in sm.runs(profile) if seeds is None or r.config["seed"] in seeds]
    drawn, pending = {}, []
    for run in runs:
        config = run.config
        if run.name == "timing":
            variants = {label: {"samples_s": list(samples), "median_s": float(np.median(samples)),
                                "trainable_parameters": 1000 * (i + 1), "parameters": 9000}
                        for i, (label, samples) in enumerate(timing[config["family"]].items())}
            out.append({"config": config, "clock": "process CPU time, 1 thread", "device_type": "cpu",
                        "variants": variants})
        elif run.name == "unshuffle":
            # per-image PSNR: the same images for every model of a seed; Chans 0.3 dB and Space 3 dB below Full
            images = np.random.default_rng(config["seed"]).normal(20, 2, config["psnr_items"])
            stream = list(sm.CONVMIXER_VARIANTS.values()).index(config["mixing"]) + 10 * config["seed"]
            noise = np.random.default_rng(stream).normal(0, 0.1, config["psnr_items"])
            items = images + noise - {"full": 0.0, "chans": 0.3, "space": 3.0}[config["mixing"]]
            out.append({"config": config, "psnr": float(items.mean()), "mean_image_psnr": 12.0,
                        "psnr_items_cdb": (100 * items).round().astype(np.int16)})
        else:
            pending.append(config)
    n_test, n_attack = 2000, 1000
    while pending:  # arms that copy another arm wait until that one is drawn
        waiting = []
        for config in pending:
            p = probability(config)
            if isinstance(p, tuple) and (p, config["seed"]) not in drawn:
                waiting.append(config)
                continue
            rng = np.random.default_rng(config["seed"] * 7919 + len(drawn))
            budgets = (len(config["epsilons_255"]), n_attack)
            if isinstance(p, tuple):  # a copy of another arm of the same seed, a fraction of outcomes flipped
                clean, attack = (x.copy() for x in drawn[p, config["seed"]])
                fraction = flip(config) if flip else 0.0
                clean ^= rng.random(n_test) < fraction
                attack ^= rng.random(budgets) < fraction
            else:
                clean, attack = _bits(rng, p, n_test), _bits(rng, p / 2, budgets)
            attack[0] = clean[:n_attack]  # ε = 0 is the clean accuracy
            key = _key(config.get("mixing"), config.get("conv"), config.get("depth_multiplier"),
                       config.get("filters"), config.get("smoothing_keep"),
                       "resnet" if "conv" in config else "convmixer")
            drawn[key, config["seed"]] = (clean, attack)
            index = [config["epsilons_255"].index(e) for e in config["pgd_epsilons_255"]]
            pgd = attack[index] & _bits(rng, 0.9, (len(index), n_attack))  # PGD finds a little more than FGSM
            out.append({"config": config, "accuracy": float(clean.mean()), "correct_bits": np.packbits(clean),
                        "n_test": n_test, "attack_images": n_attack, "fgsm_bits": np.packbits(attack.ravel()),
                        "fgsm_accuracy": attack.mean(1).tolist(), "pgd_bits": np.packbits(pgd.ravel()),
                        "pgd_accuracy": pgd.mean(1).tolist(),
                        "trainable_parameters": 3000 if config.get("depth_multiplier") == 3 else 9000,
                        "train_time_s": 1.0, "time_per_trainable_parameter_us": 1.0})
        if len(waiting) == len(pending):
            raise ValueError(f"arms copy arms that are never drawn: {waiting[:1]}")
        pending = waiting
    return out


def _key(mixing, conv=None, d=None, filters=None, keep=None, family="resnet"):
    return (mixing, conv, d, filters, keep, family)


FULL, CHANS9 = _key("full", "separable", 9, "random"), _key("chans", "separable", 9, "random")


def _probability(config):
    """A clear world: Chans (d=9) = Full's outcomes with 1 % flipped (≈), Space far below, Standard a copy of Chans
    with 1 % flipped, Same a copy of Different (identical), Identity at chance, the smoothed ConvMixer clearly better
    under attack, the ConvMixer Chans a copy of Full."""
    if "conv" in config:
        if config["conv"] == "standard":
            return CHANS9
        return {("full", "random"): 0.8, ("space", "random"): 0.5, ("chans", "same"): CHANS9,
                ("chans", "box"): 0.6, ("chans", "identity"): 0.1}.get(
            (config["mixing"], config["filters"]), FULL if config["depth_multiplier"] == 9 else 0.78)
    if config.get("smoothing_keep"):
        return 0.95
    return {"full": 0.6, "chans": _key("full", family="convmixer"), "space": 0.4}[config["mixing"]]


def _timing(rng=np.random.default_rng(0), n=15):
    noisy = lambda ms: (ms / 1000 * (1 + 0.02 * rng.standard_normal(n))).tolist()
    return {"resnet": {"Standard": noisy(90), "Full": noisy(415), "Chans (d=9)": noisy(340), "Chans (d=3)": noisy(160),
                       "Space": noisy(345)},
            "convmixer": {"Full": noisy(520), "Chans": noisy(360), "Space": noisy(521)}}


def test_claims_on_synthetic_results_follow_the_rules():
    results = _synthetic("medium", _probability, flip=lambda config: 0.01, timing=_timing())
    rows = {row["claim"]: row for row in sm.claims(results, "medium")}
    v = {claim: row["verdict"] for claim, row in rows.items()}
    assert v["ResNet: Chans (d=9) at most 2 points below Full (accuracy)"] == "supported"       # 1 % flipped
    assert v["ResNet: Space more than 5 points below Chans (d=9)"] == "supported"               # 80 % vs 50 %
    assert v["ResNet: Standard ≈ Chans (d=9), within ±2 points (same trainable parameters)"] == "supported"
    assert v["Frozen banks: Box above Identity"] == "supported"
    assert v["Frozen banks: Different more than 5 points above Same"] == "contradicted"        # ~ identical
    assert v["ConvMixer: Space more than 5 points below Chans"] == "supported"
    assert v["ConvMixer: smoothed Chans (index 28) more robust than Full (FGSM)"] == "supported"
    assert v["ConvMixer-Chans: smoothing (index 28) raises FGSM accuracy at ε = 8/255 by more than 25 %"] == \
        "supported"                                                                            # 47.5 % vs 1.25 × 30 %
    assert v["Check (not a paper claim): no gradient masking — PGD leaves no more images right than FGSM"] == \
        "supported"
    assert v["Un-shuffling (fashion_mnist, base model): Chans at most 1 dB below Full (PSNR)"] == "supported"
    assert "0% of pixels out of reach" in rows["Un-shuffling (fashion_mnist, base model): Chans at most 1 dB below Full "
                                               "(PSNR)"]["ours"]
    # timing: clear ratios are supported, Space ≈ Full within 20 %, and every timing verdict names its clock
    timing_rows = [row for row in rows.values() if "per step" in row["claim"] or "time per trainable" in row["claim"]]
    assert len(timing_rows) == 6
    assert all("CPU compute time" in row["verdict"] and "cannot judge" in row["verdict"] for row in timing_rows)
    assert v["ResNet: Full slower per step than Chans (d=9)"].startswith("supported")
    assert v["ResNet: Chans (d=9) slower per step than Standard"].startswith("supported")
    assert v["ConvMixer: Space ≈ Full per step (within ±20 %)"].startswith("supported")
    assert v["ConvMixer: Space slower per step than Chans"].startswith("supported")
    # the paired difference is the one of the stored outcomes
    chans = [r for r in results if r["config"].get("mixing") == "chans" and r["config"].get("depth_multiplier") == 9
             and r["config"].get("filters") == "random"]
    assert "(n=3" in rows["ResNet: Chans (d=9) at most 2 points below Full (accuracy)"]["ours"]
    assert f"Chans {sm.format_mean_sd([100 * r['accuracy'] for r in chans], unit='%')}" in \
        rows["ResNet: Chans (d=9) at most 2 points below Full (accuracy)"]["ours"]
    # the quick profile withholds every statistical verdict
    from lib.claims import QUICK_VERDICT, judged
    assert {row["verdict"] for row in judged(list(rows.values()), "quick")} == {QUICK_VERDICT}


def test_claims_identical_arms_and_single_seeds_are_not_decided():
    # identical outcomes in every arm: no difference can be claimed, and nothing measures the noise of "≈"
    def copy_of_full(config):
        full = config.get("mixing") == "full" and config.get("conv") != "standard" and not config.get("smoothing_keep")
        return 0.8 if full else FULL if "conv" in config else _key("full", family="convmixer")
    same = _synthetic("medium", copy_of_full, timing=_timing())
    rows = {row["claim"]: row["verdict"] for row in sm.claims(same, "medium")}
    accuracy = {claim: verdict for claim, verdict in rows.items() if "(accuracy)" in claim or " point" in claim}
    assert len(accuracy) >= 8 and set(accuracy.values()) == {"inconclusive (no spread)"}, accuracy
    # one seed: every paired verdict is "inconclusive (1 seed)" (timing rounds are not seeds)
    single = _synthetic("medium", _probability, seeds={0}, flip=lambda config: 0.01, timing=_timing())
    rows = {row["claim"]: row["verdict"] for row in sm.claims(single, "medium")}
    timed = lambda claim: "per step" in claim or "time per trainable" in claim
    paired = {claim: verdict for claim, verdict in rows.items() if not (timed(claim) or claim.startswith("Check"))}
    assert paired and all(verdict == "inconclusive (1 seed)" for verdict in paired.values()), paired


def test_equivalence_and_paired_values():
    from lib.claims import paired_values, verdict_equivalent
    assert verdict_equivalent([0.001, -0.002, 0.0005], margin=0.02) == "supported"
    assert verdict_equivalent([0.05, 0.06, 0.055], margin=0.02) == "contradicted"
    assert verdict_equivalent([0.0, 0.03, -0.03], margin=0.02) == "inconclusive"
    assert verdict_equivalent([0.01], margin=0.02) == "inconclusive (1 seed)"
    # a larger spread never passes "≈" more easily (the old max(2 points, 2 sd) rule did)
    assert verdict_equivalent([0.042 + e for e in (-0.05, 0.0, 0.05)], margin=0.02) == "inconclusive"
    # the test sample's noise alone can keep an interval wide
    assert verdict_equivalent([0.0, 0.0, 0.0], margin=0.02, sampling_variances=[2e-4] * 3) == "inconclusive"
    comparison = paired_values({0: [1.0, 2.0], 1: [1.0, 1.0]}, {0: [2.0, 3.0], 1: [1.5, 1.5], 2: [9.0, 9.0]}, 1.25)
    assert comparison["seeds"] == [0, 1]
    assert comparison["differences"] == pytest.approx([2.5 - 1.25 * 1.5, 1.5 - 1.25])
    assert comparison["sampling_variances"] == pytest.approx([np.var([0.75, 0.5]) / 2, 0.0])


def test_mean_sd_skips_missing_seeds():
    assert sm.mean_sd([1.0, None, 3.0]) == pytest.approx((2.0, math.sqrt(2.0)))
    assert sm.mean_sd([2.0]) == (2.0, 0.0)
    assert all(math.isnan(v) for v in sm.mean_sd([None]))


def test_claims_table_and_figures_without_results_say_no_data():
    """Before any run finishes, the chapter's table and figures still build and report "no data", not crash."""
    import matplotlib.pyplot as plt
    empty = [None] * len(sm.runs("quick"))
    rows = sm.claims(empty, "quick")
    assert rows and all(set(row) == {"claim", "paper", "ours", "verdict"} for row in rows)
    assert {row["verdict"] for row in rows} == {"not run"}
    assert sm.closing_note(empty, "quick")[-1].startswith("compute: 0.00 hours")
    plt.close(sm.timing_figure(empty))
    for make_figure in (sm.resnet_figure, sm.convmixer_figure):
        plt.close(make_figure(empty, "quick"))


def test_claims_never_mix_classification_and_unshuffling_runs():
    """An un-shuffling ConvMixer of the same width, depth and mixing as a classifier must not be read as one."""
    c = sm.SETTINGS["quick"]["convmixer"]
    classifier = next(r for r in sm.runs("quick", section="convmixer") if r.config["mixing"] == "chans"
                      and r.config["depth"] == c["headline_depth"] and r.config["seed"] == 0)
    unshuffler = next(r for r in sm.runs("quick", section="unshuffle") if r.config["mixing"] == "chans"
                      and r.config["depth"] == c["headline_depth"] and r.config["dim"] == c["dim"])
    results = [{"config": classifier.config, "accuracy": 0.5, "train_time_s": 1.0,
                "time_per_trainable_parameter_us": 1.0, "fgsm_accuracy": [0.5, 0.1]},
               {"config": unshuffler.config, "psnr": 15.0, "mean_image_psnr": 13.0}]
    rows = {row["claim"]: row for row in sm.claims(results, "quick")}
    assert "Chans 50.0% (n=1)" in rows["ConvMixer: Chans at most 2 points below Full (accuracy)"]["ours"]
    assert sm.select(results, **sm.convmixer_selector("chans", c["headline_depth"], "quick")) == results[:1]
    assert sm.select(results, **{**sm.unshuffle_base("quick"), "depth": c["headline_depth"]}) == results[1:]


def test_runs_and_settings():
    for profile in ("quick", "medium", "paper"):
        all_runs = sm.runs(profile)
        assert len({r.key for r in all_runs}) == len(all_runs)  # no run twice
        assert {r.section for r in all_runs} == set(sm.SECTIONS)
        assert all("seed" in r.config and ("dataset" in r.config) for r in all_runs)
        paper_headline = [r for r in sm.runs(profile, "resnet") if r.config["mixing"] == "chans"
                          and r.config["depth"] == sm.SETTINGS[profile]["resnet"]["headline_depth"]
                          and r.config["depth_multiplier"] == 9]
        assert len(paper_headline) == len(sm.SETTINGS[profile]["resnet"]["seeds"])
    assert len(sm.SETTINGS["paper"]["resnet"]["seeds"]) >= 3
    c = sm.SETTINGS["paper"]["convmixer"]
    assert (c["dim"], c["kernel_size"], c["patch_size"]) == (128, 8, 1)  # the papers' ConvMixer
    with pytest.raises(ValueError, match="unknown section"):
        sm.runs("quick", "vit")


def test_medium_run_list():
    """The medium profile: full data sets, unique JSON-serialisable configs, ≥ 3 seeds for every arm a claim compares,
    and un-shuffling models that can reach every pixel."""
    import json
    runs = sm.runs("medium")
    assert len({r.key for r in runs}) == len(runs) and len({json.dumps(r.config, sort_keys=True) for r in runs}) == \
        len(runs)
    for run in runs:
        json.dumps(run.config)  # raises on anything the store could not write
        assert run.config.get("train_size", None) is None or run.name == "timing"  # full training sets
        assert run.config.get("test_size", None) is None
    s = sm.SETTINGS["medium"]
    assert s["resnet"]["attack_size"] >= 1000 and s["convmixer"]["attack_size"] >= 1000
    assert s["resnet"]["pgd_epsilons_255"] and s["convmixer"]["pgd_epsilons_255"]
    r, c = s["resnet"], s["convmixer"]
    seeds_of = lambda selector: {x.config["seed"] for x in runs if all(x.config.get(k, None if k == "smoothing_keep"
                                                                                 else object()) == v
                                                                        for k, v in selector.items())}
    compared = [sm.resnet_selector(label, r["headline_depth"]) for label in sm.RESNET_VARIANTS]
    compared += [sm.resnet_selector("Chans (d=9)", r["headline_depth"], bank) for bank in sm.STATIC_BANKS.values()]
    compared += [sm.convmixer_selector(m, c["headline_depth"], "medium") for m in sm.CONVMIXER_VARIANTS.values()]
    compared += [sm.convmixer_selector("chans", c["headline_depth"], "medium", sm.SMOOTHING_KEEP)]
    for dataset in s["unshuffle"]["datasets"]:
        compared += [{"dataset": dataset, "mixing": m, **sm.unshuffle_base("medium")} for m in ("full", "chans")]
    for selector in compared:
        assert len(seeds_of(selector)) >= 3, selector
    # every un-shuffling model's receptive field spans its image: no pixel is out of reach
    for run in (x for x in runs if x.name == "unshuffle"):
        size = sm.NATIVE_SIZE[run.config["dataset"]] // run.config["image_scale"]
        before, after = sm.unshuffle_window(run.config["depth"], run.config["kernel_size"])
        assert min(before, after) >= size - 1, run.config
        perm = PixelPermutation(size, size, seed=run.config["permutation_seed"])
        assert not sm.out_of_reach_mask(perm.order, size, size, before, after).any()
    assert all(row["out of reach"] == 0 for row in sm.unshuffle_reach("medium", oracle=False))
    assert {x.config["family"] for x in runs if x.name == "timing"} == {"resnet", "convmixer"}
    # the paper profile holds the later paper's best un-shuffler
    best = [x for x in sm.runs("paper", "unshuffle") if x.config["depth"] == 16]
    assert {(x.config["dim"], x.config["kernel_size"], x.config["mixing"]) for x in best} == \
        {(512, 7, "full"), (512, 7, "chans")}


# --- tiny end-to-end runs through the results store ---------------------------------------------------------------

_TINY_TRAIN = {"epochs": 1, "batch_size": 32, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.0,
               "schedule": "constant"}


def test_resnet_run_end_to_end(isolated_store):
    config = {"dataset": "fashion_mnist", "image_size": 14, "train_size": 64, "test_size": 40, "width": 4,
              "attack_size": 20, "epsilons_255": [0, 8], "train": _TINY_TRAIN, "conv": "separable",
              "mixing": "chans", "depth_multiplier": 3, "depth": 1, "seed": 0, "filters": "random",
              "pgd_epsilons_255": [2, 8], "pgd_steps": 2}
    run = sm.Run(sm.CHAPTER, "resnet", config, sm.train_resnet, "resnet")
    (result,) = execute([run], "quick", device="cpu", progress=False)
    # the stored per-image outcomes are those the accuracies were computed from (paired verdicts use them)
    assert sm.unpack(result, "correct_bits").shape == (40,)
    assert sm.unpack(result, "correct_bits").mean() == pytest.approx(result["accuracy"])
    np.testing.assert_allclose(sm.unpack(result, "fgsm_bits").mean(1), result["fgsm_accuracy"])
    assert sm.unpack(result, "pgd_bits").shape == (2, 20)
    np.testing.assert_allclose(sm.unpack(result, "pgd_bits").mean(1), result["pgd_accuracy"])
    assert {"accuracy", "train_time_s", "trainable_parameters", "parameters", "fgsm_accuracy", "history",
            "time_per_trainable_parameter_us", "provenance"} <= set(result)
    assert 0 <= result["accuracy"] <= 1 and result["train_time_s"] > 0
    assert len(result["fgsm_accuracy"]) == 2 and all(0 <= a <= 1 for a in result["fgsm_accuracy"])
    assert result["trainable_parameters"] < result["parameters"]  # depthwise frozen
    assert result["provenance"]["seed"] == 0 and "fashion_mnist" in result["provenance"]["datasets"]
    (again,) = execute([run], "quick", device="cpu", progress=False)  # read back, not recomputed
    assert again["provenance"]["finished"] == result["provenance"]["finished"]


def test_unshuffle_run_end_to_end(isolated_store):
    config = {"dataset": "fashion_mnist", "image_scale": 2, "train_size": 64, "test_size": 20, "dim": 8, "depth": 1,
              "kernel_size": 3, "samples": 3, "train": {**_TINY_TRAIN, "loss": "mse"}, "mixing": "chans", "seed": 0,
              "permutation_seed": 1234, "psnr_items": 20}
    (result,) = execute([sm.Run(sm.CHAPTER, "unshuffle", config, sm.train_unshuffle, "unshuffle")], "quick",
                        device="cpu", progress=False)
    assert math.isfinite(result["psnr"]) and result["psnr"] > 0
    assert 5 < result["mean_image_psnr"] < 30  # Fashion-MNIST's mean image is a blurry garment, ~10-15 dB
    # per-image PSNR (centi-dB) of all 20 test images: their mean is the stored test PSNR, up to the rounding
    assert result["psnr_items_cdb"].shape == (20,) and result["psnr_items_cdb"].dtype == np.int16
    assert result["psnr_items_cdb"].mean() / 100 == pytest.approx(result["psnr"], abs=0.01)
    samples = result["samples"]
    assert samples["original"].shape == samples["shuffled"].shape == samples["reconstructed"].shape == (3, 1, 14, 14)
    assert samples["original"].dtype == np.uint8
    perm = PixelPermutation(14, 14, seed=1234)
    np.testing.assert_array_equal(perm.shuffle(torch.from_numpy(samples["original"])).numpy(), samples["shuffled"])


def test_step_times_are_interleaved_per_step_samples():
    from lib.training import TrainConfig
    torch.manual_seed(0)
    small = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    big = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 1024), torch.nn.ReLU(),
                              torch.nn.Linear(1024, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10))
    before = small[1].weight.detach().clone()
    x, y = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8), torch.randint(0, 10, (64,))
    samples = sm.step_times({"small": small, "big": big}, (x, y), TrainConfig(optimizer="adamw", lr=1e-3,
                                                                               channels_last=False),
                            steps=7, warmup=2, device="cpu")
    assert set(samples) == {"small", "big"} and all(len(v) == 7 and min(v) > 0 for v in samples.values())
    assert np.median(samples["big"]) > 3 * np.median(samples["small"])  # ~200× the multiply-adds
    assert not torch.equal(before, small[1].weight)  # every timed step is a real optimiser step
    with pytest.raises(ValueError, match="steps"):
        sm.step_times({"small": small}, (x, y), TrainConfig(), steps=0)


def test_measure_timing_run_at_tiny_scale():
    run = next(r for r in sm.runs("quick", "timing") if r.config["family"] == "resnet")
    threads = torch.get_num_threads()
    out = sm.measure_timing({**run.config, "steps": 3, "warmup": 1}, "cpu")
    assert torch.get_num_threads() == threads  # restored after the single-threaded measurement
    assert set(out["variants"]) == set(sm.RESNET_VARIANTS) and out["clock"] == "process CPU time, 1 thread"
    for v in out["variants"].values():
        assert len(v["samples_s"]) == 3 and v["median_s"] == pytest.approx(float(np.median(v["samples_s"])))
    trainable = {k: v["trainable_parameters"] for k, v in out["variants"].items()}
    assert trainable["Chans (d=9)"] == trainable["Standard"]  # eq. (4)
    rows = sm.timing_table([{"config": run.config, **out}])
    assert len(rows) == len(sm.RESNET_VARIANTS) and rows[0]["steps timed"] == 3


def test_medium_profile_configs_run_at_tiny_scale():
    """The medium run functions as configured (16×16 CIFAR ResNet with augmentation and PGD, final-epoch evaluation;
    the 14×14 un-shuffler that reaches every pixel) on a handful of images and one epoch."""
    resnet = next(r for r in sm.runs("medium", "resnet") if r.config["mixing"] == "full"
                  and r.config["conv"] == "separable")
    config = {**resnet.config, "train_size": 64, "test_size": 50, "attack_size": 20,
              "train": {**resnet.config["train"], "epochs": 1, "batch_size": 32}}
    out = sm.train_resnet(config, "cpu")
    assert out["n_test"] == 50 and sm.unpack({**out, "config": config}, "pgd_bits").shape == (2, 20)
    assert "test_accuracy" in out["history"][-1]  # evaluated after the last epoch although eval_every > epochs
    unshuffle = next(r for r in sm.runs("medium", "unshuffle") if r.config["mixing"] == "chans")
    config = {**unshuffle.config, "train_size": 64, "test_size": 30, "dim": 8, "psnr_items": 30,
              "train": {**unshuffle.config["train"], "epochs": 1, "batch_size": 32}}
    out = sm.train_unshuffle(config, "cpu")
    assert out["samples"]["original"].shape[-2:] == (14, 14) and out["psnr_items_cdb"].shape == (30,)


def test_paper_profile_configs_run_at_tiny_scale():
    """The paper-profile run functions (SGD, augmentation, patch-1 ConvMixer, DCT smoothing) on a handful of images."""
    shrink = {"dataset": "fashion_mnist", "image_size": 28, "train_size": 40, "test_size": 20, "attack_size": 10}
    resnet = next(r for r in sm.runs("paper", "resnet") if r.config["mixing"] == "chans")
    config = {**resnet.config, **shrink, "width": 4, "depth": 1,
              "train": {**resnet.config["train"], "epochs": 1, "batch_size": 20}}
    out = sm.train_resnet(config, "cpu")
    assert len(out["fgsm_accuracy"]) == len(sm.SETTINGS["paper"]["resnet"]["epsilons_255"])
    smoothing = next(r for r in sm.runs("paper", "smoothing") if r.config.get("smoothing_keep") == 6)
    config = {**smoothing.config, **shrink, "dim": 8, "depth": 1, "keep_filters": True,
              "train": {**smoothing.config["train"], "epochs": 1, "batch_size": 20}}
    out = sm.train_convmixer(config, "cpu")
    assert out["filters"].shape == (1, 8, 8, 8)
    np.testing.assert_allclose(out["filters"], out["initial_filters"])  # Chans: the smoothed filters stay frozen
    np.testing.assert_allclose(dct_lowpass(out["filters"].astype(np.float64), 6), out["filters"], atol=1e-5)


# --- rank of the frozen filter banks (lib.spatial_rank) -------------------------------------------------------------

def test_frozen_banks_are_the_models_depthwise_init():
    banks = sr.frozen_banks(3, 5, seed=7)
    assert banks.shape == (5, 3, 3, 3) and banks.dtype == np.float64
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        layer = SeparableConv2d(5, 1, 3, depth_multiplier=3)
    np.testing.assert_array_equal(banks, layer.depthwise.weight.detach().double().view(5, 3, 3, 3).numpy())
    np.testing.assert_array_equal(sr.frozen_banks(3, 5, seed=7), banks)  # deterministic by seed
    assert not np.array_equal(sr.frozen_banks(3, 5, seed=8), banks)
    state = torch.random.get_rng_state()
    sr.frozen_banks(9, 10, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    # the distribution of a Chans model's frozen filters: PyTorch's default init, uniform ±1/3 for 3×3
    many = sr.frozen_banks(9, 400, seed=1)
    model_stem = SeparableResNet(1, mixing="chans", width=4).stem.depthwise.weight
    assert np.abs(many).max() <= 1 / 3 and model_stem.abs().max() <= 1 / 3
    assert many.var() == pytest.approx((2 / 3) ** 2 / 12, rel=0.05)


def test_random_banks_have_rank_min_d_9_and_agree_with_numpy():
    rows = sr.rank_statistics(range(1, 12), draws=100, seed=3)
    assert [(r["rank_min"], r["rank_max"]) for r in rows] == [(min(d, 9),) * 2 for d in range(1, 12)]
    assert [r["d"] for r in rows] == list(range(1, 12)) and all(r["span"] == 9 for r in rows)
    assert rows[0]["condition_mean"] == pytest.approx(1.0)  # one filter: a single singular value
    assert all(r["condition_p05"] <= r["condition_median"] <= r["condition_p95"] for r in rows)
    # more filters in the same 9-dimensional space: worse conditioned, smaller least singular value
    medians = [r["condition_median"] for r in rows[:9]]
    assert all(a < b for a, b in zip(medians, medians[1:]))
    assert rows[8]["smallest_mean"] < rows[2]["smallest_mean"] < rows[0]["smallest_mean"]
    # independent check with numpy's own rank and condition number, bank by bank
    for d in (1, 3, 8, 9, 10):
        for bank in sr.frozen_banks(d, 20, seed=d).reshape(20, d, 9):
            spectrum = sr.bank_spectrum(bank)
            assert spectrum["rank"] == np.linalg.matrix_rank(bank) == min(d, 9)
            assert spectrum["condition"] == pytest.approx(np.linalg.cond(bank), rel=1e-9)
            assert spectrum["smallest"] == pytest.approx(np.linalg.svd(bank, compute_uv=False).min(), rel=1e-9)


def test_degenerate_banks_lose_rank():
    rng = np.random.default_rng(0)
    f, g = rng.uniform(-1, 1, (2, 3, 3))
    repeated = np.stack([f, f, g])
    assert sr.bank_spectrum(repeated)["rank"] == 2 == np.linalg.matrix_rank(repeated.reshape(3, 9))
    assert sr.bank_spectrum(np.stack([f, -2 * f]))["rank"] == 1
    assert sr.bank_spectrum(np.stack([f, g, f + g]))["rank"] == 2
    assert sr.bank_spectrum(np.zeros((2, 3, 3)))["rank"] == 0
    # the static banks of the Fig 5 experiment, built by the model code: Box and Identity span one kernel only,
    # Same keeps the full rank 9 in every channel (its channels share one basis)
    weight = torch.from_numpy(sr.frozen_banks(9, 4, seed=2)).float().view(36, 1, 3, 3)
    for kind, rank in (("random", 9), ("same", 9), ("box", 1), ("identity", 1)):
        bank = static_bank(kind, weight, 9).view(4, 9, 3, 3).numpy()
        assert [sr.bank_spectrum(b)["rank"] for b in bank] == [rank] * 4, kind


def test_orthonormal_banks_have_condition_one():
    one_hot = np.eye(9).reshape(9, 3, 3)
    assert sr.bank_spectrum(one_hot) == {"rank": 9, "condition": 1.0, "smallest": 1.0, "largest": 1.0}
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((9, 9)))
    spectrum = sr.bank_spectrum(0.5 * q[:4])  # 4 orthonormal rows, scaled
    assert spectrum["rank"] == 4 and spectrum["condition"] == pytest.approx(1.0) and spectrum["smallest"] == \
        pytest.approx(0.5)
    badly = np.diag([1.0, 1e-3, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert sr.bank_spectrum(badly)["condition"] == pytest.approx(1e3)
    # a whole layer: the worst channel sets the condition number; identical channels give the bank's own
    assert sr.layer_condition(np.stack([one_hot, 2 * one_hot])) == pytest.approx(2.0)
    assert sr.layer_condition(np.stack([badly.reshape(9, 3, 3)] * 3)) == pytest.approx(1e3)
    comparison = sr.layer_condition_comparison(channels=4, layers=20, seed=0)
    assert comparison["Different"]["median"] > comparison["Same"]["median"] >= 1.0


def test_rank_figure_and_table():
    import matplotlib.pyplot as plt
    rows = sr.rank_statistics(range(1, 10), draws=30)
    table_rows = sm.rank_table(rows)
    assert [r["spans all 3×3 kernels"] for r in table_rows] == ["no"] * 8 + ["yes"]
    assert table_rows[0]["rank"] == "1" and "ConvMixer" in table_rows[0]["models"]
    plt.close(sm.rank_figure(rows))


# --- reach of the un-shuffling networks -----------------------------------------------------------------------------

def _jacobian_reachable(depth: int, kernel_size: int, perm: PixelPermutation) -> torch.Tensor:
    """(H, W) bool: does output pixel p of a random un-shuffling ConvMixer depend on original pixel p at all?"""
    torch.manual_seed(0)
    model = ConvMixer(2, depth, kernel_size=kernel_size, patch_size=1, head="image", in_channels=1, mean=(0.0,),
                      std=(1.0,)).double().eval()
    x = torch.rand(1, 1, perm.height, perm.width, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda t: model(perm.shuffle(t)), x)
    n = perm.height * perm.width
    return jacobian.reshape(n, n).diagonal().ne(0).view(perm.height, perm.width)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("depth, kernel_size, window", [(1, 3, (1, 1)), (1, 2, (0, 1)), (2, 4, (2, 4)),
                                                        (2, 5, (4, 4))])
def test_receptive_window_matches_autograd(depth, kernel_size, window):
    assert sm.unshuffle_window(depth, kernel_size) == window
    perm = PixelPermutation(7, 7, seed=5)
    mask = sm.out_of_reach_mask(perm.order, 7, 7, *window)
    assert 0 < mask.sum() < 49  # a case that tests both outcomes
    torch.testing.assert_close(~mask, _jacobian_reachable(depth, kernel_size, perm))


def test_receptive_window_of_the_chapter_models_and_refusals():
    assert sm.unshuffle_window(4, 5) == (8, 8) and sm.unshuffle_window(4, 7) == (12, 12)
    assert sm.unshuffle_window(16, 7) == (48, 48) and sm.unshuffle_window(4, 8) == (12, 16)  # 'same': 3 before, 4 after
    assert sm.receptive_window(torch.nn.Conv2d(1, 1, 5, padding=1)) == (1, 3)
    with pytest.raises(ValueError, match="stride-1"):
        sm.receptive_window(ConvMixer(4, 1, kernel_size=3, patch_size=2))


def test_out_of_reach_fraction_on_hand_computed_cases():
    identity = torch.arange(16)
    assert not sm.out_of_reach_mask(identity, 4, 4, 0, 0).any()  # nothing moves: everything in reach
    corners = identity.clone()
    corners[[0, 15]] = corners[[15, 0]]  # opposite corners swapped: they are 3 rows and 3 columns apart
    mask = sm.out_of_reach_mask(corners, 4, 4, 1, 1)
    assert mask.float().mean() == 2 / 16 and mask[0, 0] and mask[3, 3]
    assert not sm.out_of_reach_mask(corners, 4, 4, 3, 3).any()  # a window of ±3 reaches them again
    both = corners.clone()
    both[[3, 12]] = both[[12, 3]]
    assert sm.out_of_reach_mask(both, 4, 4, 2, 2).float().mean() == 4 / 16
    # direction: output 0 reads its pixel one step to the right, output 1 one step to the left
    swap = torch.tensor([1, 0, 2, 3])
    assert sm.out_of_reach_mask(swap, 1, 4, 0, 1).tolist() == [[False, True, False, False]]
    assert sm.out_of_reach_mask(swap, 1, 4, 1, 0).tolist() == [[True, False, False, False]]
    with pytest.raises(ValueError, match="not a permutation"):
        sm.out_of_reach_mask(torch.tensor([0, 0, 1, 2]), 2, 2, 1, 1)


def test_oracle_psnr_hand_computed_and_cap():
    images = torch.stack([torch.zeros(1, 2, 2), torch.full((1, 2, 2), 255.0)]).to(torch.uint8)
    one = torch.tensor([[True, False], [False, False]])
    # the unreachable pixel gets the mean image, 0.5: squared error 0.25 on 1 of 4 pixels in both images
    assert sm.oracle_psnr(images, one) == pytest.approx(10 * math.log10(16), abs=1e-4)
    assert sm.oracle_psnr(images, torch.ones(2, 2, dtype=torch.bool)) == pytest.approx(10 * math.log10(4), abs=1e-4)
    assert sm.oracle_psnr(images, torch.zeros(2, 2, dtype=torch.bool)) == pytest.approx(sm.PSNR_CAP_DB)
    same = images[:1].expand(3, -1, -1, -1)  # identical images: the mean image is each of them
    assert sm.oracle_psnr(same, torch.ones(2, 2, dtype=torch.bool)) == pytest.approx(sm.PSNR_CAP_DB)


def test_unshuffle_reach_fractions_of_both_profiles():
    quick = {(r["dataset"], r["model"]): r for r in sm.unshuffle_reach("quick", oracle=False)}
    assert quick["cifar10", "base"]["out of reach"] == pytest.approx(95 / 256)          # 16×16, ±8: 37 %
    assert quick["fashion_mnist", "base"]["out of reach"] == pytest.approx(63 / 196)    # 14×14, ±8: 32 %
    assert quick["cifar10", "papers' best (width 512)"]["out of reach"] == 0.0
    paper = {(r["dataset"], r["model"]): r for r in sm.unshuffle_reach("paper", oracle=False)}
    assert paper["cifar10", "base"]["out of reach"] == pytest.approx(621 / 1024)        # 32×32, ±12: 61 %
    assert paper["cifar10", "sweep kernel size 3"]["out of reach"] == pytest.approx(942 / 1024)  # ±4: 92 %
    assert paper["cifar10", "papers' best (width 512)"]["window"] == (48, 48)
    # a deeper or wider-kernel network reaches further
    assert paper["cifar10", "sweep depth 8"]["out of reach"] < paper["cifar10", "base"]["out of reach"] < \
        paper["cifar10", "sweep depth 2"]["out of reach"]
    assert all(math.isnan(r["oracle PSNR (dB)"]) for r in paper.values())
    # the permutation is the one the un-shuffling runs use
    run = next(r for r in sm.runs("quick", "unshuffle") if r.config["dataset"] == "cifar10")
    perm = PixelPermutation(16, 16, seed=run.config["permutation_seed"])
    expected = sm.out_of_reach_mask(perm.order, 16, 16, 8, 8).float().mean().item()
    assert quick["cifar10", "base"]["out of reach"] == pytest.approx(expected)


def test_unshuffle_reach_oracle_on_data_and_missing_dataset(monkeypatch):
    rows = {r["model"]: r for r in sm.unshuffle_reach("quick", n_images=40) if r["dataset"] == "cifar10"}
    base, shallow, best = rows["base"], rows["sweep depth 2"], rows["papers' best (width 512)"]
    assert base["oracle images"] == 40 and base["note"] == ""
    assert best["oracle PSNR (dB)"] == pytest.approx(sm.PSNR_CAP_DB)
    assert 10 < shallow["oracle PSNR (dB)"] < base["oracle PSNR (dB)"] < 30  # less in reach: lower ceiling
    table_rows = sm.reach_table(list(rows.values()))
    assert table_rows[0]["out of reach"] == "37%" and "cap" in table_rows[-1]["oracle PSNR (dB)"]

    def missing(name, split="train"):
        raise sm.data.DatasetMissingError(f"no {name}")
    monkeypatch.setattr(sm.data, "load", missing)
    rows = sm.unshuffle_reach("quick", n_images=40)
    reachable = [r for r in rows if r["out of reach"] == 0]
    assert reachable and all(r["oracle PSNR (dB)"] == sm.PSNR_CAP_DB for r in reachable)  # needs no image
    assert all(r["note"] == "dataset missing" and math.isnan(r["oracle PSNR (dB)"]) for r in rows if r["out of reach"])
    assert sm.reach_table(rows)[0]["oracle PSNR (dB)"] == "n/a"


def test_unshuffle_figure_draws_the_oracle():
    import matplotlib.pyplot as plt
    reach = sm.unshuffle_reach("quick", oracle=False)
    for i, row in enumerate(reach):
        row["oracle PSNR (dB)"] = sm.PSNR_CAP_DB if row["out of reach"] == 0 else 14.0 + i
    provenance = {"profile": "quick", "device": "cpu", "seed": 0, "torch": torch.__version__, "commit": "test",
                  "wall_time_s": 1.0, "finished": "2025-01-01T00:00:00"}
    results = [{"config": r.config, "psnr": 15.0, "mean_image_psnr": 12.0, "provenance": provenance}
               for r in sm.runs("quick", "unshuffle")]
    fig = sm.unshuffle_figure(results, "quick", oracle=reach)
    labels = [[h.get_label() for h in ax.get_children()] for ax in fig.axes]
    assert all("reach oracle" in found for found in labels)
    depth_panel = next(line for line in fig.axes[1].lines if line.get_label() == "reach oracle")
    by_model = {r["model"]: r["oracle PSNR (dB)"] for r in reach if r["dataset"] == "cifar10"}
    assert list(depth_panel.get_ydata()) == [by_model["sweep depth 2"], by_model["base"]]
    plt.close(fig)
    plt.close(sm.unshuffle_figure(results, "quick"))  # without oracle rows: the figure as before
