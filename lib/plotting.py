"""One figure style for the book, legible at reading width, and provenance written under every figure.

Legibility: the book's column shows images at most ``READING_WIDTH_PX`` (688 CSS px at a 1280 px window); a wider PNG
is shrunk, and its text with it. Figures are therefore made at most ``READING_WIDTH_IN`` wide at ``DPI`` (100), so
they are shown 1:1, and every text is at least ``MIN_TEXT_PT`` (9 pt). :class:`ReadingFigure` enforces the floor when
it is drawn (explicit small ``fontsize=`` values, tick labels, legends, colour bars included), scaled up by the shrink
factor for a figure that is wider than the column anyway.
"""

from __future__ import annotations

import contextlib
import html
import io
import textwrap

import matplotlib

if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline",):
    matplotlib.use("Agg")  # headless by default; notebooks keep their inline backend
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from .results import summarize_provenance  # noqa: E402

DPI = 100                 # figures and widget frames (≥ 100 dpi: text in points stays ≥ its size in CSS px × 0.75)
READING_WIDTH_PX = 688    # widest image the book column shows unscaled (measured: cell output at a 1280 px window)
READING_WIDTH_IN = 6.8    # READING_WIDTH_PX / DPI, less a margin for bbox_inches="tight"
MIN_TEXT_PT = 9.0         # smallest text at reading width

STYLE = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "figure.figsize": (6.4, 3.6),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 9.5,
    "axes.titlesize": 10,
    "axes.labelsize": 9.5,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "figure.titlesize": 10.5,
    "legend.frameon": False,
    "image.cmap": "magma",
}
DIVERGING = "RdBu_r"
SEQUENTIAL = "magma"


def use_style() -> None:
    plt.rcParams.update(STYLE)


use_style()


def reading_size(width: float, height: float) -> tuple[float, float]:
    """(width, height) in inches for a figure asked ``width`` × ``height``: at most ``READING_WIDTH_IN`` wide (shown
    1:1 in the column); a narrowed figure keeps more of its height (× sqrt of the width ratio) so that its text,
    which keeps its size, still has room."""
    if width <= READING_WIDTH_IN:
        return width, height
    ratio = READING_WIDTH_IN / width
    return READING_WIDTH_IN, height * ratio ** 0.5


def min_text_pt(width_in: float) -> float:
    """Smallest font size (pt) for a figure ``width_in`` wide saved at ``DPI``: ``MIN_TEXT_PT`` when it is shown 1:1,
    more when the column shrinks it."""
    return MIN_TEXT_PT * max(1.0, width_in * DPI / READING_WIDTH_PX)


def enforce_legible(fig) -> None:
    """Raise every text of ``fig`` below :func:`min_text_pt` to it (titles, labels, annotations, legends, tick labels
    of every axes and colour bar)."""
    floor = min_text_pt(fig.get_figwidth())
    for text in fig.findobj(Text):
        if text.get_text() and text.get_fontsize() < floor:
            text.set_fontsize(floor)
    for ax in fig.findobj(Axes):  # subfigures' axes too
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            for which, ticks in (("major", axis.get_major_ticks()), ("minor", axis.get_minor_ticks())):
                if ticks and ticks[0].label1.get_fontsize() < floor:
                    ax.tick_params(axis=name, which=which, labelsize=floor)


def fit_to_reading_width(fig, dpi: float | None = None, tries: int = 3) -> None:
    """Narrow ``fig`` until its tight bounding box (legends, titles or labels that stick out included) is at most
    ``READING_WIDTH_PX`` at ``dpi``: a wider PNG would be shrunk by the column, its text with it. Text keeps its size;
    the axes give way."""
    dpi = dpi or fig.dpi
    pad = plt.rcParams["savefig.pad_inches"]
    limit = READING_WIDTH_PX / dpi - 2 * (pad if isinstance(pad, (int, float)) else 0.1) - 0.02
    floor = 0.9 * fig.get_figwidth()  # narrower squeezes crowded layouts (measured: 50 % broke several figures)
    for _ in range(tries):
        fig.draw_without_rendering()
        overflow = fig.get_tightbbox().width - limit
        if overflow <= 0 or fig.get_figwidth() <= floor:
            return
        fig.set_size_inches(max(fig.get_figwidth() - overflow - 0.03, floor), fig.get_figheight(), forward=False)


class ReadingFigure(Figure):
    """A matplotlib ``Figure`` legible at reading width: its text is raised to the floor each time it is drawn (before
    the layout engine runs, so constrained layout makes room for it), and before each PNG with a tight bounding box
    (savefig, the notebook's inline display) it is narrowed to fit the column (:func:`fit_to_reading_width`)."""

    def draw(self, renderer):
        enforce_legible(self)
        return super().draw(renderer)

    def set_canvas(self, canvas):
        super().set_canvas(canvas)
        original = canvas.print_figure

        def print_figure(*args, **kwargs):
            if kwargs.get("bbox_inches") == "tight" or (kwargs.get("bbox_inches") is None
                                                        and plt.rcParams["savefig.bbox"] == "tight"):
                dpi = kwargs.get("dpi")
                fit_to_reading_width(self, dpi if isinstance(dpi, (int, float)) else None)
            return original(*args, **kwargs)

        canvas.print_figure = print_figure


def new_figure(width: float, height: float, **kwargs):
    """``plt.figure`` at :func:`reading_size` with the legibility floor (for layouts ``figure`` does not make:
    subfigures, gridspecs)."""
    return plt.figure(figsize=reading_size(width, height), FigureClass=ReadingFigure, **kwargs)


def figure(nrows: int = 1, ncols: int = 1, *, width: float | None = None, height: float | None = None, **kwargs):
    """``plt.subplots`` with the book's sizes (width defaults to 3.2 in per column, height 3.0 in per row), made
    legible at reading width (:func:`reading_size`, :class:`ReadingFigure`)."""
    width = width or min(3.2 * ncols, 10.0)
    height = height or 3.0 * nrows
    return plt.subplots(nrows, ncols, figsize=reading_size(width, height), constrained_layout=True,
                        FigureClass=ReadingFigure, **kwargs)


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None


def _short_provenance(text: str) -> str:
    """The part of a provenance line that fits under a figure: profile, seeds, commit (and a stale warning)."""
    parts = [p for p in text.split(" · ") if p.startswith(("profile", "seeds", "commit"))]
    if "STALE" in text:
        parts.append("⚠ STALE results")
    return " · ".join(parts)


# Names of the figures the cells being executed will show, in order (set by :func:`numbered`)
_PENDING_NAMES: list[str] = []
_NUMBERING: list[bool] = []  # non-empty while a numbered() block runs


@contextlib.contextmanager
def numbered(*names: str):
    """Give the figures shown inside these names, in order, for numbered figures.

    Each figure that :func:`provenance_footer` shows is then *glued* (myst-nb) instead of shown, with its full
    provenance glued as ``<name>-provenance``; a figure that never reaches it (closed-form figures with no stored result,
    which the inline backend would show at the end of the cell) takes the names left when the block ends, in the order
    the figures were made, with a provenance line saying it was drawn when the page was built. The Markdown cell that
    follows places each with a ``glue:figure`` directive whose ``:name:`` is the same name, so Sphinx numbers it and a
    ``numref`` role refers to it; the caption ends with the provenance as a ``glue:text`` role. Outside a kernel the
    names are ignored. Names and figures must match one to one: a caption must never point at nothing."""
    if _NUMBERING:
        raise RuntimeError("numbered() cannot be nested: close the first block before naming more figures")
    before = set(plt.get_fignums())
    _PENDING_NAMES.extend(names)
    _NUMBERING.append(True)
    try:
        yield
        left = [n for n in plt.get_fignums() if n not in before]
        if _PENDING_NAMES and _in_kernel():
            if len(left) != len(_PENDING_NAMES):
                raise RuntimeError(f"numbered figures {_PENDING_NAMES} were never shown, and {len(left)} figures "
                                   "are open: give one name per figure the block makes")
            for name, number in zip(list(_PENDING_NAMES), left):
                fig = plt.figure(number)
                _glue(name, fig, {"image/png": {"alt": describe(fig)}})
                _glue(f"{name}-provenance", _PlainText("Drawn when this page was built (closed-form; no stored run)."))
                plt.close(fig)
    finally:
        _PENDING_NAMES.clear()
        _NUMBERING.clear()


def describe(fig) -> str:
    """Alternative text for a figure, read from the figure itself: its title, and per panel the title, axis labels and
    legend entries (what a reader who cannot see the image needs to follow the prose)."""
    parts = []
    title = fig.get_suptitle()
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"
              and (ax.has_data() or ax.get_title())]
    parts.append(f"{title}." if title else f"Figure with {len(panels)} panel{'s' * (len(panels) != 1)}.")
    for i, ax in enumerate(panels[:8], 1):
        bits = [f'"{ax.get_title()}"'] if ax.get_title() else []
        if ax.get_xlabel():
            bits.append(f"x: {ax.get_xlabel()}")
        if ax.get_ylabel():
            bits.append(f"y: {ax.get_ylabel()}")
        legend = ax.get_legend()
        if legend is not None:
            labels = [t.get_text() for t in legend.get_texts()]
            bits.append("series: " + ", ".join(labels[:6]) + (" …" if len(labels) > 6 else ""))
        if bits:
            parts.append(f"Panel {i} " * (len(panels) > 1) + "; ".join(bits) + ".")
    text = " ".join(parts).replace("$", "").replace("\\", "")
    return text if len(text) <= 600 else text[:597] + "…"


class _PlainText:
    """A string whose text/plain form is itself (no quotes), for ``{glue:text}``."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _glue(name: str, value, metadata: dict | None = None) -> None:
    """myst-nb's ``glue(name, value, display=False)``, with output metadata (the image's alt text) kept."""
    from IPython.core.formatters import format_display_data
    from IPython.display import display
    from myst_nb.ext.glue import GLUE_PREFIX  # only in a kernel of the book's build (the GPU profile needs no myst-nb)
    bundle, meta = format_display_data(value)
    meta = {**meta, **(metadata or {}), "scrapbook": {"name": name, "mime_prefix": GLUE_PREFIX}}
    display({GLUE_PREFIX + k: v for k, v in bundle.items()}, raw=True, metadata=meta)


def provenance_footer(fig, results: list[dict], note: str = "") -> str:
    """Write the provenance of ``results`` under ``fig`` and return it.

    In a kernel (the book's pages) the figure is shown here with alternative text from :func:`describe`, followed by
    the full provenance as an HTML caption (selectable, searchable, legible), and closed; the PNG keeps one short line
    (profile, seeds, commit). Inside :func:`numbered` the figure and its provenance are glued instead, for a numbered
    figure placed by the next Markdown cell. Outside a kernel the PNG carries the full text, wrapped to the figure's
    width. Call it last, when the figure is complete."""
    text = summarize_provenance(results) + (f" · {note}" if note else "")
    floor = min_text_pt(fig.get_figwidth())
    per_line = max(40, int(fig.get_figwidth() * 72 / (0.62 * floor)))
    kernel = _in_kernel()
    baked = _short_provenance(text) if kernel else text
    wrapped = "\n".join(textwrap.wrap(baked, per_line))
    alt = describe(fig)
    name = _PENDING_NAMES.pop(0) if _PENDING_NAMES else None
    fig.text(0.0, -0.01, wrapped, ha="left", va="top", fontsize=floor, color="0.35", transform=fig.transFigure)
    if kernel:
        from IPython.display import HTML, display
        if name:
            _glue(name, fig, {"image/png": {"alt": alt}})
            _glue(f"{name}-provenance", _PlainText(f"Provenance: {text}"))
        else:
            display(fig, metadata={"image/png": {"alt": alt}})
            display(HTML(f'<p class="book-provenance" style="font-size:0.8em;margin-top:-0.4em;'
                         f'color:var(--pst-color-text-muted,#555)">Provenance: {html.escape(text)}</p>'))
        plt.close(fig)
    return text


def to_png(fig, dpi: int = DPI, close: bool = True, colors: int | None = 96) -> bytes:
    """PNG bytes of a figure, for kernel-free widget frames (every frame is embedded in the page): at ``DPI`` (100;
    text stays legible), reduced to a palette of ``colors`` colours (None: full colour) to keep each frame small."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    if close:
        plt.close(fig)
    return _palette_png(buffer.getvalue(), colors) if colors else buffer.getvalue()


def _palette_png(data: bytes, colors: int) -> bytes:
    from PIL import Image
    image = Image.open(io.BytesIO(data)).convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT,
                                                                  dither=Image.Dither.NONE)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue() if out.tell() < len(data) else data


def table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = ".3g") -> str:
    """A Markdown table (for ``IPython.display.Markdown``, rendered by MyST) from a list of dicts: the book's one table
    renderer. ``|`` is escaped everywhere (headers too), line breaks become spaces; write math as ``$...$`` (MyST
    dollarmath renders it inside cells, escaped pipes included: ``$|B|_{2/L}$`` works)."""
    columns = columns or list(rows[0]) if rows else []
    def cell(v):
        # a bare "|" (|B|, |i|^α) would end the cell and shift the rest of the row into the wrong columns, in a header
        # as in a body cell ("|freq − spatial| / |f|"); a line break would end the table
        text = format(v, floatfmt) if isinstance(v, float) else str(v)
        return text.replace("|", "\\|").replace("\r\n", " ").replace("\n", " ")
    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
