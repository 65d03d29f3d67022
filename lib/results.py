"""The results store: one JSON file per experiment run, keyed by a hash of its configuration, written atomically.

Quick-profile results live in the ignored cache folder (``.cache/results/quick``); paper-profile results are committed
under ``results/paper``. Every stored result carries its provenance (profile, seed, device, torch version, dataset
source, git commit, wall time), which figure captions show.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import paths

PROFILES = ("quick", "paper")


def check_profile(profile: str, allow_auto: bool = False) -> str:
    allowed = PROFILES + (("auto",) if allow_auto else ())
    if profile not in allowed:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(allowed)}")
    return profile


def _canonical(value):
    """JSON-able, order-independent form of a configuration (tuples → lists, dataclasses → dicts)."""
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict
        return _canonical(asdict(value))
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"configuration values must be JSON-like, got {type(value).__name__}: {value!r}")


def key(name: str, config: dict) -> str:
    """Stable file name of a run: readable name plus 12 hex digits of the configuration's hash."""
    digest = hashlib.sha256(json.dumps(_canonical(config), sort_keys=True).encode()).hexdigest()[:12]
    return f"{name}-{digest}"


class _Encoder(json.JSONEncoder):
    def default(self, value):
        try:
            import torch
            if torch.is_tensor(value):
                value = value.detach().cpu().numpy()
        except ImportError:  # pragma: no cover - torch is always there in practice
            pass
        if isinstance(value, np.ndarray):
            return {"__ndarray__": value.tolist(), "dtype": str(value.dtype), "shape": list(value.shape)}
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, Path):
            return str(value)
        return super().default(value)


def _decode(obj: dict):
    if "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=obj["dtype"]).reshape(obj["shape"])
    return obj


def dumps(result: dict) -> str:
    return json.dumps(result, cls=_Encoder, indent=1, sort_keys=True)


def loads(text: str) -> dict:
    return json.loads(text, object_hook=_decode)


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder and rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def profile_root(profile: str) -> Path:
    check_profile(profile)
    return paths.results_dir() / "paper" if profile == "paper" else paths.cache_dir() / "results" / profile


class Store:
    """Results of one profile; ``path(chapter, name, config)`` is where a run's JSON lives."""

    def __init__(self, profile: str):
        self.profile = check_profile(profile)
        self.root = profile_root(profile)

    def path(self, chapter: str, name: str, config: dict) -> Path:
        return self.root / chapter / f"{key(name, config)}.json"

    def get(self, chapter: str, name: str, config: dict) -> dict | None:
        path = self.path(chapter, name, config)
        return loads(path.read_text()) if path.is_file() else None

    def put(self, chapter: str, name: str, config: dict, result: dict) -> Path:
        path = self.path(chapter, name, config)
        write_atomic(path, dumps({"name": name, "config": _canonical(config), **result}))
        return path

    def list(self, chapter: str) -> list[Path]:
        folder = self.root / chapter
        return sorted(folder.glob("*.json")) if folder.is_dir() else []


# --- provenance -----------------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def git_commit() -> str:
    """Short commit of the working tree (``-dirty`` when it has changes); ``BOOK_COMMIT`` overrides it."""
    if os.environ.get("BOOK_COMMIT"):
        return os.environ["BOOK_COMMIT"]
    try:
        run = lambda *args: subprocess.run(["git", *args], cwd=paths.REPO_ROOT, capture_output=True, text=True,
                                           timeout=10)
        head = run("rev-parse", "--short=10", "HEAD")
        if head.returncode != 0:
            return "unknown"
        dirty = run("status", "--porcelain", "--untracked-files=no", "--", "lib").stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device) -> str:
    import torch
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"


def provenance(profile: str, config: dict, device, wall_time_s: float) -> dict:
    import torch
    from .data import source_of
    datasets = config.get("datasets") or ([config["dataset"]] if config.get("dataset") else [])
    return {
        "profile": profile,
        "seed": config.get("seed"),
        "device": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "datasets": {name: source_of(name) for name in datasets},
        "commit": git_commit(),
        "wall_time_s": round(wall_time_s, 3),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def summarize_provenance(results: list[dict]) -> str:
    """One caption line for a figure built from several results."""
    if not results:
        return "no results"
    provs = [r["provenance"] for r in results]
    def values(field):
        return sorted({str(p.get(field)) for p in provs if p.get(field) is not None})
    seeds = sorted({p["seed"] for p in provs if p.get("seed") is not None})
    datasets = sorted({label for p in provs for label in p.get("datasets", {}).values()})
    parts = [f"profile {'/'.join(values('profile'))}",
             f"seeds {', '.join(map(str, seeds))}" if seeds else None,
             "; ".join(values("device")) + f" · torch {'/'.join(values('torch'))}",
             "; ".join(datasets) if datasets else None,
             f"commit {'/'.join(values('commit'))}",
             f"{len(results)} run{'s' if len(results) > 1 else ''}, {sum(p['wall_time_s'] for p in provs):.0f} s compute"]
    return " · ".join(p for p in parts if p)
