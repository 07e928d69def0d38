"""The manifest row in one place: ManifestRow generates the Parquet schema, render_output builds it,
and every key the stages put on the in-flight row is declared (and typed) in InFlightRow."""

from __future__ import annotations

import typing
from dataclasses import fields

import numpy as np
import pyarrow as pa
import pytest

from catalog import corrupt_files, real_photos, write_tree
from model.config import RuntimeConfig
from model.specs import get_spec
from pipelines.manifest import ROW_TYPES, SCHEMA, InFlightRow, ManifestRow, ManifestWriter, read_run
from pipelines.batch.stages import Predictor, decode_input, read_input, render_output
from pipelines.storage import open_location
from postproc import PostprocParams

ARROW = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
IN_FLIGHT = typing.get_type_hints(InFlightRow)


def test_schema_is_generated_from_the_row_dataclass():
    assert SCHEMA.names == [f.name for f in fields(ManifestRow)]
    for f in fields(ManifestRow):
        base = [a for a in typing.get_args(ROW_TYPES[f.name]) if a is not type(None)] or [ROW_TYPES[f.name]]
        assert SCHEMA.field(f.name).type == ARROW[base[0]], f.name
    assert len(SCHEMA) == 31 and SCHEMA.field("precision").type == pa.string()
    assert SCHEMA.field("uncertain_fraction").nullable


def _is(value, hint) -> bool:
    options = typing.get_args(hint) or (hint,)
    if value is None:
        return type(None) in options
    numpy_scalar = {str: np.str_, int: np.integer, float: np.floating, bool: np.bool_}
    return any(isinstance(value, (t, numpy_scalar.get(t, t))) for t in options if t is not type(None))


def _check_in_flight(row: dict, stage: str) -> None:
    undeclared = set(row) - set(IN_FLIGHT)
    assert not undeclared, f"{stage} adds keys InFlightRow does not declare: {sorted(undeclared)}"
    wrong = {k: type(v).__name__ for k, v in row.items() if not _is(v, IN_FLIGHT[k])}
    assert not wrong, f"{stage}: keys of another type than InFlightRow says: {wrong}"


def test_the_stages_rows_are_declared_and_render_output_returns_a_full_typed_manifest_row(tmp_path):
    files = {f"a/{name}": data for name, data in real_photos(2)}
    files.update(dict(list(corrupt_files().items())[:1]))
    write_tree(tmp_path / "src", files)
    src, dst = open_location(str(tmp_path / "src")), open_location(str(tmp_path / "dst"), create=True)
    rows = []
    for k in sorted(files):
        read = read_input({"key": k, "size": -1}, source=src, max_bytes=10**8)
        _check_in_flight(read, "read_input")
        decoded = decode_input(read, preprocess=get_spec("u2netp").preprocess, max_pixels=10**8)
        _check_in_flight(decoded, "decode_input")
        rows.append(decoded)
    batch = {k: np.array([r[k] for r in rows], dtype=object) if k == "data" else np.array([r[k] for r in rows])
             for k in rows[0]}
    predictor = Predictor(RuntimeConfig("u2netp", device="cpu"))
    out = predictor(batch)
    params = PostprocParams.create()
    manifest = []
    for i in range(len(rows)):
        row = {k: out[k][i] for k in out}  # as Ray Data hands the next map one row of the batch
        _check_in_flight(row, "Predictor")
        manifest.append(render_output(row, dest=dst, params=params, model_name="u2netp", model_version="v"))
    for m in manifest:
        assert list(m) == SCHEMA.names  # every column, in order, nothing else
        wrong = {k: type(v).__name__ for k, v in m.items() if not _is(v, ROW_TYPES[k])}
        assert not wrong, wrong
        # The precision inference ran in reaches the manifest row (issue 12: it used to be dropped).
        assert m["precision"] == predictor.runtime.precision == "fp32"
    assert sorted(m["status"] for m in manifest) == ["error", "ok", "ok"]

    # ... and the Parquet manifest, through the writer's cast to SCHEMA.
    writer = ManifestWriter(dst, "run-1")
    writer.add(pa.Table.from_pylist(manifest))
    writer.flush()
    back = read_run(dst, "run-1")
    assert back.schema == SCHEMA and back.column("precision").to_pylist() == ["fp32"] * 3


def test_a_row_missing_or_adding_a_column_fails_where_it_is_built():
    values = {f.name: None for f in fields(ManifestRow)}
    ManifestRow(**values)
    with pytest.raises(TypeError, match="precision"):
        ManifestRow(**{k: v for k, v in values.items() if k != "precision"})
    with pytest.raises(TypeError, match="colour"):
        ManifestRow(**values, colour="red")
