import ipywidgets as w
import pytest

from lib import widgets
from lib.plotting import figure, table, to_png


def frames(n):
    out = []
    for i in range(n):
        fig, ax = figure(width=1, height=1)
        ax.plot([0, i])
        out.append(to_png(fig, dpi=20))
    return out


def links_of(root):
    """(source, target) pairs of every jslink in the manager state, as (model_id, trait)."""
    state = w.Widget.get_manager_state(drop_defaults=True)["state"]
    return {(tuple(s["state"]["source"]), tuple(s["state"]["target"])) for s in state.values()
            if s["model_name"] == "LinkModel"}


def test_explorer_links_slider_to_frames_in_the_browser():
    box = widgets.explorer(frames(3), ["a", "b", "c"], description="n")
    controls, stack = box.children
    player, slider, readout = controls.children
    assert isinstance(stack, w.Stack) and len(stack.children) == 3
    assert all(isinstance(c, w.Image) and bytes(c.value).startswith(b"\x89PNG") for c in stack.children)
    links = {(a[0].split("IPY_MODEL_")[-1], a[1], b[0].split("IPY_MODEL_")[-1], b[1]) for a, b in links_of(box)}
    assert (slider.model_id, "value", stack.model_id, "selected_index") in links
    assert (slider.model_id, "value", readout.model_id, "selected_index") in links
    assert (player.model_id, "value", slider.model_id, "value") in links
    assert slider.max == 2 and player.max == 2


def test_explorer_refuses_bad_input():
    with pytest.raises(ValueError, match="2 frames but 1 labels"):
        widgets.explorer(frames(2), ["a"])
    with pytest.raises(ValueError, match="1 to"):
        widgets.explorer([], [])


def test_grid_explorer_links_every_inner_stack():
    grid = widgets.explorer_grid([frames(2), frames(2)], ["r0", "r1"], ["c0", "c1"])
    outer = grid.children[2]
    col_slider = grid.children[1].children[0]
    targets = {b[0].split("IPY_MODEL_")[-1] for a, b in links_of(grid) if a[0].endswith(col_slider.model_id)}
    assert {inner.model_id for inner in outer.children} <= targets
    with pytest.raises(ValueError, match="grid"):
        widgets.explorer_grid([frames(2)], ["r0", "r1"], ["c0", "c1"])


def test_markdown_table_escapes_pipes_inside_cells():
    """Claims like "|B|_{2/L}" or "γ/(|i|^α+|j|^β)" must stay in one cell: every row keeps the header's column count."""
    markdown = table([{"claim": "power law τ ≈ γ/(|i|^α+|j|^β)", "ours": 0.25}], ["claim", "ours"])
    header, rule, row = markdown.splitlines()
    unescaped = lambda line: line.replace("\\|", "").count("|")
    assert unescaped(row) == unescaped(header) == 3
    assert "γ/(\\|i\\|^α+\\|j\\|^β)" in row and "0.25" in row


def test_markdown_table_escapes_headers_and_line_breaks():
    """A header like "|freq − spatial| / |f|" rendered the whole table as raw text; a newline ends a table."""
    markdown = table([{"|freq − spatial| / |f|": 1e-7, "note": "two\nlines"}])
    lines = markdown.splitlines()
    assert len(lines) == 3
    unescaped = lambda line: line.replace("\\|", "").count("|")
    assert unescaped(lines[0]) == unescaped(lines[2]) == 3
    assert "two lines" in lines[2] and "\\|freq − spatial\\| / \\|f\\|" in lines[0]
