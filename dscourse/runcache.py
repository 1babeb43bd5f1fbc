"""Reuse a multi-rank launch within one test session, where a test and a notebook need the same result.

Only when ``DSCOURSE_RUN_CACHE`` names a folder (the test session's ``conftest.py`` sets it; notebooks run by
nbval inherit it): a reader's notebook, a script or a benchmark always launches. A launch is the same when its
module, arguments, rank count, launcher, launcher arguments and extra environment are: an argument that names an
existing file or folder counts by its content (a config file, a checkpoint to resume from), one that names a path
that holds nothing yet is an output (``--save-dir``): its place does not count, and what the first launch wrote
there is copied to the new place on reuse. Failed launches are stored too, with their error, so a test of the
failure sees the same message; so are launches that timed out (retrying them would mostly wait as long again).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

_PLACEHOLDER = "<output>"


def cache_root() -> Path | None:
    folder = os.environ.get("DSCOURSE_RUN_CACHE")
    return Path(folder) if folder else None


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if f != path else "").encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _is_output(value: str) -> bool:
    """An absolute path that holds nothing yet (missing, or a folder without files): where a launch writes."""
    if not os.path.isabs(value):
        return False
    path = Path(value)
    return not path.exists() or (path.is_dir() and not any(p.is_file() for p in path.rglob("*")))


def _part(value: str):
    """What a value contributes to the key: an input path its content, an output path a placeholder."""
    if not os.path.isabs(value):
        return value
    return _PLACEHOLDER if _is_output(value) else ["content", _digest(Path(value))]


def launch_key(module: str, args: list[str], env: dict | None = None, **launch) -> tuple[str, list[int]]:
    """(key, indices of the arguments that are outputs) of a launch. ``env``'s values count like arguments
    (``HF_HOME=<a fresh folder>`` is the same wherever the folder is)."""
    parts = [module, sorted((k, repr(v)) for k, v in launch.items()),
             sorted((k, _part(str(v))) for k, v in (env or {}).items()),
             [_part(arg) for arg in args]]
    outputs = [i for i, arg in enumerate(args) if _is_output(arg)]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32], outputs


@contextmanager
def claim(key: str):
    """Hold this launch's lock: where tests run in parallel (pytest-xdist), a second identical launch waits for the
    first and then reuses it instead of running beside it."""
    root = cache_root()
    if root is None:
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        yield


def load(key: str, args: list[str], outputs: list[int], out: Path) -> dict | None:
    """The stored launch (ranks, log, error) with its outputs copied to this launch's places; None if not stored."""
    root = cache_root()
    entry = root / key if root else None
    if entry is None or not (entry / "launch.json").exists():
        return None
    stored = json.loads((entry / "launch.json").read_text())
    for i in outputs:
        if (entry / f"output{i}").exists():
            shutil.copytree(entry / f"output{i}", args[i], dirs_exist_ok=True)
    if (entry / "out").exists():
        shutil.copytree(entry / "out", out, dirs_exist_ok=True)
    return stored


def record(key: str, module: str, args: list[str], reused: bool, seconds: float, cpu_seconds: float = 0.0,
           nproc: int | None = None) -> None:
    """One line per launch in the session's ledger (``ledger.jsonl``), for the session's summary: wall seconds, and
    CPU seconds of the launcher and its ranks (what a 2-core machine pays)."""
    root = cache_root()
    if root is None:
        return
    line = json.dumps({"key": key, "module": module, "args": args, "nproc": nproc, "reused": reused,
                       "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1)})
    with open(root / "ledger.jsonl", "a", encoding="utf-8") as f:
        f.write(line + "\n")


def summary() -> str | None:
    """"N launches run (S s), M reused" from the ledger, or None without one."""
    root = cache_root()
    ledger = root / "ledger.jsonl" if root else None
    if ledger is None or not ledger.exists():
        return None
    rows = [json.loads(line) for line in ledger.read_text(encoding="utf-8").splitlines()]
    ran = [r for r in rows if not r["reused"]]
    return (f"multi-rank launches: {len(ran)} run ({sum(r['seconds'] for r in ran):.0f} s, "
            f"{sum(r.get('cpu_seconds', 0) for r in ran):.0f} CPU-s), "
            f"{len(rows) - len(ran)} reused from earlier in this session")


def forget(key: str) -> None:
    """Drop a stored launch (one that timed out, before it is tried again under a longer limit)."""
    root = cache_root()
    if root is not None:
        shutil.rmtree(root / key, ignore_errors=True)


def store(key: str, args: list[str], outputs: list[int], out: Path, result: dict) -> None:
    root = cache_root()
    if root is None:
        return
    tmp = root / f".{key}.{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    for i in outputs:
        if Path(args[i]).is_dir():
            shutil.copytree(args[i], tmp / f"output{i}")
    if out.is_dir() and not any(Path(args[i]) == out for i in outputs):
        shutil.copytree(out, tmp / "out")
    (tmp / "launch.json").write_text(json.dumps(result))
    try:
        tmp.rename(root / key)  # atomic: a reader sees a whole entry or none
    except OSError:  # stored meanwhile by another process
        shutil.rmtree(tmp, ignore_errors=True)
