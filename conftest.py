"""Test selection by cost.

Markers (declared in pyproject.toml):
- ``engine``: needs torch / DeepSpeed / a launcher (real engines, real ranks); notebooks and browser tests count too.
- ``notebook``: a cell of a notebook under strict nbval.       - ``browser``: the built book in Chromium.

``python -m pytest -m "not engine"`` is the maintainer's fast loop: the pure calculators and checkers, in seconds.
A module marked engine as a whole (``pytestmark = pytest.mark.engine`` at its top) is then not even imported,
so the fast loop never loads torch.

One session, one launch of each multi-rank job: ``DSCOURSE_RUN_CACHE`` (see ``dscourse.runcache``) points at a
folder of this session, so a notebook cell that launches what a test already launched (or the reverse) reuses it.
The notebooks' kernels inherit the variable.
"""

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no downloads at run time (COURSE_DESIGN.md)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# DeepSpeed's CPU ops compile on first use; without debug information, and with the object that CPU Adam and fused
# Adam share compiled once, in about half the CPU (tools/op_build_cxx says why). A compiler the caller chose (CXX)
# is left alone.
os.environ.setdefault("CXX", str(Path(__file__).resolve().parent / "tools" / "op_build_cxx"))

_ENGINE_MODULE = re.compile(r"^pytestmark\s*=.*\bpytest\.mark\.engine\b", re.M)


def pytest_configure(config):
    if "DSCOURSE_RUN_CACHE" not in os.environ:
        config._dscourse_run_cache = tempfile.mkdtemp(prefix="dscourse-runs-")
        os.environ["DSCOURSE_RUN_CACHE"] = config._dscourse_run_cache
    from dscourse.launch import isolated_hf_home

    # no Hugging Face setting of this machine's user (an `accelerate config` file) reaches the session's processes
    os.environ.update(isolated_hf_home(os.environ["DSCOURSE_RUN_CACHE"]))
    if "DSCOURSE_CPUINFO" not in os.environ and not _excludes_engine(config):
        # py-cpuinfo asked once for the whole session (dscourse/cpuinfo_once.py): about 1 CPU-second per question,
        # which DeepSpeed asks two or three times in every rank
        from dscourse.cpuinfo_once import save

        folder = Path(os.environ["DSCOURSE_RUN_CACHE"])
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["DSCOURSE_CPUINFO"] = str(save(folder / "cpuinfo.json"))
        from dscourse.warm import SOCKET_VARIABLE

        if not hasattr(config, "workerinput") and os.environ.get(SOCKET_VARIABLE) != "off":
            # Warm interpreters for the session's ranks (dscourse.warm): torch, DeepSpeed and transformers imported
            # once instead of in every rank. DSCOURSE_WARM_RANKS=off starts every rank cold.
            from dscourse.launch import start_warm_ranks

            path, config._dscourse_warm = start_warm_ranks(folder)
            os.environ[SOCKET_VARIABLE] = str(path)
    from dscourse.warm import BELOW_OP_BUILDS, SOCKET_VARIABLE

    if not _excludes_engine(config) and os.environ.get(SOCKET_VARIABLE) != "off":
        # The tests (and what they start) run below the warm server's op builds: the first launches wait for DeepSpeed's
        # CPU ops, and on 2 cores the builds would otherwise share the CPU with the browser, the kernels and the rest

        os.nice(BELOW_OP_BUILDS)


def pytest_terminal_summary(terminalreporter):
    from dscourse.runcache import summary
    from dscourse.warm import served, started_cold

    line = summary()
    if line:
        terminalreporter.write_line(line)
    warm = served()
    if warm:
        terminalreporter.write_line(f"ranks and launchers started warm: {warm[0]} ({warm[1]:.0f} CPU-s, not in the "
                                    "launches' CPU-s above, which count what started cold)")
    cold = started_cold()
    if cold:
        whys = sorted({c["why"] for c in cold})
        terminalreporter.write_line(f"started cold although a server was asked: {len(cold)} ({'; '.join(whys)[:300]})")


def pytest_unconfigure(config):
    server = getattr(config, "_dscourse_warm", None)
    if server is not None:
        import signal

        try:
            os.killpg(server.pid, signal.SIGKILL)  # the server and any rank it still serves
        except ProcessLookupError:
            pass
        server.wait()
        from dscourse.warm import clear_stale_build_locks

        # a rank killed while it loaded an op (torch takes a build lock on every load) would leave the lock behind, and
        # the next use of that op outside a session (a notebook run by hand) would wait for it forever
        clear_stale_build_locks()
    folder = getattr(config, "_dscourse_run_cache", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop("DSCOURSE_RUN_CACHE", None)


def _excludes_engine(config) -> bool:
    return bool(re.search(r"\bnot\s+engine\b", config.getoption("markexpr") or ""))


def pytest_ignore_collect(collection_path: Path, config):
    if not _excludes_engine(config):
        return None
    if collection_path.suffix == ".ipynb":
        return True
    if collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        if _ENGINE_MODULE.search(collection_path.read_text(encoding="utf-8")):
            return True
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath))
        if path.suffix == ".ipynb":
            item.add_marker(pytest.mark.notebook)
            item.add_marker(pytest.mark.engine)
        elif path.name == "test_browser.py":
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.engine)


def pytest_runtest_logreport(report):
    """A failure is named the moment it happens (not only in the summary at the end), with the last line of its
    error: where a session is stopped from outside (a CI limit), its log still says what failed and why."""
    if report.failed and not hasattr(report, "wasxfail"):
        lines = [line for line in report.longreprtext.splitlines() if line.strip()]
        said = [line[1:].strip() for line in lines if line.startswith("E ")][:3] or lines[-1:] or ["(no message)"]
        print(f"\n[failed {report.when}] {report.nodeid}: {' | '.join(said)[:400]}", flush=True)
