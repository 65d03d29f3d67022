"""Shared fixtures. Datasets come from DATA_DIR (the Makefile points it at ../shared/datasets when that exists)."""

from __future__ import annotations

import pytest


@pytest.fixture
def isolated_store(tmp_path, monkeypatch):
    """Results (quick and paper) go to a temporary folder; decoded datasets stay cached where they are."""
    from lib import paths
    monkeypatch.setenv("BOOK_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setattr(paths, "cache_dir", lambda: _mkdir(tmp_path / "cache"))
    return tmp_path


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path
