"""The storage interface (pipelines/storage/base.py): a new scheme is one Location subclass plus one
registry entry. This file adds a memory:// backend, fsspec's in-memory filesystem behind pyarrow's
FSSpecHandler, in a few lines, and runs the job's storage calls through it."""

from __future__ import annotations

import ast
import uuid
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pytest
from pyarrow import fs as pafs

from pipelines import storage
from pipelines.storage import (BACKENDS, InputRefused, Location, check_disjoint, fetch_to_cache, list_inputs,
                               open_location, read_uri)

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class MemoryLocation(Location):
    """The whole backend: how a memory:// URI opens. Everything else is the interface's defaults."""

    scheme = "memory"

    @classmethod
    def open(cls, uri: str, create: bool = False, **options) -> MemoryLocation:
        fs = pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem("memory")))
        return cls(uri.rstrip("/"), fs, "/" + uri.partition("://")[2].strip("/"), tuple(sorted(options.items())))


@pytest.fixture
def memory(monkeypatch):
    monkeypatch.setitem(BACKENDS, "memory", MemoryLocation)
    return f"memory://{uuid.uuid4().hex}"


def test_a_registered_scheme_runs_list_read_write_and_delete_through_the_interface(memory):
    loc = open_location(f"{memory}/in", s3_endpoint="http://unused", create=True)
    assert isinstance(loc, MemoryLocation) and loc.s3_endpoint == "http://unused"
    loc.write_atomic("b/photo.jpg", b"jpeg bytes")
    loc.write_atomic("a.png", b"png")
    loc.write_atomic(".DS_Store", b"x")
    loc.write_atomic("_manifests/run/part-0.parquet", b"ours")
    listed = {i.key: i for i in list_inputs(loc)}
    assert sorted(listed) == [".DS_Store", "a.png", "b/photo.jpg"]  # _manifests/ at the top is ours
    assert listed[".DS_Store"].reason == "hidden" and listed["a.png"].reason == ""
    assert listed["b/photo.jpg"].size == len(b"jpeg bytes")
    assert loc.read("b/photo.jpg") == b"jpeg bytes" and loc.exists("a.png")
    assert loc.read_input("a.png", -1, 100) == b"png"  # size asked of the store, as for a manifest input
    with pytest.raises(InputRefused) as e:
        loc.read_input("b/photo.jpg", None, 4)
    assert e.value.reason == "too_large" and e.value.size == len(b"jpeg bytes")
    with pytest.raises(InputRefused) as e:
        loc.read_input("gone.jpg", 10, 100)
    assert e.value.reason == "read_failed"
    assert loc.key_problem("a.png") == "" and loc.local_path("a.png") is None
    assert loc.uri_of("b/photo.jpg") == f"{memory}/in/b/photo.jpg"
    assert read_uri(f"{memory}/in/a.png") == b"png"
    loc.delete("a.png")
    loc.delete("a.png")  # deleting what is not there is no error
    assert not loc.exists("a.png")


def test_check_disjoint_and_fetch_to_cache_follow_the_new_scheme(memory, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="lies inside"):
        check_disjoint(f"{memory}/in", f"{memory}/in/out")
    with pytest.raises(ValueError, match="contains"):
        check_disjoint(f"{memory}/in/sub", f"{memory}/in")
    check_disjoint(f"{memory}/in", f"{memory}/inside")  # a sibling that shares a prefix of letters
    check_disjoint(f"{memory}/in", str(tmp_path))  # two stores never overlap

    monkeypatch.setenv("MATTING_WEIGHTS_DIR", str(tmp_path / "cache"))
    open_location(f"{memory}/models").write_atomic("w.onnx", b"weights")
    local = Path(fetch_to_cache(f"{memory}/models/w.onnx"))
    assert local.read_bytes() == b"weights" and local.parent == tmp_path / "cache" / "s3"
    assert [p.name for p in local.parent.iterdir()] == [local.name]  # no temporary file left


def test_a_backend_named_by_module_path_is_imported_when_first_used(monkeypatch):
    monkeypatch.setitem(BACKENDS, "memory", f"{__name__}:MemoryLocation")
    assert storage.backend_for("memory://x/y").__name__ == "MemoryLocation"


def test_an_unknown_scheme_names_the_ones_there_are():
    with pytest.raises(ValueError, match=r"unsupported location 'gs://b/p'.*s3://"):
        open_location("gs://b/p")
    with pytest.raises(TypeError, match="open_location"):
        Location("/tmp", pafs.LocalFileSystem(), "/tmp")  # the interface alone is no backend


def _sources(*folders: str):
    """Our Python files under `folders`: not a bench's git-ignored work folder (bench/.work holds
    rembg's venv) or any other hidden folder."""
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            if not any(part.startswith(".") for part in path.relative_to(REPO).parts):
                yield path, path.read_text()


def test_only_the_backends_know_their_stores():
    """No S3 client, and no branching on a scheme, outside pipelines/storage/ (s3.py holds the one set-up)."""
    offenders = []
    for path, text in _sources("pipelines", "serve", "model", "postproc", "bench", "cluster"):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith("pipelines/storage/"):
            continue
        tree = ast.parse(text)
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(n.split(".")[0] in ("boto3", "botocore", "s3fs") for n in names):
                offenders.append(f"{rel}:{node.lineno} imports {names}")
            if isinstance(node, ast.Attribute) and node.attr in ("S3FileSystem", "is_s3"):
                offenders.append(f"{rel}:{node.lineno} uses {node.attr}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("s3://") \
                    and node.value.rstrip("/") == "s3:":
                offenders.append(f"{rel}:{node.lineno} branches on 's3://'")
    assert not offenders, offenders


def test_the_s3_backend_lists_reads_and_writes_through_the_same_interface(s3_server, tmp_path):
    """The same calls against a real S3 API (moto on loopback), and read_uri for a file named by URI or path."""
    boto3 = pytest.importorskip("boto3")

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="store")
    s3.put_object(Bucket="store", Key="in/a/photo.jpg", Body=b"jpeg")
    s3.put_object(Bucket="store", Key="in/folder/", Body=b"")  # a folder marker: not an input
    s3.put_object(Bucket="store", Key="in/._photo.jpg", Body=b"x")
    loc = open_location("s3://store/in", s3_server)
    assert [(i.key, i.reason) for i in list_inputs(loc)] == [("._photo.jpg", "hidden"), ("a/photo.jpg", "")]
    loc.write_atomic("out/x.png", b"png")
    assert read_uri("s3://store/in/out/x.png", s3_server) == b"png" and loc.exists("out/x.png")
    assert loc.key_problem("k" * 1100) == "output_name_too_long" and loc.key_problem("k.png") == ""
    (tmp_path / "bg.png").write_bytes(b"local")
    assert read_uri(str(tmp_path / "bg.png")) == b"local"
    with pytest.raises(FileNotFoundError):
        read_uri("s3://store/in/missing.png", s3_server)
