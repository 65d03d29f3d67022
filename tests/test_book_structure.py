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


NUMBERED_CELL = re.compile(r"numbered\(([^)]*)\)")
GLUE_FIGURE = re.compile(r"```\{glue:figure\} (\S+)\n:name: (\S+)\n")
NUMREF = re.compile(r"\{numref\}`(?:[^`<]*<)?([\w-]+)>?`")
EQ_LABEL = re.compile(r"\$\$ \((eq-[\w-]+)\)")
EQ_REF = re.compile(r"\{eq\}`([\w-]+)`")
CITE = re.compile(r"\{cite(?::[pt])?\}`([^`]+)`")


def _chapters():
    for notebook in sorted((ROOT / "chapters").glob("*.ipynb")):
        nb = nbformat.read(notebook, as_version=4)
        code = [c.source for c in nb.cells if c.cell_type == "code"]
        markdown = "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        yield notebook.name, code, markdown


def test_numbered_figures_are_placed_captioned_and_referenced():
    """Every name a code cell gives its figures (lib.plotting.numbered) is placed once by a glue:figure directive with
    the same :name:, captioned with its provenance, and referenced by {numref} in the prose; every {numref} points at
    a figure of its own chapter. A chapter with figures numbers them (the how-to and every paper chapter)."""
    for name, code, markdown in _chapters():
        names = [n for source in code for m in NUMBERED_CELL.finditer(source) for n in re.findall(r'"([^"]+)"', m[1])]
        assert len(names) == len(set(names)), f"{name}: a figure name is used twice"
        placed = GLUE_FIGURE.findall(markdown)
        assert all(a == b for a, b in placed), f"{name}: a glue:figure's :name: differs from its key"
        assert sorted(a for a, _ in placed) == sorted(names), f"{name}: numbered figures and directives differ"
        for figure in names:
            assert f"{{glue:text}}`{figure}-provenance`" in markdown, f"{name}: {figure}'s caption lacks provenance"
        refs = set(NUMREF.findall(markdown))
        assert not set(names) - refs, f"{name}: figures never referenced in the prose: {set(names) - refs}"
        assert not refs - set(names), f"{name}: numref to figures that do not exist: {refs - set(names)}"
        assert names, f"{name} numbers none of its figures"


def test_equations_are_labelled_and_referenced():
    for name, _, markdown in _chapters():
        labels = EQ_LABEL.findall(markdown)
        refs = set(EQ_REF.findall(markdown))
        assert not refs - set(labels), f"{name}: {{eq}} to unknown labels {refs - set(labels)}"
        assert not set(labels) - refs, f"{name}: labelled equations never referenced {set(labels) - refs}"


def test_every_chapter_cites_and_every_key_exists():
    keys = set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "references.bib").read_text(), re.M))
    for name, text in [("intro.md", (ROOT / "intro.md").read_text())] + [(n, m) for n, _, m in _chapters()]:
        cited = {k.strip() for group in CITE.findall(text) for k in group.split(",")}
        assert cited, f"{name} cites nothing"
        assert not cited - keys, f"{name}: keys missing from references.bib: {cited - keys}"


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
