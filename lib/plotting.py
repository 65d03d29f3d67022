"""One figure style for the book, and provenance written under every figure."""

from __future__ import annotations

import io
import textwrap

import matplotlib

if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline",):
    matplotlib.use("Agg")  # headless by default; notebooks keep their inline backend
import matplotlib.pyplot as plt  # noqa: E402

from .results import summarize_provenance  # noqa: E402

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.figsize": (6.4, 3.6),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 9,
    "axes.titlesize": 10,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "image.cmap": "magma",
}
DIVERGING = "RdBu_r"
SEQUENTIAL = "magma"


def use_style() -> None:
    plt.rcParams.update(STYLE)


use_style()


def figure(nrows: int = 1, ncols: int = 1, *, width: float | None = None, height: float | None = None, **kwargs):
    """``plt.subplots`` with the book's sizes (width defaults to 3.2 in per column, height 3.0 in per row)."""
    width = width or min(3.2 * ncols, 10.0)
    height = height or 3.0 * nrows
    return plt.subplots(nrows, ncols, figsize=(width, height), constrained_layout=True, **kwargs)


def provenance_footer(fig, results: list[dict], note: str = "") -> str:
    """Write the provenance of ``results`` under ``fig`` (small grey text) and return it for a caption."""
    text = summarize_provenance(results) + (f" · {note}" if note else "")
    wrapped = "\n".join(textwrap.wrap(text, 150))
    fig.text(0.0, -0.01, wrapped, ha="left", va="top", fontsize=6.5, color="0.4", transform=fig.transFigure)
    return text


def to_png(fig, dpi: int = 72, close: bool = True) -> bytes:
    """PNG bytes of a figure (for kernel-free widget frames: keep them small)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    if close:
        plt.close(fig)
    return buffer.getvalue()


def table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = ".3g") -> str:
    """A Markdown table (for ``IPython.display.Markdown``) from a list of dicts."""
    columns = columns or list(rows[0]) if rows else []
    def cell(v):
        # a bare "|" (|B|, |i|^α) would end the cell and shift the rest of the row into the wrong columns, in a header
        # as in a body cell ("|freq − spatial| / |f|"); a line break would end the table
        text = format(v, floatfmt) if isinstance(v, float) else str(v)
        return text.replace("|", "\\|").replace("\r\n", " ").replace("\n", " ")
    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
