"""The job's stages as plain callables, without a cluster, and the storage helpers they use."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from catalog import corrupt_files, real_photos
from pipelines.stages import Predictor, decode_input, read_input, render_output
from pipelines.storage import list_inputs, open_location, output_key
from postproc import PostprocParams


@pytest.fixture
def tree(tmp_path):
    files = {f"a/{name}": data for name, data in real_photos(3)}
    files.update(corrupt_files())
    for key, data in files.items():
        (tmp_path / "src" / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / key).write_bytes(data)
    (tmp_path / "src" / "_manifests").mkdir()
    (tmp_path / "src" / "_manifests" / "x.parquet").write_bytes(b"")
    (tmp_path / "src" / ".hidden.jpg").write_bytes(b"")
    return tmp_path, files


def test_listing_skips_hidden_and_metadata_files(tree):
    tmp, files = tree
    assert sorted(i.key for i in list_inputs(open_location(str(tmp / "src")))) == sorted(files)


def test_stages_chain_without_a_cluster(tree):
    tmp, files = tree
    src, dst = open_location(str(tmp / "src")), open_location(str(tmp / "dst"), create=True)
    rows = [decode_input(read_input({"key": k, "size": -1}, source=src, max_bytes=10**8), input_size=(320, 320),
                         max_pixels=10**8)
            for k in sorted(files)]
    batch = {k: np.array([r[k] for r in rows], dtype=object) if k == "data" else np.array([r[k] for r in rows])
             for k in rows[0]}
    # The actor gets the model input and the compressed bytes, never full-resolution pixels (issue 14).
    assert "pixels" not in rows[0] and {r["model_input"].shape for r in rows} == {(320, 320, 3)}
    out = Predictor("u2netp", device="cpu")(batch)
    assert out["prob"].shape == (len(rows), 320, 320) and "model_input" not in out
    params = PostprocParams.create(format="webp")
    manifest = [render_output({k: out[k][i] for k in out}, dest=dst, params=params, model_name="u2netp",
                              model_version="v") for i in range(len(rows))]
    by_key = {m["source_key"]: m for m in manifest}
    assert {m["error_reason"] for k, m in by_key.items() if k in corrupt_files()} == {"empty", "corrupt",
                                                                                        "unsupported_format"}
    for k, m in by_key.items():
        if k not in corrupt_files():
            assert m["status"] == "ok" and m["output_key"].endswith(".webp")
            img = cv2.imread(str(tmp / "dst" / m["output_key"]), cv2.IMREAD_UNCHANGED)
            assert img.shape[:2] == (m["height"], m["width"])


def test_read_failure_becomes_an_error_row(tmp_path):
    row = read_input({"key": "gone.jpg", "size": 10}, source=open_location(str(tmp_path)), max_bytes=100)
    assert row["error_reason"] == "read_failed" and row["data"] == b"" and row["size_bytes"] == 10  # as listed


@pytest.mark.parametrize("key", ["../x.jpg", "a/../../x.jpg", "/etc/x.jpg", "a//b.jpg"])
def test_keys_that_could_escape_the_destination_are_refused(key):
    with pytest.raises(ValueError, match="unsafe key"):
        output_key(key, ".png")


def test_output_key_mirrors_the_input_key():
    assert output_key("photos/a/b.jpg", ".png") == "photos/a/b.png"
    assert output_key("photos/a/b c é.jpeg", ".webp") == "photos/a/b c é.webp"


def test_oversized_input_is_refused_without_reading(tmp_path):
    (tmp_path / "big.jpg").write_bytes(b"x" * 2000)
    row = read_input({"key": "big.jpg", "size": -1}, source=open_location(str(tmp_path)), max_bytes=1000)
    assert row["error_reason"] == "too_large" and row["data"] == b"" and row["size_bytes"] == 2000


def test_unchanged_bytes_reuse_the_existing_output(tmp_path):
    import hashlib

    (tmp_path / "a.jpg").write_bytes(b"same bytes")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").write_bytes(b"png")
    src, dst = open_location(str(tmp_path)), open_location(str(tmp_path / "out"))
    row = {"key": "a.jpg", "size": 10, "prev_sha256": hashlib.sha256(b"same bytes").hexdigest(),
           "prev_output_key": "a.png"}
    assert read_input(row, source=src, max_bytes=100, dest=dst)["reused_output_key"] == "a.png"
    row["prev_sha256"] = "0" * 64
    assert read_input(row, source=src, max_bytes=100, dest=dst)["reused_output_key"] == ""


def test_job_config_checks_providers_before_ray_starts(tmp_path):
    from pipelines.job import JobConfig

    assert JobConfig(source=str(tmp_path), dest=str(tmp_path / "out"), providers="tensorrt,cuda").providers
    with pytest.raises(ValueError, match="unknown ONNX Runtime provider 'gpu'"):
        JobConfig(source=str(tmp_path), dest=str(tmp_path / "out"), providers="gpu")
    with pytest.raises(ValueError, match="--runtime onnxruntime"):
        JobConfig(source=str(tmp_path), dest=str(tmp_path / "out"), providers="cpu", runtime="torch")


def test_cpu_pool_leaves_ray_data_a_whole_cpu_and_threads_follow_the_share():
    from pipelines.job import JobConfig, plan_pool

    default = plan_pool(JobConfig(source="/s", dest="/d"), cpus=2, gpus=0)
    # One 1-thread actor per CPU; together they leave 1 CPU for Ray Data's listing/repartition
    # tasks, split in two and nudged off the decode share (equal shares would fuse decoding in).
    assert (default.size, default.cpus, default.gpus, default.threads) == (2, 0.49, 0.0, 1)
    s = default.strategy()
    assert s.min_size == s.max_size == 2  # fixed: Ray's autoscaler kept a CPU pool at one actor
    one = plan_pool(JobConfig(source="/s", dest="/d", actors=1), cpus=2, gpus=0)
    assert (one.size, one.cpus, one.threads) == (1, 1.0, 1)
    big = plan_pool(JobConfig(source="/s", dest="/d"), cpus=16, gpus=0)
    assert (big.size, big.cpus, big.threads) == (4, 1.0, 1)  # capped: each actor holds ~2.8 GB
    tiny = plan_pool(JobConfig(source="/s", dest="/d"), cpus=1, gpus=0)
    assert (tiny.size, tiny.cpus, tiny.threads) == (1, 0.0, 1)
    assert plan_pool(JobConfig(source="/s", dest="/d", actors=2, threads=3), cpus=16, gpus=0).threads == 3


def test_gpu_pool_is_one_actor_per_gpu_and_may_shrink():
    from pipelines.job import JobConfig, plan_pool

    pool = plan_pool(JobConfig(source="/s", dest="/d"), cpus=8, gpus=4)
    assert (pool.size, pool.gpus, pool.cpus) == (4, 1.0, 1.0)
    s = pool.strategy()
    assert (s.min_size, s.max_size, s.initial_size) == (1, 4, 4)
    assert plan_pool(JobConfig(source="/s", dest="/d", device="cpu"), cpus=8, gpus=4).gpus == 0.0
    with pytest.raises(RuntimeError, match="no GPU"):
        plan_pool(JobConfig(source="/s", dest="/d", device="cuda"), cpus=8, gpus=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"actor_cpus": 0.5}, "differ"), ({"decode_cpus": 0}, "decode_cpus"), ({"threads": 0}, "threads"),
    ({"actor_cpus": -1}, "actor_cpus"), ({"actors": 0}, "actors"), ({"torch_graph": "fast"}, "torch_graph"),
    ({"device": "tpu"}, "device must be one of auto, cpu, cuda")])
def test_pool_settings_are_validated_before_ray_starts(kwargs, message):
    from pipelines.job import JobConfig

    with pytest.raises(ValueError, match=message):
        JobConfig(source="/s", dest="/d", **kwargs)


class _FlakyFS:
    """Stands in for Arrow's S3 filesystem: the first `failures` uploads fail as a 503 burst would."""

    def __init__(self, failures: int, message: str = "AWS Error SLOW_DOWN during CompleteMultipartUpload"):
        self.failures, self.message, self.calls, self.written = failures, message, 0, {}

    def open_output_stream(self, path):
        import io

        self.calls += 1
        if self.calls <= self.failures:
            raise OSError(f"When completing multiple part upload for key '{path}': {self.message}")
        fs = self

        class Sink(io.BytesIO):
            def close(self):
                fs.written[path] = self.getvalue()
                super().close()

        return Sink()


def test_s3_writes_retry_transient_errors_and_not_others(monkeypatch):
    from pipelines import storage
    from pipelines.storage import Location

    monkeypatch.setattr(storage.time, "sleep", lambda s: None)
    flaky = _FlakyFS(failures=3)
    Location("s3://b/out", flaky, "b/out").write_atomic("a.png", b"png")
    assert flaky.calls == 4 and flaky.written == {"b/out/a.png": b"png"}

    hopeless = _FlakyFS(failures=99)
    with pytest.raises(OSError, match="SLOW_DOWN"):
        Location("s3://b/out", hopeless, "b/out").write_atomic("a.png", b"png")
    assert hopeless.calls == 5  # bounded

    denied = _FlakyFS(failures=1, message="AWS Error ACCESS_DENIED")
    with pytest.raises(OSError, match="ACCESS_DENIED"):
        Location("s3://b/out", denied, "b/out").write_atomic("a.png", b"png")
    assert denied.calls == 1  # a permanent error is not retried
