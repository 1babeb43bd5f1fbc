"""Run every notebook top to bottom in a Colab-like environment, installed the way its setup cell installs.

    python tools/colab_like.py --out colab_like.json                  # every notebooks/*.ipynb
    python tools/colab_like.py --notebooks notebooks/06_fsdp_vs_deepspeed.ipynb --venv /tmp/colab-venv

Colab's versions (its published package list, 2026-08; COURSE_DESIGN.md section 6) go into a fresh virtual
environment: Python 3.13 where this machine has it (else this Python), torch 2.11, transformers 5.15, Accelerate
1.14, ipywidgets 7.7.1, plotly 5.24, ipykernel 6.17 — and neither DeepSpeed nor the course package. Each notebook
then runs in a kernel of that environment with ``DSCOURSE_SETUP=1``, so its first cell really installs DeepSpeed,
brings Accelerate to the pinned version and installs the course package, from a wheel of this checkout
(``DSCOURSE_PACKAGE``: Colab would take it from the repository in ``_config.yml``). The rest of the notebook must
then run as it does in Colab. Compared text outputs that differ from the committed ones are listed too (the
committed outputs come from the pinned stack of requirements.txt, so some may legitimately differ).

Needs the package index (torch 2.11 comes with its CUDA libraries, several GB) and about 15 minutes on 2 cores.
Writes a JSON report (``--out``); exits 1 if a notebook failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLAB = {"torch": "2.11.0", "transformers": "5.15.0", "accelerate": "1.14.0", "ipywidgets": "7.7.1",
         "plotly": "5.24.1", "ipykernel": "6.17.1"}
# Also in Colab and used by the notebooks or their ranks (versions left to pip).
ALSO = ["numpy", "pyyaml", "psutil", "nbformat"]
KERNEL = "dscourse-colab-like"


def _python_313() -> str:
    """A Python 3.13 that starts (Colab's), else this interpreter. A pyenv shim on PATH may name a version that is
    installed but not selected, and then refuses to start: pyenv's own install folders are tried after it."""
    candidates = [shutil.which("python3.13"),
                  *sorted(str(p) for p in (Path.home() / ".pyenv" / "versions").glob("3.13*/bin/python3.13"))]
    for exe in filter(None, candidates):
        try:
            if subprocess.run([exe, "-c", "import sys, venv"], capture_output=True, timeout=60).returncode == 0:
                return exe
        except (OSError, subprocess.TimeoutExpired):
            continue
    return sys.executable


def _run(cmd: list[str], timeout: float, **kw) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise SystemExit(f"colab_like: `{' '.join(cmd[:4])} ...` failed: {tail[0]}")


def make_env(venv: Path, python: str) -> Path:
    """The Colab-like virtual environment (made once, reused while it exists); returns its interpreter."""
    py = venv / "bin" / "python"
    if not py.exists():
        print(f"creating {venv} with {python}", flush=True)
        _run([python, "-m", "venv", str(venv)], 300)
        pins = [f"{name}=={version}" for name, version in COLAB.items()]
        print("installing", " ".join(pins), flush=True)
        _run([str(py), "-m", "pip", "install", "-q", *pins, *ALSO], 3600)
    return py


def course_wheel(py: Path, into: Path) -> Path:
    _run([str(py), "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(into), str(REPO)], 600)
    return next(into.glob("dscourse-*.whl"))


def _texts(cell) -> list[str]:
    """A cell's text outputs as nbval compares them: widget views (whose text repr differs between ipywidgets 7
    and 8) left out, and a stream's consecutive chunks joined (kernels flush them at different points)."""
    out, last_stream = [], None
    for o in cell.get("outputs", []):
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {}):
            continue
        if o.get("output_type") == "stream":
            if last_stream == o.get("name"):
                out[-1] += o.get("text", "")
            else:
                out.append(o.get("text", ""))
            last_stream = o.get("name")
            continue
        last_stream = None
        if "data" in o and "text/plain" in o["data"]:
            out.append(o["data"]["text/plain"])
        elif o.get("output_type") == "error":
            out.append(f"{o.get('ename')}: {o.get('evalue')}")
    return out


def run_notebook(path: Path, env: dict, workdir: Path, timeout: int) -> dict:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    committed = nbformat.read(path, as_version=4)
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    client = NotebookClient(nb, timeout=timeout, kernel_name=KERNEL, resources={"metadata": {"path": str(workdir)}})
    t0, error = time.time(), None
    saved = dict(os.environ)
    os.environ.update(env)  # the kernel (and the ranks it launches) inherit this environment
    try:
        client.execute()
    except CellExecutionError as exc:
        error = str(exc).strip().splitlines()[-1][:400]
    finally:
        os.environ.clear()
        os.environ.update(saved)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    ran = sum(1 for i in code if nb.cells[i].get("execution_count"))
    differs = [i for i in code[1:] if "NBVAL_IGNORE_OUTPUT" not in nb.cells[i].source
               and nb.cells[i].get("execution_count") and _texts(nb.cells[i]) != _texts(committed.cells[i])]
    return {"notebook": path.name, "ok": error is None, "error": error, "code_cells": len(code), "ran": ran,
            "seconds": round(time.time() - t0, 1), "outputs_differ_in_cells": differs,
            "differences": {i: {"committed": _texts(committed.cells[i]), "here": _texts(nb.cells[i])} for i in differs},
            "setup_output": "".join(_texts(nb.cells[code[0]])).strip()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--notebooks", nargs="*", type=Path, help="default: every notebooks/*.ipynb")
    ap.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "dscourse-colab-like",
                    help="the Colab-like environment (created if missing, reused otherwise)")
    ap.add_argument("--python", default=None,
                    help="interpreter for the environment (default: a Python 3.13 that runs, else this one)")
    ap.add_argument("--timeout", type=int, default=1200, help="seconds per cell")
    ap.add_argument("--out", type=Path, help="JSON report")
    args = ap.parse_args(argv)
    args.python = args.python or _python_313()  # only probed when not given
    notebooks = args.notebooks or sorted((REPO / "notebooks").glob("*.ipynb"))
    missing = [str(p) for p in notebooks if not p.is_file()]
    if missing:
        print(f"colab_like: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2

    py = make_env(args.venv, args.python)
    work = Path(tempfile.mkdtemp(prefix="dscourse-colab-"))
    try:
        wheel = course_wheel(py, work / "wheel")
        kernels = work / "jupyter"
        _run([str(py), "-m", "ipykernel", "install", "--prefix", str(kernels), "--name", KERNEL], 120)
        version = subprocess.run([str(py), "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                                 text=True, timeout=60).stdout.strip()
        env = {"DSCOURSE_SETUP": "1", "DSCOURSE_PACKAGE": str(wheel), "HF_HUB_OFFLINE": "1", "PYTHONPATH": "",
               "JUPYTER_PATH": str(kernels / "share" / "jupyter"), "VIRTUAL_ENV": str(args.venv),
               "PATH": f"{py.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        results = []
        for path in notebooks:
            cwd = work / path.stem
            cwd.mkdir()
            print(f"running {path.name} ...", flush=True)
            results.append(run_notebook(path, env, cwd, args.timeout))
            r = results[-1]
            print(f"  {'ok' if r['ok'] else 'FAILED'}: {r['ran']}/{r['code_cells']} cells in {r['seconds']:.0f} s"
                  + (f"; {r['error']}" if r["error"] else "")
                  + (f"; outputs differ in cells {r['outputs_differ_in_cells']}" if r["outputs_differ_in_cells"] else ""),
                  flush=True)
        report = {"python": version, "colab_versions": COLAB, "notebooks": results}
        if args.out:
            args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        return 0 if all(r["ok"] for r in results) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
