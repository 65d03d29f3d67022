"""Sphinx extension with four page fixes for this book (listed under ``sphinx.local_extensions`` in ``_config.yml``).

1. Drop sphinx-thebe's scripts from every page. Jupyter Book 1 always loads ``sphinx_thebe``, whatever
   ``launch_buttons.thebe`` says, and the extension adds its inline ``const THEBE_JS_URL = ...`` script twice per page;
   the second declaration throws ("Identifier 'THEBE_JS_URL' has already been declared") on every page. Thebe is off
   here, so nothing uses these scripts.
2. Load MathJax on pages whose only math sits in HTML outputs (the synthesis scoreboard renders ``$...$`` cells as
   ``<span class="math">\\(...\\)</span>``): Sphinx adds MathJax only to pages with math in their Markdown.
3. Take an image's alternative text from its output metadata (``{"image/png": {"alt": ...}}``, written by
   ``lib.plotting.provenance_footer`` from the figure's titles, labels and legends): myst-nb 1.4 reads only ``width`` and
   ``height`` there, so every figure's alt text would be its file path. An ``:alt:`` given in the page still wins.
4. Offer every executed chapter for download (``_downloads/executed/<chapter>.ipynb``, linked at the end of its page):
   the notebook with the outputs jupyter-cache stored for exactly this source, glued figures made visible again
   (myst-nb hides them behind a mime prefix, so Jupyter would show nothing). The theme's download button offers the
   source notebook, which has no outputs. A page whose notebook is not in the cache gets no link.
"""

from __future__ import annotations

import html
from pathlib import Path

from docutils import nodes
from myst_nb.ext.glue import GLUE_PREFIX  # the mime prefix of glued outputs that are not displayed

MATH_IN_HTML = 'class="math notranslate nohighlight"'


def _is_thebe(asset) -> bool:
    name = str(getattr(asset, "filename", asset) or "")
    body = str(getattr(asset, "attributes", {}).get("body", "") or "")
    return "sphinx-thebe" in name or "THEBE_JS_URL" in body


def _drop_thebe(app, pagename, templatename, context, doctree):
    for key in ("script_files", "css_files"):
        if key in context:
            context[key] = [asset for asset in context[key] if not _is_thebe(asset)]


def _math_in_outputs(app, pagename, templatename, context, doctree):
    if doctree is None:
        return
    if any(MATH_IN_HTML in node.astext() for node in doctree.findall(nodes.raw) if "html" in node.get("format", "")):
        app.env.get_domain("math").data["has_equations"][pagename] = True


def _alt_from_output_metadata():
    from myst_nb.core.render import NbElementRenderer
    render_image = NbElementRenderer.render_image
    if getattr(render_image, "_book_alt", False):
        return

    def render_image_with_alt(self, data):
        image_nodes = render_image(self, data)
        alt = data.output_metadata.get(data.mime_type, {}).get("alt")
        for node in image_nodes:
            if alt and ("alt" not in node or node["alt"] == node.get("uri")):
                node["alt"] = str(alt)
        return image_nodes

    render_image_with_alt._book_alt = True
    NbElementRenderer.render_image = render_image_with_alt


def _executed_download(app, pagename, templatename, context, doctree):
    if app.builder.format != "html" or "body" not in context or pagename not in app.env.found_docs:
        return
    source = Path(app.env.doc2path(pagename))
    cache_path = Path(app.config.nb_execution_cache_path or Path(app.outdir).parent / ".jupyter_cache")
    if source.suffix != ".ipynb" or not (cache_path / "global.db").is_file():
        return
    import nbformat
    from jupyter_cache import get_cache
    try:
        _, executed = get_cache(str(cache_path)).merge_match_into_notebook(nbformat.read(source, as_version=4))
    except KeyError:  # this source was not executed through the cache
        return
    for cell in executed.cells:
        for output in cell.get("outputs", []):
            prefix = output.get("metadata", {}).get("scrapbook", {}).get("mime_prefix", "")
            if prefix == GLUE_PREFIX:
                output["data"] = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in output["data"].items()}
    target = Path(app.outdir) / "_downloads" / "executed" / f"{source.stem}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(executed, target)
    href = html.escape(context["pathto"](f"_downloads/executed/{source.stem}.ipynb", 1))
    context["body"] += (f'<p class="book-download">Download <a href="{href}" download>this chapter as an executed '
                        f'notebook</a> (every output; re-running it needs this repository\'s <code>lib</code>: see the '
                        f'README).</p>')


def setup(app):
    _alt_from_output_metadata()
    app.connect("html-page-context", _executed_download, priority=800)
    app.connect("html-page-context", _math_in_outputs, priority=100)  # before sphinx.ext.mathjax (500)
    app.connect("html-page-context", _drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
