"""The one training loop of the book: classification and image-to-image regression on device-resident tensors.

The whole dataset lives on the device as uint8; each step gathers a batch by index, converts to [0, 1], augments it
as a batch (``lib.data.Augment``) and steps the optimiser. On CUDA it uses channels_last and bfloat16 autocast; on a
CPU it is deterministic for a given seed.
"""

from __future__ import annotations

import math
import random
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .data import Augment, batches, to_unit

LOSSES = ("cross_entropy", "mse")
OPTIMIZERS = ("sgd", "adamw", "adam")
SCHEDULES = ("constant", "onecycle", "cosine", "step")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices): same seed, same numbers on a CPU."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def freeze(model: torch.nn.Module, predicate: Callable[[str, torch.nn.Parameter], bool]) -> int:
    """Stop training every parameter for which ``predicate(name, parameter)`` is true; returns how many were frozen."""
    frozen = 0
    for name, parameter in model.named_parameters():
        if predicate(name, parameter):
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return frozen


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run besides the model, the data and the seed."""
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "onecycle"
    warmup_fraction: float = 0.2          # onecycle / cosine: fraction of steps spent warming up
    step_milestones: tuple[float, ...] = (0.5, 0.75)  # step: fractions of training where lr is multiplied by gamma
    step_gamma: float = 0.1
    loss: str = "cross_entropy"
    label_smoothing: float = 0.0
    augment: Augment = field(default_factory=Augment)
    grad_clip: float | None = None
    eval_batch_size: int = 1000
    channels_last: bool | None = None     # None: on for CUDA, off for CPU
    amp: bool | None = None               # None: bfloat16 autocast on CUDA only
    eval_every: int = 1                   # evaluate the test split every k epochs (and after the last)

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")

    def as_dict(self) -> dict:
        return asdict(self)


def _lr_factor(config: TrainConfig, step: int, total: int) -> float:
    progress = step / max(total, 1)
    warm = config.warmup_fraction
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "step":
        return config.step_gamma ** sum(progress >= m for m in config.step_milestones)
    if warm > 0 and progress < warm:
        return progress / warm
    rest = (progress - warm) / max(1 - warm, 1e-12)
    if config.schedule == "onecycle":  # triangular: linear up, linear down to zero
        return max(0.0, 1.0 - rest)
    return 0.5 * (1 + math.cos(math.pi * min(rest, 1.0)))  # cosine


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameter: everything is frozen")
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                               nesterov=config.nesterov and config.momentum > 0)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


def channels_last_unsafe_convs(model: torch.nn.Module) -> list[str]:
    """Convolutions that the CPU (oneDNN) backward mishandles in channels_last: 1×1, strided, few input channels.

    Measured with torch 2.14.1: ``Conv2d(3, 6, 1, stride=2)`` on a channels_last batch intermittently aborts with
    "double free or corruption" or spins forever in its backward pass (2→4, 4→8, 6→12 too; 8→16 works). The limit
    of 8 input channels is the smallest count measured to work.
    """
    return [name for name, m in model.named_modules()
            if isinstance(m, torch.nn.Conv2d) and tuple(m.kernel_size) == (1, 1) and max(m.stride) > 1
            and m.in_channels < 8]


def _flags(config: TrainConfig, device: torch.device, model: torch.nn.Module | None = None) -> tuple[bool, bool]:
    cuda = device.type == "cuda"
    channels_last = cuda if config.channels_last is None else config.channels_last
    if channels_last and not cuda and model is not None:
        unsafe = channels_last_unsafe_convs(model)
        if unsafe:
            warnings.warn(f"channels_last switched off on the CPU: the oneDNN backward of the 1×1 strided "
                          f"convolution(s) {', '.join(unsafe)} corrupts memory or hangs in channels_last (torch 2.14)",
                          RuntimeWarning, stacklevel=3)
            channels_last = False
    amp = cuda if config.amp is None else config.amp
    return channels_last, amp


def _prepare(x: torch.Tensor, channels_last: bool, transform: Callable | None = None) -> torch.Tensor:
    x = to_unit(x)
    if transform is not None:
        x = transform(x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def _loss(config: TrainConfig, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if config.loss == "mse":
        return F.mse_loss(output.float(), to_unit(target))
    return F.cross_entropy(output.float(), target, label_smoothing=config.label_smoothing)


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, *, batch_size: int = 1000, device: torch.device | None = None,
            input_transform: Callable | None = None, channels_last: bool | None = None,
            amp: bool | None = None) -> torch.Tensor:
    """Model outputs for all of ``x`` (uint8 or [0, 1] floats), returned as float32 on the CPU."""
    device = device or next(model.parameters()).device
    channels_last = device.type == "cuda" if channels_last is None else channels_last
    amp = device.type == "cuda" if amp is None else amp
    was_training = model.training
    model.eval()
    outputs = []
    for start in range(0, len(x), batch_size):
        xb = _prepare(x[start:start + batch_size].to(device), channels_last, input_transform)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            outputs.append(model(xb).float().cpu())
    model.train(was_training)
    return torch.cat(outputs)


def psnr(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image (dB), for images in [0, 1]."""
    mse = ((output.float() - to_unit(target).to(output.device)) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: str = "cross_entropy",
             batch_size: int = 1000, device: torch.device | None = None, input_transform: Callable | None = None,
             channels_last: bool | None = None, amp: bool | None = None) -> dict:
    """Mean loss and accuracy (classification) or mean loss and mean per-image PSNR (regression)."""
    out = predict(model, x, batch_size=batch_size, device=device, input_transform=input_transform,
                  channels_last=channels_last, amp=amp)
    y = y.cpu()
    if loss == "mse":
        return {"loss": float(F.mse_loss(out, to_unit(y))), "psnr": float(psnr(out, y).mean())}
    return {"loss": float(F.cross_entropy(out, y)), "accuracy": float((out.argmax(1) == y).float().mean())}


def fit(model: torch.nn.Module, train: tuple[torch.Tensor, torch.Tensor],
        test: tuple[torch.Tensor, torch.Tensor] | None = None, *, config: TrainConfig = TrainConfig(), seed: int = 0,
        device: torch.device | str | None = None, input_transform: Callable | None = None, progress: bool = True,
        description: str = "train") -> dict:
    """Train ``model`` in place; returns the per-epoch history and the final test metrics.

    ``train``/``test`` are ``(inputs, targets)``: uint8 or float images, with int64 labels (cross-entropy) or target
    images (MSE). ``input_transform`` maps a [0, 1] batch to the model input after augmentation (pixel shuffling).
    Frozen parameters (``requires_grad=False``) are left out of the optimiser.
    """
    device = torch.device(device) if device is not None else default_device()
    channels_last, amp = _flags(config, device, model)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    x_train, y_train = (t.to(device) for t in train)
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(model, config)
    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(config, s, total_steps))
    trainable = [p for p in model.parameters() if p.requires_grad]
    eval_kwargs = dict(loss=config.loss, batch_size=config.eval_batch_size, device=device,
                       input_transform=input_transform, channels_last=channels_last, amp=amp)

    history, train_time = [], 0.0
    bar = tqdm(total=total_steps, desc=description, disable=not progress, file=sys.stderr, mininterval=2,
               leave=False, dynamic_ncols=True)
    for epoch in range(1, config.epochs + 1):
        model.train()
        start = time.perf_counter()
        loss_sum = correct = seen = 0.0
        for index in batches(len(x_train), config.batch_size, shuffle=True, generator=generator, device=device):
            xb = to_unit(x_train[index])
            if config.augment != Augment():
                xb = config.augment(xb, generator=generator)
            xb = _prepare(xb, channels_last, input_transform)
            yb = y_train[index]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = model(xb)
            loss = _loss(config, out, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
            optimizer.step()
            scheduler.step()
            n = len(index)
            loss_sum += loss.detach() * n
            if config.loss == "cross_entropy":
                correct += (out.detach().argmax(1) == yb).sum()
            seen += n
            bar.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        epoch_time = time.perf_counter() - start
        train_time += epoch_time
        record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": float(loss_sum / seen),
                  "epoch_time_s": epoch_time}
        if config.loss == "cross_entropy":
            record["train_accuracy"] = float(correct / seen)
        if test is not None and (epoch % config.eval_every == 0 or epoch == config.epochs):
            record.update({f"test_{k}": v for k, v in evaluate(model, *test, **eval_kwargs).items()})
        history.append(record)
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k.startswith(("train_loss", "test_"))})
    bar.close()
    final = {k[5:]: v for k, v in history[-1].items() if k.startswith("test_")}
    return {"history": history, "final": final, "train_time_s": train_time,
            "trainable_parameters": count_parameters(model, trainable_only=True),
            "parameters": count_parameters(model), "steps": total_steps}
