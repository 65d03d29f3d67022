"""Kernel-free explorers: precomputed frames in an ipywidgets ``Stack`` whose index is linked in the browser.

``jslink`` runs in the page's JavaScript, so the slider, the Play button and the frames keep working on the static
website with no kernel (``observe`` callbacks, ``interact`` and ``Output`` widgets would freeze). Frames are PNG bytes
(see ``lib.plotting.to_png``) or matplotlib figures; keep them small and at most ~30 per explorer.
"""

from __future__ import annotations

from typing import Sequence

import ipywidgets as w

from .plotting import to_png

MAX_FRAMES = 40


def _image(frame) -> w.Image:
    data = frame if isinstance(frame, (bytes, bytearray)) else to_png(frame)
    return w.Image(value=bytes(data), format="png", layout=w.Layout(max_width="100%", height="auto"))


def _labels(labels: Sequence[str]) -> w.Stack:
    return w.Stack([w.HTML(f"<b>{label}</b>") for label in labels], selected_index=0)


def explorer(frames: Sequence, labels: Sequence[str], *, description: str = "", play: bool = True,
             interval_ms: int = 700, index: int = 0) -> w.VBox:
    """A slider (and Play button) over precomputed frames, with a label per frame; works without a kernel."""
    if len(frames) != len(labels):
        raise ValueError(f"{len(frames)} frames but {len(labels)} labels")
    if not 1 <= len(frames) <= MAX_FRAMES:
        raise ValueError(f"an explorer takes 1 to {MAX_FRAMES} frames (page weight), got {len(frames)}")
    stack = w.Stack([_image(f) for f in frames], selected_index=index)
    readout = _labels(labels)
    readout.selected_index = index
    slider = w.IntSlider(value=index, min=0, max=len(frames) - 1, description=description, readout=False,
                         continuous_update=True, layout=w.Layout(width="320px"),
                         style={"description_width": "initial"})
    w.jslink((slider, "value"), (stack, "selected_index"))
    w.jslink((slider, "value"), (readout, "selected_index"))
    controls = [slider, readout]
    if play:
        player = w.Play(value=index, min=0, max=len(frames) - 1, interval=interval_ms)
        w.jslink((player, "value"), (slider, "value"))
        controls.insert(0, player)
    return w.VBox([w.HBox(controls, layout=w.Layout(align_items="center")), stack])


def explorer_grid(frames: Sequence[Sequence], row_labels: Sequence[str], col_labels: Sequence[str], *,
                  row_description: str = "", col_description: str = "") -> w.VBox:
    """Two sliders over a grid of frames ``frames[row][col]``: nested Stacks, each inner index linked to one slider."""
    if len(frames) != len(row_labels) or any(len(r) != len(col_labels) for r in frames):
        raise ValueError("frames must be a len(row_labels) × len(col_labels) grid")
    if len(row_labels) * len(col_labels) > MAX_FRAMES:
        raise ValueError(f"a grid explorer takes at most {MAX_FRAMES} frames, got {len(row_labels) * len(col_labels)}")
    inner = [w.Stack([_image(f) for f in row], selected_index=0) for row in frames]
    outer = w.Stack(inner, selected_index=0)
    row_slider = w.IntSlider(value=0, min=0, max=len(row_labels) - 1, description=row_description, readout=False,
                             style={"description_width": "initial"})
    col_slider = w.IntSlider(value=0, min=0, max=len(col_labels) - 1, description=col_description, readout=False,
                             style={"description_width": "initial"})
    row_readout, col_readout = _labels(row_labels), _labels(col_labels)
    w.jslink((row_slider, "value"), (outer, "selected_index"))
    w.jslink((row_slider, "value"), (row_readout, "selected_index"))
    w.jslink((col_slider, "value"), (col_readout, "selected_index"))
    for stack in inner:
        w.jslink((col_slider, "value"), (stack, "selected_index"))
    return w.VBox([w.HBox([row_slider, row_readout]), w.HBox([col_slider, col_readout]), outer])


def tabs(named: dict[str, w.Widget]) -> w.Tab:
    """Tabs switch in the browser too (no kernel needed)."""
    tab = w.Tab(list(named.values()))
    for i, title in enumerate(named):
        tab.set_title(i, title)
    return tab
