"""Tests of the spatial-mixing chapter: DCT smoothing, parameter counts (eqs. 1-4), the mixing switch, static banks,
FGSM against its definition, pixel permutations, spectral envelopes, verdict rules, and tiny end-to-end runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F

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

def test_verdict_rules():
    assert sm.verdict_close_and_far((0.80, 0.0), (0.79, 0.0), (0.60, 0.0)) == "supported"
    assert sm.verdict_close_and_far((0.80, 0.0), (0.70, 0.0), (0.60, 0.0)) == "partly supported"
    assert sm.verdict_close_and_far((0.80, 0.0), (0.70, 0.0), (0.69, 0.0)) == "not supported"
    # noisy seeds widen the tolerance: a 4-point gap with sd 3 points is "≈"
    assert sm.verdict_close_and_far((0.80, 0.03), (0.76, 0.03), (0.50, 0.01)) == "supported"
    assert sm.verdict_close_and_far((math.nan, 0), (0.7, 0), (0.5, 0)) == "no data"
    assert sm.verdict_greater((0.5, 0.01), (0.4, 0.01)) == "supported"
    assert sm.verdict_greater((0.4, 0.1), (0.45, 0.1)) == "inconclusive"
    assert sm.verdict_greater((0.2, 0.0), (0.4, 0.0)) == "not supported"
    assert sm.verdict_psnr_close(20.0, 19.5, 12.0) == "supported"
    assert sm.verdict_psnr_close(20.0, 17.0, 12.0) == "not supported"
    assert sm.verdict_psnr_close(12.5, 12.4, 12.0) == "inconclusive"  # Full barely beats the mean image
    assert sm.verdict_not_worse((0.50, 0.0), (0.51, 0.0)) == "supported"
    assert sm.verdict_not_worse((0.40, 0.0), (0.50, 0.0)) == "not supported"
    assert sm.verdict_relative_gain((0.13, 0.005), (0.10, 0.005), 0.25) == "supported"
    assert sm.verdict_relative_gain((0.11, 0.005), (0.10, 0.005), 0.25) == "not supported"   # +10% only
    assert sm.verdict_relative_gain((0.03, 0.014), (0.015, 0.007), 0.25) == "inconclusive"   # +100%, within noise
    assert sm.verdict_relative_gain((0.03, 0.0), (0.0, 0.0), 0.25) == "no data"


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
    assert rows[0]["verdict"] == "no data"
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
    assert "Chans 50.0 ± 0.0%" in rows["ConvMixer: Chans ≈ Full ≫ Space (accuracy)"]["ours"]
    assert sm.select(results, **sm.convmixer_selector("chans", c["headline_depth"], "quick")) == results[:1]
    assert sm.select(results, **{**sm.unshuffle_base("quick"), "depth": c["headline_depth"]}) == results[1:]


def test_runs_and_settings():
    for profile in ("quick", "paper"):
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


# --- tiny end-to-end runs through the results store ---------------------------------------------------------------

_TINY_TRAIN = {"epochs": 1, "batch_size": 32, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.0,
               "schedule": "constant"}


def test_resnet_run_end_to_end(isolated_store):
    config = {"dataset": "fashion_mnist", "image_size": 14, "train_size": 64, "test_size": 40, "width": 4,
              "attack_size": 20, "epsilons_255": [0, 8], "train": _TINY_TRAIN, "conv": "separable",
              "mixing": "chans", "depth_multiplier": 3, "depth": 1, "seed": 0, "filters": "random"}
    run = sm.Run(sm.CHAPTER, "resnet", config, sm.train_resnet, "resnet")
    (result,) = execute([run], "quick", device="cpu", progress=False)
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
              "permutation_seed": 1234}
    (result,) = execute([sm.Run(sm.CHAPTER, "unshuffle", config, sm.train_unshuffle, "unshuffle")], "quick",
                        device="cpu", progress=False)
    assert math.isfinite(result["psnr"]) and result["psnr"] > 0
    assert 5 < result["mean_image_psnr"] < 30  # Fashion-MNIST's mean image is a blurry garment, ~10-15 dB
    samples = result["samples"]
    assert samples["original"].shape == samples["shuffled"].shape == samples["reconstructed"].shape == (3, 1, 14, 14)
    assert samples["original"].dtype == np.uint8
    perm = PixelPermutation(14, 14, seed=1234)
    np.testing.assert_array_equal(perm.shuffle(torch.from_numpy(samples["original"])).numpy(), samples["shuffled"])


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
