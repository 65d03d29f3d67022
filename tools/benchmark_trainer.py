"""Training-step cost of the book's trainer against a plain PyTorch loop, side by side in one run (a benchmark, not a
test).

Three ways to train the same model on the same data with the same augmentation:

- plain:     a tutorial-style loop: per-sample transforms in a ``Dataset``, a ``DataLoader``, fp32 NCHW, and the
             stock layers (``nn.Conv2d(padding_mode="circular")``, ``F.pad(mode="circular")`` in the blur pools);
- fit:       ``lib.training.fit`` (uint8 data on the device, one-gather augmentation and circular padding, no host
             sync per step; on CUDA also channels_last, bfloat16, fused optimiser, cuDNN autotuning);
- fit_many:  ``lib.training.fit_many`` training ``--seeds`` seeds at once, reported per seed.

The default model is the anti-aliasing chapter's quick profile: VGG13 with 8 channels in its first block, MaxBlurPool
with the Binomial-5 filter, circular padding, circular shifts of ±4 pixels and flips, batches of 64.

What is timed: the interval between consecutive training forward passes (a forward pre-hook), i.e. the whole step
(batch, augmentation, forward, backward, update), after ``--warmup`` steps, averaged over ``--steps`` steps. Methods
are interleaved ``--reps`` times and the median is reported. On the CPU the clock is process CPU time
(``time.process_time``, all threads): wall-clock time on shared machines is noise. On CUDA it is CUDA events.

    python tools/benchmark_trainer.py [--device cpu|cuda|all] [--model vgg13-w8|simple] [--reps 5] [--seeds 4]
    python tools/benchmark_trainer.py --components     # also: padding and augmentation alone
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib import data  # noqa: E402
from lib.layers import blurpool  # noqa: E402
from lib.layers.padding import CircularPadConv2d  # noqa: E402
from lib.models.simple import SimpleCNN  # noqa: E402
from lib.models.vgg import VGG13  # noqa: E402
from lib.training import TrainConfig, fit, fit_many  # noqa: E402


# --- models and data -------------------------------------------------------------------------------------------

def make_model(name: str, seed: int, mean, std) -> torch.nn.Module:
    torch.manual_seed(seed)
    if name == "simple":
        return SimpleCNN(in_channels=3, width=32, depth=3, mean=mean, std=std)
    # lib/experiments/anti_aliasing.py SETTINGS["quick"]: width 8, headline filter Binomial-5
    return VGG13(num_classes=10, width=8, pool="maxblur", filter=("binomial", 5), mean=mean, std=std, circular=True)


def augmentation(name: str) -> data.Augment:
    # the chapter's circular shifts for the VGG, the classic pad-and-crop for the plain CNN
    return data.Augment(4, "circular", True) if name.startswith("vgg") else data.Augment(4, "zeros", True)


def to_stock(model: torch.nn.Module) -> torch.nn.Module:
    """The same model with torch's own circular convolution (what a tutorial would write)."""
    for module in model.modules():
        if type(module) is CircularPadConv2d:
            module.__class__ = torch.nn.Conv2d
    return model


@contextlib.contextmanager
def stock_blur_padding():
    """Inside the block, blur pools use torch's own operations: ``F.pad(mode="circular")`` and an NCHW stride-1
    ``F.max_pool2d`` (instead of the one-gather padding and the channels_last detour of lib.layers.blurpool)."""
    fast = blurpool.circular_pad, blurpool._max_pool_stride1
    blurpool.circular_pad = lambda x, pad: F.pad(x, tuple(pad), mode="circular")
    blurpool._max_pool_stride1 = lambda x, kernel_size: F.max_pool2d(x, kernel_size, stride=1)
    try:
        yield
    finally:
        blurpool.circular_pad, blurpool._max_pool_stride1 = fast


def load_images(n: int):
    try:
        images, labels = data.load("cifar10", "train")
        mean, std = data.stats("cifar10")
        source = "CIFAR-10"
    except data.DatasetMissingError:
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, 10, (n,), generator=generator)
        mean, std, source = (0.5,) * 3, (0.25,) * 3, "random images (CIFAR-10 not found; set DATA_DIR)"
    images, labels = data.subset(images, labels, min(n, len(labels)), seed=0)
    return images, labels, mean, std, source


class PerSample(Dataset):
    """What a typical tutorial does: one image at a time, converted and augmented in Python."""

    def __init__(self, images, labels, augment: data.Augment):
        self.images, self.labels, self.augment = images, labels, augment

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.images[i].float() / 255.0
        s = self.augment.translate
        dy, dx = torch.randint(-s, s + 1, (2,)).tolist()
        if self.augment.mode == "circular":
            x = torch.roll(x, (dy, dx), (-2, -1))
        else:
            h, w = x.shape[-2:]
            x = F.pad(x, (s, s, s, s))[:, s - dy:s - dy + h, s - dx:s - dx + w]
        if self.augment.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, self.labels[i]


# --- timing ------------------------------------------------------------------------------------------------------

class StepClock:
    """Marks every training forward pass; per-step cost = time between marks after the warm-up."""

    def __init__(self, model: torch.nn.Module, device: torch.device, warmup: int):
        self.device, self.warmup, self.marks = device, warmup, []
        marks, cuda = self.marks, device.type == "cuda"

        def mark(module, args):  # a plain closure: deepcopy (fit_many's template) keeps it, and so these marks
            if not module.training:
                return
            if cuda:
                event = torch.cuda.Event(enable_timing=True)
                event.record()
                marks.append(event)
            else:
                marks.append(time.process_time())
        self.handle = model.register_forward_pre_hook(mark)

    def per_step_ms(self) -> float:
        self.handle.remove()
        first, last = self.warmup, len(self.marks) - 1
        if last <= first:
            raise RuntimeError(f"only {len(self.marks)} steps marked; need more than --warmup {self.warmup}")
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            return self.marks[first].elapsed_time(self.marks[last]) / (last - first)
        return (self.marks[last] - self.marks[first]) * 1e3 / (last - first)


def config_for(args, name: str, channels_last: bool | None = None) -> TrainConfig:
    return TrainConfig(epochs=1, batch_size=args.batch_size, lr=0.05, weight_decay=5e-4, schedule="onecycle",
                       augment=augmentation(name), channels_last=channels_last)


def run_plain(args, name, images, labels, mean, std, device) -> float:
    model = to_stock(make_model(name, 0, mean, std)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loader = DataLoader(PerSample(images, labels, augmentation(name)), batch_size=args.batch_size, shuffle=True,
                        drop_last=True, num_workers=0)
    clock = StepClock(model, device, args.warmup)
    with stock_blur_padding():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return clock.per_step_ms()


def run_fit(args, name, images, labels, mean, std, device, channels_last=None) -> float:
    model = make_model(name, 0, mean, std)
    clock = StepClock(model, device, args.warmup)
    fit(model, (images, labels), config=config_for(args, name, channels_last), seed=0, device=device,
        progress=False)
    return clock.per_step_ms()


def run_fit_channels_last(*args) -> float:
    return run_fit(*args, channels_last=True)


def run_fit_many(args, name, images, labels, mean, std, device) -> float:
    models = [make_model(name, seed, mean, std) for seed in range(args.seeds)]
    clock = StepClock(models[0], device, args.warmup)  # the hook travels with the template fit_many vmaps
    fit_many(models, (images, labels), config=config_for(args, name), seeds=list(range(args.seeds)),
             device=device, progress=False)
    return clock.per_step_ms() / args.seeds


METHODS = {"plain DataLoader loop": run_plain, "lib.training.fit": run_fit, "fit_many (per seed)": run_fit_many}
CPU_EXTRA = {"fit, channels_last=True": run_fit_channels_last}  # the CUDA default; off by default on the CPU


def benchmark(args, device: torch.device, name: str) -> None:
    steps = args.warmup + args.steps + 1
    images, labels, mean, std, source = load_images(steps * args.batch_size)
    print(f"\n{device.type}: {name}, batches of {args.batch_size}, {args.steps} timed steps after {args.warmup}, "
          f"{args.reps} interleaved repetitions, fit_many with {args.seeds} seeds; {source}; "
          f"clock: {'CUDA events' if device.type == 'cuda' else 'process CPU time'}")
    methods = {**METHODS, **(CPU_EXTRA if device.type == "cpu" else {})}
    times = {method: [] for method in methods}
    for _ in range(args.reps):
        for method, run in methods.items():
            times[method].append(run(args, name, images, labels, mean, std, device))
    plain = times["plain DataLoader loop"]
    print(f"{'method':24s} {'ms/step (median)':>17s} {'min':>8s} {'max':>8s} {'speed-up':>9s}")
    for method, values in times.items():
        ratio = statistics.median(p / v for p, v in zip(plain, values))  # per repetition: neighbours in time
        print(f"{method:24s} {statistics.median(values):17.1f} {min(values):8.1f} {max(values):8.1f} "
              f"{ratio:8.2f}×")


# --- components: padding and augmentation alone ---------------------------------------------------------------

def _interleaved(functions: dict, reps: int, inner: int, device: torch.device) -> dict:
    for fn in functions.values():
        fn(), fn()
    times = {key: [] for key in functions}
    for _ in range(reps):
        for key, fn in functions.items():
            if device.type == "cuda":
                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(inner):
                    fn()
                stop.record()
                torch.cuda.synchronize()
                times[key].append(start.elapsed_time(stop) / inner)
            else:
                begin = time.process_time()
                for _ in range(inner):
                    fn()
                times[key].append((time.process_time() - begin) * 1e3 / inner)
    return {key: statistics.median(values) for key, values in times.items()}


def components(args, device: torch.device) -> None:
    print(f"\n{device.type}: components (median ms, interleaved)")
    x = torch.rand(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    models = {"stock nn.Conv2d circular": to_stock(make_model("vgg13-w8", 0, (0.5,) * 3, (0.25,) * 3)),
              "one-gather circular": make_model("vgg13-w8", 0, (0.5,) * 3, (0.25,) * 3)}
    zero = VGG13(width=8, pool="maxblur", filter=("binomial", 5), circular=False)
    models["zero padding (reference)"] = zero

    def step(model, stock):
        def run():
            with stock_blur_padding() if stock else contextlib.nullcontext():
                loss = F.cross_entropy(model(x), y)
                model.zero_grad(set_to_none=True)
                loss.backward()
        return run
    functions = {key: step(m.to(device), key.startswith("stock")) for key, m in models.items()}
    for key, ms in _interleaved(functions, args.reps, 2, device).items():
        print(f"  VGG13-w8 forward+backward, {key:26s} {ms:8.1f} ms per batch of {args.batch_size}")

    images = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    shift = data.Augment(4, "circular", True)
    per_sample = PerSample(images.cpu(), torch.zeros(256, dtype=torch.int64), shift)
    functions = {"per-sample loop (CPU)": lambda: torch.stack([per_sample[i][0] for i in range(256)]),
                 "Augment, float batch": lambda: shift(images.float() / 255, generator),
                 "Augment, uint8 batch": lambda: shift(images, generator)}
    for key, ms in _interleaved(functions, args.reps, 5, device).items():
        print(f"  augmentation ±4 circular + flip, {key:22s} {ms:8.2f} ms per batch of 256")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="all", help="cpu, cuda or all (cpu, plus cuda when present)")
    parser.add_argument("--model", default="vgg13-w8", choices=("vgg13-w8", "simple"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default 6 CPU, 40 CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2 CPU, 10 CUDA)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--components", action="store_true", help="also time padding and augmentation alone")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default torch's); with other jobs on the machine, 1 thread keeps the CPU "
                             "time honest: waiting OpenMP threads spin, and spinning counts as CPU time")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [torch.device(d) for d in devices if d != "cuda" or torch.cuda.is_available()]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    for device in devices:
        cuda = device.type == "cuda"
        run_args = argparse.Namespace(**{**vars(args), "steps": args.steps or (40 if cuda else 6),
                                         "warmup": args.warmup if args.warmup is not None else (10 if cuda else 2)})
        if args.components:
            components(run_args, device)
        benchmark(run_args, device, args.model)


if __name__ == "__main__":
    main()
