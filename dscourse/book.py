"""Hand values from a notebook to the book's prose, so the pages quote computed numbers, not typed ones.

:func:`glue` writes the same output that ``myst_nb.glue(name, value, display=False)`` writes; the book
reads it with ``{glue:text}`notebooks/NAME.ipynb::key``. Re-implemented here (a dozen lines) so that a
notebook needs no myst-nb where it runs (Colab, a cluster).
"""

from __future__ import annotations

GLUE_PREFIX = "application/papermill.record/"


def glue(name: str, value) -> None:
    """Record ``value`` (shown as its ``str``) under ``name`` without displaying it.

    Besides text/plain the record holds the same text as HTML: the pages' ``{glue}`` role pastes the richest type it
    finds, and pastes text/plain as inline code (pink, in a monospace font) where a number in a sentence should read
    as prose. ``{glue:text}`` would paste plain text but first runs it through ``ast.literal_eval``, which turns
    "134,912" into the tuple "(134, 912)" (myst_nb/core/variables.py ``format_plain_text``).
    """
    import html

    from IPython.display import display

    text = str(value)
    display({GLUE_PREFIX + "text/plain": text,
             GLUE_PREFIX + "text/html": f'<span class="dscourse-glued">{html.escape(text)}</span>'}, raw=True,
            metadata={"scrapbook": {"name": name, "mime_prefix": GLUE_PREFIX}})
