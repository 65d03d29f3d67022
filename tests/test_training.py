import math

import pytest
import torch
from torch import nn

from lib import training
from lib.training import TrainConfig, fit


def toy_problem(n=512, seed=0):
    """Images whose class is which half (left/right) is brighter: learnable in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.5
    x[y == 1, :, :, 4:] += 0.5
    x[y == 0, :, :, :4] += 0.5
    return (x * 255).to(torch.uint8), y


def small_model():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 2))


CONFIG = TrainConfig(epochs=3, batch_size=64, lr=0.1, weight_decay=0.0, schedule="onecycle")


def test_fit_learns_and_reports_history():
    torch.manual_seed(0)
    out = fit(small_model(), toy_problem(), toy_problem(256, seed=1), config=CONFIG, seed=0, device="cpu",
              progress=False)
    assert len(out["history"]) == 3
    assert out["final"]["accuracy"] > 0.9
    assert out["history"][-1]["train_loss"] < out["history"][0]["train_loss"]
    assert all(h["epoch_time_s"] > 0 for h in out["history"])
    assert out["trainable_parameters"] == out["parameters"] == sum(p.numel() for p in small_model().parameters())
    assert out["steps"] == 3 * 8


def test_same_seed_same_numbers_on_cpu():
    def run(seed):
        training.seed_everything(seed)
        config = TrainConfig(epochs=2, batch_size=32, lr=0.05, augment=training.Augment(translate=1, flip=True))
        return fit(small_model(), toy_problem(), config=config, seed=seed, device="cpu", progress=False)
    a, b, c = run(0), run(0), run(1)
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert [h["train_loss"] for h in a["history"]] != [h["train_loss"] for h in c["history"]]


def test_two_runs_with_one_seed_give_identical_histories_and_weights():
    def run():
        torch.manual_seed(0)
        model = small_model()
        config = TrainConfig(epochs=2, batch_size=32, lr=0.05, augment=training.Augment(2, "reflect", flip=True))
        out = fit(model, toy_problem(), toy_problem(128, seed=1), config=config, seed=3, device="cpu", progress=False)
        return [{k: v for k, v in h.items() if k != "epoch_time_s"} for h in out["history"]], model.state_dict()
    (history_a, weights_a), (history_b, weights_b) = run(), run()
    assert history_a == history_b and len(history_a) == 2 and "test_accuracy" in history_a[-1]
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_frozen_parameters_do_not_move():
    model = small_model()
    frozen = training.freeze(model, lambda name, p: name.startswith("0."))
    assert frozen == 4 * 9 + 4
    before = model[0].weight.detach().clone()
    out = fit(model, toy_problem(), config=CONFIG, seed=0, device="cpu", progress=False)
    assert torch.equal(model[0].weight, before)
    assert out["trainable_parameters"] == out["parameters"] - frozen
    training.freeze(model, lambda name, p: True)
    with pytest.raises(ValueError, match="no trainable parameter"):
        fit(model, toy_problem(), config=CONFIG, device="cpu", progress=False)


def test_mse_regression_with_input_transform_improves_psnr():
    images = toy_problem(256)[0]
    flip = lambda x: x.flip(-1)  # the model must learn to undo a flip of the input
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.Unflatten(1, (1, 8, 8)))
    config = TrainConfig(epochs=15, batch_size=32, optimizer="adamw", lr=1e-2, weight_decay=0.0, loss="mse")
    out = fit(model, (images, images), (images, images), config=config, input_transform=flip, device="cpu",
              progress=False)
    psnrs = [h["test_psnr"] for h in out["history"]]
    assert psnrs[-1] > psnrs[0] + 6 and psnrs[-1] > 15


def test_schedules():
    total = 100
    onecycle = TrainConfig(schedule="onecycle", warmup_fraction=0.2)
    assert training._lr_factor(onecycle, 0, total) == 0
    assert training._lr_factor(onecycle, 20, total) == pytest.approx(1.0)
    assert training._lr_factor(onecycle, 100, total) == pytest.approx(0.0)
    cosine = TrainConfig(schedule="cosine", warmup_fraction=0.0)
    assert training._lr_factor(cosine, 50, total) == pytest.approx(0.5)
    step = TrainConfig(schedule="step", step_milestones=(0.5, 0.75), step_gamma=0.1)
    assert [training._lr_factor(step, s, total) for s in (10, 60, 90)] == pytest.approx([1, 0.1, 0.01])


@pytest.mark.parametrize("field,value,message", [("optimizer", "lbfgs", "unknown optimizer"),
                                                 ("schedule", "warm", "unknown schedule"),
                                                 ("loss", "hinge", "unknown loss"), ("epochs", 0, "at least 1")])
def test_bad_configuration_is_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_evaluate_and_psnr_known_values():
    target = torch.zeros(2, 1, 4, 4)
    output = torch.full((2, 1, 4, 4), 0.1)
    assert training.psnr(output, target).tolist() == pytest.approx([20.0, 20.0])
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([1.0, 0.0]))
    x, y = toy_problem(100)
    out = training.evaluate(model, x, y, device=torch.device("cpu"))
    assert out["accuracy"] == pytest.approx(float((y == 0).float().mean()))
    share_of_class_0 = float((y == 0).float().mean())
    expected = share_of_class_0 * math.log1p(math.exp(-1)) + (1 - share_of_class_0) * math.log1p(math.exp(1))
    assert out["loss"] == pytest.approx(expected, rel=1e-5)
