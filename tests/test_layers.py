"""The package's layers, read from its own imports (every ``import`` in every module, those inside functions too):
no import circle; the pure models import no heavy library; plotly is imported by the figures module only and
ipywidgets by the widget modules only; nothing below the figures and widgets imports them. ARCHITECTURE.md draws it."""

import ast
import itertools
from pathlib import Path

import dscourse

ROOT = Path(dscourse.__file__).parent
HEAVY = {"torch", "deepspeed", "transformers", "peft", "accelerate", "safetensors", "plotly", "ipywidgets"}
# Pure models: what a question about memory, a config, communication or a cluster needs, and nothing heavier.
# config's deepspeed_reads, keys and verdict are the exceptions by design: they ask DeepSpeed itself.
PURE = ("dscourse.memory", "dscourse.comm", "dscourse.multinode.hostfile", "dscourse.multinode.commands",
        "dscourse.multinode.preflight", "dscourse.multinode.cli", "dscourse.config", "dscourse.tables",
        "dscourse.cli_util", "dscourse.logcapture", "dscourse.gpu_results", "dscourse.calibration", "dscourse.records")
ASKS_DEEPSPEED = {"dscourse.config.deepspeed_reads", "dscourse.config.keys", "dscourse.config.verdict"}
FIGURES = {"dscourse.plots"}
WIDGETS = {"dscourse.widgets", "dscourse.multinode.widget"}


def _modules() -> dict[str, Path]:
    out = {}
    for f in ROOT.rglob("*.py"):
        parts = ("dscourse", *f.relative_to(ROOT).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(name: str, path: Path, modules) -> tuple[set[str], set[str]]:
    """(the package's modules that ``name`` imports, the top-level names of the outside packages it imports)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    inside, outside = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                (inside if alias.name in modules else outside).add(alias.name if alias.name in modules
                                                                   else alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("dscourse"):
                outside.add(target.split(".")[0])
                continue
            for alias in node.names:
                inside.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
    inside.discard(name)
    return inside, outside


def _graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_no_import_circle():
    edges = {name: inside for name, (inside, _) in _graph().items()}
    index, low, stack, on_stack, circles, counter = {}, {}, [], set(), [], itertools.count()

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = next(counter)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert circles == []


def test_pure_models_import_no_heavy_library():
    heavy = {name: sorted(outside & HEAVY) for name, (_, outside) in _graph().items()
             if _under(name, PURE) and name not in ASKS_DEEPSPEED and outside & HEAVY}
    assert heavy == {}


def test_plotly_only_in_the_figures_and_ipywidgets_only_in_the_widgets():
    graph = _graph()
    assert {n for n, (_, out) in graph.items() if "plotly" in out} == FIGURES
    assert {n for n, (_, out) in graph.items() if "ipywidgets" in out} == WIDGETS


def test_nothing_below_imports_the_figures_or_the_widgets():
    upward = {name: sorted(inside & (FIGURES | WIDGETS)) for name, (inside, _) in _graph().items()
              if name not in FIGURES | WIDGETS and inside & (FIGURES | WIDGETS)}
    assert upward == {}


def test_pure_models_import_only_pure_models():
    upward = {name: sorted(i for i in inside if not _under(i, PURE) and i != "dscourse")
              for name, (inside, _) in _graph().items() if _under(name, PURE)}
    assert {k: v for k, v in upward.items() if v} == {}
