"""Build the notebooks from their sources and execute them in place, with widget state.

    python tools/notebooks.py build            # notebooks/src/*.py  ->  notebooks/*.ipynb (no outputs)
    python tools/notebooks.py execute [NAME]   # run top to bottom in place, store widget state
    python tools/notebooks.py all [NAME]       # both
    python tools/notebooks.py tidy [NAME]      # drop log lines and machine paths from ignored outputs
    python tools/notebooks.py markdown [NAME]  # copy edited Markdown cells from the sources, outputs kept

Sources use the percent format: ``# %%`` starts a code cell, ``# %% [markdown]`` a Markdown cell
whose lines start with ``# ``; ``{{repository}}`` stands for the repository's address. The Colab link of each notebook
is made here from ``_config.yml`` (repository url and branch), so every link points at the notebook's own path; the
same cell links back to the book page that ``_toc.yml`` hangs the notebook under. The setup cell that follows it is
``tools/colab_setup.py`` with the repository address and requirements.txt's pins filled in: one copy for all notebooks.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
SRC_DIR = NB_DIR / "src"


def repository() -> tuple[str, str]:
    text = (ROOT / "_config.yml").read_text(encoding="utf-8")
    url = re.search(r"^\s+url:\s*(\S+)", text, re.M).group(1)
    branch = re.search(r"^\s+branch:\s*(\S+)", text, re.M).group(1)
    return url.rstrip("/"), branch


def colab_url(notebook: str) -> str:
    url, branch = repository()
    return f"https://colab.research.google.com/github/{url.split('github.com/')[1]}/blob/{branch}/notebooks/{notebook}"


def section_page(notebook: str) -> tuple[str, str] | None:
    """(title, path relative to notebooks/) of the book page that _toc.yml hangs this notebook under, if any."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    for chapter in toc.get("chapters", []):
        if any(s.get("file") == f"notebooks/{notebook}" for s in chapter.get("sections", [])):
            page = ROOT / f"{chapter['file']}.md"
            title = next((ln.lstrip("# ").strip() for ln in page.read_text(encoding="utf-8").splitlines()
                          if ln.startswith("# ")), chapter["file"])
            return title, f"../{chapter['file']}.md"
    return None


def pins() -> dict[str, str]:
    """name -> version of every ``name==version`` line of requirements.txt."""
    text = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    return {m.group(1).lower(): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M)}


def setup_cell() -> nbformat.NotebookNode:
    """The first code cell of every notebook: tools/colab_setup.py, filled in; hidden from the HTML book."""
    source = (ROOT / "tools" / "colab_setup.py").read_text(encoding="utf-8").strip("\n")
    versions = pins()
    fill = {"repository": repository()[0],
            **{name: versions[name] for name in ("deepspeed", "hjson", "accelerate", "peft")}}
    source = re.sub(r"\{\{(\w+)\}\}", lambda m: fill[m.group(1)], source)
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata.update({"tags": ["remove-cell"], "cellView": "form"})  # Colab shows its title, the book nothing
    return cell


def parse_percent(text: str) -> list:
    cells, kind, lines = [], None, []

    def flush():
        if kind is None:
            return
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(re.sub(r"^# ?", "", ln) for ln in body.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(body))
        elif body.strip():
            cells.append(nbformat.v4.new_code_cell(body))

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        else:
            lines.append(line)
    flush()
    return cells


def cells_of(name: str) -> list:
    """The cells of notebook ``name`` as built from its source (no outputs): title, Colab badge, setup, the rest."""
    src = SRC_DIR / f"{name}.py"
    cells = parse_percent(src.read_text(encoding="utf-8").replace("{{repository}}", repository()[0]))
    target = f"{name}.ipynb"
    section = section_page(name)  # the page this notebook belongs to: a link back from the notebook
    badge = nbformat.v4.new_markdown_cell(
        f"[▶ 在 Google Colab 中打开本 notebook]({colab_url(target)})　·　"
        "本地运行：`pip install -r requirements.txt -e .`，然后 `jupyter lab`"
        + (f"　·　本节正文：[{section[0]}]({section[1]})" if section else ""))
    badge.metadata["tags"] = ["colab-link"]
    version = next(c for c in cells if c.cell_type == "code")  # each source opens with the versions it ran on
    version.metadata["tags"] = ["hide-cell"]  # the book folds it away: a reader opens it if they want the versions
    return [cells[0], badge, setup_cell(), *cells[1:]]


def build(name: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=cells_of(name))
    nb.metadata.update({"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                        "language_info": {"name": "python"},
                        "colab": {"provenance": [], "toc_visible": True}})
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name[:2]}-{i:03d}"  # stable ids keep diffs small
    path = NB_DIR / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


# What a reader should not see in the book: DeepSpeed's timestamped log lines and this machine's paths. Only cells
# whose output nbval ignores are tidied (a compared output must stay exactly what the cell prints).
_LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\] \[[A-Z]+\] .*\n?", re.M)
_WORK_DIR = re.compile(r"/tmp/dscourse-[\w.-]+")


def tidy(nb) -> int:
    """Remove log lines and machine paths from the outputs of ``# NBVAL_IGNORE_OUTPUT`` cells; how many changed."""
    changed = 0
    for cell in nb.cells:
        if cell.cell_type != "code" or "NBVAL_IGNORE_OUTPUT" not in cell.source:
            continue
        for out in cell.get("outputs", []):
            key, holder = ("text", out) if "text" in out else ("text/plain", out.get("data", {}))
            text = holder.get(key)
            if not isinstance(text, str):
                continue
            new = _LOG_LINE.sub("", text).replace(sys.executable, "python").replace(str(ROOT) + "/", "")
            new = _WORK_DIR.sub("$WORK", new)
            if new != text:
                holder[key], changed = new, changed + 1
        cell.outputs = [o for o in cell.get("outputs", []) if not (o.get("output_type") == "stream" and not o.get("text"))]
    return changed


def sync_markdown(nb, name: str) -> int:
    """Copy the Markdown cells (and every cell's tags) of ``name``'s source into the executed notebook ``nb``; how
    many changed.

    Prose edits need no re-execution: code cells (and so every output nbval compares) stay as they are. Refuses when
    the cells no longer line up or a code cell differs from its source (that edit needs ``all``)."""
    built = cells_of(name)
    if [c.cell_type for c in built] != [c.cell_type for c in nb.cells]:
        raise SystemExit(f"{name}: cells added or removed in the source: rebuild and execute it (all {name})")
    changed = 0
    for cell, new in zip(nb.cells, built):
        if cell.cell_type == "code" and cell.source != new.source:
            raise SystemExit(f"{name}: a code cell changed in the source: rebuild and execute it (all {name})")
        if cell.cell_type == "markdown" and cell.source != new.source:
            cell.source, changed = new.source, changed + 1
        if cell.metadata.get("tags") != new.metadata.get("tags"):  # cell tags steer the book, not the outputs
            cell.metadata["tags"] = new.metadata.get("tags", [])
            if not cell.metadata["tags"]:
                del cell.metadata["tags"]
            changed += 1
    return changed


def execute(name: str, timeout: int = 900) -> float:
    from nbclient import NotebookClient

    path = NB_DIR / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t0 = time.time()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(NB_DIR)}}).execute()
    tidy(nb)
    nbformat.write(nb, path)
    return time.time() - t0


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("tidy", "markdown"):  # outputs already committed: edit them without re-executing
        for name in argv[1:] or sorted(p.stem for p in SRC_DIR.glob("*.py")):
            path = NB_DIR / f"{name}.ipynb"
            nb = nbformat.read(path, as_version=4)
            if argv[0] == "tidy":
                print(f"tidied {tidy(nb)} outputs of {name}")
            else:
                print(f"updated {sync_markdown(nb, name)} Markdown cells of {name}")
            nbformat.write(nb, path)
        return 0
    if not argv or argv[0] not in ("build", "execute", "all"):
        print(__doc__)
        return 2
    names = argv[1:] or sorted(p.stem for p in SRC_DIR.glob("*.py"))
    for name in names:
        if argv[0] in ("build", "all"):
            print("built", build(name).relative_to(ROOT))
        if argv[0] in ("execute", "all"):
            print(f"executed {name} in {execute(name):.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
