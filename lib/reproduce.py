"""Re-run the book headlessly.

    python -m lib.reproduce --profile quick                     # execute every chapter notebook with papermill
    python -m lib.reproduce --profile paper --chapter anti_aliasing --experiments-only --max-minutes 8

Notebooks are executed into ``_build/executed/<profile>/``. ``--experiments-only`` computes a profile's runs without
Jupyter (for the GPU machine, whose Python has no Jupyter packages); results go to the store, and an interrupted or
time-boxed sweep resumes where it stopped. Exit status 3 means "time budget reached, run again to continue".
"""

from __future__ import annotations

import argparse
import sys
import time

from . import paths
from .experiments import CHAPTERS, chapter_module, execute, missing_runs
from .results import PROFILES

INCOMPLETE = 3


def run_experiments(chapters: list[str], profile: str, max_minutes: float | None) -> int:
    started = time.perf_counter()
    for chapter in chapters:
        runs = chapter_module(chapter).runs(profile)
        todo = missing_runs(runs, profile)
        print(f"[{chapter}] {len(runs)} runs, {len(todo)} to compute", flush=True)
        budget = None if max_minutes is None else max_minutes - (time.perf_counter() - started) / 60
        if budget is not None and budget <= 0:
            return INCOMPLETE
        execute(runs, profile, allow_compute=True, max_minutes=budget)
        left = missing_runs(runs, profile)
        if left:
            print(f"[{chapter}] time budget reached, {len(left)} runs left: run the same command again to resume",
                  flush=True)
            return INCOMPLETE
    print(f"all runs present ({(time.perf_counter() - started) / 60:.1f} min)", flush=True)
    return 0


def run_notebooks(chapters: list[str], profile: str, timeout_s: int) -> int:
    import papermill

    out_dir = paths.REPO_ROOT / "_build" / "executed" / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = []
    for chapter in chapters:
        notebook = paths.REPO_ROOT / "chapters" / CHAPTERS[chapter][1]
        if not notebook.is_file():
            raise FileNotFoundError(f"chapter {chapter!r} has no notebook at {notebook}")
        print(f"[{chapter}] executing {notebook.name} at profile {profile}", flush=True)
        start = time.perf_counter()
        papermill.execute_notebook(str(notebook), str(out_dir / notebook.name), parameters={"profile": profile},
                                   cwd=str(notebook.parent), kernel_name="python3", progress_bar=False,
                                   log_output=True, execution_timeout=timeout_s)
        timings.append((chapter, time.perf_counter() - start))
        print(f"[{chapter}] done in {timings[-1][1]:.0f} s", flush=True)
    print("\nchapter wall times:")
    for chapter, seconds in timings:
        print(f"  {chapter:24s} {seconds / 60:5.1f} min")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", required=True, help=f"one of {', '.join(PROFILES)}")
    parser.add_argument("--chapter", action="append", help=f"repeatable; default all: {', '.join(CHAPTERS)}")
    parser.add_argument("--experiments-only", action="store_true",
                        help="compute the runs without executing notebooks (no Jupyter needed)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="with --experiments-only: start no new run after this many minutes (exit 3)")
    parser.add_argument("--cell-timeout", type=int, default=1800, help="seconds per notebook cell")
    args = parser.parse_args(argv)
    if args.profile not in PROFILES:
        parser.error(f"unknown profile {args.profile!r}; choose one of {', '.join(PROFILES)}")
    chapters = args.chapter or list(CHAPTERS)
    unknown = [c for c in chapters if c not in CHAPTERS]
    if unknown:
        parser.error(f"unknown chapter(s) {', '.join(unknown)}; choose from {', '.join(CHAPTERS)}")
    if args.experiments_only:
        return run_experiments(chapters, args.profile, args.max_minutes)
    return run_notebooks(chapters, args.profile, args.cell_timeout)


if __name__ == "__main__":
    sys.exit(main())
