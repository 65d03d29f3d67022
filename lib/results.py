"""The results store: one JSON file per experiment run, keyed by a hash of its configuration, written atomically.

Quick-profile results live in the ignored cache folder (``.cache/results/quick``); medium- and paper-profile results
are committed under ``results/medium`` and ``results/paper``. Every stored result carries its provenance (profile,
seed, device, torch and numpy versions, thread count, dataset source and checksum, git commit, code fingerprint, wall
time), which figure captions show.

A stored result is *valid* for a run when it parses, names the run's experiment and configuration, carries complete
provenance, and was computed by the code the run executes now (:func:`lib.fingerprint.code_fingerprint`) on the same
data (:func:`lib.data.fingerprint`). Otherwise it is *stale* (other code or data: recomputed where this machine may
compute it, else served with a visible warning) or *corrupt* (moved aside, never deleted, and recomputed).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import paths

PROFILES = ("quick", "medium", "paper")
# profiles whose results are committed (and so are the book's evidence), most complete first
COMMITTED = ("paper", "medium")
REQUIRED_PROVENANCE = ("profile", "seed", "device", "torch", "commit", "wall_time_s", "finished", "code")


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
        # mkstemp creates 0600: give the file the permissions of an ordinary one (workers of other users read it)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def profile_root(profile: str) -> Path:
    check_profile(profile)
    return paths.results_dir() / profile if profile in COMMITTED else paths.cache_dir() / "results" / profile


@dataclass
class Lookup:
    """What the store holds for one run: ``state`` is present, missing, stale or corrupt."""
    state: str
    path: Path
    result: dict | None = None
    reason: str = ""


def validate(result, name: str, config: dict) -> str:
    """Why ``result`` is not a complete stored run of ``name``/``config`` ('' when it is)."""
    if not isinstance(result, dict):
        return f"holds a {type(result).__name__}, not a result object"
    if result.get("name") != name:
        return f"names experiment {result.get('name')!r}, expected {name!r}"
    if result.get("config") != _canonical(config):
        return "holds another configuration than its file name says"
    prov = result.get("provenance")
    if not isinstance(prov, dict):
        return "has no provenance"
    absent = [f for f in REQUIRED_PROVENANCE if f not in prov]
    if absent:
        return f"lacks provenance field(s) {', '.join(absent)}"
    if not set(result) - {"name", "config", "provenance"}:
        return "holds no measurement"
    return ""


def staleness(result: dict, code: str | None, data: dict[str, str] | None) -> str:
    """Why a valid result no longer matches the code and data of its run ('' when it does)."""
    prov = result["provenance"]
    if code is not None and prov.get("code") != code:
        return f"computed by other code (fingerprint {prov.get('code')}, now {code})"
    stored = prov.get("data_fingerprints") or {}
    for dataset, now in (data or {}).items():
        if now and stored.get(dataset) and stored[dataset] != now:
            return f"computed on other {dataset} data ({stored[dataset]}, now {now})"
    return ""


class Store:
    """Results of one profile; ``path(chapter, name, config)`` is where a run's JSON lives."""

    def __init__(self, profile: str):
        self.profile = check_profile(profile)
        self.root = profile_root(profile)

    def path(self, chapter: str, name: str, config: dict) -> Path:
        return self.root / chapter / f"{key(name, config)}.json"

    def lock_path(self, chapter: str, name: str, config: dict) -> Path:
        # beside the results (not in a local cache) so that workers sharing a filesystem see each other's locks
        return self.root / chapter / ".locks" / f"{key(name, config)}.lock"

    def lookup(self, chapter: str, name: str, config: dict, *, code: str | None = None,
               data: dict[str, str] | None = None) -> Lookup:
        """The stored result of a run and its state; ``code``/``data`` fingerprints, when given, decide staleness."""
        path = self.path(chapter, name, config)
        if not path.is_file():
            return Lookup("missing", path)
        try:
            result = loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
            return Lookup("corrupt", path, reason=f"is not valid JSON ({error})")
        problem = validate(result, name, config)
        if problem:
            return Lookup("corrupt", path, reason=problem)
        why = staleness(result, code, data)
        return Lookup("stale" if why else "present", path, result, why)

    def get(self, chapter: str, name: str, config: dict) -> dict | None:
        """A valid stored result (whatever code computed it), or None; a corrupt file is moved aside."""
        found = self.lookup(chapter, name, config)
        if found.state == "corrupt":
            self.quarantine(found)
            return None
        return found.result

    def quarantine(self, found: Lookup) -> Path:
        """Move a corrupt result aside (never delete: it may be the only copy of hours of work) and say so."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        target = found.path.with_name(f"{found.path.name}.corrupt-{stamp}-{os.getpid()}")
        os.replace(found.path, target)
        warnings.warn(f"result file {paths.shown(found.path)} {found.reason}: moved aside to {target.name}; "
                      f"the run will be computed again", RuntimeWarning, stacklevel=3)
        return target

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
        # untracked files count: a new module in lib/ can change what runs as much as an edit
        dirty = run("status", "--porcelain", "--untracked-files=normal", "--", "lib").stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device) -> str:
    import torch
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"


def datasets_of(config: dict) -> list[str]:
    return list(config.get("datasets") or ([config["dataset"]] if config.get("dataset") else []))


def data_fingerprints(config: dict) -> dict[str, str]:
    """Checksums of the data a run reads (None for a dataset this machine does not have: nothing to compare)."""
    from . import data
    out = {}
    for name in datasets_of(config):
        try:
            out[name] = data.fingerprint(name)
        except (data.DatasetMissingError, AttributeError):
            out[name] = None
    return out


def provenance(profile: str, config: dict, device, wall_time_s: float, code: str | None = None) -> dict:
    import torch
    from .data import source_of
    return {
        "profile": profile,
        "seed": config.get("seed"),
        "device": device_name(device),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        # CPU numbers are reproducible for one seed *and* one thread count (reductions split differently)
        "threads": torch.get_num_threads(),
        "datasets": {name: source_of(name) for name in datasets_of(config)},
        "data_fingerprints": data_fingerprints(config),
        "commit": git_commit(),
        "code": code,
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
    text = " · ".join(p for p in parts if p)
    stale = [r for r in results if r.get("stale")]
    if stale:
        text += (f" · ⚠ STALE: {len(stale)} of {len(results)} results {stale[0]['stale']}; refresh with "
                 f"`python -m lib.reproduce --status` and the command it prints")
    return text
