"""White-box attacks on models whose inputs are images in [0, 1] (normalisation lives inside the model)."""

from __future__ import annotations

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


def accuracy_under_attack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons, *,
                          attack: str = "fgsm", batch_size: int = 500, device=None, source_model=None,
                          **attack_kwargs) -> list[float]:
    """Accuracy on ``x`` (uint8 or [0, 1]) for every ε. ``source_model`` crafts the examples (a transfer attack)."""
    from .data import to_unit
    attacks = {"fgsm": fgsm, "pgd": pgd}
    if attack not in attacks:
        raise ValueError(f"unknown attack {attack!r}; choose one of {', '.join(attacks)}")
    device = device or next(model.parameters()).device
    crafter = source_model if source_model is not None else model
    was = model.training, crafter.training
    model.eval(), crafter.eval()
    accuracies = []
    for epsilon in epsilons:
        correct = 0
        for start in range(0, len(x), batch_size):
            xb = to_unit(x[start:start + batch_size]).to(device)
            yb = y[start:start + batch_size].to(device)
            adv = attacks[attack](crafter, xb, yb, float(epsilon), **attack_kwargs)
            with torch.no_grad():
                correct += int((model(adv).argmax(1) == yb).sum())
        accuracies.append(correct / len(x))
    model.train(was[0]), crafter.train(was[1])
    return accuracies
