"""The how-to page executes headlessly at the quick profile (papermill), as CI and readers run it."""

from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_howto_notebook_executes_at_quick_profile(tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("BOOK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BOOK_RESULTS_DIR", str(tmp_path / "results"))
    out = tmp_path / "howto.ipynb"
    papermill.execute_notebook(str(ROOT / "chapters" / "00_how_to_read.ipynb"), str(out),
                               parameters={"profile": "quick"}, cwd=str(ROOT / "chapters"), kernel_name="python3",
                               progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    text = "\n".join(str(o.get("data", {}).get("text/markdown", "")) + str(o.get("text", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "**quick** profile" in text
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
               for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert list((tmp_path / "cache" / "results" / "quick" / "howto").glob("training-*.json"))
