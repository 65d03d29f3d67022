"""Spectral-leakage chapter: windows, leakage measures, the windowed layer, the ResNet, attacks, claims, one run."""

import math

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

from lib import attacks
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
    assert sl.verdict([0.01, 0.012, 0.009]) == "supported"
    assert sl.verdict([-0.01, -0.012, -0.009]) == "contradicted"
    assert sl.verdict([-0.01, -0.012, -0.009], direction=-1) == "supported"
    assert sl.verdict([0.02, -0.01, 0.0]) == "inconclusive"
    # two seeds: the 95% t interval is 12.7 standard errors wide on each side
    assert sl.verdict([0.12, 0.02]) == "inconclusive"
    assert sl.verdict([0.12, 0.119]) == "supported"
    assert sl.verdict([0.05]) == "inconclusive (1 seed)"
    assert sl.verdict([]) == "not run"
    assert sl.fmt(*sl.mean_sd([0.9, 0.92])) == "91.00 ± 1.41"


def _fake(dataset, k, win, seed, accuracy, oob, matched=False, fgsm_drop=0.1, oob_at_init=0.76):
    attacked = {"epsilons": [0.1, 0.2, 0.3], "clean": accuracy, "fgsm": [accuracy - fgsm_drop] * 3,
                "pgd": [accuracy - 0.2] * 3, "transfer": [accuracy - 0.05] * 3}
    return {"config": {"dataset": dataset, "kernel_size": k, "window": win, "seed": seed, "matched": matched,
                       "width": 8 if not matched else 3},
            "accuracy": accuracy, "parameters": 1000, "train_time_s": 1.0, "attacks": attacked,
            "leakage": {"mean_out_of_band": oob, "mean_high_frequency": oob / 2},
            "leakage_at_init": {"mean_out_of_band": oob_at_init, "mean_high_frequency": oob_at_init / 2}}


def test_claims_table_applies_the_rule_to_paired_seeds():
    fake = []
    for seed, noise in zip(range(3), (0.0, 0.002, -0.001)):
        fake += [_fake("fashion_mnist", 3, None, seed, 0.90 + noise, 0.8),
                 _fake("fashion_mnist", 7, None, seed, 0.90 + noise, 0.6),
                 _fake("fashion_mnist", 7, "hamming", seed, 0.92 + noise, 0.5, fgsm_drop=0.06 + noise),
                 _fake("fashion_mnist", 7, "hamming", seed, 0.88 + noise, 0.5, matched=True)]
    rows = {r["claim"]: r for r in sl.claims(fake, "paper")}
    assert rows["FMNIST: 7×7+Hamming beats 3×3 (accuracy)"]["verdict"] == "supported"
    assert rows["FMNIST: 7×7+Hamming beats 3×3 (accuracy)"]["ours"] == "7×7H − 3×3: 2.00 ± 0.00 pp"
    assert rows["FMNIST: 7×7+Hamming at 3×3's parameter count beats 3×3"]["verdict"] == "contradicted"
    leak_row = rows["FMNIST: training makes 3×3 kernels leak more than 7×7+Hamming (change of out-of-band energy "
                    "from initialisation)"]
    assert leak_row["verdict"] == "supported"
    assert rows["truncating to 7 taps leaks more than a Hamming taper (peak side lobe)"]["verdict"] == \
        "holds (exact computation)"
    # robustness is the accuracy lost to the attack: FGSM costs the windowed model 4 points less, PGD the same
    assert rows["FMNIST: 7×7+Hamming more robust than 3×3, FGSM ε=0.2 (smaller accuracy drop)"]["verdict"] == "supported"
    assert rows["FMNIST: 7×7+Hamming more robust than 3×3, PGD ε=0.2 (smaller accuracy drop)"]["verdict"] == \
        "inconclusive"
    # the same trained leakage, but the windowed kernels started that low: training did not make 3×3 leak more
    wobble = {0: 0.01, 1: -0.01, 2: 0.0}  # per-seed noise on the 3×3 runs' change, centred on zero
    same_change = [dict(r, leakage_at_init={"mean_out_of_band": r["leakage"]["mean_out_of_band"] - 0.04 + (
        wobble[r["config"]["seed"]] if r["config"]["kernel_size"] == 3 else 0.0)}) for r in fake]
    assert {r["claim"]: r for r in sl.claims(same_change, "paper")}[leak_row["claim"]]["verdict"] == "inconclusive"
    assert rows["CIFAR-100: larger Hamming kernels beat 3×3"]["verdict"] == "not run"
    quick = sl.claims(fake, "quick")
    assert all("provisional" in r["verdict"] for r in quick if r["verdict"] not in ("not run",)
               and "exact computation" not in r["verdict"])


def test_runs_cover_the_profiles():
    quick, paper = sl.runs("quick"), sl.runs("paper")
    assert len({r.key for r in quick}) == len(quick) == 12
    assert {r.config["kernel_size"] for r in quick} == {3, 7}
    assert {r.config["kernel_size"] for r in paper} == {3, 5, 7, 9}
    assert {r.config["dataset"] for r in paper} == {"fashion_mnist", "cifar10"}
    assert len({r.config["seed"] for r in paper}) >= 3
    matched = [r for r in paper if r.config["matched"]]
    assert matched and all(r.config["width"] < sl.SETTINGS["paper"]["width"] for r in matched)
    assert all(r.config["attack"] for r in paper if r.config["kernel_size"] in (3, 7) and not r.config["matched"])
    assert {r.config["dataset"] for r in sl.runs("paper", datasets=("cifar100",))} == {"cifar100"}
    assert len(sl.runs("quick", section="matched")) == 4
    with pytest.raises(ValueError, match="unknown section"):
        sl.runs("quick", section="theory")
    with pytest.raises(ValueError, match="unknown profile"):
        sl.runs("fast")


def test_one_run_end_to_end(isolated_store, monkeypatch):
    monkeypatch.setenv("BOOK_CACHE_DIR", str(isolated_store / "cache"))
    config = {"dataset": "fashion_mnist", "seed": 0, "kernel_size": 5, "window": "hamming", "width": 4,
              "matched": False, "blocks": [1], "n_train": 200, "n_test": 100, "channels_last": None,
              "train": sl._train(epochs=1, lr=0.05, batch_size=50),
              "attack": {"epsilons": [0.05, 0.2], "n": 20, "pgd_steps": 2, "surrogate": {"width": 4, "depth": 1}}}
    run = sl.Run(sl.CHAPTER, "tiny", config, sl.train_and_probe, "sweep")
    (result,) = execute([run], "quick", device="cpu", progress=False)
    assert 0.0 <= result["accuracy"] <= 1.0 and result["parameters"] == parameter_count(5, 4, (1,), in_channels=1)
    assert result["stem_kernels"].shape == (4, 5, 5)
    for key in ("leakage", "leakage_at_init"):
        assert len(result[key]["out_of_band"]) == 3 and 0 < result[key]["mean_out_of_band"] < 1
    a = result["attacks"]
    assert a["epsilons"] == [0.05, 0.2] and all(len(a[k]) == 2 for k in ("fgsm", "pgd", "transfer"))
    assert a["pgd"][1] <= a["clean"] and all(0 <= v <= 1 for v in a["fgsm"] + a["pgd"] + a["transfer"])
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
