"""The runner and the store under stress: stale code, corrupt files, concurrent runners, hangs, exit codes, clusters.

Each test here reproduces a gap measured on an earlier main (see the "Runs you can trust" issue) and fails without
the fix.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch

from lib import experiments, fingerprint, paths, reproduce, results
from lib.experiments import Run, execute

REPO = Path(__file__).resolve().parent.parent

SWEEP_MODULE = '''
import os, time

SCALE = {scale}


def helper(i):
    return i * SCALE  # a comment: edits here must not invalidate results


def square(config, device):
    time.sleep(config.get("sleep", 0))
    return {{"value": helper(config["i"]) ** 2, "pid": os.getpid()}}


def figure(values):
    return [v + 1 for v in values]


def runs(n=4, sleep=0.0):
    from lib.experiments import Run
    return [Run("sweep", "square", {{"i": i, "seed": i, "sleep": sleep}}, square) for i in range(n)]
'''


@pytest.fixture
def sweep_module(tmp_path, monkeypatch):
    """A chapter-like module on disk, so that its source can be edited between two executions."""
    folder = tmp_path / "mods"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    path = folder / "sweep_fixture.py"

    def write(text):
        path.write_text(text)
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))  # new mtime even within one clock tick
        sys.modules.pop("sweep_fixture", None)
        importlib.invalidate_caches()
        return importlib.import_module("sweep_fixture")

    write.path = path
    return write


# --- code-aware results -----------------------------------------------------------------------------------------

def test_editing_the_computing_code_recomputes_but_comments_and_figures_do_not(isolated_store, sweep_module):
    module = sweep_module(SWEEP_MODULE.format(scale=1))
    out = execute(module.runs(), "quick", progress=False)
    assert [r["value"] for r in out] == [0, 1, 4, 9]

    # comments, docstrings and an unrelated figure function: results stay valid, nothing recomputed
    text = SWEEP_MODULE.format(scale=1).replace("# a comment", "# another comment").replace(
        "return [v + 1", "return [v + 2")
    module = sweep_module('"""A docstring."""\n' + text)
    assert experiments.missing_runs(module.runs(), "quick") == []

    # the helper a run calls changes: every result is stale, recomputed, and says so
    module = sweep_module(SWEEP_MODULE.format(scale=2))
    assert [s.state for s in experiments.statuses(module.runs(), "quick")] == ["stale"] * 4
    out = execute(module.runs(), "quick", progress=False)
    assert [r["value"] for r in out] == [0, 4, 16, 36]


def test_stale_results_are_served_flagged_where_they_cannot_be_recomputed(isolated_store, sweep_module):
    module = sweep_module(SWEEP_MODULE.format(scale=1))
    execute(module.runs(), "medium", allow_compute=True, progress=False)
    module = sweep_module(SWEEP_MODULE.format(scale=3))
    with pytest.warns(RuntimeWarning, match="stale"):
        out = execute(module.runs(), "medium", device="cpu", progress=False)  # medium on a CPU: never computes
    assert [r["value"] for r in out] == [0, 1, 4, 9]
    assert all("other code" in r["stale"] for r in out)
    assert "STALE" in results.summarize_provenance(out)


def test_fingerprint_follows_library_modules_but_not_presentation():
    from lib.experiments import howto
    own, modules = fingerprint.dependencies(howto.train_small_cnn)
    assert "train_small_cnn" in own and "envelope_figure" not in own
    assert {"lib.training", "lib.data", "lib.models.simple"} <= set(modules)
    assert not set(modules) & fingerprint.NEUTRAL
    assert fingerprint.code_fingerprint(howto.train_small_cnn) != fingerprint.code_fingerprint(howto.envelope_coverage)


def test_data_change_makes_results_stale(isolated_store):
    run = Run("sweep", "d", {"dataset": "fashion_mnist", "seed": 0}, lambda c, d: {"v": 1})
    stored = {"v": 1, "provenance": {"profile": "quick", "seed": 0, "device": "CPU", "torch": "t", "commit": "c",
                                     "wall_time_s": 0, "finished": "now", "code": "abc",
                                     "data_fingerprints": {"fashion_mnist": "idx:sha256:old"}}}
    results.Store("quick").put(run.chapter, run.name, run.config, stored)
    found = results.Store("quick").lookup(run.chapter, run.name, run.config, code="abc",
                                          data={"fashion_mnist": "idx:sha256:new"})
    assert found.state == "stale" and "other fashion_mnist data" in found.reason
    same = results.Store("quick").lookup(run.chapter, run.name, run.config, code="abc",
                                         data={"fashion_mnist": "idx:sha256:old"})
    assert same.state == "present"


# --- corrupt result files ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", ['{"name": "square", "config": {"i"', "", "{}", "[1, 2]",
                                     '{"name": "square", "config": {"i": 0, "seed": 0, "sleep": 0.0}}'])
def test_corrupt_result_is_moved_aside_and_recomputed(isolated_store, sweep_module, content):
    module = sweep_module(SWEEP_MODULE.format(scale=1))
    runs = module.runs(n=1)
    execute(runs, "quick", progress=False)
    path = results.Store("quick").path(runs[0].chapter, runs[0].name, runs[0].config)
    path.write_text(content)
    assert [s.state for s in experiments.statuses(runs, "quick")] == ["corrupt"]
    assert experiments.missing_runs(runs, "quick") == runs
    with pytest.warns(RuntimeWarning, match=path.name):
        out = execute(runs, "quick", progress=False)
    assert out[0]["value"] == 0
    aside = list(path.parent.glob(path.name + ".corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == content, "the corrupt file is kept, never deleted"


# --- two runners on one store -----------------------------------------------------------------------------------

RUNNER = '''
import sys, json, torch
sys.path.insert(0, {folder!r})
torch.set_num_threads(1)
import sweep_fixture
from lib.experiments import execute
out = execute(sweep_fixture.runs(n=6, sleep=0.6), "quick", progress=False)
print(json.dumps([r["pid"] for r in out]))
'''


def test_two_runners_split_a_sweep_without_duplicating_a_run(isolated_store, sweep_module):
    sweep_module(SWEEP_MODULE.format(scale=1))
    env = {**os.environ, "BOOK_CACHE_DIR": str(isolated_store / "cache"),
           "BOOK_RESULTS_DIR": str(isolated_store / "results")}
    script = RUNNER.format(folder=str(sweep_module.path.parent))
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    pids = [json.loads(o.strip().splitlines()[-1]) for o in outputs]
    assert pids[0] == pids[1], "both runners return the same six results"
    computed_by = {pid: pids[0].count(pid) for pid in set(pids[0])}
    assert set(computed_by) == {p.pid for p in procs}, f"both runners computed runs: {computed_by}"
    assert sum(computed_by.values()) == 6
    print(f"two runners: {computed_by} runs each, {time.perf_counter() - started:.1f} s for 6 × 0.6 s runs")


def test_a_dead_runners_lock_is_taken_over(isolated_store, sweep_module):
    module = sweep_module(SWEEP_MODULE.format(scale=1))
    runs = module.runs(n=1)
    lock = results.Store("quick").lock_path(runs[0].chapter, runs[0].name, runs[0].config)
    lock.parent.mkdir(parents=True, exist_ok=True)
    # a process that took the lock and was killed: flock locks die with their process
    holder = subprocess.Popen([sys.executable, "-c", f"from filelock import FileLock; import time; "
                               f"l = FileLock({str(lock)!r}); l.acquire(); print('held', flush=True); "
                               f"time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    out = execute(runs, "quick", progress=False, max_minutes=1)
    assert out[0]["value"] == 0


# --- a hang fails in minutes, naming the run --------------------------------------------------------------------

def test_a_slow_run_is_stopped_with_an_error_naming_it(isolated_store, sweep_module):
    module = sweep_module(SWEEP_MODULE.format(scale=1))
    runs = module.runs(n=1, sleep=30)
    started = time.perf_counter()
    with pytest.raises(experiments.RunTimeoutError, match=f"run {runs[0].label} exceeded its time limit of 1 s"):
        execute(runs, "quick", progress=False, time_limit_s=1)
    assert time.perf_counter() - started < 10
    assert experiments.missing_runs(runs, "quick") == runs, "nothing half-written is left"


HANG = '''
import ctypes, sys
from lib import experiments
experiments.HARD_STOP_GRACE_S = 1
with experiments.time_limit(1, "chapter/stuck-run"):
    ctypes.CDLL(None).sleep(60)   # native code that never looks at Python's interrupt flag
print("not reached")
'''


def test_a_run_stuck_in_native_code_ends_the_process_loudly():
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", HANG], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "not reached" not in proc.stdout
    assert "run chapter/stuck-run exceeded its time limit of 1 s" in proc.stderr
    assert "Timeout" in proc.stderr  # faulthandler's stack dump of the stuck thread
    assert time.perf_counter() - started < 30


def test_channels_last_is_refused_for_the_convolutions_that_crash_the_cpu_backward():
    from lib.training import TrainConfig, _flags, channels_last_unsafe_convs
    risky = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3), torch.nn.Conv2d(3, 6, 1, stride=2))
    safe = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 1, stride=2), torch.nn.Conv2d(3, 6, 1))
    assert channels_last_unsafe_convs(risky) == ["1"] and channels_last_unsafe_convs(safe) == []
    with pytest.warns(RuntimeWarning, match="oneDNN"):
        assert _flags(TrainConfig(channels_last=True), torch.device("cpu"), risky)[0] is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _flags(TrainConfig(channels_last=True), torch.device("cpu"), safe)[0] is True


# --- exit codes and arguments -----------------------------------------------------------------------------------

def test_max_minutes_exit_codes(isolated_store, capsys):
    args = ["--profile", "quick", "--chapter", "selftest", "--experiments-only"]
    assert reproduce.main(args + ["--max-minutes", "0"]) == reproduce.INCOMPLETE
    assert reproduce.main(args) == 0
    assert reproduce.main(args + ["--max-minutes", "0"]) == 0, "nothing left: done, not 'run again'"
    for bad in (["--max-minutes", "-1"], ["--threads", "0"], ["--run-time-limit", "-5"]):
        with pytest.raises(SystemExit) as exit_:
            reproduce.main(args + bad)
        assert exit_.value.code == 2
    with pytest.raises(SystemExit):
        reproduce.main(["--profile", "quick", "--chapter", "selftest", "--max-minutes", "5"])
    assert "--max-minutes applies to --experiments-only" in capsys.readouterr().err


def test_status_lists_present_missing_stale_and_corrupt(isolated_store, capsys):
    runs = experiments.chapter_runs("selftest", "quick")
    execute(runs[:2], "quick", progress=False)
    results.Store("quick").path(runs[1].chapter, runs[1].name, runs[1].config).write_text("{")
    assert reproduce.main(["--status", "--chapter", "selftest", "--profile", "quick"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("selftest"))
    assert row.split()[2:] == ["3", "1", "1", "0", "1"]   # runs, present, missing, stale, corrupt
    assert "corrupt:" in out and "not valid JSON" in out
    assert "refresh: python -m lib.reproduce --profile quick --experiments-only --chapter selftest" in out


def test_unknown_profile_or_section_gives_one_clear_error():
    from lib.experiments import howto, spatial_mixing
    for module in (howto, spatial_mixing):
        with pytest.raises(ValueError, match="unknown profile 'bogus'"):
            module.runs("bogus")
        with pytest.raises(ValueError, match="unknown section 'bogus'"):
            module.runs("quick", section="bogus")
    with pytest.raises(experiments.ProfileUndefinedError, match="defines no 'paper' profile yet"):
        experiments.chapter_runs("selftest", "paper")


# --- provenance -------------------------------------------------------------------------------------------------

def test_provenance_names_threads_versions_data_and_code(isolated_store):
    import numpy as np
    out = execute(experiments.chapter_runs("selftest", "quick")[:1], "quick", progress=False)[0]["provenance"]
    assert out["threads"] == torch.get_num_threads() and out["numpy"] == np.__version__
    assert out["code"] == fingerprint.code_fingerprint(experiments.chapter_module("selftest").train_tiny)
    assert "data_fingerprints" in out


def test_dirty_commit_counts_untracked_files_in_lib(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "lib").mkdir(parents=True)
    (repo / "lib" / "a.py").write_text("x = 1\n")
    git = lambda *a: subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *a], cwd=repo, check=True,
                                    capture_output=True)
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "init")
    monkeypatch.delenv("BOOK_COMMIT", raising=False)
    monkeypatch.setattr(paths, "REPO_ROOT", repo)
    results.git_commit.cache_clear()
    try:
        assert not results.git_commit().endswith("-dirty")
        (repo / "lib" / "new_module.py").write_text("y = 2\n")
        results.git_commit.cache_clear()
        assert results.git_commit().endswith("-dirty")
    finally:
        results.git_commit.cache_clear()


# --- beyond one machine -----------------------------------------------------------------------------------------

def _sequential_reference(tmp_path) -> list[dict]:
    env = {**os.environ, "BOOK_CACHE_DIR": str(tmp_path / "seq-cache"), "BOOK_RESULTS_DIR": str(tmp_path / "seq")}
    subprocess.run([sys.executable, "-m", "lib.reproduce", "--profile", "quick", "--chapter", "selftest",
                    "--experiments-only", "--threads", "1"], cwd=REPO, env=env, check=True, capture_output=True)
    return _stored(tmp_path / "seq-cache")


def _stored(cache: Path) -> list[dict]:
    files = sorted((cache / "results" / "quick" / "selftest").glob("*.json"))
    return [{k: v for k, v in json.loads(f.read_text()).items() if k != "provenance"} for f in files]


@pytest.mark.parametrize("launcher", ["ray", "slurm"])
def test_cluster_launchers_equal_a_sequential_run(tmp_path, launcher):
    pytest.importorskip("ray" if launcher == "ray" else "submitit")
    reference = _sequential_reference(tmp_path)
    assert len(reference) == 3
    cache = tmp_path / f"{launcher}-cache"
    env = {**os.environ, "BOOK_CACHE_DIR": str(cache), "BOOK_RESULTS_DIR": str(tmp_path / launcher),
           "RAY_USAGE_STATS_ENABLED": "0"}
    extra = ["--ray-cpus", "2"] if launcher == "ray" else ["--submitit-cluster", "local"]
    proc = subprocess.run([sys.executable, "-m", "lib.reproduce", "--profile", "quick", "--chapter", "selftest",
                           "--experiments-only", "--threads", "1", "--launcher", launcher, *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 runs done" in proc.stdout
    assert _stored(cache) == reference
    # and the store is complete: a second call computes nothing
    again = subprocess.run([sys.executable, "-m", "lib.reproduce", "--profile", "quick", "--chapter", "selftest",
                            "--experiments-only", "--launcher", launcher, *extra], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "3 runs, 0 to compute" in again.stdout


# --- the medium profile and quick-scale verdicts ----------------------------------------------------------------

def test_a_medium_profile_computed_by_the_runner_resolves_and_renders(isolated_store):
    assert experiments.resolve_profile("auto", "selftest") == "quick"
    assert reproduce.main(["--profile", "medium", "--chapter", "selftest", "--experiments-only"]) == 0
    assert experiments.resolve_profile("auto", "selftest") == "medium"
    assert (isolated_store / "results" / "medium" / "selftest").is_dir(), "medium results live in the committed tree"
    # a notebook on a CPU reads them without computing anything, and captions name the profile
    shown = execute(experiments.chapter_runs("selftest", "medium"), "medium", device="cpu", progress=False)
    assert all(r is not None and "stale" not in r for r in shown)
    caption = results.summarize_provenance(shown)
    assert caption.startswith("profile medium") and "seeds 0, 1, 2" in caption and "STALE" not in caption


def test_medium_runs_missing_on_a_cpu_name_the_command_not_hours_in_a_cell(isolated_store):
    with pytest.raises(experiments.MissingResultsError,
                       match="python -m lib.reproduce --profile medium --experiments-only --chapter selftest"):
        execute(experiments.chapter_runs("selftest", "medium"), "medium", device="cpu", progress=False)


def test_quick_claims_tables_withhold_statistical_verdicts():
    from lib.claims import QUICK_VERDICT, judged
    rows = [{"claim": "a > b", "ours": "1 vs 0", "verdict": "supported"},
            {"claim": "identity", "ours": "1e-15", "verdict": "supported (exact computation)", "exact": True}]
    quick = judged(rows, "quick")
    assert [r["verdict"] for r in quick] == [QUICK_VERDICT, "supported (exact computation)"]
    assert all("exact" not in r for r in quick), "the marker is not a table column"
    assert [r["verdict"] for r in judged(rows, "medium")] == ["supported", "supported (exact computation)"]


def test_another_chapters_definitions_count_one_by_one_not_as_whole_modules():
    """The synthesis chapter reuses other chapters' measurements: only the definitions it reaches count, so editing a
    figure of those chapters leaves its results valid, while editing a measurement it uses does not."""
    from lib.experiments import synthesis
    own, modules = fingerprint.dependencies(synthesis.train_and_measure)
    assert not [m for m in modules if m.startswith(fingerprint.CHAPTER_PREFIX)]
    _, _, foreign = fingerprint._reach(synthesis.__name__, [synthesis.train_and_measure.__name__])
    reached, used = fingerprint._foreign_definitions(foreign)
    assert ("lib.experiments.anti_aliasing", "equivariance_maps") in reached
    assert ("lib.experiments.spectral_leakage", "kernel_leakage") in reached
    assert not {name for _, name in reached} & {"claims", "plot_accuracy", "plot_robustness", "plot_shift_probability"}
    assert "lib.spectra" in used  # what kernel_leakage itself uses


def test_committed_results_are_not_stale():
    """Every committed medium/paper result was computed by the code its run executes now (else the book silently
    falls back to quick): an edit that changes a committed run's code must come with recomputed results."""
    from pathlib import Path
    from lib.experiments import chapter_runs, statuses
    root = Path(__file__).resolve().parents[1] / "results"
    checked = 0
    for profile_dir in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        for chapter_dir in sorted(p for p in profile_dir.iterdir() if p.is_dir()):
            committed = {p.name for p in chapter_dir.glob("*.json")}
            runs = chapter_runs(chapter_dir.name, profile_dir.name)
            for run, lookup in zip(runs, statuses(runs, profile_dir.name)):
                if lookup.path.name in committed:
                    assert lookup.state == "present", f"{lookup.path}: {lookup.state} ({lookup.reason})"
                    checked += 1
            assert checked or not committed, f"{chapter_dir}: committed files that no run of the profile names"
    assert checked or not root.is_dir()
