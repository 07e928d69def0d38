"""model/ and postproc/ have no import cycles, not even through imports inside functions (runtime ↔
export and specs ↔ weights were two); the one-way rules between the layers are tests/test_layers.py's. Each module of
model/ and postproc/ also imports on its own, first, in a fresh set of our modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OURS = ("model", "postproc", "pipelines", "serve")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(*packages: str) -> dict[str, Path]:
    return {_module_name(p): p for pkg in packages for p in sorted((REPO / pkg).rglob("*.py"))}


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of ours that `path` imports, at the top or inside a function, named exactly
    (`from model import weights` is model.weights; `from model import get_spec` is model)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in out if m.split(".")[0] in OURS}


def test_model_and_postproc_have_no_import_cycles():
    known = _modules("model", "postproc")
    graph = {name: {t for t in _imports(path, known) if t in known and t != name} for name, path in known.items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" → ".join(stack[stack.index(nxt):] + [node, nxt]) if nxt in stack else f"{node} → {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [node])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not cycles, cycles


def test_every_model_and_postproc_module_imports_first():
    """Each module imported with none of ours loaded before it (third-party ones stay, for speed):
    an import that works only after another module has been imported fails here."""
    names = sorted(_modules("model", "postproc"))
    code = ("import importlib, sys, traceback\n"
            f"failed = []\nfor name in {names!r}:\n"
            "    for m in [m for m in sys.modules if m.split('.')[0] in ('model', 'postproc')]:\n"
            "        del sys.modules[m]\n"
            "    try:\n        importlib.import_module(name)\n"
            "    except Exception:\n        failed.append(name + ': ' + traceback.format_exc(limit=-2))\n"
            "print('\\n'.join(failed)); sys.exit(1 if failed else 0)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
