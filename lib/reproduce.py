"""Re-run the book headlessly.

    python -m lib.reproduce --profile quick                     # execute every chapter notebook with papermill
    python -m lib.reproduce --profile medium --chapter anti_aliasing --experiments-only --max-minutes 60
    python -m lib.reproduce --status                            # what the store holds, per chapter and profile
    python -m lib.reproduce --profile paper --experiments-only --launcher ray --address auto

Notebooks are executed into ``_build/executed/<profile>/``. ``--experiments-only`` computes a profile's runs without
Jupyter (for a GPU machine, whose Python may have no Jupyter packages); results go to the store, and an interrupted or
time-boxed sweep resumes where it stopped. Several runners may work on one store at once: they split the runs.

Exit status: 0 all runs present; 3 time budget reached (run the same command again to continue); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter

from . import paths
from .experiments import (CHAPTERS, INTERNAL, ProfileUndefinedError, chapter_runs, defines, execute, missing_runs,
                          statuses)
from .launchers import LAUNCHERS
from .results import PROFILES

INCOMPLETE = 3
# seconds per notebook cell when executing chapters: the whole quick chapter fits in minutes, so a hang fails in
# minutes too; medium/paper cells only read committed results
CELL_TIMEOUT_S = {"quick": 1200, "medium": 1200, "paper": 1200}


def refresh_command(chapter: str, profile: str) -> str:
    return f"python -m lib.reproduce --profile {profile} --experiments-only --chapter {chapter}"


def show_status(chapters: list[str], profiles: list[str]) -> int:
    """Per chapter and profile: results present / missing / stale / corrupt, and the command that refreshes them."""
    print(f"{'chapter':24s} {'profile':8s} {'runs':>5s} {'present':>8s} {'missing':>8s} {'stale':>6s} {'corrupt':>8s}")
    for chapter in chapters:
        for profile in profiles:
            if not defines(chapter, profile):
                print(f"{chapter:24s} {profile:8s}   (profile not defined for this chapter)")
                continue
            runs = chapter_runs(chapter, profile)
            found = statuses(runs, profile)
            count = Counter(f.state for f in found)
            print(f"{chapter:24s} {profile:8s} {len(runs):5d} {count['present']:8d} {count['missing']:8d} "
                  f"{count['stale']:6d} {count['corrupt']:8d}")
            for run, f in zip(runs, found):
                if f.state in ("stale", "corrupt"):
                    print(f"    {f.state}: {paths.shown(f.path)} {f.reason}")
            if count["present"] < len(runs):
                print(f"    refresh: {refresh_command(chapter, profile)}")
    return 0


def run_experiments(chapters: list[str], profile: str, max_minutes: float | None, launcher: str = "local",
                    options: argparse.Namespace | None = None) -> int:
    started = time.perf_counter()
    for chapter in chapters:
        try:
            runs = chapter_runs(chapter, profile)
        except ProfileUndefinedError as error:
            print(f"[{chapter}] skipped: {error}", flush=True)
            continue
        todo = missing_runs(runs, profile)
        print(f"[{chapter}] {len(runs)} runs, {len(todo)} to compute", flush=True)
        if not todo:
            continue
        budget = None if max_minutes is None else max_minutes - (time.perf_counter() - started) / 60
        if budget is not None and budget <= 0:
            print(f"[{chapter}] time budget reached, {len(todo)} runs left: run the same command again to resume",
                  flush=True)
            return INCOMPLETE
        if launcher == "local":
            execute(runs, profile, allow_compute=True, max_minutes=budget,
                    time_limit_s=getattr(options, "run_time_limit", None))
        else:
            dispatch(launcher, [(r.chapter, profile, r.key) for r in todo], options)
        left = missing_runs(runs, profile)
        if left:
            print(f"[{chapter}] time budget reached, {len(left)} runs left: run the same command again to resume",
                  flush=True)
            return INCOMPLETE
    print(f"all runs present ({(time.perf_counter() - started) / 60:.1f} min)", flush=True)
    return 0


def dispatch(launcher: str, jobs: list[tuple[str, str, str]], options: argparse.Namespace) -> None:
    from . import launchers
    if launcher == "ray":
        launchers.run_ray(jobs, address=options.address, threads=options.threads, gpus_per_run=options.gpus_per_run,
                          num_cpus=options.ray_cpus)
    else:
        folder = paths.cache_dir() / "submitit"
        launchers.run_slurm(jobs, folder=folder, threads=options.threads, partition=options.partition,
                            time_min=options.slurm_time, gpus_per_job=options.gpus_per_job,
                            cpus_per_job=options.cpus_per_job, cluster=options.submitit_cluster)


def run_notebooks(chapters: list[str], profile: str, timeout_s: int) -> int:
    import papermill

    out_dir = paths.REPO_ROOT / "_build" / "executed" / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = []
    for chapter in chapters:
        notebook = paths.REPO_ROOT / "chapters" / CHAPTERS[chapter][1]
        if not notebook.is_file():
            raise FileNotFoundError(f"chapter {chapter!r} has no notebook at {notebook}")
        print(f"[{chapter}] executing {notebook.name} at profile {profile} (cell limit {timeout_s} s)", flush=True)
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
    parser.add_argument("--profile", help=f"one of {', '.join(PROFILES)} (with --status: default all)")
    parser.add_argument("--chapter", action="append", help=f"repeatable; default all: {', '.join(CHAPTERS)}")
    parser.add_argument("--status", action="store_true", help="list present / missing / stale / corrupt results")
    parser.add_argument("--experiments-only", action="store_true",
                        help="compute the runs without executing notebooks (no Jupyter needed)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="with --experiments-only: start no new run after this many minutes (exit 3)")
    parser.add_argument("--run-time-limit", type=float, default=None,
                        help="seconds one run may take before it is stopped (default per profile; 0: none)")
    parser.add_argument("--cell-timeout", type=int, default=None,
                        help=f"seconds per notebook cell (default {CELL_TIMEOUT_S['quick']})")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per process (CPU numbers are reproducible for one thread count)")
    cluster = parser.add_argument_group("several machines (with --experiments-only)")
    cluster.add_argument("--launcher", choices=LAUNCHERS, default="local",
                         help="local: this process; ray: one Ray task per run; slurm: a job array via submitit")
    cluster.add_argument("--address", default=None, help="ray: address of an existing cluster ('auto' to find it)")
    cluster.add_argument("--ray-cpus", type=int, default=None, help="ray: CPUs of the local cluster it starts")
    cluster.add_argument("--gpus-per-run", type=float, default=None,
                         help="ray: GPUs per run (default 1 when the cluster has GPUs, else 0)")
    cluster.add_argument("--partition", default=None, help="slurm: partition")
    cluster.add_argument("--slurm-time", type=int, default=60, help="slurm: minutes per job (default 60)")
    cluster.add_argument("--gpus-per-job", type=int, default=1, help="slurm: GPUs per job (default 1)")
    cluster.add_argument("--cpus-per-job", type=int, default=4, help="slurm: CPUs per job (default 4)")
    cluster.add_argument("--submitit-cluster", default=None, choices=["slurm", "local", "debug"],
                         help="submitit backend (default: slurm when available); 'local' runs jobs on this machine")
    args = parser.parse_args(argv)

    chapters = args.chapter or list(CHAPTERS)
    unknown = [c for c in chapters if c not in CHAPTERS and c not in INTERNAL]
    if unknown:
        parser.error(f"unknown chapter(s) {', '.join(unknown)}; choose from {', '.join(CHAPTERS)}")
    if args.profile is not None and args.profile not in PROFILES:
        parser.error(f"unknown profile {args.profile!r}; choose one of {', '.join(PROFILES)}")
    for name in ("max_minutes", "run_time_limit", "threads"):
        value = getattr(args, name)
        if value is not None and value < 0:
            parser.error(f"--{name.replace('_', '-')} must be ≥ 0, got {value}")
    if args.threads == 0:
        parser.error("--threads must be at least 1")
    if args.status:
        return show_status(chapters, [args.profile] if args.profile else list(PROFILES))
    if args.profile is None:
        parser.error("--profile is required (or use --status)")
    if not args.experiments_only:
        for flag, value in (("--max-minutes", args.max_minutes), ("--run-time-limit", args.run_time_limit)):
            if value is not None:
                parser.error(f"{flag} applies to --experiments-only; notebooks are bounded by --cell-timeout")
        if args.launcher != "local":
            parser.error("--launcher applies to --experiments-only")
    elif args.cell_timeout is not None:
        parser.error("--cell-timeout applies to notebook execution, not to --experiments-only")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
        # the notebooks' kernels are other processes: they read the thread count from the environment (without it a
        # kernel uses every core, and two side by side oversubscribe the machine, several times slower)
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[variable] = str(args.threads)
    if args.experiments_only:
        return run_experiments(chapters, args.profile, args.max_minutes, args.launcher, args)
    return run_notebooks(chapters, args.profile, args.cell_timeout or CELL_TIMEOUT_S[args.profile])


if __name__ == "__main__":
    sys.exit(main())
