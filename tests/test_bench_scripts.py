"""The bench scripts keep up with the code they measure (benchmarks themselves never run in CI).

Two went stale unnoticed after issue 12 moved modules and changed the stages' signatures:
bench/int8.py's recipe scoring imported a module that had moved, and bench/job_gpu.py's last step
(bytes into and out of the inference actor) called the stages the old way, so a GPU lease would
have lost its final figures. These checks are cheap: imports, and that one step on four photos.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
OURS = ("model", "postproc", "pipelines", "serve")


def our_imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) of every `from OUR.MODULE import NAME` in a file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] in OURS:
            found += [(node.lineno, node.module, a.name) for a in node.names]
    return found


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_every_name_a_bench_script_imports_from_our_packages_exists(script):
    missing = []
    for line, module, name in our_imports(BENCH / script):
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            missing.append(f"{script}:{line}: {module} ({e})")
            continue
        if not hasattr(mod, name) and importlib.util.find_spec(f"{module}.{name}") is None:
            missing.append(f"{script}:{line}: {module}.{name}")
    assert missing == []


def test_job_gpu_counts_the_bytes_into_and_out_of_the_actor_on_cpu(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # the script imports its neighbours as `python bench/job_gpu.py` does
    spec = importlib.util.spec_from_file_location("bench_job_gpu", BENCH / "job_gpu.py")
    job_gpu = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_job_gpu", job_gpu)
    spec.loader.exec_module(job_gpu)
    counted = job_gpu.actor_bytes(types.SimpleNamespace(device="cpu"), REPO / "pipelines" / "samples", "u2netp",
                                  "off", n=2)
    h, w = 320, 320  # u2netp's input: the model input goes in (uint8 RGB), float16 probabilities come out
    assert counted["into_actor"]["model_input"] == h * w * 3
    assert counted["out_of_actor"]["prob"] == h * w * 2
    assert "model_input" not in counted["out_of_actor"] and counted["into_actor"]["data"] > 0
