"""Error reasons live in one table (postproc/reasons.py): every reason the code raises is in it, the
derived views agree with it, and docs/operations.md shows it whole."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from postproc.reasons import PERMANENT_REASONS, REASONS, markdown_table, reason

REPO = Path(__file__).resolve().parent.parent


def test_docs_show_the_table_as_generated():
    doc = (REPO / "docs" / "operations.md").read_text()
    assert markdown_table() in doc, ("docs/operations.md is out of date: paste the output of python -c "
                                     "'from postproc.reasons import markdown_table; print(markdown_table())'")


def _named_reasons() -> set[str]:
    """Reason literals in the code: the first argument of DecodeError/InputRefused, ListedInput's
    fourth, and what the storage helpers that classify entries and write failures return."""
    positions = {"DecodeError": 0, "InputRefused": 0, "ListedInput": 3}
    helpers = {"classify_local", "write_failure_reason", "key_problem"}
    named: set[str] = set()
    for path in [*(REPO / "pipelines").rglob("*.py"), *(REPO / "postproc").rglob("*.py")]:  # sub-packages too
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                i = positions.get(name)
                if i is not None and len(node.args) > i and isinstance(node.args[i], ast.Constant):
                    named.add(node.args[i].value)
            if isinstance(node, ast.FunctionDef) and node.name in helpers:
                for ret in (n for n in ast.walk(node) if isinstance(n, ast.Return) and n.value is not None):
                    values = ret.value.elts[:1] if isinstance(ret.value, ast.Tuple) else [ret.value]
                    values += [v for n in values if isinstance(n, ast.IfExp) for v in (n.body, n.orelse)]
                    named.update(v.value for v in values if isinstance(v, ast.Constant))
    return {n for n in named if isinstance(n, str) and n}


def test_every_reason_the_code_names_is_in_the_table():
    named = _named_reasons()
    assert {"empty", "corrupt", "unsafe_key", "not_a_regular_file", "symlink_loop", "output_collision",
            "output_name_too_long", "undecodable_name", "hidden", "unreadable_folder", "read_failed"} <= named
    assert named <= set(REASONS), named - set(REASONS)


def test_derived_views_follow_the_table():
    from pipelines import state
    from serve import pipeline

    assert state.PERMANENT_REASONS == PERMANENT_REASONS == {n for n, r in REASONS.items() if r.permanent}
    assert pipeline._DECODE_STATUS["unsupported_format"] == (415, "unsupported_type")
    assert pipeline._DECODE_STATUS["too_many_pixels"] == (413, "too_large")
    assert {"read_failed", "write_failed", "output_collision", "symlink_loop"}.isdisjoint(PERMANENT_REASONS)
    assert {"hidden", "not_a_regular_file", "undecodable_name", "output_name_too_long"} <= PERMANENT_REASONS


def test_an_unknown_reason_fails_loudly():
    from postproc import DecodeError

    with pytest.raises(ValueError, match="unknown reason 'typo'.*empty, corrupt"):
        reason("typo")
    with pytest.raises(ValueError, match="unknown reason"):
        DecodeError("typo", "message")
