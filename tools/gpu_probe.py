"""Predict what each chapter's profile costs on this machine, from a few timed training steps of every model family.

    python tools/gpu_probe.py                                  # paper profile on the GPU, all chapters (≤ 3 min)
    python tools/gpu_probe.py --profile medium --device cpu --chapter spectral_leakage

Every run of a profile is grouped into a *family* (same experiment and configuration up to the seed). One run per
family is executed for real, but each call of the trainer inside it trains only a few steps: two short epochs on a
slice of the training set, the first for warm-up (allocations, cuDNN autotuning), the second timed. The run's
prediction is its real cost outside training (evaluation, attacks, spectra — measured, since it runs in full) plus
the timed step cost times the number of steps the full schedule would take. A family's prediction stands for each
of its seeds. Nothing is written to the results store; ``--json`` writes the table (commit it as the first real
numbers of a new GPU).

Needs only torch and the data (``DATA_DIR``). Prints predicted minutes per chapter and per family.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib import experiments, training  # noqa: E402
from lib.experiments import CHAPTERS, RunTimeoutError, chapter_runs, defines, time_limit  # noqa: E402
from lib.results import PROFILES, device_name  # noqa: E402
from lib.training import seed_everything  # noqa: E402

WARMUP_STEPS = 3
TIMED_STEPS = 5


class _TrainerProbe:
    """Stands in for ``lib.training.fit``: trains a few steps for real, records what the full schedule would cost."""

    def __init__(self, real_fit):
        self.real_fit = real_fit
        self.calls: list[dict] = []

    def __call__(self, model, train, test=None, *, config=training.TrainConfig(), **kwargs):
        x, y = train
        steps_per_epoch = math.ceil(len(x) / config.batch_size)
        total_steps = steps_per_epoch * config.epochs
        per_epoch = min(steps_per_epoch, max(WARMUP_STEPS, TIMED_STEPS))
        n = min(len(x), per_epoch * config.batch_size)
        short = dataclasses.replace(config, epochs=2, eval_every=2)
        started = time.perf_counter()
        out = self.real_fit(model, (x[:n], y[:n]), test, config=short, **kwargs)
        wall = time.perf_counter() - started
        timed = out["history"][1]["epoch_time_s"]
        steps_timed = math.ceil(n / config.batch_size)
        step_s = timed / steps_timed
        self.calls.append({"step_s": step_s, "total_steps": total_steps, "probe_wall_s": wall,
                           "batch_size": config.batch_size, "epochs": config.epochs})
        return out


def _family(run) -> str:
    """Runs equal up to the seed (some experiment names end in ``-s<seed>``)."""
    config = {k: v for k, v in run.config.items() if k != "seed"}
    name = re.sub(rf"-s{run.config.get('seed')}$", "", run.name)
    return f"{run.chapter}/{name}:{json.dumps(config, sort_keys=True, default=str)}"


def probe_chapter(chapter: str, profile: str, device: torch.device, cap_s: float) -> list[dict]:
    module = experiments.chapter_module(chapter)
    runs = chapter_runs(chapter, profile)
    families: dict[str, list] = defaultdict(list)
    for run in runs:
        families[_family(run)].append(run)
    rows = []
    for index, (family, members) in enumerate(families.items(), 1):
        run = members[0]
        probe = _TrainerProbe(training.fit)
        patched = [m for m in (module, sys.modules.get(run.fn.__module__)) if m is not None and hasattr(m, "fit")]
        originals = {id(m): m.fit for m in patched}
        for m in patched:
            m.fit = probe
        seed_everything(int(run.config.get("seed", 0)))
        started = time.perf_counter()
        note = ""
        try:
            with time_limit(cap_s, run.label):
                run.fn(dict(run.config), device)
            if device.type == "cuda":
                torch.cuda.synchronize()
        except RunTimeoutError:
            note = f"stopped at the {cap_s:.0f} s probe cap: a lower bound"
        finally:
            for m in patched:
                m.fit = originals[id(m)]
        wall = time.perf_counter() - started
        outside = max(0.0, wall - sum(c["probe_wall_s"] for c in probe.calls))
        training_s = sum(c["step_s"] * c["total_steps"] for c in probe.calls)
        predicted = outside + training_s
        rows.append({"chapter": chapter, "experiment": run.name, "section": run.section, "seeds": len(members),
                     "family": family, "trainings": len(probe.calls),
                     "step_ms": [round(1000 * c["step_s"], 2) for c in probe.calls],
                     "steps": [c["total_steps"] for c in probe.calls], "outside_training_s": round(outside, 1),
                     "predicted_s_per_run": round(predicted, 1), "predicted_s": round(predicted * len(members), 1),
                     "note": note})
        print(f"  [{index}/{len(families)}] {run.name:10s} {run.section:18s} ×{len(members)} seeds: "
              f"{predicted / 60:6.2f} min/run (steps {rows[-1]['steps']}, {rows[-1]['step_ms']} ms/step, "
              f"{outside:.1f} s outside training) {note}", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="paper", choices=PROFILES)
    parser.add_argument("--chapter", action="append", help="repeatable; default: every chapter with this profile")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--cap", type=float, default=120, help="seconds one probed run may take (default 120)")
    parser.add_argument("--json", type=Path, default=None, help="write the table here")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    chapters = args.chapter or [c for c in CHAPTERS if defines(c, args.profile)]
    print(f"probing profile {args.profile} on {device_name(device)} (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)", flush=True)
    started = time.perf_counter()
    rows, totals = [], {}
    for chapter in chapters:
        print(f"[{chapter}]", flush=True)
        chapter_rows = probe_chapter(chapter, args.profile, device, args.cap)
        rows += chapter_rows
        totals[chapter] = sum(r["predicted_s"] for r in chapter_rows) / 60
    print(f"\npredicted minutes per chapter ({args.profile} profile, {device_name(device)}):")
    for chapter, minutes in totals.items():
        print(f"  {chapter:24s} {minutes:8.1f} min")
    print(f"  {'total':24s} {sum(totals.values()):8.1f} min   (probe took {(time.perf_counter() - started) / 60:.1f} min)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"profile": args.profile, "device": device_name(device),
                                         "torch": torch.__version__, "threads": torch.get_num_threads(),
                                         "minutes": totals, "families": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
