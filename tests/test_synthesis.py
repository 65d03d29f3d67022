"""Synthesis chapter: the variants differ exactly where they should, the run list, the claims' rules on synthetic
results, one tiny run end to end through the store, the figures, the widget frames and the scoreboard."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lib.data import Augment
from lib.claims import QUICK_VERDICT, judged, verdict_base
from lib.experiments import Run, execute
from lib.experiments import synthesis as syn
from lib.filters import window
from lib.layers.blurpool import BlurPool, MaxBlurPool, MaxPool
from lib.layers.padding import CircularPadConv2d, circular_pad
from lib.layers.windowed import WindowedConv2d
from lib.models.separable_resnet import SeparableConv2d
from lib.models.synthesis_net import SynthesisNet
from lib.training import TrainConfig, fit


def _model(variant, width=4, seed=0, **overrides):
    torch.manual_seed(seed)
    return SynthesisNet(**{**syn.model_switches({**syn.SETTINGS["quick"], "width": width}, variant), **overrides,
                           "filter": tuple(syn.SETTINGS["quick"]["blur_filter"])})


def _params(model):
    return {k: v for k, v in model.state_dict().items()}


# --- the variants -------------------------------------------------------------------------------------------------

def test_blurpool_variant_changes_only_the_downsampling_and_uses_the_chapter_layer():
    base, blur = _model("baseline"), _model("blurpool")
    # same seed, same parameters: the pools carry no parameters, so the initialisations coincide
    pb, pv = _params(base), _params(blur)
    learned = [k for k in pb if not k.startswith("pools")]
    assert learned == [k for k in pv if not k.startswith("pools")]
    assert all(torch.equal(pb[k], pv[k]) for k in learned)
    assert all(isinstance(p, MaxPool) for p in base.pools) and all(type(p) is MaxBlurPool for p in blur.pools)
    x = torch.randn(2, 8, 16, 16)
    reference = MaxBlurPool(("triangle", 5), 2, 2, "reflect")
    for pool in blur.pools:
        assert torch.equal(pool.blur.kernel, BlurPool(("triangle", 5)).kernel)
        assert torch.allclose(pool(x), reference(x))
    assert torch.equal(base.pools[0](x), F.max_pool2d(x, 2))


def test_circular_variant_pads_every_spatial_conv_circularly():
    base, circ = _model("baseline"), _model("circular")
    assert all(type(c) is nn.Conv2d and c.padding_mode == "zeros" for c in base.convs)
    assert all(isinstance(c, CircularPadConv2d) and c.padding_mode == "circular" for c in circ.convs)
    assert all(torch.equal(a, b) for a, b in zip(_params(base).values(), _params(circ).values()))
    conv = circ.convs[1]
    x = torch.randn(2, conv.in_channels, 8, 8)
    expected = F.conv2d(circular_pad(x, (1, 1, 1, 1)), conv.weight)
    assert torch.allclose(conv(x), expected, atol=1e-6)
    # circular convolutions and circular pooling: a circular shift by the total stride (8) commutes with the features
    circ.eval()
    image = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        features, shifted = circ.features_by_layer(image), circ.features_by_layer(torch.roll(image, (8, 8), (2, 3)))
    assert torch.allclose(torch.roll(features["pool3 (ds)"], (1, 1), (2, 3)), shifted["pool3 (ds)"], atol=1e-5)


def test_hamming_variant_tapers_every_spatial_kernel_and_k7_does_not():
    k7, k7h = _model("k7"), _model("k7_hamming")
    taper = torch.tensor(np.outer(window("hamming", 7), window("hamming", 7)), dtype=torch.float32)
    assert all(type(c) is nn.Conv2d and c.kernel_size == (7, 7) for c in k7.convs)
    assert all(isinstance(c, WindowedConv2d) and c.window_name == "hamming" for c in k7h.convs)
    for (_, effective), conv in zip(k7h.spatial_kernels(), k7h.convs):
        assert torch.allclose(effective, conv.weight.detach() * taper)
    assert [n for n, _ in k7.spatial_kernels()] == ["stem", "conv1", "conv2", "conv3"]


def test_separable_variants_and_the_frozen_depthwise_filters():
    sep, chans = _model("separable"), _model("chans")
    assert all(isinstance(c, SeparableConv2d) for c in sep.convs + chans.convs)
    assert all(w.requires_grad for w in sep.depthwise_weights())
    assert not any(w.requires_grad for w in chans.depthwise_weights())
    assert all(c.pointwise.weight.requires_grad for c in chans.convs)
    before = [w.detach().clone() for w in chans.depthwise_weights()]
    before_sep = [w.detach().clone() for w in sep.depthwise_weights()]
    pointwise = [c.pointwise.weight.detach().clone() for c in chans.convs]
    x, y = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (16,))
    # a constant rate: one-cycle starts at lr 0, and one step would then change nothing at all
    config = TrainConfig(epochs=1, batch_size=16, lr=0.1, schedule="constant", augment=Augment(translate=4, flip=True))
    for model in (chans, sep):
        fit(model, (x, y), None, config=config, device="cpu", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, chans.depthwise_weights()))
    assert any(not torch.equal(a, c.pointwise.weight) for a, c in zip(pointwise, chans.convs))
    assert any(not torch.equal(a, b) for a, b in zip(before_sep, sep.depthwise_weights()))
    # the pairs combine the switches exactly
    pair = _model("chans_blurpool")
    assert not any(w.requires_grad for w in pair.depthwise_weights()) and all(type(p) is MaxBlurPool
                                                                              for p in pair.pools)


def test_bad_switches_fail_with_one_clear_message():
    with pytest.raises(ValueError, match="unknown mixing"):
        SynthesisNet(mixing="space")
    with pytest.raises(ValueError, match="odd"):
        SynthesisNet(kernel_size=4)
    with pytest.raises(ValueError, match="padding='zeros'"):
        SynthesisNet(kernel_size=7, window="hamming", padding="circular")
    with pytest.raises(ValueError, match="unknown variant"):
        syn.model_switches(syn.SETTINGS["quick"], "k9")


# --- the run list -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", ["quick", "medium", "paper"])
def test_run_list_is_unique_serialisable_and_seeded(profile):
    runs = syn.runs(profile)
    assert runs and all(r.chapter == syn.CHAPTER and r.fn is syn.train_and_measure for r in runs)
    assert len({r.key for r in runs}) == len(runs) and len({r.name for r in runs}) == len(runs)
    for r in runs:
        assert json.loads(json.dumps(r.config)) == r.config
    per_variant = {v: {r.config["seed"] for r in runs if r.config["variant"] == v} for v in syn.VARIANTS}
    assert set(per_variant) == set(syn.VARIANTS)
    minimum = 2 if profile == "quick" else 3
    assert all(len(seeds) >= minimum for seeds in per_variant.values())
    # one common recipe: the variants differ only in their model switches
    shared = {json.dumps({k: v for k, v in r.config.items() if k not in ("variant", "model", "seed")},
                         sort_keys=True) for r in runs}
    assert len(shared) == 1
    assert syn.runs(profile, section="variants") == runs
    with pytest.raises(ValueError, match="unknown section"):
        syn.runs(profile, section="timing")


def test_medium_is_full_cifar10():
    s = syn.SETTINGS["medium"]
    assert s["n_train"] is None and s["n_test"] is None and len(s["seeds"]) >= 3
    assert "full CIFAR-10" in syn.describe("medium") or "all 50,000" in syn.describe("medium")


# --- claims on synthetic results ----------------------------------------------------------------------------------

N = 400


def _fake(variant, seed, *, moment1=5.0, high=0.3, sidelobe=0.2, kernel_high=0.3, coverage=1.5, consistent=0.9,
          fgsm=0.4, rng=None):
    rng = rng or np.random.default_rng(seed)
    bits = lambda p: np.packbits((np.arange(N) < int(round(p * N))).astype(np.uint8))
    clean = np.ones((1, N), bool)
    fgsm_rows = np.stack([np.arange(N) < int(round(f * N)) for f in (0.8, 0.6, fgsm, 0.2)])
    return {"config": {"variant": variant, "seed": seed}, "n_test": N, "consistent_bits": bits(consistent),
            "correct_bits": bits(0.8), "accuracy": 0.8, "consistency": consistent, "equivariance_mean": 0.1,
            "moment1": moment1 + 0.01 * rng.standard_normal(), "moment2": 40.0, "sensitivity_high": high,
            "rho_tau": 0.5, "kernels": {"mean_coverage": coverage, "leakage": {
                "mean_high_frequency": kernel_high, "mean_sidelobe_energy": sidelobe, "mean_out_of_band": 0.5}},
            "attacks": {"n": N, "epsilons": [1, 2, 4, 8], "pgd_epsilons": [2, 4], "clean": 1.0,
                        "clean_bits": np.packbits(clean.astype(np.uint8)),
                        "fgsm": [float(r.mean()) for r in fgsm_rows],
                        "fgsm_bits": np.packbits(fgsm_rows.astype(np.uint8).ravel()), "pgd": [0.3, fgsm - 0.1]}}


def _synthetic(seeds=(0, 1, 2)):
    """Effects built in: BlurPool lowers moment 1 and high-frequency sensitivity and raises consistency; Hamming
    *raises* side-lobe energy (a contradiction by construction); Chans has more kernel high-frequency energy and the
    same consistency as the learned separable; FGSM accuracy falls with moment 1 over the variants; the pairs add
    exactly."""
    m1 = {"baseline": 6.0, "separable": 6.5, "chans": 7.0, "blurpool": 4.0, "circular": 6.2, "k7": 5.0,
          "k7_hamming": 3.0, "chans_blurpool": 5.0, "k7_hamming_blurpool": 1.0}
    cons = {"baseline": 0.80, "separable": 0.80, "chans": 0.80, "blurpool": 0.90, "circular": 0.85, "k7": 0.80,
            "k7_hamming": 0.85, "chans_blurpool": 0.90, "k7_hamming_blurpool": 0.95}
    out = []
    for seed in seeds:
        for v in syn.VARIANTS:
            out.append(_fake(v, seed, moment1=m1[v], high=0.1 if "blurpool" in v else 0.3,
                             sidelobe=0.3 if v == "k7_hamming" else 0.2, kernel_high=0.5 if v == "chans" else 0.3,
                             coverage=1.5, consistent=cons[v], fgsm=round(0.9 - 0.1 * m1[v], 3),
                             rng=np.random.default_rng(100 * seed + list(syn.VARIANTS).index(v))))
    return out


def test_claims_on_synthetic_results_give_the_expected_verdicts():
    rows = {r["id"]: r for r in syn.claims(_synthetic(), "medium")}
    assert list(rows) == [p["id"] for p in syn.PREDICTIONS]
    assert rows["blur_sensitivity"]["verdict"] == "supported"
    assert rows["blur_sensitivity_high"]["verdict"] == "inconclusive (no spread)"   # identical seeds decide nothing
    assert rows["blur_consistency"]["verdict"] == "supported"                        # +10 pp on 400 images
    assert rows["hamming_sensitivity"]["verdict"] == "supported"
    assert rows["hamming_leakage"]["verdict"] == "inconclusive (no spread)"
    assert verdict_base(rows["chans_consistency"]["verdict"]) == "inconclusive"       # no difference at all
    assert rows["moment_robustness"]["verdict"] == "supported"
    # 0.9 − 0.8 − 0.9 + 0.8 = 0 on every image and seed: exactly additive, which decides nothing (no spread)
    assert rows["additive_chans_blur"]["verdict"] == "inconclusive (no spread)"
    assert rows["additive_hamming_blur"]["verdict"] == "supported"                   # 1 − 3 − 4 + 6 = 0
    assert rows["blur_fgsm"]["verdict"] == "supported"                               # drop 0.5 vs 0.7
    for row in rows.values():
        assert verdict_base(row["verdict"]) is not None, row
        assert row["ours"] and row["paper"].startswith("prediction:") and row["n seeds"] == 3
    # with a spread, a contradiction is reported as such
    results = _synthetic()
    for r in results:
        if r["config"]["variant"] == "k7_hamming":
            r["kernels"]["leakage"]["mean_sidelobe_energy"] += 0.01 * r["config"]["seed"]
    assert {r["id"]: r for r in syn.claims(results, "medium")}["hamming_leakage"]["verdict"] == "contradicted"
    # a sub-additive pair is not "additive"
    for r in results:
        if r["config"]["variant"] == "k7_hamming_blurpool":
            r["moment1"] += 2.0
    assert {r["id"]: r for r in syn.claims(results, "medium")}["additive_hamming_blur"]["verdict"] == "contradicted"


def test_claims_with_one_seed_or_missing_variants_do_not_decide():
    rows = {r["id"]: r for r in syn.claims(_synthetic(seeds=(0,)), "medium")}
    assert rows["blur_sensitivity"]["verdict"] == "inconclusive (1 seed)"
    assert verdict_base(rows["moment_robustness"]["verdict"]) == "inconclusive"
    partial = [r for r in _synthetic() if r["config"]["variant"] != "k7"]
    rows = {r["id"]: r for r in syn.claims(partial, "medium")}
    assert rows["hamming_leakage"]["verdict"] == "not run" and rows["hamming_sensitivity"]["ours"] == "not run"


def test_quick_profile_shows_not_judged():
    shown = judged(syn.claims(_synthetic(), "quick"), "quick")
    assert shown and all(r["verdict"] == QUICK_VERDICT for r in shown)


def test_lens_matrix_and_table_on_synthetic_results():
    results = _synthetic()
    m = syn.lens_matrix(results)
    assert m["variants"] == list(syn.VARIANTS) and m["mean"].shape == (len(syn.LENSES), len(syn.VARIANTS))
    assert (m["n"] == 3).all()
    i, j = m["lenses"].index("moment1"), m["variants"].index("blurpool")
    assert m["mean"][i, j] == pytest.approx(4.0, abs=0.05)
    rows = syn.lens_table(results)
    assert len(rows) == len(syn.VARIANTS) and rows[0]["variant"] == "3×3 baseline" and rows[0]["seeds"] == 3
    fig = syn.plot_matrix(results)
    assert len(fig.axes) == 1


# --- one tiny run end to end, figures, widget, scoreboard ------------------------------------------------------------

def _tiny_config(variant="k7_hamming_blurpool"):
    s = {**syn.SETTINGS["quick"], "width": 2}
    return {"dataset": "cifar10", "seed": 0, "variant": variant, "model": syn.model_switches(s, variant),
            "n_train": 200, "n_test": 100, "train": syn._train(epochs=1, lr=0.05, batch_size=50),
            "channels_last": None,
            "lenses": {"sensitivity_images": 8, "tau_images": 50, "equivariance_images": 2, "equivariance_range": 2,
                       "n_attack": 20, "epsilons": [2 / 255, 8 / 255], "pgd_epsilons": [8 / 255], "pgd_steps": 2}}


def test_one_tiny_run_end_to_end_and_the_scoreboard(isolated_store, monkeypatch):
    monkeypatch.setenv("BOOK_CACHE_DIR", str(isolated_store / "cache"))
    runs = [Run(syn.CHAPTER, f"tiny-{v}", _tiny_config(v), syn.train_and_measure, "variants")
            for v in ("k7_hamming_blurpool", "chans")]
    results = execute(runs, "quick", device="cpu", progress=False)
    for result, run in zip(results, runs):
        assert result["variant"] == run.config["variant"] and 0 <= result["accuracy"] <= 1
        assert syn.unpack_bits(result["correct_bits"], (100,)).mean() == pytest.approx(result["accuracy"])
        assert syn.unpack_bits(result["consistent_bits"], (100,)).mean() == pytest.approx(result["consistency"])
        assert np.asarray(result["sensitivity"]).shape == (3, 32, 32) and np.isfinite(result["moment1"])
        assert -1 <= result["rho_tau"] <= 1 and 0 <= result["sensitivity_high"] <= 1
        assert result["kernels"]["layers"] == ["stem", "conv1", "conv2", "conv3"]
        assert len(result["kernels"]["leakage"]["sidelobe_energy"]) == 4
        eq = result["equivariance"]
        assert np.asarray(eq["maps"]).shape == (len(eq["layers"]), 4, 4) and eq["layers"][0] == "pix"
        a = result["attacks"]
        assert len(a["fgsm"]) == 2 and len(a["pgd"]) == 1 and a["pgd"][0] <= a["clean"]
        assert np.allclose(syn.unpack_bits(a["fgsm_bits"], (2, 20)).mean(1), a["fgsm"])
        assert result["provenance"]["profile"] == "quick"
    chans = results[1]
    assert chans["trainable_parameters"] < chans["parameters"]   # the frozen depthwise filters
    # the frozen stem bank is still its random initialisation: same coverage before and after training
    assert chans["kernels"]["coverage"][0] == pytest.approx(chans["kernels_at_init"]["coverage"][0])
    again = execute(runs, "quick", device="cpu", progress=False)
    assert [r["provenance"] for r in again] == [r["provenance"] for r in results]
    # figures and the widget from the stored results
    syn.plot_profiles(results)
    syn.plot_matrix(results)
    frames, labels = syn.widget_frames(results)
    assert labels == [syn.label("chans"), syn.label("k7_hamming_blurpool")]
    assert all(f[:8] == b"\x89PNG\r\n\x1a\n" and len(f) < 150_000 for f in frames)
    from lib.widgets import explorer
    explorer(frames, labels, play=False)
    # the scoreboard reads the store and never computes: synthesis at quick (present), leakage at medium (absent)
    monkeypatch.setattr(syn, "runs", lambda profile, section=None: runs)
    monkeypatch.setattr(syn, "train_and_measure", lambda *a: pytest.fail("the scoreboard must not compute"))
    board = syn.scoreboard({"synthesis": "quick", "spectral_leakage": "medium"})
    mine = [r for r in board["rows"] if r["chapter"] == "synthesis"]
    assert len(mine) == len(syn.PREDICTIONS) and all(r["verdict"] == QUICK_VERDICT for r in mine)
    assert all(set(r) == {"chapter", "claim", "paper", "ours", "verdict", "profile", "n seeds"} for r in board["rows"])
    (leak,) = [r for r in board["rows"] if r["chapter"] == "spectral_leakage"]
    assert leak["verdict"] == "not run" and "missing" in leak["ours"]
    assert board["counts"] == {"not judged": len(syn.PREDICTIONS), "not run": 1}
    counts = syn.scoreboard_counts(board)
    assert {r["verdict"]: r["all"] for r in counts}["not run"] == 1
    assert syn.sorted_rows(board)[0]["verdict"] == QUICK_VERDICT or syn.sorted_rows(board)[-1]["verdict"] == "not run"
    with pytest.raises(ValueError, match="no claims table"):
        syn.scoreboard({"howto": "quick"})


def test_paper_profile_builds_every_variant_at_full_width():
    for run in syn.runs("paper"):
        if run.config["seed"] != 0:
            continue
        model = syn.build_model(run.config).eval()
        assert model.convs[0].in_channels == 3 if run.config["model"]["mixing"] == "full" else True
        with torch.no_grad():
            assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
        assert run.config["model"]["width"] == 64 and run.config["n_train"] is None


def test_the_notebook_code_runs_at_a_tiny_quick_profile(isolated_store, monkeypatch):
    """The chapter's code cells, run in this process (not through papermill) at a shrunken quick profile: two
    variants, one seed, tiny sizes; the scoreboard finds no other chapter's results in the empty store."""
    from pathlib import Path
    import nbformat
    monkeypatch.setenv("BOOK_CACHE_DIR", str(isolated_store / "cache"))
    tiny = {**syn.SETTINGS["quick"], "seeds": (0,), "variants": ("baseline", "blurpool"), "width": 2,
            "n_train": 200, "n_test": 100, "train": syn._train(epochs=1, lr=0.05, batch_size=50),
            "sensitivity_images": 8, "tau_images": 50, "equivariance_images": 2, "n_attack": 20, "pgd_steps": 1}
    monkeypatch.setitem(syn.SETTINGS, "quick", tiny)
    nb = nbformat.read(Path(__file__).resolve().parent.parent / "chapters" / "05_synthesis.ipynb", as_version=4)
    parameters = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and parameters[0].source.strip() == 'profile = "auto"'
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    namespace = {}
    for cell in nb.cells:
        if cell.cell_type == "code":
            source = 'profile = "quick"' if cell in parameters else cell.source
            exec(compile(source, "05_synthesis.ipynb", "exec"), namespace)
    assert namespace["P"] == "quick" and len(namespace["results"]) == 2
    assert all(r["verdict"] == QUICK_VERDICT for r in namespace["claim_rows"])
    board = namespace["board"]
    assert {r["chapter"] for r in board["rows"]} == set(syn.SCOREBOARD_CHAPTERS)
    assert all(r["verdict"] == "not run" for r in board["rows"] if r["chapter"] != syn.CHAPTER)
    html = syn.scoreboard_html(board)
    assert html.count("<tr>") == len(board["rows"]) + 1 and "bookSortTable" in html
