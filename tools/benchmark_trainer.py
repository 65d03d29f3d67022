"""Throughput of the book's trainer against a plain PyTorch loop, side by side in one run (a benchmark, not a test).

Both train the same small CNN for the same number of steps on CIFAR-10 with the same augmentation (random crop with
4-pixel padding and horizontal flip):

- plain:  torchvision-style per-sample transforms in a ``Dataset``, ``DataLoader``, fp32, NCHW;
- lib:    ``lib.training.fit`` — uint8 data resident on the device, batched augmentation, channels_last and
          bfloat16 autocast on CUDA (its defaults), optionally channels_last on the CPU too.

    python tools/benchmark_trainer.py [--device cpu|cuda] [--steps 60] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from lib import data
from lib.models.simple import SimpleCNN
from lib.training import TrainConfig, fit


class PerSampleCifar(Dataset):
    """What a typical tutorial does: one image at a time, converted and augmented in Python."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.images[i].float() / 255.0
        x = F.pad(x, (4, 4, 4, 4))
        top, left = torch.randint(0, 9, (2,)).tolist()
        x = x[:, top:top + 32, left:left + 32]
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, self.labels[i]


def make_model(seed: int, mean, std) -> torch.nn.Module:
    torch.manual_seed(seed)
    return SimpleCNN(in_channels=3, width=32, depth=3, mean=mean, std=std)


def plain_loop(images, labels, steps, batch_size, device, mean, std) -> float:
    model = make_model(0, mean, std).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(PerSampleCifar(images, labels), batch_size=batch_size, shuffle=True, drop_last=True,
                        num_workers=0)
    seen, start, step = 0, None, 0
    while step < steps + 2:
        for x, y in loader:
            if step == 2:  # skip warm-up steps
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start, seen = time.perf_counter(), 0
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(y)
            step += 1
            if step >= steps + 2:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def lib_loop(images, labels, steps, batch_size, device, mean, std, channels_last=None) -> float:
    model = make_model(0, mean, std)
    n = steps * batch_size
    config = TrainConfig(epochs=1, batch_size=batch_size, lr=0.05, schedule="constant",
                         augment=data.Augment(translate=4, flip=True), channels_last=channels_last)
    # a short warm-up run, then the timed one (train_time_s excludes evaluation)
    fit(model, (images[:2 * batch_size], labels[:2 * batch_size]), config=config, device=device, progress=False)
    out = fit(model, (images[:n], labels[:n]), config=config, device=device, progress=False)
    return n / out["train_time_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    device = torch.device(args.device)
    images, labels = data.load("cifar10", "train")
    mean, std = data.stats("cifar10")
    print(f"device {device}, torch {torch.__version__}, {args.steps} steps of {args.batch_size}, "
          f"threads {torch.get_num_threads()}")
    plain = plain_loop(images, labels, args.steps, args.batch_size, device, mean, std)
    print(f"plain DataLoader, fp32 NCHW : {plain:9.0f} img/s")
    ours = lib_loop(images, labels, args.steps, args.batch_size, device, mean, std)
    print(f"lib.training.fit (defaults) : {ours:9.0f} img/s   ratio {ours / plain:.2f}x")
    if device.type == "cpu":
        cl = lib_loop(images, labels, args.steps, args.batch_size, device, mean, std, channels_last=True)
        print(f"lib.training.fit, channels_last on CPU: {cl:9.0f} img/s   ratio {cl / plain:.2f}x")


if __name__ == "__main__":
    main()
