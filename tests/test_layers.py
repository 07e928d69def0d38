"""The import rules of docs/architecture.md, read from the source (every import, also those inside functions)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
JOBS = ("pipelines.batch", "pipelines.training", "pipelines.evaluation")


def imports(folder: str) -> dict[str, set[str]]:
    """Each module under `folder` (a dotted name) → the absolute module names it imports."""
    out = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.update([node.module, *(f"{node.module}.{a.name}" for a in node.names)])
        out[name] = names
    return out


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize("folder,forbidden", [
    ("model", ("pipelines", "serve")), ("postproc", ("pipelines", "serve")), ("serve", ("pipelines",)),
])
def test_lower_layers_never_import_upper_ones(folder, forbidden):
    bad = {m: sorted(n for n in names if any(under(n, f) for f in forbidden))
           for m, names in imports(folder).items()}
    assert not {m: n for m, n in bad.items() if n}


def test_jobs_never_import_each_other_and_shared_modules_import_no_job():
    found = imports("pipelines")
    assert any(under(m, "pipelines.batch") for m in found) and any(under(m, "pipelines.cli") for m in found)
    for module, names in found.items():
        if under(module, "pipelines.cli"):
            continue  # the CLI is above the jobs
        own = next((j for j in JOBS if under(module, j)), None)
        others = [j for j in (*JOBS, "pipelines.cli") if j != own]
        assert not [n for n in names if any(under(n, o) for o in others)], module


def test_building_the_parser_imports_no_ray():
    code = "import sys, pipelines.cli as c; c.build_parser(); print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
