"""The repository's own rules: pure packages stay pure, lint passes, the notebooks' setup cell says what to do."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE = ("dscourse.memory", "dscourse.config", "dscourse.comm", "dscourse.multinode")
HEAVY = ("torch", "deepspeed", "ipywidgets", "plotly")


@pytest.mark.parametrize("module", PURE)
def test_pure_packages_import_no_heavy_dependency(module):
    """The calculators load in milliseconds anywhere: importing one (and its CLI) pulls in no torch, DeepSpeed,
    ipywidgets or plotly. A fresh interpreter, since this test process may have imported them already."""
    code = (f"import importlib, sys\nm = importlib.import_module({module!r})\n"
            f"if hasattr(m, '__path__'): importlib.import_module({module!r} + '.cli')\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().replace("'", '"')) == []


def test_ruff_passes():
    """`ruff check .` with the configuration in pyproject.toml (ruff is pinned in requirements.txt)."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: `pip install -r requirements.txt` installs the pinned version")
    proc = subprocess.run([ruff, "check", "--no-cache", "."], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


# --- the setup cell every notebook starts with (tools/colab_setup.py, filled in by tools/notebooks.py) ---------

def _setup_module():
    spec = importlib.util.spec_from_file_location("colab_setup", ROOT / "tools" / "colab_setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines the functions; setup() runs only as __main__ (a notebook cell)
    module.PINS = {"deepspeed": "0.19.8", "hjson": "3.1.0", "accelerate": "1.15.0", "peft": "0.21.2"}
    return module


def test_setup_installs_nothing_where_everything_is_there():
    m = _setup_module()
    assert m.setup_steps({"deepspeed": "0.19.8", "hjson": "3.1.0", "accelerate": "1.15.0", "peft": "0.21.2"},
                         True, "x") == []
    assert m.setup_steps({"deepspeed": "0.19.8", "accelerate": "1.16.0.dev0", "peft": "0.22.0"}, True, "x") == []


def test_setup_steps_in_a_colab_like_runtime():
    """Colab (2026-08): no DeepSpeed, no course package, Accelerate 1.14 (too old for notebook 06), an older PEFT."""
    m = _setup_module()
    steps = m.setup_steps({"deepspeed": None, "accelerate": "1.14.0", "peft": "0.17.1"}, False,
                          "git+https://example.org/course")
    assert [args for _, args, _ in steps] == [["deepspeed==0.19.8", "hjson==3.1.0"], ["accelerate==1.15.0"],
                                              ["peft==0.21.2"], ["git+https://example.org/course"]]
    assert all(fix for _, _, fix in steps)
    assert m.release("1.14.0") < m.release("1.15.0") <= m.release("1.15.0rc1+local")


def test_setup_installs_libaio_in_colab_only():
    """Notebook 07's NVMe offload compiles DeepSpeed's async_io op against libaio: Colab's runtime lacks its headers
    and has apt-get as root; elsewhere the README asks for it and the cell installs no system package."""
    m = _setup_module()
    assert m.system_steps(True, False) == [["libaio-dev"]]
    assert m.system_steps(True, True) == m.system_steps(False, False) == []


def _tools_notebooks():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import notebooks as nbtool
    finally:
        sys.path.pop(0)
    return nbtool


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """A fresh virtual environment with pip and nothing else: a runtime that lacks everything the notebooks need."""
    env = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=300)
    return env / "bin" / "python"


def _run_setup_cell(python: Path, env: dict) -> subprocess.CompletedProcess:
    source = _tools_notebooks().setup_cell().source
    # pip offline and without this machine's pip configuration: an install fails at once, as it would with no network
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PYTHONPATH": "", **env}
    return subprocess.run([str(python), "-c", source], capture_output=True, text=True, timeout=600, env=env, cwd="/")


def test_setup_cell_outside_colab_says_what_is_missing_in_one_line(bare_python):
    proc = _run_setup_cell(bare_python, {"DSCOURSE_SETUP": ""})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("Setup: DeepSpeed 0.19.8, Accelerate 1.15.0, PEFT 0.21.2, the course package dscourse "
                               "missing here.")
    assert "pip install -r requirements.txt -e ." in lines[0] and "DSCOURSE_SETUP=1" in lines[0]


def test_setup_cell_failed_install_is_one_line_with_the_fix(bare_python):
    """In setup mode (as in Colab) a pip failure ends the cell with one line: what failed, pip's reason, the fix."""
    proc = _run_setup_cell(bare_python, {"DSCOURSE_SETUP": "1"})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("Setup: could not install DeepSpeed 0.19.8 (")
    assert "deepspeed==0.19.8" in lines[0] and "run this cell again" in lines[0]
    assert proc.stdout.strip() == "Setup: installing DeepSpeed 0.19.8 ..."


def test_every_notebook_is_built_from_its_source():
    """A committed notebook's cells are its source's (notebooks/src/NN.py), with the badge and the generated setup
    cell: an edit to a source, the setup cell or _config.yml's repository must be rebuilt (tools/notebooks.py all)."""
    nbtool = _tools_notebooks()
    setup = nbtool.setup_cell()
    assert f'REPOSITORY = "{nbtool.repository()[0]}"' in setup.source and "{{" not in setup.source
    names = sorted(p.stem for p in (ROOT / "notebooks" / "src").glob("*.py"))
    assert names == sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    for name in names:
        cells = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))["cells"]
        built = nbtool.cells_of(name)
        assert ["".join(c["source"]) for c in cells] == [c.source for c in built], f"{name}: rebuild it"
        assert [c["cell_type"] for c in cells] == [c.cell_type for c in built]
        assert cells[2]["metadata"]["tags"] == ["remove-cell"]  # the book shows no setup machinery
        version = next(c for c in cells[3:] if c["cell_type"] == "code")
        assert version["metadata"].get("tags") == ["hide-cell"], f"{name}: the version cell is not folded away"
        assert [c["metadata"].get("tags") for c in cells] == [c.metadata.get("tags") for c in built], name
        assert not [o for o in cells[2].get("outputs", []) if o.get("text") or o.get("data")], f"{name}: setup printed"


def test_op_build_compiler_leaves_out_only_debug_information():
    """conftest.py gives DeepSpeed's JIT op builds tools/op_build_cxx: every argument but -g reaches the real
    compiler, in order (here `echo` stands in for it)."""
    args = ["-O3", "-g", "-march=native", "-DNAME=a b", "-c", "x.cpp", "-g"]
    out = subprocess.run([str(OP_BUILD_CXX), *args], env={**os.environ, "DSCOURSE_REAL_CXX": "echo"},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "-O3 -march=native -DNAME=a b -c x.cpp\n"


OP_BUILD_CXX = Path(__file__).resolve().parents[1] / "tools" / "op_build_cxx"


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")
def test_op_build_compiler_compiles_an_identical_object_once(tmp_path):
    """Two ops compiling the same file with flags that differ only in a macro the file never reads (CPU Adam and
    fused Adam's cpu_adam_impl.cpp) compile it once; the second gets the same object and a dependency file naming
    its own target. A macro the file does read gives another object."""
    src = tmp_path / "impl.cpp"
    src.write_text('#include "impl.h"\nint twice(int x) { return SCALE * x; }\n')
    (tmp_path / "impl.h").write_text("#ifndef SCALE\n#define SCALE 2\n#endif\n")
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}

    def build(name: str, *defines: str):
        folder = tmp_path / name
        folder.mkdir()
        done = subprocess.run([str(OP_BUILD_CXX), "-MMD", "-MF", "impl.o.d", f"-DTORCH_EXTENSION_NAME={name}",
                               *defines, "-O2", "-g", "-c", str(src), "-o", "impl.o"], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return (folder / "impl.o").read_bytes(), (folder / "impl.o.d").read_text()

    first, first_dep = build("cpu_adam")
    second, second_dep = build("fused_adam")
    assert first == second and first_dep == second_dep and first_dep.startswith("impl.o:") and "impl.h" in first_dep
    assert len(list((tmp_path / "ext" / ".objects").glob("*.o"))) == 1  # compiled once
    third, _ = build("scaled", "-DSCALE=3")
    assert third != first and len(list((tmp_path / "ext" / ".objects").glob("*.o"))) == 2


SECTION_PAGES = sorted((ROOT / "book").glob("4_*.md"))


@pytest.mark.parametrize("page", SECTION_PAGES, ids=lambda p: p.stem)
def test_every_section_page_closes_with_its_takeaways(page):
    """Each section is a lesson: a 本节要点 box says what to remember (issue: pages that teach)."""
    text = page.read_text(encoding="utf-8")
    assert ":::{admonition} 本节要点" in text, f"{page.name} has no 本节要点 box"


def test_section_figures_are_named_and_captioned():
    """Every {dscourse-figure} on a section page has a label (for {numref}) and a Chinese caption; the directive
    refuses one without (book/_ext/section_figures.py), so the strict build fails rather than show a bare plot."""
    found = 0
    for page in SECTION_PAGES:
        for block in re.findall(r":::\{dscourse-figure\}[^\n]*\n(.*?)\n:::", page.read_text(encoding="utf-8"), re.S):
            found += 1
            assert re.search(r"^:name: fig-", block, re.M), (page.name, block[:80])
            caption = "\n".join(line for line in block.splitlines() if line and not line.startswith(":"))
            assert re.search(r"[\u4e00-\u9fff]", caption), (page.name, "caption not in Chinese")
    assert found >= 5


_TEXT_RULE = re.compile(r"^-+(  +-+)+\s*$")  # the rule under a dscourse.tables.text_table header


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_tables_stay_small(notebook):
    """Every table a notebook prints (dscourse.tables.text_table: a header, a rule, rows up to a blank line) has at
    most 12 rows, as the book pages' own tables: notebook pages are pages of the book too."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    for index, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            text = "".join(out.get("text", "")) or "".join(out.get("data", {}).get("text/plain", ""))
            lines = text.splitlines() + [""]
            for at, line in enumerate(lines):
                if _TEXT_RULE.match(line):
                    rows = next(n for n, row in enumerate(lines[at + 1:]) if not row.strip())
                    assert rows <= 12, f"{notebook.name} cell {index}: a table of {rows} rows ({lines[at - 1][:60]})"


@pytest.mark.parametrize("page", SECTION_PAGES, ids=lambda p: p.stem)
def test_every_section_page_draws_a_figure(page):
    """A section page shows its key figure itself, not only on its notebook page (issue: figures on every page)."""
    assert ":::{dscourse-figure}" in page.read_text(encoding="utf-8"), f"{page.name} has no figure"


@pytest.mark.parametrize("page", sorted((ROOT / "book").glob("*.md")), ids=lambda p: p.stem)
def test_book_pages_keep_their_tables_small(page):
    """A page's own tables have at most 12 rows (issue: pages that teach): a longer one is a wall of numbers, which
    belongs in a notebook, a figure or two tables by theme."""
    rows, longest = 0, 0
    for line in page.read_text(encoding="utf-8").splitlines() + [""]:
        if line.startswith("|"):
            rows += 1
        else:
            longest, rows = max(longest, rows - 2), 0  # less the header and its rule
    assert longest <= 12, f"{page.name} has a table of {longest} rows"


def test_every_cli_has_an_entry_point_that_answers_help():
    """pyproject.toml's [project.scripts]: the four command lines, each a main(argv) that returns an exit code."""
    import importlib
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert set(scripts) == {"dscourse-memory", "dscourse-config", "dscourse-comm", "dscourse-multinode"}
    for target in scripts.values():
        module, func = target.split(":")
        main = getattr(importlib.import_module(module), func)
        with pytest.raises(SystemExit) as done:
            main(["--help"])
        assert done.value.code == 0
