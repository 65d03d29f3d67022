"""Where the book reads data, caches decoded arrays and stores results (all overridable by environment variables)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """Folder holding the raw datasets (``DATA_DIR``, default ``data/``); may be read-only."""
    return Path(os.environ.get("DATA_DIR", REPO_ROOT / "data")).expanduser().resolve()


def cache_dir() -> Path:
    """Writable folder for decoded datasets, downloads and quick-profile results (``BOOK_CACHE_DIR``)."""
    path = Path(os.environ.get("BOOK_CACHE_DIR", REPO_ROOT / ".cache")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir() -> Path:
    """Committed paper-profile results (``BOOK_RESULTS_DIR``, default ``results/``)."""
    return Path(os.environ.get("BOOK_RESULTS_DIR", REPO_ROOT / "results")).expanduser().resolve()


def offline() -> bool:
    """True when downloads are forbidden (``BOOK_OFFLINE=1``)."""
    return os.environ.get("BOOK_OFFLINE", "0").lower() in {"1", "true", "yes"}


def shown(path: Path) -> str:
    """A path as readers should see it: relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)
