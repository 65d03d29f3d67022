"""Experiments as functions of a configuration, run through the results store.

Each chapter has a module here (``lib.experiments.<chapter>``) that defines ``SETTINGS`` (its scale per profile) and
``runs(profile, section=None)``, the list of :class:`Run` that its figures need. The chapter's notebook and
``python -m lib.reproduce --experiments-only`` call the same ``runs`` and the same :func:`execute`, so a notebook
re-executed after a sweep only reads the store.
"""

from __future__ import annotations

import importlib
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm import tqdm

from .. import results
from ..training import default_device, seed_everything

# chapter name → (module under lib.experiments, notebook under chapters/)
CHAPTERS = {
    "howto": ("howto", "00_how_to_read.ipynb"),
    "spatial_mixing": ("spatial_mixing", "01_spatial_mixing.ipynb"),
    "anti_aliasing": ("anti_aliasing", "02_anti_aliasing.ipynb"),
    "frequency_sensitivity": ("frequency_sensitivity", "03_frequency_sensitivity.ipynb"),
    "spectral_leakage": ("spectral_leakage", "04_spectral_leakage.ipynb"),
}


class MissingResultsError(RuntimeError):
    """Paper-profile results are absent and this machine is not meant to compute them."""


@dataclass(frozen=True)
class Run:
    """One experiment: ``fn(config, device) -> dict`` of metrics, curves and small arrays (never checkpoints)."""
    chapter: str
    name: str
    config: dict
    fn: Callable[[dict, torch.device], dict] = field(compare=False, repr=False)
    section: str = ""

    @property
    def key(self) -> str:
        return results.key(self.name, self.config)


def chapter_module(chapter: str):
    if chapter not in CHAPTERS:
        raise ValueError(f"unknown chapter {chapter!r}; choose one of {', '.join(CHAPTERS)}")
    return importlib.import_module(f"{__name__}.{CHAPTERS[chapter][0]}")


def resolve_profile(profile: str, chapter: str) -> str:
    """``auto`` means the committed paper results when the chapter has all of them, else the quick profile."""
    results.check_profile(profile, allow_auto=True)
    if profile != "auto":
        return profile
    paper_runs = chapter_module(chapter).runs("paper")
    store = results.Store("paper")
    complete = paper_runs and all(store.path(r.chapter, r.name, r.config).is_file() for r in paper_runs)
    return "paper" if complete else "quick"


def execute(runs: list[Run], profile: str, *, device: torch.device | str | None = None,
            allow_compute: bool | None = None, max_minutes: float | None = None, progress: bool = True) -> list[dict]:
    """Results of ``runs``, computing (and storing) only those the store lacks: an interrupted sweep resumes.

    ``allow_compute`` defaults to True except for the paper profile on a machine without CUDA, where a missing
    result raises :class:`MissingResultsError` naming the command that computes it. With ``max_minutes``, no new run
    starts after that budget; the missing ones come back as ``None`` (re-run to resume).
    """
    results.check_profile(profile)
    device = torch.device(device) if device is not None else default_device()
    if allow_compute is None:
        allow_compute = profile != "paper" or device.type == "cuda"
    store = results.Store(profile)
    found = [store.get(r.chapter, r.name, r.config) for r in runs]
    missing = [i for i, f in enumerate(found) if f is None]
    if missing and not allow_compute:
        chapters = sorted({runs[i].chapter for i in missing})
        raise MissingResultsError(
            f"{len(missing)} of {len(runs)} {profile}-profile results are missing for chapter(s) {', '.join(chapters)} "
            f"(looked in {store.root}). Compute them on a GPU with `python -m lib.reproduce --profile {profile} "
            f"--experiments-only --chapter {chapters[0]}` and commit results/, or use profile='quick'.")
    started = time.perf_counter()
    bar = tqdm(missing, desc=f"{profile} runs", disable=not progress or not missing, file=sys.stderr, leave=False)
    for i in bar:
        if max_minutes is not None and time.perf_counter() - started > 60 * max_minutes:
            break
        run = runs[i]
        bar.set_postfix_str(f"{run.chapter}/{run.name}")
        seed_everything(int(run.config.get("seed", 0)))
        t0 = time.perf_counter()
        output = run.fn(dict(run.config), device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        output["provenance"] = results.provenance(profile, run.config, device, time.perf_counter() - t0)
        store.put(run.chapter, run.name, run.config, output)
        found[i] = store.get(run.chapter, run.name, run.config)
    bar.close()
    return found


def missing_runs(runs: list[Run], profile: str) -> list[Run]:
    store = results.Store(profile)
    return [r for r in runs if not store.path(r.chapter, r.name, r.config).is_file()]
