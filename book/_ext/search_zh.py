"""Chinese search that finds the words of the book's titles.

Sphinx indexes Chinese text with jieba's ``cut_for_search`` (``html_search_language: zh``; jieba is pinned in
requirements.txt), but the search page does not segment a query: it looks the typed string up as one word. jieba's
general dictionary cuts 混合精度 into 混合 + 精度, 多节点 into 多 + 节点, 主权重 into 主权 + 重与, so a reader typing the
words of a title found nothing. ``search_words.txt`` (one word a line, jieba's user dictionary format) adds the book's
terms: the index then holds both the whole word and its parts (混合精度, 混合, 精度).

Sphinx reads the dictionary from ``html_search_options["dict"]``, a path it opens as given: this sets it to the file
beside this extension, whatever the folder the build runs from.
"""

from __future__ import annotations

from pathlib import Path

WORDS = Path(__file__).resolve().parent / "search_words.txt"


def _configure(app, config):
    config.html_search_options = {**(config.html_search_options or {}), "dict": str(WORDS)}


def setup(app):
    app.connect("config-inited", _configure)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
