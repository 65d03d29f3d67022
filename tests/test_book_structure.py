"""Every chapter is registered, listed in the table of contents, parameterised and committed without outputs."""

import re
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


# --- the reader's apparatus: numbering, cross-references, launch buttons, the Pages workflow ----------------------

HAND_NUMBERED = re.compile(r"^#{1,6} +(?:§\s*)?\d+[a-z]?[.)] ", re.M)
TARGET = re.compile(r"^\(([\w-]+)\)=\s*$", re.M)
REF = re.compile(r"\{ref\}`(?:[^`<]*<)?([\w-]+)>?`")


def _markdown_sources():
    yield "intro.md", (ROOT / "intro.md").read_text()
    for notebook in sorted((ROOT / "chapters").glob("*.ipynb")):
        nb = nbformat.read(notebook, as_version=4)
        yield notebook.name, "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def test_sections_are_numbered_by_the_toc_not_by_hand():
    assert TOC.get("options", {}).get("numbered") is True, "_toc.yml: options: numbered: true"
    for name, text in _markdown_sources():
        found = HAND_NUMBERED.findall(text)
        assert not found, f"{name}: hand-typed section numbers in headings {found} (the toc numbers them)"


def test_cross_references_resolve():
    targets, refs = set(), []
    for name, text in _markdown_sources():
        targets |= set(TARGET.findall(text))
        refs += [(name, r) for r in REF.findall(text)]
    assert "verdicts" in targets, "the how-to chapter's verdict legend has the label (verdicts)="
    assert refs and not [(n, r) for n, r in refs if r not in targets]


def test_no_launch_buttons_that_cannot_work():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    launch = config.get("launch_buttons", {})
    assert not launch.get("binderhub_url") and not launch.get("colab_url") and not launch.get("thebe")
    assert config["html"]["use_download_button"]


def test_pages_workflow_mirrors_ci():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))
    assert {"push", "pull_request", "schedule"} <= set(triggers)
    text = (ROOT / ".github" / "workflows" / "book.yml").read_text()
    for needed in ("actions/configure-pages", "actions/upload-pages-artifact", "actions/deploy-pages",
                   "--builder linkcheck", "_build/.jupyter_cache", ".cache/results/quick", "hashFiles('requirements.txt'",
                   "make test", "make execute PROFILE=quick", "make book", "make browser-test"):
        assert needed in text, needed
    ci = (ROOT / ".ci" / "run").read_text()
    for target in ("make test", "make execute PROFILE=quick", "make book", "make browser-test"):
        assert target in ci, f".ci/run no longer runs {target}: update the workflow with it"
