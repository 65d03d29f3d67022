import numpy as np
import pytest
import torch
from torch import nn

from lib import attacks, spectra


def test_delta_has_flat_envelope_and_parseval_holds():
    delta = np.zeros((1, 3, 3))
    delta[0, 1, 1] = 1
    assert np.allclose(spectra.spectral_envelope(delta, size=16), 1.0)
    bank = np.random.default_rng(0).standard_normal((5, 3, 3))
    response = spectra.magnitude_response(bank, size=32)
    assert np.allclose((response ** 2).mean(axis=(1, 2)), (bank ** 2).sum(axis=(1, 2)))


def test_envelope_shapes_inputs_and_monotonicity():
    bank = torch.randn(8, 5)
    assert spectra.spectral_envelope(bank, size=64).shape == (64,)
    assert spectra.spectral_envelope(np.random.rand(4, 3, 3)).shape == (512, 512)
    small, large = spectra.spectral_envelope(bank[:2], 64), spectra.spectral_envelope(bank, 64)
    assert np.all(large >= small - 1e-12)
    assert spectra.frequencies(8)[4] == 0.0  # zero frequency at the centre
    with pytest.raises(ValueError, match="shaped"):
        spectra.spectral_envelope(np.zeros(3))
    with pytest.raises(ValueError, match="do not fit"):
        spectra.spectral_envelope(np.zeros((1, 9, 9)), size=8)


def linear_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 3))


def test_fgsm_is_the_signed_gradient_step_of_eq_5():
    model = linear_model()
    x = torch.rand(6, 3, 2, 2) * 0.5 + 0.25  # far from the box, so no clipping at ε = 0.1
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    adv = attacks.fgsm(model, x, y, 0.1)
    x_req = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(model(x_req), y).backward()
    assert torch.allclose(adv, x + 0.1 * x_req.grad.sign())
    assert torch.equal(attacks.fgsm(model, x, y, 0.0), x)
    assert attacks.fgsm(model, x, y, 2.0).min() >= 0 and attacks.fgsm(model, x, y, 2.0).max() <= 1
    with pytest.raises(ValueError, match="non-negative"):
        attacks.fgsm(model, x, y, -0.1)


def test_fgsm_matches_torchattacks():
    torchattacks = pytest.importorskip("torchattacks")
    model = linear_model().eval()
    x, y = torch.rand(6, 3, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    reference = torchattacks.FGSM(model, eps=8 / 255)(x, y)
    assert torch.allclose(attacks.fgsm(model, x, y, 8 / 255), reference, atol=1e-6)


def test_pgd_stays_in_the_ball_and_beats_fgsm():
    model = linear_model()
    x, y = torch.rand(64, 3, 2, 2), torch.randint(0, 3, (64,))
    adv = attacks.pgd(model, x, y, 0.05, steps=10, generator=torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= 0.05 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    loss = lambda z: nn.functional.cross_entropy(model(z), y).item()
    assert loss(adv) >= loss(attacks.fgsm(model, x, y, 0.05)) - 1e-4
    clean, fgsm_acc, pgd_acc = attacks.accuracy_under_attack(model, x, y, [0.0, 0.1, 0.1], attack="fgsm")[:1] + \
        attacks.accuracy_under_attack(model, x, y, [0.1], attack="fgsm") + \
        attacks.accuracy_under_attack(model, x, y, [0.1], attack="pgd", steps=20)
    assert clean == pytest.approx(float((model(x).argmax(1) == y).float().mean()))
    assert pgd_acc <= fgsm_acc <= clean
    with pytest.raises(ValueError, match="unknown attack"):
        attacks.accuracy_under_attack(model, x, y, [0.1], attack="cw")
