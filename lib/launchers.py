"""Where the runs of a sweep are computed: this process, a Ray cluster, or a SLURM job array (through submitit).

The runs of a sweep are independent, so every launcher hands each missing run, named by ``(chapter, profile, key)``,
to :func:`lib.experiments.compute_by_key` on some worker. Workers write into the same results store (a shared
filesystem on a cluster), under the same per-run locks, so resuming, several launchers at once and
``python -m lib.reproduce --status`` work unchanged. Ray and submitit are imported only when asked for.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import paths

LAUNCHERS = ("local", "ray", "slurm")
# environment that decides where workers read data and write results: forwarded to every worker
FORWARDED_ENV = ("DATA_DIR", "BOOK_RESULTS_DIR", "BOOK_CACHE_DIR", "BOOK_OFFLINE", "BOOK_COMMIT", "BOOK_RUN_TIME_LIMIT_S")


def _worker_env() -> dict[str, str]:
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    # workers import `lib` from this checkout even where it is not pip-installed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(paths.REPO_ROOT), os.environ.get("PYTHONPATH")]))
    # a worker must stamp the same commit as the driver (its cwd may not be the checkout)
    from .results import git_commit
    env.setdefault("BOOK_COMMIT", git_commit())
    return env


def _ray_compute(chapter: str, profile: str, key: str, threads: int | None, env: dict[str, str]) -> str:
    os.environ.update(env)
    if env.get("PYTHONPATH"):
        sys.path[:0] = [p for p in env["PYTHONPATH"].split(os.pathsep) if p not in sys.path]
    from lib.experiments import compute_by_key
    return compute_by_key(chapter, profile, key, threads)


def run_ray(jobs: list[tuple[str, str, str]], *, address: str | None = None, threads: int | None = None,
            gpus_per_run: float | None = None, num_cpus: int | None = None) -> list[str]:
    """One Ray task per run (one GPU each when the cluster has GPUs); ``address`` joins an existing cluster."""
    try:
        import ray
    except ImportError:
        raise SystemExit("--launcher ray needs Ray: pip install 'ray==2.60.0' (see requirements.txt)") from None
    env = _worker_env()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray would otherwise report usage over the internet
    local = {} if address is not None else {"num_cpus": num_cpus, "_node_ip_address": "127.0.0.1"}
    # a cluster started here listens on the loopback interface only
    ray.init(address=address, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=True,
             ignore_reinit_error=True, **local)
    try:
        gpus = gpus_per_run
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_gpus=gpus, num_cpus=1, max_retries=1)(_ray_compute)
        pending = [task.remote(chapter, profile, key, threads, env) for chapter, profile, key in jobs]
        done = []
        for ref in pending:
            done.append(ray.get(ref))
            print(f"[ray] {len(done)}/{len(pending)} runs done", flush=True)
        return done
    finally:
        if address is None:
            ray.shutdown()


def _submitit_compute(chapter: str, profile: str, key: str, threads: int | None, env: dict[str, str]) -> str:
    return _ray_compute(chapter, profile, key, threads, env)


def run_slurm(jobs: list[tuple[str, str, str]], *, folder: Path, threads: int | None = None,
              partition: str | None = None, time_min: int = 60, gpus_per_job: int = 1, cpus_per_job: int = 4,
              cluster: str | None = None) -> list[str]:
    """A SLURM job array (one job per run) through submitit; ``cluster="local"`` runs it on this machine instead."""
    try:
        import submitit
    except ImportError:
        raise SystemExit("--launcher slurm needs submitit: pip install 'submitit==1.5.4' (see requirements.txt)") \
            from None
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    parameters = {"timeout_min": time_min, "cpus_per_task": cpus_per_job}
    if executor.cluster == "slurm":
        parameters["slurm_gpus_per_node"] = gpus_per_job
        if partition:
            parameters["slurm_partition"] = partition
    elif executor.cluster == "local":
        parameters["gpus_per_node"] = 0
    executor.update_parameters(**parameters)
    env = _worker_env()
    with executor.batch():
        submitted = [executor.submit(_submitit_compute, chapter, profile, key, threads, env)
                     for chapter, profile, key in jobs]
    print(f"[slurm] submitted {len(submitted)} job(s) to {executor.cluster}; logs in {paths.shown(folder)}",
          flush=True)
    done = []
    for job in submitted:
        done.append(job.result())  # re-raises a worker's exception with its traceback
        print(f"[slurm] {len(done)}/{len(submitted)} runs done", flush=True)
    return done
