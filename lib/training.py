"""The one training loop of the book: classification and image-to-image regression on device-resident tensors.

The whole dataset lives on the device as uint8; each step gathers a batch by index, augments it as a batch
(``lib.data.Augment``, one gather), converts it to [0, 1] and steps the optimiser. Random numbers come from a
generator on the device seeded with the run seed, and losses and accuracies are summed on the device, so a step
never waits for the host. On CUDA it uses channels_last, bfloat16 autocast, fused optimisers and cuDNN autotuning
(optionally ``torch.compile``); on a CPU it is deterministic for a given seed and thread count.

:func:`fit_many` trains several seeds of one architecture at once (``torch.func.vmap`` over stacked parameters),
each seeing exactly the batches and augmentation it would see in :func:`fit`.
"""

from __future__ import annotations

import copy
import inspect
import math
import random
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

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
    compile: bool = False                 # torch.compile the training forward (worth it on CUDA; CPU: ~50 s, no gain)

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


def _optimizer(params: list[torch.Tensor], config: TrainConfig) -> torch.optim.Optimizer:
    if not params:
        raise ValueError("the model has no trainable parameter: everything is frozen")
    cls = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[config.optimizer]
    options = (dict(momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0)
               if config.optimizer == "sgd" else dict(betas=config.betas))
    # CUDA: one fused kernel for the whole update instead of several per parameter tensor (CPU keeps the reference
    # implementation, so CPU numbers stay those of earlier versions)
    if (all(p.is_cuda and p.is_floating_point() for p in params)
            and "fused" in inspect.signature(cls).parameters):
        options["fused"] = True
    return cls(params, lr=config.lr, weight_decay=config.weight_decay, **options)


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    return _optimizer([p for p in model.parameters() if p.requires_grad], config)


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
    if channels_last and transform is None and x.dim() == 4:
        # dtype and layout in one copy (to_unit then .contiguous(channels_last) copied the batch twice)
        unit = x.to(torch.float32, memory_format=torch.channels_last)
        return unit.div_(255.0) if x.dtype == torch.uint8 else unit
    x = to_unit(x)
    if transform is not None:
        x = transform(x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def _loss(config: TrainConfig, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if config.loss == "mse":
        return F.mse_loss(output.float(), to_unit(target))
    return F.cross_entropy(output.float(), target, label_smoothing=config.label_smoothing)


@torch.no_grad()
def _predict_on_device(model: torch.nn.Module, x: torch.Tensor, *, batch_size: int, device: torch.device,
                       input_transform: Callable | None, channels_last: bool | None, amp: bool | None) -> torch.Tensor:
    channels_last = device.type == "cuda" if channels_last is None else channels_last
    amp = device.type == "cuda" if amp is None else amp
    was_training = model.training
    model.eval()
    outputs = []
    for start in range(0, len(x), batch_size):
        xb = _prepare(x[start:start + batch_size].to(device), channels_last, input_transform)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            outputs.append(model(xb).float())  # stays on the device: no host sync per batch
    model.train(was_training)
    return torch.cat(outputs)


def predict(model: torch.nn.Module, x: torch.Tensor, *, batch_size: int = 1000, device: torch.device | None = None,
            input_transform: Callable | None = None, channels_last: bool | None = None,
            amp: bool | None = None) -> torch.Tensor:
    """Model outputs for all of ``x`` (uint8 or [0, 1] floats), returned as float32 on the CPU (one transfer)."""
    device = device or next(model.parameters()).device
    return _predict_on_device(model, x, batch_size=batch_size, device=device, input_transform=input_transform,
                              channels_last=channels_last, amp=amp).cpu()


def psnr(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image (dB), for images in [0, 1]."""
    mse = ((output.float() - to_unit(target).to(output.device)) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: str = "cross_entropy",
             batch_size: int = 1000, device: torch.device | None = None, input_transform: Callable | None = None,
             channels_last: bool | None = None, amp: bool | None = None) -> dict:
    """Mean loss and accuracy (classification) or mean loss and mean per-image PSNR (regression)."""
    device = device or next(model.parameters()).device
    out = _predict_on_device(model, x, batch_size=batch_size, device=device, input_transform=input_transform,
                             channels_last=channels_last, amp=amp)
    y = y.to(device)
    # metrics computed where the outputs are, then one transfer for both numbers
    if loss == "mse":
        names, values = ("loss", "psnr"), (F.mse_loss(out, to_unit(y)), psnr(out, y).mean())
    else:
        names, values = ("loss", "accuracy"), (F.cross_entropy(out, y), (out.argmax(1) == y).float().mean())
    return dict(zip(names, torch.stack(values).tolist()))


def _tune_backend(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every step has the same shapes: pick the fastest kernels once


def _epoch_record(config: TrainConfig, epoch: int, lr: float, loss_sum: torch.Tensor, correct: torch.Tensor,
                  seen: int, epoch_time: float) -> list[dict]:
    """One history record per model from device-side sums (shape () for fit, (seeds,) for fit_many): one transfer."""
    sums = torch.stack([loss_sum, correct]).reshape(2, -1) / seen
    records = []
    for train_loss, train_accuracy in zip(*sums.tolist()):
        record = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "epoch_time_s": epoch_time}
        if config.loss == "cross_entropy":
            record["train_accuracy"] = train_accuracy
        records.append(record)
    return records


def _result(history: list[dict], train_time: float, model: torch.nn.Module, total_steps: int) -> dict:
    final = {k[5:]: v for k, v in history[-1].items() if k.startswith("test_")}
    return {"history": history, "final": final, "train_time_s": train_time,
            "trainable_parameters": count_parameters(model, trainable_only=True),
            "parameters": count_parameters(model), "steps": total_steps}


def _evaluates(config: TrainConfig, epoch: int, test) -> bool:
    return test is not None and (epoch % config.eval_every == 0 or epoch == config.epochs)


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
    _tune_backend(device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    x_train, y_train = (t.to(device) for t in train)
    test = None if test is None else tuple(t.to(device) for t in test)  # resident: evaluation copies nothing
    # shuffling and augmentation draw from one generator on the device (on a CPU: the stream of earlier versions)
    generator = torch.Generator(device=device).manual_seed(seed)
    optimizer = make_optimizer(model, config)
    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(config, s, total_steps))
    trainable = [p for p in model.parameters() if p.requires_grad]
    eval_kwargs = dict(loss=config.loss, batch_size=config.eval_batch_size, device=device,
                       input_transform=input_transform, channels_last=channels_last, amp=amp)
    augment = config.augment if config.augment.active else None  # decided once, not per step
    forward = torch.compile(model) if config.compile else model

    history, train_time = [], 0.0
    bar = tqdm(total=total_steps, desc=description, disable=not progress, file=sys.stderr, mininterval=2,
               leave=False, dynamic_ncols=True)
    for epoch in range(1, config.epochs + 1):
        model.train()
        start = time.perf_counter()
        # running sums stay on the device; they are read once per epoch
        loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
        for index in batches(len(x_train), config.batch_size, shuffle=True, generator=generator, device=device):
            xb = x_train[index]
            if augment is not None:
                xb = augment(xb, generator=generator)  # on the uint8 batch: same values, a quarter of the bytes
            xb = _prepare(xb, channels_last, input_transform)
            yb = y_train[index]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = forward(xb)
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
        record, = _epoch_record(config, epoch, optimizer.param_groups[0]["lr"], loss_sum, correct, seen, epoch_time)
        if _evaluates(config, epoch, test):
            record.update({f"test_{k}": v for k, v in evaluate(model, *test, **eval_kwargs).items()})
        history.append(record)
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k.startswith(("train_loss", "test_"))})
    bar.close()
    return _result(history, train_time, model, total_steps)


@torch.no_grad()
def _write_back(models: Sequence[torch.nn.Module], params: dict, buffers: dict) -> None:
    """Copy seed i's slice of the stacked parameters and buffers into ``models[i]``."""
    for i, model in enumerate(models):
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            tensor.copy_((params if name in params else buffers)[name][i])


def _clip_each(stacked: list[torch.Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` for every model separately: the norm is taken over each seed's slice of all gradients."""
    grads = [p.grad for p in stacked if p.grad is not None]
    if not grads:
        return
    norms = torch.stack([g.flatten(1).norm(2, dim=1) for g in grads]).norm(2, dim=0)  # one total norm per seed
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *[1] * (g.dim() - 1)))


def fit_many(models: Sequence[torch.nn.Module], train: tuple[torch.Tensor, torch.Tensor],
             test: tuple[torch.Tensor, torch.Tensor] | None = None, *, config: TrainConfig = TrainConfig(),
             seeds: Sequence[int], device: torch.device | str | None = None, input_transform: Callable | None = None,
             progress: bool = True, description: str = "train") -> list[dict]:
    """Train several models of one architecture together, ``models[i]`` with ``seeds[i]``; one result per seed.

    The same as ``[fit(m, train, test, config=config, seed=s, ...) for m, s in zip(models, seeds)]`` up to float
    rounding: every seed draws its own batches and augmentation from its own generator, exactly as ``fit`` would,
    and the parameters (and buffers, e.g. BatchNorm running statistics) of all models are stacked
    (``torch.func.stack_module_state``) and stepped as one ``vmap``-ed model, so each step runs each layer once for
    all seeds (the convolutions become grouped convolutions) and the optimiser updates all seeds with one set of
    tensors. The models are updated in place; evaluation runs on each model as in ``fit``.

    Differences from ``fit``: the step runs in NCHW (``channels_last`` is ignored: vmap folds the seeds into the
    channel dimension), ``config.compile`` is not supported, ``epoch_time_s`` is the time of the joint epoch,
    random layers (dropout) draw different numbers than in sequential runs, and ``input_transform`` must treat
    every image independently.
    """
    models, seeds = list(models), [int(s) for s in seeds]
    if not models or len(models) != len(seeds):
        raise ValueError(f"fit_many needs one seed per model, got {len(models)} models and {len(seeds)} seeds")
    if len({id(m) for m in models}) != len(models):
        raise ValueError("fit_many needs distinct model objects (one per seed)")
    if config.compile:
        raise ValueError("fit_many does not support config.compile; use fit for compiled training")
    device = torch.device(device) if device is not None else default_device()
    channels_last, amp = _flags(config, device, models[0])  # channels_last: for evaluation only, as in fit
    _tune_backend(device)
    for model in models:
        model.to(device).train()  # as fit leaves them
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError("the model has no trainable parameter: everything is frozen")
    params, buffers = torch.func.stack_module_state(models)  # raises if the architectures differ
    template = copy.deepcopy(models[0]).to("meta")  # the structure only; tensors come from params/buffers

    def loss_and_output(p, b, x, y):
        out = torch.func.functional_call(template, (p, b), (x,))
        return _loss(config, out, y), out

    step = torch.func.vmap(loss_and_output, randomness="different")
    x_train, y_train = (t.to(device) for t in train)
    test = None if test is None else tuple(t.to(device) for t in test)
    generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
    stacked = [p for p in params.values() if p.requires_grad]
    optimizer = _optimizer(stacked, config)  # elementwise updates: stepping the stack = stepping each model
    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(config, s, total_steps))
    eval_kwargs = dict(loss=config.loss, batch_size=config.eval_batch_size, device=device,
                       input_transform=input_transform, channels_last=channels_last, amp=amp)
    augment = config.augment if config.augment.active else None
    k = len(models)

    histories, train_time = [[] for _ in models], 0.0
    bar = tqdm(total=total_steps, desc=description, disable=not progress, file=sys.stderr, mininterval=2,
               leave=False, dynamic_ncols=True)
    for epoch in range(1, config.epochs + 1):
        template.train()
        start = time.perf_counter()
        loss_sum, correct, seen = torch.zeros(k, device=device), torch.zeros(k, device=device), 0
        epochs = [batches(len(x_train), config.batch_size, shuffle=True, generator=g, device=device)
                  for g in generators]
        for indices in zip(*epochs):
            n = len(indices[0])
            index = torch.cat(indices)
            xb = x_train[index]
            if augment is not None:  # each seed's numbers from its own generator, then one gather for all
                drawn = [augment.draw(n, g, device) for g in generators]
                xb = augment.apply(xb, {key: torch.cat([d[key] for d in drawn], dim=-1) for key in drawn[0]})
            xb = _prepare(xb, False, input_transform).unflatten(0, (k, n))
            yb = y_train[index].unflatten(0, (k, n))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss, out = step(params, buffers, xb, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()  # seed i's parameters only reach loss i: the sum gives every seed its own gradient
            if config.grad_clip:
                _clip_each(stacked, config.grad_clip)
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * n
            if config.loss == "cross_entropy":
                correct += (out.detach().argmax(-1) == yb).sum(1)
            seen += n
            bar.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        epoch_time = time.perf_counter() - start
        train_time += epoch_time
        records = _epoch_record(config, epoch, optimizer.param_groups[0]["lr"], loss_sum, correct, seen, epoch_time)
        if _evaluates(config, epoch, test) or epoch == config.epochs:
            _write_back(models, params, buffers)
        for model, record, history in zip(models, records, histories):
            if _evaluates(config, epoch, test):
                record.update({f"test_{name}": v for name, v in evaluate(model, *test, **eval_kwargs).items()})
            history.append(record)
        bar.set_postfix({"train_loss": round(sum(r["train_loss"] for r in records) / k, 4)})
    bar.close()
    return [_result(history, train_time, model, total_steps) for model, history in zip(models, histories)]
