"""Experiments as functions of a configuration, run through the results store.

Each chapter has a module here (``lib.experiments.<chapter>``) that defines ``SETTINGS`` (its scale per profile) and
``runs(profile, section=None)``, the list of :class:`Run` that its figures need. The chapter's notebook and
``python -m lib.reproduce --experiments-only`` call the same ``runs`` and the same :func:`execute`, so a notebook
re-executed after a sweep only reads the store.

:func:`execute` is safe to run from several processes on one store (a lock per run: a run being computed by one is
skipped by the others, which take the next), bounds every run by a time limit (a hang fails loudly, naming the run),
and never serves a result computed by other code without saying so (see :mod:`lib.results`).
"""

from __future__ import annotations

import faulthandler
import importlib
import os
import signal
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch
from filelock import FileLock, Timeout
from tqdm import tqdm

from .. import results
from ..fingerprint import code_fingerprint
from ..training import default_device, seed_everything

# chapter name → (module under lib.experiments, notebook under chapters/)
CHAPTERS = {
    "howto": ("howto", "00_how_to_read.ipynb"),
    "spatial_mixing": ("spatial_mixing", "01_spatial_mixing.ipynb"),
    "anti_aliasing": ("anti_aliasing", "02_anti_aliasing.ipynb"),
    "frequency_sensitivity": ("frequency_sensitivity", "03_frequency_sensitivity.ipynb"),
    "spectral_leakage": ("spectral_leakage", "04_spectral_leakage.ipynb"),
    # last: its scoreboard reads the other chapters' stored results
    "synthesis": ("synthesis", "05_synthesis.ipynb"),
}


class MissingResultsError(RuntimeError):
    """Results of a profile are absent and this machine is not meant to compute them."""


class ProfileUndefinedError(ValueError):
    """A chapter does not define the requested profile (yet)."""


class RunTimeoutError(RuntimeError):
    """A run exceeded its time limit."""


# Seconds one run may take before it is stopped (BOOK_RUN_TIME_LIMIT_S overrides; 0 means no limit). Generous for
# each profile's slowest run, small enough that a hang fails CI in minutes rather than at the 90-minute wall.
RUN_TIME_LIMIT_S = {"quick": 600, "medium": 4 * 3600, "paper": 3600}
# a run ignoring the polite stop (stuck in native code) is ended with its stacks this many seconds later
HARD_STOP_GRACE_S = 60


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

    @property
    def label(self) -> str:
        return f"{self.chapter}/{self.key}"


# sweeps that are not pages of the book: accepted by name (``--chapter selftest``), never run by default
INTERNAL = {"selftest": "selftest"}


def chapter_module(chapter: str):
    if chapter in INTERNAL:
        return importlib.import_module(f"{__name__}.{INTERNAL[chapter]}")
    if chapter not in CHAPTERS:
        raise ValueError(f"unknown chapter {chapter!r}; choose one of {', '.join(CHAPTERS)}")
    return importlib.import_module(f"{__name__}.{CHAPTERS[chapter][0]}")


def defines(chapter: str, profile: str) -> bool:
    return profile in chapter_module(chapter).SETTINGS


def chapter_runs(chapter: str, profile: str, section: str | None = None) -> list[Run]:
    """``runs(profile, section)`` of a chapter, with one clear error when the chapter lacks that profile."""
    results.check_profile(profile)
    if not defines(chapter, profile):
        raise ProfileUndefinedError(
            f"chapter {chapter!r} defines no {profile!r} profile yet (it has {', '.join(chapter_module(chapter).SETTINGS)}); "
            f"add SETTINGS[{profile!r}] in {chapter_module(chapter).__name__.replace('.', '/')}.py")
    return chapter_module(chapter).runs(profile, section)


def complete(chapter: str, profile: str) -> bool:
    """True when every run of a chapter's profile has a readable result (stale ones count: they are shown flagged)."""
    if not defines(chapter, profile):
        return False
    store = results.Store(profile)
    runs = chapter_runs(chapter, profile)
    return bool(runs) and all(store.lookup(r.chapter, r.name, r.config).state in ("present", "stale") for r in runs)


def resolve_profile(profile: str, chapter: str) -> str:
    """``auto`` is the most complete committed profile of the chapter (paper, then medium), else quick."""
    results.check_profile(profile, allow_auto=True)
    if profile != "auto":
        return profile
    return next((p for p in results.COMMITTED if complete(chapter, p)), "quick")


def run_time_limit(profile: str) -> float:
    value = os.environ.get("BOOK_RUN_TIME_LIMIT_S")
    if value is None:
        return RUN_TIME_LIMIT_S[profile]
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"BOOK_RUN_TIME_LIMIT_S must be a number of seconds (0: no limit), got {value!r}") from None
    if seconds < 0:
        raise ValueError(f"BOOK_RUN_TIME_LIMIT_S must be ≥ 0 (0: no limit), got {value!r}")
    return seconds


@contextmanager
def time_limit(seconds: float, label: str):
    """Stop the block after ``seconds``: first with :class:`RunTimeoutError` (a SIGALRM in the main thread, which also
    wakes a sleeping system call), then, if native code does not return within :data:`HARD_STOP_GRACE_S`, by ending
    the process after dumping every thread's stack (``faulthandler``). Either way the run is named on stderr."""
    if not seconds:
        yield
        return
    message = (f"[lib.experiments] run {label} exceeded its time limit of {seconds:.0f} s; stopping it "
               f"(BOOK_RUN_TIME_LIMIT_S or --run-time-limit changes the limit)")
    # a watchdog thread names the run even when the main thread is stuck in native code (torch releases the GIL)
    timer = threading.Timer(seconds, lambda: os.write(2, f"\n{message}\n".encode()))
    timer.daemon = True
    timer.start()
    stream = sys.__stderr__ if sys.__stderr__ is not None and hasattr(sys.__stderr__, "fileno") else None
    hard = stream is not None
    if hard:
        try:
            faulthandler.dump_traceback_later(seconds + HARD_STOP_GRACE_S, exit=True, file=stream)
        except (ValueError, OSError, RuntimeError):  # no usable file descriptor (some embedded interpreters)
            hard = False
    polite = threading.current_thread() is threading.main_thread()
    if polite:
        def alarm(signum, frame):
            raise RunTimeoutError(message)
        started = time.monotonic()
        previous_handler = signal.signal(signal.SIGALRM, alarm)
        # pytest-timeout (and others) may have an alarm pending: restore it afterwards
        previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        timer.cancel()
        if polite:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous_handler)
            if previous_delay:
                left = previous_delay - (time.monotonic() - started)
                signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), previous_interval)
        if hard:
            faulthandler.cancel_dump_traceback_later()


class _Fingerprints:
    """Code and data fingerprints of runs, computed once per function / config within one ``execute``."""

    def __init__(self):
        self._code: dict = {}

    def code(self, run: Run) -> str:
        if run.fn not in self._code:
            self._code[run.fn] = code_fingerprint(run.fn)
        return self._code[run.fn]

    @staticmethod
    def data(run: Run) -> dict[str, str]:
        return results.data_fingerprints(run.config)


def execute(runs: list[Run], profile: str, *, device: torch.device | str | None = None,
            allow_compute: bool | None = None, max_minutes: float | None = None, progress: bool = True,
            time_limit_s: float | None = None) -> list[dict]:
    """Results of ``runs``, computing (and storing) only those the store lacks: an interrupted sweep resumes.

    ``allow_compute`` defaults to True for the quick profile, and for the others only on a CUDA machine: elsewhere a
    missing medium or paper result raises :class:`MissingResultsError` naming the command that computes it (hours of
    CPU belong in a background ``lib.reproduce`` job, not in a notebook cell). A result computed by other code or on
    other data is recomputed when computing is allowed, and otherwise returned with ``result["stale"]`` saying why
    (figure captions show it). With ``max_minutes``, no new run starts after that budget; the missing ones come back
    as ``None`` (re-run to resume). ``time_limit_s`` bounds each run (default :data:`RUN_TIME_LIMIT_S`).
    """
    results.check_profile(profile)
    device = torch.device(device) if device is not None else default_device()
    if allow_compute is None:
        allow_compute = profile == "quick" or device.type == "cuda"
    if max_minutes is not None and max_minutes < 0:
        raise ValueError(f"max_minutes must be ≥ 0, got {max_minutes}")
    limit = run_time_limit(profile) if time_limit_s is None else time_limit_s
    store = results.Store(profile)
    prints = _Fingerprints()

    def look(run: Run) -> results.Lookup:
        found = store.lookup(run.chapter, run.name, run.config, code=prints.code(run), data=prints.data(run))
        if found.state == "corrupt":
            store.quarantine(found)
            return results.Lookup("missing", found.path)
        return found

    lookups = [look(r) for r in runs]
    found = [f.result if f.state == "present" else None for f in lookups]
    missing = [i for i, f in enumerate(lookups) if f.state == "missing"]
    stale = [i for i, f in enumerate(lookups) if f.state == "stale"]
    if not allow_compute:
        if missing:
            chapters = sorted({runs[i].chapter for i in missing})
            raise MissingResultsError(
                f"{len(missing)} of {len(runs)} {profile}-profile results are missing for chapter(s) "
                f"{', '.join(chapters)} (looked in {store.root}). Compute them with `python -m lib.reproduce "
                f"--profile {profile} --experiments-only --chapter {chapters[0]}` (a GPU takes minutes, a laptop "
                f"hours) and commit results/, or use profile='quick'.")
        for i in stale:
            found[i] = {**lookups[i].result, "stale": lookups[i].reason}
        if stale:
            warnings.warn(f"{len(stale)} {profile}-profile result(s) of {runs[stale[0]].chapter} are stale: "
                          f"{lookups[stale[0]].reason}. Shown flagged; refresh with `python -m lib.reproduce "
                          f"--profile {profile} --experiments-only --chapter {runs[stale[0]].chapter}`.",
                          RuntimeWarning, stacklevel=2)
        return found
    for i in stale:
        print(f"[{runs[i].label}] stale ({lookups[i].reason}): computing it again", file=sys.stderr, flush=True)
    # breadth-first over seeds: an interrupted sweep then has every arm of the first seeds, not all seeds of a few
    todo = sorted(missing + stale, key=lambda i: (int(runs[i].config.get("seed", 0) or 0), i))
    started = time.perf_counter()

    def over_budget() -> bool:
        return max_minutes is not None and time.perf_counter() - started >= 60 * max_minutes

    def compute(i: int, wait: bool) -> bool:
        """Compute run ``i`` under its lock; False when another process holds the lock (beyond the time budget when
        ``wait``). A lock dies with its process (``flock``), so a crashed runner's runs are taken over."""
        run = runs[i]
        lock = FileLock(store.lock_path(run.chapter, run.name, run.config))
        timeout = 0
        if wait:
            timeout = -1 if max_minutes is None else max(0.0, 60 * max_minutes - (time.perf_counter() - started))
        try:
            lock.acquire(timeout=timeout, poll_interval=1.0)
        except Timeout:
            return False
        try:
            again = look(run)
            if again.state == "present":  # another process finished it meanwhile
                found[i] = again.result
                return True
            seed_everything(int(run.config.get("seed", 0)))
            t0 = time.perf_counter()
            with time_limit(limit, run.label):
                output = run.fn(dict(run.config), device)
                if device.type == "cuda":
                    torch.cuda.synchronize()
            output["provenance"] = results.provenance(profile, run.config, device, time.perf_counter() - t0,
                                                      code=prints.code(run))
            store.put(run.chapter, run.name, run.config, output)
            found[i] = store.get(run.chapter, run.name, run.config)
            return True
        finally:
            lock.release()

    bar = tqdm(total=len(todo), desc=f"{profile} runs", disable=not progress or not todo, file=sys.stderr,
               leave=False)
    deferred = []
    for i in todo:
        if over_budget():
            break
        bar.set_postfix_str(f"{runs[i].chapter}/{runs[i].name}")
        if compute(i, wait=False):
            bar.update()
        else:
            deferred.append(i)  # another runner has it: take the next one
    for i in deferred:  # then wait for the other runners' runs (or compute them if they died)
        if over_budget():
            break
        bar.set_postfix_str(f"waiting for {runs[i].chapter}/{runs[i].name}")
        if compute(i, wait=True):
            bar.update()
    bar.close()
    return found


def missing_runs(runs: list[Run], profile: str) -> list[Run]:
    """Runs without a valid result computed by their current code (missing, stale or corrupt)."""
    return [r for r, s in zip(runs, statuses(runs, profile)) if s.state != "present"]


def statuses(runs: list[Run], profile: str) -> list[results.Lookup]:
    """What the store holds for each run (nothing is moved or computed)."""
    store = results.Store(profile)
    prints = _Fingerprints()
    return [store.lookup(r.chapter, r.name, r.config, code=prints.code(r), data=prints.data(r)) for r in runs]


def compute_by_key(chapter: str, profile: str, key: str, threads: int | None = None) -> str:
    """Compute one run named by its key (what a Ray task or a SLURM array job runs); returns the key."""
    if threads:
        torch.set_num_threads(threads)
    matching = [r for r in chapter_runs(chapter, profile) if r.key == key]
    if not matching:
        raise ValueError(f"chapter {chapter!r} has no {profile}-profile run with key {key!r}")
    execute(matching, profile, allow_compute=True, progress=False)
    return key
