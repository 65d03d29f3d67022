"""Every chapter is registered, listed in the table of contents, parameterised and committed without outputs."""

from pathlib import Path

import nbformat
import pytest
import yaml

from lib.experiments import CHAPTERS, chapter_module
from lib.results import PROFILES

ROOT = Path(__file__).resolve().parent.parent
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
TOC_FILES = {entry["file"] for entry in TOC["chapters"]}


@pytest.mark.parametrize("chapter", list(CHAPTERS))
def test_chapter_notebook_contract(chapter):
    notebook = ROOT / "chapters" / CHAPTERS[chapter][1]
    assert f"chapters/{notebook.stem}" in TOC_FILES, f"{notebook.name} is missing from _toc.yml"
    nb = nbformat.read(notebook, as_version=4)
    parameters = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and parameters[0].source.strip() == 'profile = "auto"'
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    module = chapter_module(chapter)
    # quick and paper always; medium where the chapter's issue has sized it
    assert module.CHAPTER == chapter and {"quick", "paper"} <= set(module.SETTINGS) <= set(PROFILES)
    quick, paper = module.runs("quick"), module.runs("paper")
    assert quick and paper and all(r.chapter == chapter for r in quick + paper)
    assert len({r.key for r in quick}) == len(quick), "two runs share a configuration"


def test_toc_lists_only_existing_pages():
    for document in [TOC["root"], *TOC_FILES]:
        assert any((ROOT / f"{document}{ext}").is_file() for ext in (".md", ".ipynb")), document
