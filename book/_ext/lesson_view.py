"""Notebook pages that read like lessons: the book shows code and outputs without the notebooks' test machinery.

The committed notebooks keep what ``pytest --nbval`` needs: the ``# NBVAL_IGNORE_OUTPUT`` marker on cells whose output
varies, and those cells' outputs as the machine that executed them printed them (``tools/notebooks.py tidy`` already
removes most log lines and paths from them). This extension changes only what a reader sees in the HTML:

- the marker lines (``# NBVAL_IGNORE_OUTPUT``, ``# NBVAL_SKIP``, ...) are dropped from displayed code;
- DeepSpeed's (and other loggers') timestamped lines, ``[2026-11-24 22:55:26,631] [WARNING] [real_accelerator.py...``,
  are dropped from displayed text outputs, and absolute paths of the executing machine's temporary folders,
  home, virtual environment or site-packages are shortened.

Outputs as rich HTML (tables, figures) are untouched; the notebooks themselves are untouched.
"""

from __future__ import annotations

import re

from docutils import nodes

MARKER = re.compile(r"^[ \t]*# NBVAL_[A-Z_]+[^\n]*(\n|$)", re.M)
LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\] \[[A-Z]+\] [^\n]*(\n|$)", re.M)
# an interpreter or a package of a virtual environment: the part from site-packages/ or the bare "python"
SITE = re.compile(r"/[^\s'\"]*?/site-packages/")
VENV_PYTHON = re.compile(r"/[^\s'\"]*?/\.?venv/bin/(python[\d.]*)")
TMP = re.compile(r"/tmp/[^\s'\":,)\]]+")
HOME = re.compile(r"/(?:root|home/[^/\s]+)(?=/)")


def reader_text(text: str) -> str:
    """An output as the reader should see it: no timestamped log lines, no machine paths."""
    text = LOG_LINE.sub("", text)
    text = VENV_PYTHON.sub(r"\1", text)
    text = SITE.sub("site-packages/", text)
    text = TMP.sub("$TMPDIR", text)
    return HOME.sub("~", text)


def _element(node) -> str | None:
    while node is not None:
        kind = node.get("nb_element") if isinstance(node, nodes.Element) else None
        if kind in ("cell_code_source", "cell_code_output"):
            return kind
        node = node.parent
    return None


def _replace_text(block: nodes.literal_block, text: str) -> None:
    block.children = [nodes.Text(text)]
    block.rawsource = text


def _clean(app, doctree):
    for block in list(doctree.findall(nodes.literal_block)):
        kind = _element(block)
        if kind is None:
            continue
        old = block.astext()
        new = MARKER.sub("", old) if kind == "cell_code_source" else reader_text(old)
        if new != old:
            if kind == "cell_code_output" and not new.strip():
                block.parent.remove(block)  # an output that was only log lines
            else:
                _replace_text(block, new)


def setup(app):
    app.connect("doctree-read", _clean)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
