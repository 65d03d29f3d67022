"""Spectral-leakage chapter: windows, leakage measures, the windowed layer, the ResNet, attacks, claims, one run."""

import math

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

from lib import attacks, spectra
from lib.experiments import execute
from lib.experiments import spectral_leakage as sl
from lib.filters import WINDOWS, window
from lib.filters import windows as W
from lib.layers import WindowedConv2d
from lib.models.resnet_leakage import LeakageResNet, matched_width, parameter_count
from lib.models.simple import SimpleCNN


# --- windows ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 3, 4, 7, 9, 16])
def test_windows_are_the_symmetric_design_windows(k):
    assert np.array_equal(window("hamming", k), np.hamming(k))
    reference = {"rect": scipy.signal.windows.boxcar(k), "hamming": scipy.signal.windows.hamming(k, sym=True),
                 "hann": scipy.signal.windows.hann(k, sym=True), "blackman": scipy.signal.windows.blackman(k, sym=True),
                 "kaiser": scipy.signal.windows.kaiser(k, W.KAISER_BETA, sym=True)}
    for name in WINDOWS:
        w = window(name, k)
        assert w.shape == (k,) and np.allclose(w, reference[name], atol=1e-12), name
        assert np.allclose(w, w[::-1]) and w.min() >= 0, name  # symmetric, non-negative
    # torch's default is the periodic window: equal to the symmetric one only with periodic=False
    assert np.allclose(torch.hamming_window(k, periodic=False, dtype=torch.float64).numpy(), np.hamming(k))
    if k > 2:
        assert not np.allclose(torch.hamming_window(k, dtype=torch.float64).numpy(), np.hamming(k))


def test_window2d_is_the_outer_product():
    assert np.allclose(W.window2d("hamming", 5), np.outer(np.hamming(5), np.hamming(5)))
    assert W.window2d("hamming", 7)[0, 0] == pytest.approx(0.08 ** 2)


@pytest.mark.parametrize("bad, match", [(("gauss", 5), "unknown window 'gauss'"), (("hamming", 0), "positive integer"),
                                        (("hamming", 2.5), "positive integer"), (("rect", True), "positive integer")])
def test_window_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        window(*bad)


@pytest.mark.parametrize("name, scipy_name", [("rect", "boxcar"), ("hamming", "hamming"), ("hann", "hann"),
                                              ("blackman", "blackman"), ("kaiser", ("kaiser", W.KAISER_BETA))])
def test_windowed_lowpass_is_scipy_firwin(name, scipy_name):
    for k in (7, 21):
        ours = W.windowed_lowpass(k, 0.2, name)
        assert np.allclose(ours, scipy.signal.firwin(k, 0.4, window=scipy_name), atol=1e-12)
    with pytest.raises(ValueError, match="cutoff"):
        W.ideal_lowpass(7, 0.5)


def test_leakage_measures_of_known_windows():
    n_fft = 8192
    for k in (5, 9, 31):  # the Dirichlet kernel has its first null at exactly 1/k
        assert W.main_lobe_width(window("rect", k), n_fft) == pytest.approx(2 / k, abs=2 / n_fft)
    # 3 taps: |1 + 2cos(2πf)| / 3 has its side lobe at Nyquist, |1 − 2| / 3
    assert W.peak_sidelobe_db(window("rect", 3)) == pytest.approx(20 * np.log10(1 / 3), abs=1e-6)
    assert W.peak_sidelobe_db(window("rect", 63), n_fft) == pytest.approx(-13.26, abs=0.05)
    assert -44.0 < W.peak_sidelobe_db(window("hamming", 63), n_fft) < -41.0
    assert -59.5 < W.peak_sidelobe_db(window("blackman", 63), n_fft) < -57.0
    assert W.main_lobe_width(window("hamming", 63), n_fft) == pytest.approx(4 / 63, rel=0.05)
    # a 3-tap Hamming window falls monotonically to Nyquist: no side lobe, main lobe fills the band
    assert W.peak_sidelobe_db(window("hamming", 3)) == -math.inf
    assert W.main_lobe_width(window("hamming", 3)) == 1.0
    assert W.peak_sidelobe_db(window("rect", 1)) == -math.inf
    # the taper lowers the side lobes at every size where both have one
    for k in range(7, 32, 2):
        assert W.peak_sidelobe_db(window("hamming", k)) < W.peak_sidelobe_db(window("rect", k)) - 15


def test_out_of_band_energy_known_values_and_invariances():
    delta = np.zeros((1, 5, 5))
    delta[0, 2, 2] = 1.0
    f = np.fft.fftfreq(64)
    radius = np.hypot(f[:, None], f[None, :])
    # flat spectrum: the peak is the first grid point (DC); the band is the disc of radius 0.125 around it
    assert W.out_of_band_energy(delta)[0] == pytest.approx(1 - (radius <= 0.125).mean())
    assert W.high_frequency_energy(delta)[0] == pytest.approx((radius > 0.25).mean())
    # a long tapered cosine at 0.25 cycles/pixel has nearly all its energy near ±f*
    n = np.arange(31) - 15
    tone = np.outer(np.hamming(31) * np.cos(2 * np.pi * 0.25 * n), np.hamming(31))
    assert W.out_of_band_energy(tone)[0] < 0.01
    # a 3×3 random kernel leaks far more than the windowed tone; the measure ignores scale, sign and shifts
    bank = np.random.default_rng(0).standard_normal((20, 3, 3))
    oob = W.out_of_band_energy(bank)
    assert oob.shape == (20,) and np.all((0 <= oob) & (oob <= 1)) and oob.mean() > 0.3
    assert np.allclose(W.out_of_band_energy(-3.0 * bank), oob)
    assert np.allclose(W.out_of_band_energy(torch.tensor(bank)), oob)
    assert W.out_of_band_energy(np.zeros((1, 3, 3)))[0] == 0.0
    with pytest.raises(ValueError, match="square kernels"):
        W.out_of_band_energy(np.zeros((2, 3, 4)))


# --- side-lobe leakage (lib.spectra): main lobe bounded by the first nulls -------------------------------------------

def _tone(name, k, fy=0.0, fx=0.0, two_d=True):
    """A k-tap (k×k) window applied to a cosine of frequency (fy, fx) cycles/pixel: a pure tone seen through k taps."""
    n = np.arange(k) - (k - 1) / 2
    w = window(name, k)
    if not two_d:
        return w * np.cos(2 * np.pi * fx * n)
    return np.outer(w, w) * np.cos(2 * np.pi * (fy * n[:, None] + fx * n[None, :]))


TONES = [(0.0, 0.0), (0.0, 0.125), (0.0, 0.25), (0.125, 0.25), (0.2, 0.1), (0.25, 0.25)]


def test_sidelobe_level_is_the_first_null_rule_in_1d():
    # on windows (peak at DC) it is exactly lib.filters.windows.peak_sidelobe_db, -inf where there is no side lobe
    for name in WINDOWS:
        for k in (1, 3, 5, 7, 9, 31):
            ours = spectra.peak_sidelobe_level(window(name, k), size=4096)[0]
            assert ours == pytest.approx(W.peak_sidelobe_db(window(name, k), 4096), abs=1e-9), (name, k)
    # classic values for long windows, also for a tone away from DC (the peak is found, not assumed at DC; the side
    # lobes of the mirror peak at -f0 add a little to the rectangle's)
    for f0, spread in ((0.0, 0.05), (0.2, 0.7)):
        rect, ham = spectra.peak_sidelobe_level(np.stack([_tone("rect", 63, fx=f0, two_d=False),
                                                          _tone("hamming", 63, fx=f0, two_d=False)]), size=8192)
        assert rect == pytest.approx(-13.26, abs=spread)
        assert -44.0 - 4 * spread < ham < -41.0 + 4 * spread
    # the main lobe runs from the peak to the first minima: 2/k wide for a rectangle (8 taps: nulls at ±8/64)
    _, lobe = spectra.main_lobe(window("rect", 8)[None], size=64)
    assert lobe[0].sum() == 2 * 8 + 1 and lobe[0, [0, 8, -8]].all() and not lobe[0, [9, -9]].any()


@pytest.mark.parametrize("k", [5, 7, 9])
def test_sidelobe_measures_rank_hamming_below_rect_for_tones(k):
    for two_d in (False, True):
        tones = TONES if two_d else [(0.0, f) for f in (0.0, 0.125, 0.25, 0.375)]
        rect = spectra.side_lobes(np.stack([_tone("rect", k, *t, two_d=two_d) for t in tones]), size=256)
        ham = spectra.side_lobes(np.stack([_tone("hamming", k, *t, two_d=two_d) for t in tones]), size=256)
        # the window itself (a tone at DC): the rectangle's first side lobe is the classic ≈ -13 dB at every k; a
        # 5-tap Hamming window has no side lobe at all, 7 and 9 taps are above the asymptotic -43 dB (short windows)
        assert -13.3 < rect["peak_sidelobe_db"][0] < -11.9
        assert ham["peak_sidelobe_db"][0] == (-math.inf if k == 5 else pytest.approx(
            {7: -32.36, 9: -34.77}[k], abs=0.05))
        # every tone, on and off the axes (a real tone has two peaks, ±f, whose side lobes add up: ±4 dB at these k):
        # Hamming lower by more than 15 dB, and almost no energy in side lobes
        assert np.all(rect["peak_sidelobe_db"] > -16.0) and np.all(rect["peak_sidelobe_db"] < -8.0)
        assert np.all(ham["peak_sidelobe_db"] < rect["peak_sidelobe_db"] - 15)
        assert np.all(rect["sidelobe_energy"] > 0.01) and np.all(ham["sidelobe_energy"] < 0.002)
        assert np.all(ham["sidelobe_energy"] < rect["sidelobe_energy"] / 10)
        # the Hamming window pays with a wider main lobe, which is not counted as leakage
        assert np.all(ham["main_lobe_area"] > rect["main_lobe_area"])


def test_sidelobe_measure_of_a_rect_kernel_hardly_depends_on_its_size():
    rect = {k: spectra.side_lobes(W.window2d("rect", k)[None], size=256) for k in (5, 7, 9)}
    psl = [rect[k]["peak_sidelobe_db"][0] for k in rect]
    energy = [rect[k]["sidelobe_energy"][0] for k in rect]
    assert max(psl) - min(psl) < 1.0 and max(energy) / min(energy) < 1.15
    # the fixed-band measure falls with the size: a 9×9 rectangle "leaks" far less than a 5×5 one
    old = {k: W.out_of_band_energy(W.window2d("rect", k))[0] for k in (5, 7, 9)}
    assert old[5] / old[9] > 1.5


def test_out_of_band_energy_penalises_the_wider_main_lobe_of_the_window():
    """The bias of the fixed-band measure, documented: for pure tones it scores the Hamming-tapered kernel *higher*
    (leakier) than the plain one at k = 5 and 7, because the band (0.125 around the peak) is narrower than the
    window's main lobe; only from k = 9 does the taper score lower. The side-lobe measures rank the other way."""
    for k in (5, 7, 9):
        rect = np.stack([_tone("rect", k, *t) for t in TONES])
        ham = np.stack([_tone("hamming", k, *t) for t in TONES])
        old_rect, old_ham = W.out_of_band_energy(rect), W.out_of_band_energy(ham)
        if k in (5, 7):
            assert np.all(old_rect < old_ham - 0.1), k
        else:
            assert np.all(old_ham < old_rect), k
        assert np.all(spectra.sidelobe_energy(ham) < spectra.sidelobe_energy(rect) / 20), k


def test_main_lobe_of_a_separable_kernel_is_the_product_of_the_1d_lobes():
    rng = np.random.default_rng(0)
    for trial in range(6):
        k = (3, 5, 7)[trial % 3]
        u, v = rng.standard_normal(k) * window("hamming", k) ** (trial % 2), rng.standard_normal(k)
        mag, lobe = spectra.main_lobe(np.outer(u, v)[None], size=64, min_dip_db=0)
        (_, lobe_u), (_, lobe_v) = (spectra.main_lobe(x[None], size=64, min_dip_db=0) for x in (u, v))
        assert np.array_equal(lobe[0], np.outer(lobe_u[0], lobe_v[0])), trial
        both = spectra.side_lobes(np.outer(u, v)[None], size=64, min_dip_db=0)
        each = [spectra.side_lobes(x[None], size=64, min_dip_db=0) for x in (u, v)]
        assert both["peak_sidelobe_db"][0] == pytest.approx(max(e["peak_sidelobe_db"][0] for e in each), abs=1e-9)
        assert 1 - both["sidelobe_energy"][0] == pytest.approx(
            np.prod([1 - e["sidelobe_energy"][0] for e in each]), abs=1e-12)


def test_sidelobe_measure_finds_peaks_away_from_dc_and_is_invariant():
    # a 9×9 tone at (0.25, 0.125): the main lobe is the pair of hills at ±f*, DC lies in a side lobe
    mag, lobe = spectra.main_lobe(_tone("rect", 9, 0.25, 0.125)[None], size=64)
    assert lobe[0, 16, 8] and lobe[0, -16, -8] and not lobe[0, 0, 0]
    assert np.array_equal(lobe[0], np.roll(lobe[0, ::-1, ::-1], 1, axis=(0, 1)))  # mirror symmetric (f → −f)
    bank = np.random.default_rng(1).standard_normal((12, 5, 5))
    reference = spectra.side_lobes(bank)
    assert reference["peak_sidelobe_db"].shape == (12,) and np.all(reference["peak_sidelobe_db"] <= 0)
    assert np.all((0 <= reference["sidelobe_energy"]) & (reference["sidelobe_energy"] < 1))
    shifted = np.zeros((12, 9, 9))
    shifted[:, 3:8, 1:6] = bank  # the same taps elsewhere: a phase ramp, the same magnitude
    for variant in (-2.5 * bank, bank.transpose(0, 2, 1), bank[:, ::-1, ::-1], torch.tensor(bank), shifted):
        for key, value in spectra.side_lobes(variant).items():
            assert np.allclose(value, reference[key], atol=1e-9), key
    # a single tap and a zero kernel have flat spectra: all main lobe, no side lobe
    flat = np.zeros((2, 3, 3))
    flat[0, 1, 1] = 1.0
    result = spectra.side_lobes(flat)
    assert np.all(result["peak_sidelobe_db"] == -math.inf) and np.all(result["sidelobe_energy"] == 0)
    assert np.all(result["main_lobe_area"] == 1)
    with pytest.raises(ValueError, match="shaped"):
        spectra.side_lobes(np.zeros((2, 3, 3, 3)))
    with pytest.raises(ValueError, match="do not fit"):
        spectra.side_lobes(np.zeros((1, 9, 9)), size=8)


def test_ripples_on_a_flat_main_lobe_are_not_side_lobes():
    # a 3×3 Hamming kernel is almost a single tap: its near-flat spectrum has a second top 0.01 dB below the first
    tone = _tone("hamming", 3, 0.125, 0.25)[None]
    bare = spectra.side_lobes(tone, size=256, min_dip_db=0)
    assert -0.1 < bare["peak_sidelobe_db"][0] < 0
    assert spectra.side_lobes(tone, size=256)["peak_sidelobe_db"][0] == -math.inf
    # lobes beyond real nulls are untouched: windows and tones give the same numbers with and without the rule, except
    # for a shoulder on the flank of a Kaiser tone's main lobe 60 dB down
    for name in WINDOWS:
        for k in (5, 9, 15):
            bank = np.stack([np.outer(window(name, k), window(name, k))] + [_tone(name, k, *t) for t in TONES[1:]])
            a, b = spectra.side_lobes(bank, min_dip_db=0), spectra.side_lobes(bank)
            same = a["peak_sidelobe_db"] == b["peak_sidelobe_db"]
            assert np.all(same | (a["peak_sidelobe_db"] < -60)), (name, k)
            assert np.allclose(a["sidelobe_energy"], b["sidelobe_energy"], rtol=0, atol=1e-6), (name, k)
            if name != "kaiser":
                assert all(np.array_equal(a[key], b[key]) for key in a), (name, k)


def test_kernel_leakage_reports_side_lobes_next_to_the_fixed_bands():
    torch.manual_seed(0)
    model = LeakageResNet(5, "hamming", width=4, blocks=(1,), in_channels=1)
    leak = sl.kernel_leakage(model, max_sidelobe_kernels=8)
    assert len(leak["sidelobe_energy"]) == len(leak["peak_sidelobe"]) == len(leak["layers"]) == 3
    # the stem has 4 kernels (one input channel): all measured, none sub-sampled
    first = spectra.side_lobes(model.spatial_kernels()[0][1].reshape(-1, 5, 5))
    assert leak["sidelobe_energy"][0] == pytest.approx(float(first["sidelobe_energy"].mean()))
    assert leak["peak_sidelobe"][0] == pytest.approx(float(np.mean(10 ** (first["peak_sidelobe_db"] / 20))))
    assert leak["mean_sidelobe_energy"] == pytest.approx(np.mean(leak["sidelobe_energy"]))
    assert leak["mean_peak_sidelobe_db"] == pytest.approx(20 * np.log10(np.mean(leak["peak_sidelobe"])))
    assert 0 <= leak["mean_sidelobe_energy"] < 1 and leak["mean_peak_sidelobe_db"] < 0
    assert 0 < leak["mean_out_of_band"] < 1  # the old measure is still there


# --- the windowed layer ---------------------------------------------------------------------------------------------

def test_windowed_conv_is_conv2d_with_windowed_weight_and_gradient():
    torch.manual_seed(0)
    layer = WindowedConv2d(3, 5, 7, window="hamming")
    assert torch.allclose(layer.window[0, 0].double(), torch.tensor(np.outer(np.hamming(7), np.hamming(7))))
    assert "window" in dict(layer.named_buffers()) and all(p is not layer.window for p in layer.parameters())
    x = torch.randn(2, 3, 12, 12)
    out = layer(x)
    plain = nn.Conv2d(3, 5, 7, padding=3)
    with torch.no_grad():
        plain.weight.copy_(layer.weight * layer.window)
        plain.bias.copy_(layer.bias)
    assert out.shape == (2, 5, 12, 12)
    assert torch.allclose(out, plain(x), atol=1e-5)
    out.square().sum().backward()
    plain(x).square().sum().backward()
    assert torch.allclose(layer.weight.grad, layer.window * plain.weight.grad, rtol=1e-4, atol=1e-4)
    # the window holds after an optimiser step: it multiplies the weight in every forward pass
    optimizer = torch.optim.SGD(layer.parameters(), lr=10.0)
    optimizer.step()
    with torch.no_grad():
        assert torch.allclose(layer(x), F.conv2d(x, layer.weight * layer.window, layer.bias, padding=3), atol=1e-4)
    check = sl.layer_check(kernel_size=5)
    assert all(v < 1e-4 for k, v in check.items() if k.startswith("max |∂L/∂w") or "conv2d" in k)


def test_windowed_conv_options_and_errors():
    torch.manual_seed(0)
    rect = WindowedConv2d(2, 3, 5, window="rect", bias=False)
    x = torch.randn(1, 2, 9, 9)
    assert torch.allclose(rect(x), F.conv2d(x, rect.weight, padding=2), atol=1e-6)
    assert WindowedConv2d(2, 3, 5, stride=2)(x).shape == (1, 3, 5, 5)
    assert WindowedConv2d(2, 2, (3, 3), groups=2)(x).shape == (1, 2, 9, 9)
    assert "window=hamming" in repr(WindowedConv2d(2, 3, 3))
    with pytest.raises(ValueError, match="odd kernel size"):
        WindowedConv2d(2, 3, 4)
    with pytest.raises(ValueError, match="unknown window"):
        WindowedConv2d(2, 3, 3, window="triangle")
    with pytest.raises(ValueError, match="square kernel"):
        WindowedConv2d(2, 3, (3, 5))


# --- the model --------------------------------------------------------------------------------------------------------

def test_resnet_is_resnet18_at_k3_and_windows_every_spatial_kernel():
    assert parameter_count(3, 64) == 11_173_962  # the usual CIFAR ResNet-18
    torch.manual_seed(0)
    model = LeakageResNet(5, "hamming", width=4, blocks=(1, 1), in_channels=1)
    assert sum(p.numel() for p in model.parameters()) == parameter_count(5, 4, (1, 1), in_channels=1)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    kernels = model.spatial_kernels()
    assert len(kernels) == 1 + 2 * 2  # stem + two convs per block; the 1×1 shortcut is not a spatial kernel
    windowed = [m for m in model.modules() if isinstance(m, WindowedConv2d)]
    assert len(windowed) == len(kernels)
    assert torch.allclose(kernels[0][1], windowed[0].weight * windowed[0].window)
    with pytest.raises(ValueError, match="odd"):
        LeakageResNet(4, None)
    with pytest.raises(ValueError, match="positive"):
        LeakageResNet(3, None, width=0)


def test_matched_width_matches_the_parameter_count():
    base = parameter_count(3, 64)
    width = matched_width(7)
    assert width == pytest.approx(64 * 3 / 7, abs=2)
    assert abs(parameter_count(7, width) - base) / base < 0.05
    neighbours = (width - 1, width + 1)
    assert abs(parameter_count(7, width) - base) <= min(abs(parameter_count(7, w) - base) for w in neighbours)


# --- attacks against torchattacks ---------------------------------------------------------------------------------

def small_model():
    torch.manual_seed(0)
    return SimpleCNN(1, 10, width=4, depth=1).eval()


def test_fgsm_and_pgd_match_torchattacks():
    model = small_model()
    torch.manual_seed(1)
    x, y = torch.rand(16, 1, 12, 12), torch.randint(0, 10, (16,))
    eps = 0.05
    assert torch.allclose(attacks.fgsm(model, x, y, eps), torchattacks.FGSM(model, eps=eps)(x, y), atol=1e-6)
    ours = attacks.pgd(model, x, y, eps, steps=4, step_size=0.02, random_start=False)
    theirs = torchattacks.PGD(model, eps=eps, alpha=0.02, steps=4, random_start=False)(x, y)
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert (ours - x).abs().max() <= eps + 1e-6 and (ours - x).abs().max() > eps / 2
    # a transfer attack is crafted on the source model only
    other = SimpleCNN(1, 10, width=4, depth=1).eval()
    clean = attacks.accuracy_under_attack(model, x, y, [0.0])[0]
    assert clean == pytest.approx(float((model(x).argmax(1) == y).float().mean()))
    assert attacks.accuracy_under_attack(model, x, y, [eps], source_model=other)[0] == pytest.approx(
        float((model(attacks.fgsm(other, x, y, eps)).argmax(1) == y).float().mean()))


# --- claims rule, runs, one run end to end --------------------------------------------------------------------------

def test_verdict_rule():
    from lib.claims import verdict_paired as verdict
    assert verdict([0.01, 0.012, 0.009]) == "supported"
    assert verdict([-0.01, -0.012, -0.009]) == "contradicted"
    assert verdict([-0.01, -0.012, -0.009], direction=-1) == "supported"
    assert verdict([0.02, -0.01, 0.0]) == "inconclusive"
    # two seeds: the 95% t interval is 12.7 standard errors wide on each side
    assert verdict([0.12, 0.02]) == "inconclusive"
    assert verdict([0.12, 0.119]) == "supported"
    assert verdict([0.05]) == "inconclusive (1 seed)"
    assert verdict([0.001] * 3) == "inconclusive (no spread)"  # identical seeds decide nothing
    assert verdict([]) == "not run"
    assert sl.fmt(*sl.mean_sd([0.9, 0.92])) == "91.00 ± 1.41"


N_FAKE_TEST, N_FAKE_ATTACK = 2000, 400


def _outcomes(seed, accuracy, n):
    """Per-item booleans with the given accuracy; one fixed order of the items per seed, so that a more accurate model
    of that seed gets right every item a less accurate one gets right (paired, discordant one way only)."""
    rank = np.random.default_rng(seed).permutation(n)
    return rank < round(accuracy * n)


def _fake(dataset, k, win, seed, accuracy, sle, matched=False, fgsm_drop=0.1, sle_at_init=0.76, oob=0.3,
          spatial_drop=0.3):
    eps = [0.1, 0.2, 0.3]
    bits = lambda acc, n, rows=1: sl._bits(np.stack([_outcomes(seed, acc, n)] * rows))
    attacked = {"n": N_FAKE_ATTACK, "epsilons": eps, "pgd_epsilons": eps[1:], "clean": accuracy,
                "clean_bits": bits(accuracy, N_FAKE_ATTACK),
                "fgsm": [accuracy - fgsm_drop] * 3, "fgsm_bits": bits(accuracy - fgsm_drop, N_FAKE_ATTACK, 3),
                "pgd": [accuracy - 0.2] * 2, "pgd_bits": bits(accuracy - 0.2, N_FAKE_ATTACK, 2),
                "transfer": [accuracy - 0.05] * 3, "transfer_bits": bits(accuracy - 0.05, N_FAKE_ATTACK, 3),
                "spatial": {"worst_case": accuracy - spatial_drop,
                            "worst_case_bits": bits(accuracy - spatial_drop, N_FAKE_ATTACK)}}
    # the fixed-band out-of-band energy is the same everywhere: the claims must not read it
    return {"config": {"dataset": dataset, "kernel_size": k, "window": win, "seed": seed, "matched": matched,
                       "width": 8 if not matched else 3},
            "accuracy": accuracy, "correct_bits": bits(accuracy, N_FAKE_TEST), "n_test": N_FAKE_TEST,
            "parameters": 1000, "train_time_s": 1.0, "attacks": attacked,
            "leakage": {"mean_sidelobe_energy": sle, "mean_peak_sidelobe_db": -20 * sle, "mean_out_of_band": oob,
                        "mean_high_frequency": sle / 2},
            "leakage_at_init": {"mean_sidelobe_energy": sle_at_init, "mean_peak_sidelobe_db": -20 * sle_at_init,
                                "mean_out_of_band": oob, "mean_high_frequency": sle_at_init / 2}}


def test_bits_round_trip():
    correct = np.random.default_rng(0).random((3, 1001)) < 0.5
    assert np.array_equal(sl.unpack_bits(sl._bits(correct), correct.shape), correct)


def test_claims_table_applies_the_rule_to_paired_seeds():
    fake = []
    # per-seed noise shared by all configurations, and a jitter of the windowed runs (paired differences must spread)
    for seed, noise, jitter in zip(range(3), (0.0, 0.002, -0.001), (0.001, -0.001, 0.0)):
        fake += [_fake("fashion_mnist", 3, None, seed, 0.90 + noise, 0.8),
                 _fake("fashion_mnist", 7, None, seed, 0.90 + noise, 0.6, spatial_drop=0.3),
                 _fake("fashion_mnist", 7, "hamming", seed, 0.92 + noise + jitter, 0.5 + jitter,
                       fgsm_drop=0.06 + noise, spatial_drop=0.3),
                 _fake("fashion_mnist", 7, "hamming_shuffled", seed, 0.92 + noise, 0.7),
                 _fake("fashion_mnist", 7, "hann", seed, 0.90 + noise - 0.03, 0.5),
                 _fake("fashion_mnist", 7, "hamming", seed, 0.88 + noise + jitter, 0.5, matched=True)]
    rows = {r["claim"]: r for r in sl.claims(fake, "medium")}
    vs3 = rows["FMNIST: 7×7+Hamming more accurate than 3×3"]
    assert vs3["verdict"] == "supported"
    # +2 pp on average, 40 of the 2,000 test images discordant one way: McNemar p < 0.05 in every seed
    assert vs3["ours"].startswith("7×7H − 3×3: +2.00 ± 0.10 pp (n=3; McNemar p < 0.05 in 3 of 3 seeds)")
    assert rows["FMNIST: 7×7+Hamming more accurate than 7×7"]["verdict"] == "supported"
    assert rows["FMNIST: 7×7+Hamming at 3×3's parameter count more accurate than 3×3"]["verdict"] == "contradicted"
    leak_row = rows["FMNIST: training makes 3×3 kernels leak more than 7×7+Hamming (change of side-lobe energy "
                    "from initialisation)"]
    assert leak_row["verdict"] == "supported"
    assert leak_row["ours"] == "3×3 − 7×7H, change: 30.00 ± 0.10 pp; trained values: 30.00 ± 0.10 pp"
    assert rows["truncating to 7 taps leaks more than a Hamming taper (peak side lobe)"]["verdict"] == \
        "supported (exact computation)"
    # robustness is the accuracy lost to the attack: FGSM costs the windowed model 4 points less, PGD the same
    fgsm = rows["FMNIST: 7×7+Hamming more robust than 3×3, FGSM ε=0.2 (smaller accuracy drop)"]
    assert fgsm["verdict"] == "supported"
    assert rows["FMNIST: 7×7+Hamming more robust than 3×3, PGD ε=0.2 (smaller accuracy drop)"]["verdict"].startswith(
        "inconclusive")
    assert rows["FMNIST: 7×7+Hamming more robust than 7×7, spatial (worst of rotations ±30°, shifts ±3 px) (smaller "
                "accuracy drop)"]["verdict"].startswith("inconclusive")
    # the control: same taps shuffled, same accuracy as Hamming → the shape did not matter here
    control = rows["FMNIST: the taper's shape, not its shrinkage, helps (7×7+Hamming more accurate than the same taps "
                   "shuffled)"]
    assert control["verdict"].startswith("inconclusive")
    assert rows["FMNIST: the shuffled control leaks more than 7×7+Hamming (change of side-lobe energy)"][
        "verdict"] == "supported"
    assert rows["FMNIST: 7×7+Hann more accurate than 7×7"]["verdict"] == "contradicted"
    # the same trained leakage, but the windowed kernels started that low: training did not make 3×3 leak more
    wobble = {0: 0.01, 1: -0.01, 2: 0.0}  # per-seed noise on the 3×3 runs' change, centred on zero
    same_change = [dict(r, leakage_at_init={"mean_sidelobe_energy": r["leakage"]["mean_sidelobe_energy"] - 0.04 + (
        wobble[r["config"]["seed"]] if r["config"]["kernel_size"] == 3 else 0.0)}) for r in fake]
    assert {r["claim"]: r for r in sl.claims(same_change, "medium")}[leak_row["claim"]]["verdict"] == "inconclusive"
    assert rows["CIFAR-100: larger Hamming kernels beat 3×3"]["verdict"] == "not run"
    from lib.claims import QUICK_VERDICT, judged
    quick = judged(sl.claims(fake, "quick"), "quick")
    assert all(r["verdict"] in (QUICK_VERDICT, "not run", "supported (exact computation)") for r in quick)
    # tables and figures of the new arms run on the same fake results
    assert {r["model"] for r in sl.robustness_table(fake)} >= {"3×3", "7×7 + Hamming", "7×7 + shuffled Hamming"}
    assert len(sl.leakage_table(fake)) == 5
    fig = sl.plot_window_families(fake, "fashion_mnist")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["none", "Hamming", "shuffled Hamming", "Hann"]
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_headline_table_summarises_the_three_models_over_seeds():
    fake = [_fake(ds, k, win, seed, acc + 0.01 * seed, sle, fgsm_drop=drop)
            for ds in ("fashion_mnist", "cifar10")
            for k, win, acc, sle, drop in ((3, None, 0.80, 0.2, 0.3), (7, None, 0.85, 0.6, 0.2),
                                           (7, "hamming", 0.86, 0.1, 0.1), (7, "hann", 0.5, 0.1, 0.1))
            for seed in range(3)]
    rows = sl.headline_table(fake)
    assert [(r["dataset"], r["model"]) for r in rows] == [
        (ds, m) for ds in ("fashion_mnist", "cifar10") for m in ("3×3", "7×7", "7×7 + Hamming")]  # no Hann row
    hamming = rows[2]
    assert hamming["seeds"] == 3 and hamming["accuracy (%)"] == "87.00 ± 1.00"  # 86, 87, 88
    assert hamming["side-lobe energy (%)"] == "10.00 ± 0.00"
    # FGSM at the middle ε (0.2): accuracy minus the drop, item by item on the attacked subset
    assert hamming["FGSM (%)"] == "77.00 ± 1.00 at ε = 0.2"
    assert rows[0]["FGSM (%)"] == "51.00 ± 1.00 at ε = 0.2"
    # the unofficial reproduction reported CIFAR-10 only
    assert hamming["unofficial reproduction (%)"] == "—" and rows[5]["unofficial reproduction (%)"] == "93.2"
    assert rows[4]["unofficial reproduction (%)"] == "91.7"


def test_learned_leakage_figure_plots_the_side_lobe_measures():
    fake = [_fake("fashion_mnist", k, win, seed, 0.9, sle + 0.01 * seed)
            for k, win, sle in ((3, None, 0.2), (7, None, 0.7), (7, "hamming", 0.4)) for seed in range(2)]
    fig = sl.plot_learned_leakage(fake, "fashion_mnist")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("side-lobe energy") and titles[1].startswith("peak side-lobe level")
    trained_plain = fig.axes[0].lines[0]  # the first errorbar: no window, trained, k = 3 and 7
    assert np.allclose(trained_plain.get_xdata(), [3, 7]) and np.allclose(trained_plain.get_ydata(), [0.205, 0.705])
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_runs_cover_the_profiles():
    quick, medium, paper = sl.runs("quick"), sl.runs("quick"), sl.runs("paper")
    medium = sl.runs("medium")
    assert len({r.key for r in quick}) == len(quick) == 14
    assert {r.config["kernel_size"] for r in quick} == {3, 7}
    assert {r.config["kernel_size"] for r in paper} == {3, 5, 7, 9}
    assert {r.config["dataset"] for r in paper} == {"fashion_mnist", "cifar10"}
    assert len({r.config["seed"] for r in paper}) >= 3
    matched = [r for r in paper if r.config["matched"]]
    assert matched and all(r.config["width"] < sl.SETTINGS["paper"]["width"] for r in matched)
    assert all(r.config["attack"] for r in paper if not r.config["matched"])
    assert {r.config["dataset"] for r in sl.runs("paper", datasets=("cifar100",))} == {"cifar100"}
    assert len(sl.runs("quick", section="matched")) == 4
    # medium: the arms, full data, >= 3 seeds for every arm, attacks on 1,000 images with the spatial attack
    assert len({r.key for r in medium}) == len(medium)
    arms = {}
    for r in medium:
        c = r.config
        arms.setdefault((c["dataset"], c["kernel_size"], c["window"], c["matched"]), set()).add(c["seed"])
        assert c["n_train"] is None and c["n_test"] is None
        if c["attack"]:
            assert c["attack"]["n"] >= 1000 and c["attack"]["spatial"] and len(c["attack"]["pgd_epsilons"]) == 2
    assert all(len(seeds) >= 3 for seeds in arms.values())
    fmnist = {(k, w) for ds, k, w, m in arms if ds == "fashion_mnist" and not m}
    assert {(k, w) for k in (3, 5, 7) for w in (None, "hamming")} <= fmnist
    assert {(7, "hann"), (7, "blackman"), (7, "hamming_shuffled")} <= fmnist
    assert {(3, None), (7, None), (7, "hamming")} <= {(k, w) for ds, k, w, m in arms if ds == "cifar10"}
    assert all(r.config["attack"] for r in medium if r.config["kernel_size"] in (3, 7) and not r.config["matched"])
    import json
    json.dumps([r.config for r in medium])
    assert "cifar10" in sl.describe("medium") and "shuffled Hamming" in sl.describe("medium")
    with pytest.raises(ValueError, match="unknown section"):
        sl.runs("quick", section="theory")
    with pytest.raises(ValueError, match="unknown profile"):
        sl.runs("fast")


def test_one_run_end_to_end(isolated_store, monkeypatch):
    monkeypatch.setenv("BOOK_CACHE_DIR", str(isolated_store / "cache"))
    config = {"dataset": "fashion_mnist", "seed": 0, "kernel_size": 5, "window": "hamming", "width": 4,
              "matched": False, "blocks": [1], "n_train": 200, "n_test": 100, "channels_last": None,
              "train": sl._train(epochs=1, lr=0.05, batch_size=50),
              "attack": {"epsilons": [0.05, 0.2], "n": 20, "pgd_steps": 2, "pgd_epsilons": [0.2], "spatial": True,
                         "surrogate": {"width": 4, "depth": 1}}}
    run = sl.Run(sl.CHAPTER, "tiny", config, sl.train_and_probe, "sweep")
    (result,) = execute([run], "quick", device="cpu", progress=False)
    assert 0.0 <= result["accuracy"] <= 1.0 and result["parameters"] == parameter_count(5, 4, (1,), in_channels=1)
    assert result["stem_kernels"].shape == (4, 5, 5)
    for key in ("leakage", "leakage_at_init"):
        assert len(result[key]["out_of_band"]) == 3 and 0 < result[key]["mean_out_of_band"] < 1
        assert len(result[key]["sidelobe_energy"]) == 3 and 0 <= result[key]["mean_sidelobe_energy"] < 1
    a = result["attacks"]
    assert a["epsilons"] == [0.05, 0.2] and all(len(a[k]) == 2 for k in ("fgsm", "transfer")) and len(a["pgd"]) == 1
    assert a["pgd"][0] <= a["clean"] and all(0 <= v <= 1 for v in a["fgsm"] + a["pgd"] + a["transfer"])
    # the stored per-image outcomes are the accuracies
    assert sl._correct(result).mean() == pytest.approx(result["accuracy"])
    fgsm = sl.unpack_bits(a["fgsm_bits"], (2, 20))
    assert np.allclose(fgsm.mean(1), a["fgsm"])
    spatial = a["spatial"]
    assert len(spatial["accuracy"]) == len(attacks.spatial_grid()) and spatial["worst_case"] <= min(spatial["accuracy"])
    # the identity transform of the grid is the clean image
    assert spatial["accuracy"][attacks.spatial_grid().index((0.0, 0, 0))] == pytest.approx(a["clean"])
    assert result["provenance"]["profile"] == "quick" and result["provenance"]["seed"] == 0
    # stored: a second execute reads it back instead of training again
    (again,) = execute([run], "quick", device="cpu", progress=False)
    assert again["accuracy"] == result["accuracy"] and again["provenance"] == result["provenance"]
    # same seed, same numbers
    from lib.training import seed_everything
    seed_everything(0)
    assert sl.train_and_probe(dict(config), torch.device("cpu"))["accuracy"] == pytest.approx(result["accuracy"])


def test_paper_profile_cifar_run_at_tiny_scale():
    """A paper-profile CIFAR-10 configuration, shrunk (data, width, epochs, attack), runs on the CPU: 3 channels,
    augmentation, the attacks; the full paper profile needs the GPU."""
    paper = next(r.config for r in sl.runs("paper") if r.config["dataset"] == "cifar10" and r.config["attack"]
                 and r.config["window"] == "hamming")
    config = {**paper, "width": 4, "blocks": [1], "n_train": 100, "n_test": 50,
              "train": {**paper["train"], "epochs": 1, "eval_every": 1, "batch_size": 50},
              "attack": {**paper["attack"], "n": 10, "pgd_steps": 1, "surrogate": {"width": 4, "depth": 1}}}
    from lib.training import seed_everything
    seed_everything(0)
    result = sl.train_and_probe(config, torch.device("cpu"))
    assert result["stem_kernels"].shape == (4, paper["kernel_size"], paper["kernel_size"])
    assert len(result["attacks"]["pgd"]) == len(paper["attack"]["epsilons"]) == 4
    assert result["parameters"] == parameter_count(paper["kernel_size"], 4, (1,), in_channels=3)


def test_shuffled_hamming_control_has_the_same_taps_without_the_taper():
    for k in (3, 5, 7):
        control, hamming = W.window2d("hamming_shuffled", k), W.window2d("hamming", k)
        assert np.allclose(np.sort(control.ravel()), np.sort(hamming.ravel()))  # same shrinkage, tap for tap
        assert control[k // 2, k // 2] < 1.0                                    # the peak has moved
        assert np.array_equal(control, W.window2d("hamming_shuffled", k))       # fixed, not random per call
    # no taper, so no leakage reduction: its spectrum keeps side lobes far above the Hamming window's
    psl = spectra.peak_sidelobe_level(np.stack([W.window2d("hamming_shuffled", 7), W.window2d("hamming", 7)]))
    assert psl[0] > psl[1] + 10
    layer = WindowedConv2d(2, 3, 7, "hamming_shuffled")
    assert torch.allclose(layer.window[0, 0].double(), torch.from_numpy(W.window2d("hamming_shuffled", 7)))
    with pytest.raises(ValueError, match="unknown window"):
        WindowedConv2d(2, 3, 7, "hamming_sorted")


def test_spatial_attack_is_the_worst_case_over_an_exact_grid():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    x, y = torch.rand(30, 1, 8, 8), torch.randint(0, 3, (30,))
    grid = attacks.spatial_grid(rotations=(0, 90), translations=(0, 1))
    assert len(grid) == 8 and (0.0, 0, 0) in grid
    correct = attacks.correct_under_spatial_attack(model, x, y, rotations=(0, 90), translations=(0, 1))
    with torch.no_grad():
        # independent computation: a 90° rotation is an exact transpose-and-flip (torchvision's angles turn
        # clockwise), a 1-px shift a roll with zero fill
        rotated = torch.rot90(x, -1, dims=(2, 3))
        shifted = torch.zeros_like(x)
        shifted[..., 1:, 1:] = x[..., :-1, :-1]
        for transform, image in (((0.0, 0, 0), x), ((90.0, 0, 0), rotated), ((0.0, 1, 1), shifted)):
            expected = (model(image).argmax(1) == y).numpy()
            assert np.array_equal(correct[grid.index(transform)], expected), transform


def test_quick_matched_configuration_trains_on_the_cpu_in_channels_last():
    """The quick profile's matched 7×7 network (width 3-4, 1×1 stride-2 shortcuts with few channels) once hung CI in
    the oneDNN channels_last backward; the trainer now refuses channels_last for those convolutions."""
    matched = next(r.config for r in sl.runs("quick", section="matched") if r.config["window"] is None)
    assert matched["channels_last"] is True and matched["width"] < 8
    config = {**matched, "n_train": 200, "n_test": 100, "attack": None,
              "train": {**matched["train"], "epochs": 1, "eval_every": 1, "batch_size": 50}}
    from lib.training import seed_everything
    seed_everything(0)
    with pytest.warns(RuntimeWarning, match="channels_last switched off"):
        result = sl.train_and_probe(config, torch.device("cpu"))
    assert 0 <= result["accuracy"] <= 1 and result["n_test"] == 100


def test_attack_budgets_are_written_in_the_units_of_the_data():
    assert sl.epsilon_text(4 / 255, "cifar10") == "4/255"
    assert sl.epsilon_text(2 / 255, "cifar100") == "2/255"
    assert sl.epsilon_text(0.05, "fashion_mnist") == "0.05"
    assert sl.epsilon_text(0.0157, "cifar10") == "0.0157"  # not a whole number of grey levels: left as it is
