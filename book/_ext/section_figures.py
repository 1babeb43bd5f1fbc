"""``{dscourse-figure}``: a figure of the ``dscourse`` package drawn into a section page when the book is built.

The section pages are Markdown, not notebooks, and the build runs no kernel; the figures a reader should see on
them are the package's static, kernel-free ones (``dscourse.plots``, ``dscourse.comm``, ``dscourse.gpu_results``):
drawn from formulas and committed measurements alone, the same functions the notebooks call. The directive calls
one and places its HTML (:func:`dscourse.plots.figure_html`) in a numbered figure with the directive's content as
its Chinese caption::

    :::{dscourse-figure} dscourse.plots.memory_explorer
    :name: fig-memory-explorer
    :kwargs: {"preset": "Llama-2-7B"}
    :height: 480

    Llama-2-7B 在 8 张 GPU 上每个 rank 的峰值显存……
    :::

``:kwargs:`` is a JSON object of keyword arguments; the function returns a ``dscourse.plots.Figure`` or a plotly
figure. The plot's element id is the figure's ``:name:`` (unique in the book, as labels must be) with ``-plot``, so the
page is the same on every build.
"""

from __future__ import annotations

import importlib
import json

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective


class DscourseFigure(SphinxDirective):
    required_arguments = 1
    has_content = True
    option_spec = {"name": directives.unchanged_required, "kwargs": directives.unchanged,
                   "height": directives.positive_int}

    def run(self):
        from dscourse.plots import Figure, figure_html

        target = self.arguments[0]
        module_name, _, function_name = target.rpartition(".")
        label = self.options.get("name")
        if not label or not self.content:
            raise self.error(f"dscourse-figure {target}: give it a :name: (its label and element id) and a caption")
        try:
            function = getattr(importlib.import_module(module_name), function_name)
            kwargs = json.loads(self.options.get("kwargs") or "{}")
        except (ImportError, AttributeError, ValueError) as e:
            raise self.error(f"dscourse-figure {target}: {e}") from None
        fig = function(**kwargs)
        fig = fig if isinstance(fig, Figure) else Figure(fig)
        height = self.options.get("height") or fig.height

        figure = nodes.figure(classes=["dscourse-figure"])
        figure += nodes.raw("", figure_html(fig.fig, f"{label}-plot", height), format="html")
        caption_nodes, messages = self.state.inline_text("\n".join(self.content), self.lineno)
        figure += nodes.caption("", "", *caption_nodes)
        self.add_name(figure)  # the :name: becomes the label {numref} points at
        return [figure, *messages]


def setup(app):
    app.add_directive("dscourse-figure", DscourseFigure)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
