import json
import os

import numpy as np
import pytest
import torch

from lib import experiments, fingerprint, reproduce, results
from lib.experiments import Run, execute


def test_key_is_stable_and_sensitive():
    assert results.key("a", {"x": 1, "y": [1, 2]}) == results.key("a", {"y": (1, 2), "x": 1})
    assert results.key("a", {"x": 1}) != results.key("a", {"x": 2})
    assert results.key("a", {"x": 1}).startswith("a-")
    with pytest.raises(TypeError, match="JSON-like"):
        results.key("a", {"x": object()})


def test_arrays_round_trip():
    payload = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "t": torch.ones(2), "n": np.int64(3)}
    back = results.loads(results.dumps(payload))
    assert back["a"].dtype == np.float32 and np.array_equal(back["a"], payload["a"])
    assert np.array_equal(back["t"], np.ones(2)) and back["n"] == 3


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    results.write_atomic(target, "{}")
    assert json.loads(target.read_text()) == {}

    def broken_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        results.write_atomic(tmp_path / "s.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def counting_runs(calls, fail_at=None, n=4):
    def fn(config, device):
        if config["i"] == fail_at:
            raise RuntimeError("interrupted")
        calls.append(config["i"])
        return {"value": config["i"] ** 2, "curve": np.arange(config["i"] + 1)}
    return [Run("testchapter", "square", {"i": i, "seed": i}, fn) for i in range(n)]


def test_execute_stores_and_resumes(isolated_store):
    calls = []
    with pytest.raises(RuntimeError, match="interrupted"):
        execute(counting_runs(calls, fail_at=2), "quick", progress=False)
    assert calls == [0, 1]
    stored = results.Store("quick").list("testchapter")
    assert len(stored) == 2 and not list(stored[0].parent.glob("*.tmp"))
    out = execute(counting_runs(calls), "quick", progress=False)
    assert calls == [0, 1, 2, 3], "finished runs are not redone"
    assert [r["value"] for r in out] == [0, 1, 4, 9]
    assert np.array_equal(out[3]["curve"], np.arange(4))
    prov = out[0]["provenance"]
    assert prov["profile"] == "quick" and prov["seed"] == 0 and prov["torch"] == torch.__version__
    assert "CPU" in prov["device"] and prov["wall_time_s"] >= 0 and prov["commit"]
    assert "profile quick" in results.summarize_provenance(out)


def test_execute_time_budget_leaves_the_rest(isolated_store):
    calls = []
    out = execute(counting_runs(calls), "quick", progress=False, max_minutes=0)
    assert calls == [] and out == [None] * 4


def test_paper_profile_on_cpu_asks_for_a_gpu(isolated_store):
    with pytest.raises(experiments.MissingResultsError, match="lib.reproduce --profile paper"):
        execute(counting_runs([]), "paper", device="cpu", progress=False)
    assert not (isolated_store / "results").exists() or not any((isolated_store / "results").rglob("*.json"))


def test_unknown_profile():
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        results.Store("fast")
    with pytest.raises(ValueError, match="unknown profile"):
        experiments.resolve_profile("fast", "howto")
    with pytest.raises(ValueError, match="unknown chapter"):
        experiments.chapter_module("nope")


def fake_result(run, value=1.0):
    """A complete stored result for ``run`` as if computed by its current code."""
    prov = {"profile": "x", "seed": run.config.get("seed"), "device": "CPU", "torch": "t", "commit": "c",
            "wall_time_s": 0.0, "finished": "now", "code": fingerprint.code_fingerprint(run.fn)}
    return {"value": value, "provenance": prov}


def test_auto_profile_prefers_paper_then_medium_when_complete(isolated_store):
    assert experiments.resolve_profile("auto", "selftest") == "quick"
    for profile in ("medium", "paper"):
        experiments.chapter_module("selftest").SETTINGS.setdefault(profile, {"seeds": [0, 1], "n": 64, "size": 12,
                                                                             "epochs": 1})
    try:
        for profile in ("medium", "paper"):
            runs = experiments.chapter_runs("selftest", profile)
            store = results.Store(profile)
            for run in runs[:-1]:
                store.put(run.chapter, run.name, run.config, fake_result(run))
            assert experiments.resolve_profile("auto", "selftest") == ("quick" if profile == "medium" else "medium")
            store.put(runs[-1].chapter, runs[-1].name, runs[-1].config, fake_result(runs[-1]))
            assert experiments.resolve_profile("auto", "selftest") == profile
        assert experiments.resolve_profile("quick", "selftest") == "quick"
        assert results.Store("medium").root == isolated_store / "results" / "medium"
    finally:
        experiments.chapter_module("selftest").SETTINGS.pop("paper")


def test_reproduce_experiments_only(isolated_store, capsys):
    assert reproduce.main(["--profile", "quick", "--chapter", "howto", "--experiments-only", "--max-minutes", "0"]) \
        == reproduce.INCOMPLETE
    with pytest.raises(SystemExit):
        reproduce.main(["--profile", "fast"])
    with pytest.raises(SystemExit):
        reproduce.main(["--profile", "quick", "--chapter", "nope"])
    assert "unknown chapter" in capsys.readouterr().err
