"""Notebook pages that read like lessons: the book shows code and outputs without the notebooks' test machinery.

The committed notebooks keep what ``pytest --nbval`` needs: the ``# NBVAL_IGNORE_OUTPUT`` marker on cells whose output
varies, and those cells' outputs as the machine that executed them printed them (``tools/notebooks.py tidy`` already
removes most log lines and paths from them). This extension changes only what a reader sees in the HTML:

- the marker lines (``# NBVAL_IGNORE_OUTPUT``, ``# NBVAL_SKIP``, ...) are dropped from displayed code;
- DeepSpeed's (and other loggers') timestamped lines, ``[2026-11-24 22:55:26,631] [WARNING] [real_accelerator.py...``,
  are dropped from displayed text outputs, and absolute paths of the executing machine's temporary folders,
  home, virtual environment or site-packages are shortened.

- an ipywidgets control is only a picture of its saved state in the static HTML (changing it does nothing without a
  kernel): one line right above each says so, with the notebook's Colab link.

Outputs as rich HTML (tables, figures) are untouched; the notebooks themselves are untouched.
"""

from __future__ import annotations

import re
from pathlib import Path

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


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
KERNEL_NOTE = ("这个控件需要运行中的 Python 内核：网页上显示的是执行 notebook 时保存的状态，改动它不会重新计算。"
               "要交互，请")


def colab_url(app, docname: str) -> str | None:
    """The notebook's Colab address, from the repository Jupyter Book configured (as the launch button has it)."""
    options = app.config.html_theme_options or {}
    url, branch = options.get("repository_url"), options.get("repository_branch") or "main"
    if not url or "github.com/" not in url:
        return None
    path = Path(app.env.doc2path(docname)).relative_to(app.srcdir).as_posix()
    return f"https://colab.research.google.com/github/{url.split('github.com/')[1].strip('/')}/blob/{branch}/{path}"


def _kernel_notes(app, doctree):
    if not str(app.env.doc2path(app.env.docname)).endswith(".ipynb"):
        return
    url = colab_url(app, app.env.docname)
    for raw in list(doctree.findall(nodes.raw)):
        if WIDGET_VIEW not in raw.astext() or _element(raw) != "cell_code_output":
            continue
        note = nodes.paragraph(classes=["dscourse-kernel-note"])
        note += nodes.Text(KERNEL_NOTE)
        if url:
            link = nodes.reference("", "", refuri=url, internal=False)
            link += nodes.Text("在 Google Colab 中打开本 notebook")
            note += link
            note += nodes.Text("，或在本地 Jupyter 里运行。")
        else:
            note += nodes.Text("在 Colab 或本地 Jupyter 里运行本 notebook。")
        raw.parent.insert(raw.parent.index(raw), note)


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
    _kernel_notes(app, doctree)


def setup(app):
    app.connect("doctree-read", _clean)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
