"""White-box attacks on models whose inputs are images in [0, 1] (normalisation lives inside the model)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _check(epsilon: float) -> None:
    if epsilon < 0:
        raise ValueError(f"epsilon must be non-negative, got {epsilon}")


def fgsm(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al.): x + ε·sign(∇ₓ loss), clipped to [0, 1]."""
    _check(epsilon)
    x = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(x).float(), y)
    (grad,) = torch.autograd.grad(loss, x)
    return (x + epsilon * grad.sign()).clamp(0, 1).detach()


def pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, *, steps: int = 10,
        step_size: float | None = None, random_start: bool = True,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """L∞ projected gradient descent (Madry et al.): ``steps`` signed-gradient steps projected on the ε-ball."""
    _check(epsilon)
    step_size = 2.5 * epsilon / steps if step_size is None else step_size
    x = x.detach()
    adv = x.clone()
    if random_start and epsilon > 0:
        noise = torch.rand(x.shape, generator=generator).to(x.device) * 2 - 1
        adv = (adv + epsilon * noise).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv).float(), y)
        (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + step_size * grad.sign()
        adv = torch.min(torch.max(adv, x - epsilon), x + epsilon).clamp(0, 1)
    return adv.detach()


def correct_under_attack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons, *,
                         attack: str = "fgsm", batch_size: int = 500, device=None, source_model=None,
                         **attack_kwargs) -> np.ndarray:
    """Per ε and test image, whether ``model`` still classifies the attacked image correctly: booleans shaped
    (len(epsilons), len(x)), for paired tests between models attacked on the same images. ``x`` is uint8 or in
    [0, 1]; ``source_model`` crafts the examples (a transfer attack)."""
    from .data import to_unit
    attacks = {"fgsm": fgsm, "pgd": pgd}
    if attack not in attacks:
        raise ValueError(f"unknown attack {attack!r}; choose one of {', '.join(attacks)}")
    device = device or next(model.parameters()).device
    crafter = source_model if source_model is not None else model
    was = model.training, crafter.training
    model.eval(), crafter.eval()
    correct = np.zeros((len(epsilons), len(x)), dtype=bool)
    for row, epsilon in enumerate(epsilons):
        for start in range(0, len(x), batch_size):
            xb = to_unit(x[start:start + batch_size]).to(device)
            yb = y[start:start + batch_size].to(device)
            adv = attacks[attack](crafter, xb, yb, float(epsilon), **attack_kwargs)
            with torch.no_grad():
                correct[row, start:start + len(xb)] = (model(adv).argmax(1) == yb).cpu().numpy()
    model.train(was[0]), crafter.train(was[1])
    return correct


def accuracy_under_attack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons, **options) -> list[float]:
    """Accuracy on ``x`` for every ε (the means of :func:`correct_under_attack`, same options)."""
    return [float(row.mean()) for row in correct_under_attack(model, x, y, epsilons, **options)]


# --- spatial attack (Engstrom et al., "Exploring the landscape of spatial robustness", ICML 2019) --------------------

SPATIAL_ROTATIONS = (-30, -20, -10, 0, 10, 20, 30)   # degrees; the paper's range ±30°, on a coarser grid
SPATIAL_TRANSLATIONS = (-3, 0, 3)                    # pixels in each direction (the paper's ±3 px for 32×32 images)


def spatial_grid(rotations=SPATIAL_ROTATIONS, translations=SPATIAL_TRANSLATIONS) -> list[tuple[float, int, int]]:
    """Every ``(angle, dx, dy)`` of the grid, the identity included."""
    return [(float(a), int(dx), int(dy)) for a in rotations for dx in translations for dy in translations]


def correct_under_spatial_attack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                                 rotations=SPATIAL_ROTATIONS, translations=SPATIAL_TRANSLATIONS,
                                 batch_size: int = 500, device=None) -> np.ndarray:
    """The grid-search spatial attack: every image rotated and translated by every transform of
    :func:`spatial_grid` (bilinear, zero fill, by ``torchvision.transforms.v2.functional.affine``). Returns booleans
    shaped (transforms, images): correct under each transform. An image resists the attack when it is correct under
    all of them (the adversary picks the worst transform per image; no gradient, so no gradient masking)."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2.functional import affine
    from .data import to_unit
    device = device or next(model.parameters()).device
    grid = spatial_grid(rotations, translations)
    was = model.training
    model.eval()
    correct = np.zeros((len(grid), len(x)), dtype=bool)
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = to_unit(x[start:start + batch_size]).to(device)
            yb = y[start:start + batch_size].to(device)
            for row, (angle, dx, dy) in enumerate(grid):
                moved = affine(xb, angle=angle, translate=[dx, dy], scale=1.0, shear=[0.0, 0.0],
                               interpolation=InterpolationMode.BILINEAR, fill=0.0)
                correct[row, start:start + len(xb)] = (model(moved).argmax(1) == yb).cpu().numpy()
    model.train(was)
    return correct
