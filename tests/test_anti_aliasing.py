"""Tests of the anti-aliasing chapter: Table 1's filters, the blur-pool layers, the shift metrics, VGG13 and one tiny
end-to-end run through the results store."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from lib import metrics
from lib.claims import format_mean_sd, verdict_greater, verdict_not_worse
from lib.filters import BLUR_FAMILIES, blur_filter
from lib.filters.blur import TABLE1, blur_kernel_2d, filter_label, printed_weights, table1_filters
from lib.layers import BlurPool, MaxBlurPool
from lib.layers.blurpool import BlurMaxPool, ConvBlurPool, MaxPool, make_pool
from lib.models.vgg import VGG13


# --- filters --------------------------------------------------------------------------------------------------------

def test_table1_has_19_rows_in_paper_order():
    rows = table1_filters()
    assert len(rows) == 19
    assert rows[0] == ("rect", 1) and rows[-1] == ("least_squares", 7)
    assert [filter_label(*r) for r in rows[:3]] == ["Delta", "Rectangle-2", "Rectangle-3"]


@pytest.mark.parametrize("family,taps,printed", TABLE1)
def test_filters_match_printed_taps_of_table1(family, taps, printed):
    weights = blur_filter(family, taps)
    assert weights.shape == (taps,)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(weights, weights[::-1], atol=1e-12)  # linear phase: symmetric
    # the paper prints two decimals, scaled so that the outer tap is ±1
    np.testing.assert_allclose(printed_weights(weights), printed, atol=0.0051)


@pytest.mark.parametrize("family", BLUR_FAMILIES)
def test_one_tap_is_the_delta_for_every_family(family):
    np.testing.assert_array_equal(blur_filter(family, 1), [1.0])


def test_family_identities_of_appendix_e():
    np.testing.assert_allclose(blur_filter("binomial", 2), blur_filter("rect", 2))
    np.testing.assert_allclose(blur_filter("binomial", 3), blur_filter("triangle", 3))
    tri5 = np.convolve(blur_filter("rect", 3), blur_filter("rect", 3))
    np.testing.assert_allclose(blur_filter("triangle", 5), tri5)
    np.testing.assert_allclose(blur_filter("window", 6), scipy.signal.firwin(6, 0.5, window="boxcar"))
    kernel = blur_kernel_2d("binomial", 5)
    assert kernel.sum() == pytest.approx(1.0) and np.linalg.matrix_rank(kernel) == 1  # separable


def test_every_filter_passes_dc_and_suppresses_nyquist():
    for family, taps in table1_filters()[1:]:
        weights = blur_filter(family, taps)
        nyquist = abs(np.sum(weights * (-1.0) ** np.arange(taps)))
        assert nyquist < 0.35, (family, taps, nyquist)


@pytest.mark.parametrize("family,taps,message", [
    ("gauss", 3, "unknown blur filter family 'gauss'"),
    ("triangle", 4, "odd number of taps"),
    ("least_squares", 6, "odd number of taps"),
    ("rect", 0, "between 1 and"),
    ("binomial", 2.5, "positive integer"),
])
def test_bad_filters_raise_clear_errors(family, taps, message):
    with pytest.raises(ValueError, match=message):
        blur_filter(family, taps)


# --- layers ---------------------------------------------------------------------------------------------------------

def test_blurpool_matches_scipy_circular_convolution():
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    layer = BlurPool(("binomial", 5), stride=2, padding_mode="circular").double()
    kernel = blur_kernel_2d("binomial", 5)
    expected = np.stack([[scipy.signal.convolve2d(x[n, c].numpy(), kernel, mode="same", boundary="wrap")[::2, ::2]
                          for c in range(3)] for n in range(2)])
    np.testing.assert_allclose(layer(x).numpy(), expected, atol=1e-12)


def test_even_blur_puts_extra_pixel_bottom_right():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = BlurPool(("rect", 2), stride=1, padding_mode="circular")(x)
    # output[i, j] averages x[i:i+2, j:j+2] (wrapping): the filter looks down/right
    assert out[0, 0, 0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)
    assert out[0, 0, 3, 3] == pytest.approx((15 + 12 + 3 + 0) / 4)


def test_maxblurpool_with_delta_is_maxpool_and_equivariant_with_blur():
    x = torch.randn(3, 5, 16, 16)
    np.testing.assert_array_equal(MaxBlurPool(None, padding_mode="circular")(x), F.max_pool2d(x, 2))
    np.testing.assert_array_equal(MaxPool()(x), F.max_pool2d(x, 2))
    for layer in (MaxBlurPool(("triangle", 5), padding_mode="circular"),
                  BlurMaxPool(("rect", 3), padding_mode="circular")):
        shifted = layer(torch.roll(x, (2, -4), (2, 3)))
        torch.testing.assert_close(shifted, torch.roll(layer(x), (1, -2), (2, 3)))
        torch.testing.assert_close(layer(x), layer.dense(x)[..., ::2, ::2])


@pytest.mark.parametrize("size", [5, 7, 9, 15, 16, 17, 33])
@pytest.mark.parametrize("padding_mode", ["circular", "reflect"])
def test_pool_output_size_is_maxpool2d_for_odd_sizes(size, padding_mode):
    x = torch.randn(2, 3, size, size + 2)
    expected = F.max_pool2d(x, 2, 2)
    # the delta filter reproduces nn.MaxPool2d value for value, at odd sizes too (33 → 16, not 17)
    np.testing.assert_array_equal(MaxBlurPool(None, padding_mode=padding_mode)(x), expected)
    for layer in (MaxBlurPool(("binomial", 5), padding_mode=padding_mode),
                  BlurMaxPool(("triangle", 3), padding_mode=padding_mode), MaxPool(padding_mode=padding_mode)):
        out = layer(x)
        assert out.shape == expected.shape, type(layer).__name__
        torch.testing.assert_close(out, layer.dense(x)[..., ::2, ::2][..., :out.shape[-2], :out.shape[-1]])


@pytest.mark.parametrize("filter", [("rect", 2), ("binomial", 5), ("binomial", 7), ("window", 6)])
def test_separable_blur_equals_the_2d_kernel(filter):
    x = torch.randn(2, 4, 13, 16, dtype=torch.float64)
    for mode in ("circular", "reflect", "zeros"):
        full = BlurPool(filter, 2, mode).double()(x)
        separable = BlurPool(filter, 2, mode, separable=True).double()(x)
        # both kernels are stored in float32: they agree to its rounding, not to float64's
        torch.testing.assert_close(separable, full, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kernel_size,padding,size", [(3, 1, 16), (3, 1, 15), (1, 0, 9), (5, 2, 12)])
def test_conv_blur_pool_replaces_a_strided_conv(kernel_size, padding, size):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 6, kernel_size, stride=2, padding=padding)
    x = torch.randn(2, 3, size, size)
    # same output size as the strided conv for every filter; with the delta filter it is the strided layer itself
    torch.testing.assert_close(ConvBlurPool.from_conv(conv, None)(x), torch.relu(conv(x)))
    for filter in (("binomial", 5), ("rect", 2)):
        assert ConvBlurPool.from_conv(conv, filter)(x).shape == conv(x).shape


def test_conv_blur_pool_is_equivariant_to_even_circular_shifts():
    torch.manual_seed(0)
    layer = ConvBlurPool(3, 4, 3, stride=2, padding=1, filter=("binomial", 5), padding_mode="circular",
                         norm=torch.nn.BatchNorm2d(4)).eval()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(layer(torch.roll(x, (2, -4), (2, 3))), torch.roll(layer(x), (1, -2), (2, 3)))
    strided = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1, padding_mode="circular")
    with torch.no_grad():
        strided.weight.copy_(layer.conv.weight), strided.bias.copy_(layer.conv.bias)
    plain = torch.relu(strided(torch.roll(x, (2, -4), (2, 3)))) - torch.roll(torch.relu(strided(x)), (1, -2), (2, 3))
    assert float(plain.detach().abs().max()) < 1e-5  # a multiple of the stride is exact for the strided conv too
    with torch.no_grad():
        odd = layer(torch.roll(x, 1, 3)) - layer(x)
        odd_plain = torch.relu(strided(torch.roll(x, 1, 3))) - torch.relu(strided(x))
    assert float(odd.abs().mean()) < 0.8 * float(odd_plain.abs().mean())  # and the blur damps the odd shift's change


def test_conv_blur_pool_rejects_layers_it_cannot_replace():
    with pytest.raises(ValueError, match="from_conv needs"):
        ConvBlurPool.from_conv(torch.nn.Conv2d(4, 4, 3, stride=2, groups=2))
    with pytest.raises(ValueError, match="padding_mode"):
        ConvBlurPool(3, 4, 3, padding_mode="wrap")


def test_blur_reduces_aliasing_of_an_odd_shift():
    x = torch.randn(8, 4, 16, 16)
    def gap(layer):
        return float((layer(torch.roll(x, 1, 3)) - layer(x)).abs().mean())
    assert gap(MaxBlurPool(("binomial", 7), padding_mode="circular")) < 0.6 * gap(MaxPool())


def test_layers_handle_tiny_maps_and_padding_modes():
    assert BlurPool(("binomial", 7), padding_mode="circular")(torch.randn(1, 2, 2, 2)).shape == (1, 2, 1, 1)
    assert MaxBlurPool(("rect", 4), padding_mode="reflect")(torch.randn(1, 2, 7, 7)).shape == (1, 2, 3, 3)  # as MaxPool2d
    with pytest.raises(ValueError, match="padding_mode"):
        BlurPool(("rect", 2), padding_mode="wrap")
    with pytest.raises(ValueError, match="unknown pool"):
        make_pool("avg")
    with pytest.raises(ValueError, match="sum to zero"):
        BlurPool([1.0, -1.0])


# --- toy example and metrics ----------------------------------------------------------------------------------------

def test_toy_example_numbers_of_section_3_2():
    signal = metrics.TOY_SIGNAL
    np.testing.assert_array_equal(metrics.toy_max_pool(signal, 0), [0, 1, 0, 1])
    np.testing.assert_array_equal(metrics.toy_max_pool(signal, 1), [1, 1, 1, 1])
    np.testing.assert_array_equal(metrics.toy_max_pool(signal, -1), [1, 1, 1, 1])
    np.testing.assert_allclose(metrics.toy_max_blur_pool(signal, ("triangle", 3), 0), [0.5, 1, 0.5, 1])
    np.testing.assert_allclose(metrics.toy_max_blur_pool(signal, ("triangle", 3), 1), [0.75] * 4)
    # the strided results are the even samples of the dense max-pool
    dense = metrics.toy_dense_max_pool(signal, 0)
    np.testing.assert_array_equal(dense[::2], [0, 1, 0, 1])


def test_consistency_over_grid_is_the_mean_over_all_pairs():
    rng = np.random.default_rng(0)
    predicted = rng.integers(0, 3, size=(7, 9))
    brute = np.mean([[np.mean(p[:, None] == p[None, :])] for p in predicted])
    assert metrics.consistency_over_grid(predicted, 3) == pytest.approx(brute)
    assert metrics.agreement([1, 2, 3], [1, 0, 3]) == pytest.approx(2 / 3)


def test_variation_and_adversary():
    probs = np.array([[0.5, 0.5, 0.5], [0.0, 1.0, 0.5]])
    np.testing.assert_allclose(metrics.classification_variation(probs), [0.0, np.std([0, 1, 0.5])])
    shifts = np.array([[0, 0], [0, 1], [2, -2]])
    correct = np.array([[True, True, False], [True, False, True], [False, True, True]])
    np.testing.assert_allclose(metrics.adversary_accuracy(correct, shifts, [0, 1, 2]), [2 / 3, 1 / 3, 0])


def test_total_variation_and_cosine_distance():
    assert metrics.total_variation(torch.ones(2, 3, 3, 3)) == 0.0
    kernel = torch.tensor([[[[1.0, -1.0], [0.0, 0.0]]]])
    # |(-1) - 1| + |0 - 0| horizontally, |0 - 1| + |0 - (-1)| vertically, over sum |w| = 2
    assert metrics.total_variation(kernel) == pytest.approx((2 + 0 + 1 + 1) / 2)
    a = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(metrics.cosine_distance(a, a), torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(metrics.cosine_distance(a, -a), 2 * torch.ones(2))
    # a feature present in one map and absent (zero) in the other is maximally far from equivariant; both zero is not
    one = torch.zeros(1, 2, 1, 2)
    one[0, 0, 0, 0] = 1.0
    torch.testing.assert_close(metrics.cosine_distance(one, torch.zeros_like(one)), torch.tensor([0.5]))
    tiny = 5e-5 * torch.ones(1, 2, 1, 1)
    torch.testing.assert_close(metrics.cosine_distance(tiny, -tiny), torch.tensor([2.0]))  # scale-free


def test_periodic_upsampling_is_equivariant_by_its_factor():
    feat = torch.randn(1, 2, 4, 4)
    up = metrics.upsample_circular(feat, 16)
    torch.testing.assert_close(metrics.upsample_circular(torch.roll(feat, 1, 3), 16), torch.roll(up, 4, 3))
    torch.testing.assert_close(up.mean(), feat.mean(), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="integer factor"):
        metrics.upsample_circular(torch.randn(1, 1, 3, 3), 16)


def test_verdict_rules():
    assert verdict_greater([0.9, 0.91], [0.8, 0.81]) == "supported"
    assert verdict_greater([0.7], [0.8]) == "inconclusive (1 seed)"  # nothing estimates the noise
    # one seed each, proportions on a test sample: its binomial noise decides (2 se ≈ 0.06 on 500, 0.013 on 10,000)
    assert verdict_greater([0.38], [0.40], sampling_n=500) == "inconclusive"
    assert verdict_greater([0.38], [0.40], sampling_n=10_000) == "contradicted"
    assert verdict_greater([0.98], [0.73], sampling_n=500) == "supported"
    assert verdict_greater([0.9, 0.5], [0.7, 0.71]) == "inconclusive"
    assert format_mean_sd([0.9, 0.92], 100) == "91.0 ± 1.4 (n=2)"
    assert verdict_not_worse([93.0], [93.4], 1.0) == "supported"
    assert verdict_not_worse([95.0], [93.4], 1.0) == "supported"
    assert verdict_not_worse([91.0], [93.4], 1.0) == "inconclusive (1 seed)"
    assert verdict_not_worse([0.91], [0.934], 0.01, sampling_n=10_000) == "contradicted"
    assert verdict_not_worse([0.36], [0.394], 0.01, sampling_n=500) == "inconclusive"
    assert verdict_not_worse([0.91, 0.912], [0.934, 0.936], 0.01) == "contradicted"


# --- the model ------------------------------------------------------------------------------------------------------

def test_vgg13_size_and_exact_modulo_equivariance():
    full = VGG13(width=64)
    convs = sum(p.numel() for n, p in full.named_parameters() if "weight" in n and p.dim() == 4)
    assert convs == 9_402_048  # torchvision VGG13's conv weights
    torch.manual_seed(0)
    model = VGG13(width=2, pool="maxblur", filter=("binomial", 3)).eval()
    x = torch.rand(2, 3, 32, 32)
    features = model.features_by_layer(x)
    shifted = model.features_by_layer(torch.roll(x, (4, 4), (2, 3)))
    # two downsamplings: shifts by 4 move pool2 (ds) by exactly 1 (circular convolutions everywhere)
    torch.testing.assert_close(shifted["pool2 (ds)"], torch.roll(features["pool2 (ds)"], (1, 1), (2, 3)))
    torch.testing.assert_close(shifted["conv1_2"], torch.roll(features["conv1_2"], (4, 4), (2, 3)))
    torch.testing.assert_close(features["softmax"].sum(1), torch.ones(2, 1, 1))
    torch.testing.assert_close(model(x), features["classifier"][..., 0, 0])


# --- experiments ----------------------------------------------------------------------------------------------------

def test_profiles_cover_the_issue():
    from lib.experiments import anti_aliasing as aa
    assert aa.SETTINGS["quick"]["filters"] == [("rect", 1), ("rect", 2), ("triangle", 3), ("binomial", 5),
                                               ("binomial", 7)]
    paper = aa.runs("paper", section="table1")
    keys = {(r.config["family"], r.config["taps"], r.config["augment"]) for r in paper}
    assert len(keys) == 38
    assert len({r.key for r in aa.runs("quick")}) == len(aa.runs("quick"))
    with pytest.raises(ValueError, match="unknown section"):
        aa.runs("quick", section="densenet")


def test_timing_run_shapes():
    from lib.experiments import anti_aliasing as aa
    out = aa.time_forward({"width": 2, "batch": 4, "repeats": 2, "filters": [["binomial", 3]]}, torch.device("cpu"))
    assert [r["model"] for r in out["rows"]] == ["Baseline", "+ dense pool", "+ dense pool + 3×3 filter",
                                                 "+ dense pool + 3×3 filter (separable)"]
    assert out["rows"][0]["added_percent"] == 0.0 and all(r["median_ms"] > 0 for r in out["rows"])
    # every round's time is kept (for intervals), and the median is theirs
    assert all(len(r["times_ms"]) == 2 and r["median_ms"] == pytest.approx(np.median(r["times_ms"]))
               for r in out["rows"])
    assert out["device"] == "cpu"


@pytest.fixture(scope="module")
def cifar():
    from lib import data
    try:
        data.load("cifar10", "train"), data.load("cifar10", "test")  # decoded once, kept in memory
    except data.DatasetMissingError:
        pytest.skip("CIFAR-10 not available (set DATA_DIR)")


def _tiny_run(**changes):
    from lib.experiments import Run, anti_aliasing as aa
    run = next(r for r in aa.runs("quick", section="equivariance") if r.config["taps"] > 1)
    config = {**run.config, "train_size": 60, "test_size": 40, "epochs": 1, "batch_size": 30, "width": 2,
              "grid_images": 10, "grid_range": 2, "equivariance_images": 3, "equivariance_range": 2, **changes}
    return Run(run.chapter, "tiny-" + run.name, config, run.fn, run.section)


def test_end_to_end_run_through_the_store(cifar, tmp_path, monkeypatch):
    from lib.experiments import execute
    from lib.experiments import anti_aliasing as aa
    monkeypatch.setenv("BOOK_CACHE_DIR", str(tmp_path))
    run = _tiny_run()
    (result,) = execute([run], "quick", device="cpu", progress=False)
    assert (tmp_path / "results" / "quick" / "anti_aliasing" / f"{run.key}.json").is_file()
    for key in ("accuracy", "accuracy_random_shift", "consistency", "consistency_grid"):
        assert 0.0 <= result[key] <= 1.0
    assert result["variation"].shape == (10,) and (result["variation"] >= 0).all()
    assert result["accuracy_by_shift"].shape == (4, 4)
    assert np.all(np.diff(result["adversary_accuracy"]) <= 0)  # a stronger adversary never helps
    assert result["adversary_accuracy"][0] == pytest.approx(result["accuracy_by_shift"][2, 2])
    assert result["adversary_max_shift"].tolist() == [0, 1]  # [-m, m]² must fit in the grid [-2, 2)²
    grid = aa.unpack_bits(result, "grid_correct_bits")  # the per-image grid reproduces the stored aggregates
    assert grid.shape == (10, 16)
    np.testing.assert_allclose(grid.mean(0).reshape(4, 4), result["accuracy_by_shift"])
    np.testing.assert_allclose(metrics.adversary_accuracy(grid, aa.shift_grid(2), [0, 1]), result["adversary_accuracy"])
    eq = result["equivariance"]
    assert eq["maps"].shape == (len(eq["layers"]), 4, 4)
    assert np.abs(eq["maps"][eq["layers"].index("conv1_2")]).max() < 1e-5  # before any subsampling
    assert np.abs(eq["maps"][eq["layers"].index("pool1 (ds)")][::2, ::2]).max() < 1e-5  # modulo-2
    assert set(result["total_variation"]) == {f"conv{b}_{c}" for b in range(1, 6) for c in (1, 2)}
    assert result["provenance"]["profile"] == "quick" and result["provenance"]["seed"] == 0
    rows = aa.claims([result], None, "quick")
    assert rows and all(r["verdict"] in {"supported", "partly supported", "contradicted", "inconclusive",
                                          "inconclusive (1 seed)", "not run"} for r in rows)
    assert aa.table1_rows([result])[0]["filter"] == "Binomial-5"


def test_same_seed_same_numbers(cifar):
    from lib.experiments import anti_aliasing as aa
    from lib.training import seed_everything
    config = {**_tiny_run().config, "equivariance": False}
    outputs = []
    for _ in range(2):
        seed_everything(config["seed"])  # what execute() does before every run
        outputs.append(aa.train_and_analyse(dict(config), torch.device("cpu")))
    assert outputs[0]["accuracy"] == outputs[1]["accuracy"]
    assert outputs[0]["total_variation"] == outputs[1]["total_variation"]
    np.testing.assert_array_equal(outputs[0]["variation"], outputs[1]["variation"])


def test_paper_profile_run_at_tiny_scale(cifar):
    """A paper-profile run (all 32×32 shifts) with its sizes shrunk: the same code path as on the GPU."""
    from lib.experiments import anti_aliasing as aa
    from lib.training import seed_everything
    runs = aa.runs("paper")
    assert len(runs) == 55  # 17 filters × 2 + 2 headline filters × 2 × 3 seeds + 4 blur→pool × 2 + timing
    run = next(r for r in runs if r.config.get("family") == "least_squares" and r.config["taps"] == 7)
    config = {**run.config, "train_size": 40, "test_size": 20, "epochs": 1, "batch_size": 20, "width": 2,
              "grid_images": 1}
    seed_everything(0)
    result = run.fn(config, torch.device("cpu"))
    assert result["accuracy_by_shift"].shape == (32, 32)
    assert result["adversary_accuracy"].shape == (17,)
    assert result["adversary_accuracy"][-1] <= result["adversary_accuracy"][0]


# --- paired verdicts of the claims table ----------------------------------------------------------------------------

def test_mcnemar_is_the_exact_binomial_test_of_discordant_pairs():
    from lib.claims import mcnemar_p, paired_outcomes
    a = np.zeros(100, bool)
    b = a.copy()
    b[:10] = True                                     # 10 discordant pairs, all for b
    assert mcnemar_p(a, b) == pytest.approx(2 * 0.5 ** 10)
    b[10] = False
    a[10] = True                                      # 10 for b, 1 for a: 2 · P(B ≤ 1), B ~ Bin(11, ½)
    assert mcnemar_p(a, b) == pytest.approx(2 * (1 + 11) / 2 ** 11)
    assert mcnemar_p(a, a) == 1.0
    comparison = paired_outcomes({0: a, 1: a}, {0: b, 2: b})
    assert comparison["seeds"] == [0] and comparison["differences"] == [pytest.approx(0.09)]
    with pytest.raises(ValueError, match="same shape"):
        mcnemar_p(a, b[:50])


def test_paired_verdict_counts_the_shared_test_sample_and_refuses_zero_spread():
    from lib.claims import verdict_paired
    assert verdict_paired([0.001] * 3) == "inconclusive (no spread)"       # identical seeds decide nothing
    assert verdict_paired([0.010, 0.012, 0.011]) == "supported"
    # the same seeds, on a test sample whose own noise (sd 1 point per seed difference) swamps the effect
    assert verdict_paired([0.010, 0.012, 0.011], sampling_variances=[1e-4] * 3) == "inconclusive"
    assert verdict_paired([-0.010, -0.012, -0.011], sampling_variances=[1e-6] * 3) == "contradicted"
    assert verdict_paired([0.02]) == "inconclusive (1 seed)" and verdict_paired([]) == "not run"


def _fake_result(pool, family, taps, augment, seed, accuracy, consistency, variation=0.1, tv=1.0, n=10_000,
                 circular=True, spread=0.0):
    """A stored result with per-image outcomes drawn at the given rates (same images for every model)."""
    from lib.experiments import anti_aliasing as aa
    # outcomes at one rate are mostly the same images for every model of a seed (1% flipped per model), so equal
    # rates differ by noise only
    rng = np.random.default_rng(1000 * seed + 7 * taps + augment)
    correct = (np.random.default_rng(seed).random(n) < accuracy) ^ (rng.random(n) < 0.01)
    consistent = np.random.default_rng(seed + 10).random(n) < consistency
    grid = np.tile(correct[:50, None], (1, 16))
    by_shift = np.full((4, 4), accuracy)
    by_shift[0, 0] -= spread * (1 + 0.05 * seed)  # a little seed-to-seed spread
    config = {"pool": pool, "family": family, "taps": taps, "augment": augment, "seed": seed, "test_size": None,
              "grid_images": 50, "grid_range": 2, "circular": circular}
    return {"config": config, "label": aa.model_label(pool, family, taps), "accuracy": float(correct.mean()),
            "consistency": float(consistent.mean()), "accuracy_random_shift": float(correct.mean()),
            "correct_bits": np.packbits(correct), "consistent_bits": np.packbits(consistent), "n_test": n,
            "variation": rng.random(1000) * variation, "total_variation": {"conv1_1": tv + 0.01 * seed},
            "accuracy_by_shift": by_shift, "adversary_max_shift": np.array([0, 1]),
            "adversary_accuracy": np.array([correct[:50].mean()] * 2), "grid_correct_bits": np.packbits(grid.ravel())}


def test_claims_verdicts_come_from_paired_seeds():
    from lib.experiments import anti_aliasing as aa
    results = []
    for seed in (0, 1, 2):
        for augment in (False, True):
            results.append(_fake_result("max", "rect", 1, augment, seed, 0.80, 0.70 if not augment else 0.85,
                                        variation=0.3, tv=2.0, spread=0.2))
            for family, taps in (("triangle", 5), ("binomial", 5), ("binomial", 7)):
                results.append(_fake_result("maxblur", family, taps, augment, seed, 0.80, 0.97,
                                            variation=0.1, tv=1.0, spread=0.02))
    rows = {r["claim"]: r for r in aa.claims(results, None, "medium")}
    consistency = rows["No augmentation: blurring raises consistency (Triangle-5)"]
    assert consistency["verdict"] == "supported" and "McNemar p < 0.05 in 3 of 3 seeds" in consistency["ours"]
    assert consistency["paper"] == "88.1% → 98.2%"                      # the paper's row for the filter we measured
    assert rows["No augmentation: blurring raises consistency (Binomial-5)"]["paper"] == "88.1% → 96.3%"
    # equal accuracy rates: the paired interval straddles zero
    assert rows["No augmentation: blurring raises accuracy (Binomial-7)"]["verdict"] == "inconclusive"
    # ... and "at most 1 point lower" holds, the 1% of flipped images being well inside the margin
    assert rows["With augmentation: blurring keeps accuracy (at most 1 point lower) (Triangle-5)"]["verdict"] == \
        "supported"
    assert rows["Blurring lowers the median classification variation (each filter × setting vs the baseline)"][
        "verdict"] == "supported"
    assert rows["Learned filters get smoother: normalised TV lower with Triangle-5 (every conv layer, both settings)"][
        "verdict"] == "supported"
    degrade = next(r for c, r in rows.items() if c.startswith("Accuracy degrades with shift"))
    assert degrade["verdict"] == "supported"
    large = next(r for c, r in rows.items() if "very large rectangles" in c)
    assert large["verdict"] == "not run"

    # one seed: whatever the p-value, no verdict
    one_seed = [r for r in results if r["config"]["seed"] == 0]
    rows = {r["claim"]: r for r in aa.claims(one_seed, None, "medium")}
    assert rows["No augmentation: blurring raises consistency (Triangle-5)"]["verdict"] == "inconclusive (1 seed)"

    # the zero-padded control is its own row and never mixes into the baseline
    padded = [_fake_result("max", "rect", 1, True, 0, 0.81, 0.85, circular=False)]
    assert aa.group(results + padded)[("max", "rect", 1, True)] == aa.group(results)[("max", "rect", 1, True)]
    rows = aa.claims(results, None, "medium", padding=padded)
    assert any(r["claim"].startswith("Zero padding") and r["verdict"] == "inconclusive (1 seed)" for r in rows)


def test_timing_interval_and_cpu_verdict():
    from lib.experiments import anti_aliasing as aa
    rng = np.random.default_rng(0)
    base = list(10 + rng.normal(0, 0.1, 40))
    rows = [{"model": "Baseline", "median_ms": float(np.median(base)), "times_ms": base}]
    for name, factor in (("+ dense pool", 1.03), ("+ dense pool + 7×7 filter", 1.12)):
        t = [v * factor for v in base]
        rows.append({"model": name, "median_ms": float(np.median(t)), "times_ms": t})
    ratio = aa.timing_ratio(rows[2], rows[0])
    assert ratio["median"] == pytest.approx(12.0) and ratio["low"] == pytest.approx(12.0)
    timing = {"rows": rows, "width": 16, "batch": 100, "device": "cpu"}
    row = aa.claims([], timing, "medium")[-1]
    assert row["verdict"].startswith("not judged (CPU timing")
    assert aa.claims([], {**timing, "device": "cuda"}, "medium")[-1]["verdict"] == "supported"  # 12% < 2 × 12.4%
