"""The job's stages as plain callables, without a cluster, and the storage helpers they use."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from catalog import corrupt_files, real_photos
from model.config import RuntimeConfig
from model.specs import get_spec
from pipelines.batch.stages import Predictor, decode_input, read_input, render_output
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


def test_listing_marks_hidden_files_and_leaves_out_only_our_manifests(tree):
    tmp, files = tree
    listed = {i.key: i.reason for i in list_inputs(open_location(str(tmp / "src")))}
    assert listed == {**{k: "" for k in files}, ".hidden.jpg": "hidden"}  # a row each; _manifests/ is ours


def test_stages_chain_without_a_cluster(tree):
    tmp, files = tree
    src, dst = open_location(str(tmp / "src")), open_location(str(tmp / "dst"), create=True)
    rows = [decode_input(read_input({"key": k, "size": -1}, source=src, max_bytes=10**8),
                         preprocess=get_spec("u2netp").preprocess, max_pixels=10**8)
            for k in sorted(files)]
    batch = {k: np.array([r[k] for r in rows], dtype=object) if k == "data" else np.array([r[k] for r in rows])
             for k in rows[0]}
    # The actor gets the model input and the compressed bytes, never full-resolution pixels (issue 14).
    assert "pixels" not in rows[0] and {r["model_input"].shape for r in rows} == {(320, 320, 3)}
    out = Predictor(RuntimeConfig("u2netp", device="cpu"))(batch)
    assert out["prob"].shape == (len(rows), 320, 320) and "model_input" not in out
    assert set(out["precision"]) == {"fp32"}  # what ran reaches the manifest (the CPU default without INT8)
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
    from pipelines.batch.job import JobConfig

    cfg = JobConfig(source=str(tmp_path / "src"), dest=str(tmp_path / "out"), inference=RuntimeConfig(providers="tensorrt,cuda"))
    assert cfg.inference.providers == ("tensorrt", "cuda")
    with pytest.raises(ValueError, match="unknown ONNX Runtime provider 'gpu'"):
        RuntimeConfig(providers="gpu")
    with pytest.raises(ValueError, match="--runtime onnxruntime"):
        RuntimeConfig(providers="cpu", runtime="torch")


def test_cpu_pool_leaves_ray_data_a_whole_cpu_and_threads_follow_the_share():
    from pipelines.batch.config import JobConfig
    from pipelines.batch.execution import plan_pool

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
    assert plan_pool(JobConfig(source="/s", dest="/d", actors=2, inference=RuntimeConfig(threads=3)), cpus=16, gpus=0).threads == 3


def test_gpu_pool_is_one_actor_per_gpu_and_may_shrink():
    from pipelines.batch.config import JobConfig
    from pipelines.batch.execution import plan_pool

    pool = plan_pool(JobConfig(source="/s", dest="/d"), cpus=8, gpus=4)
    assert (pool.size, pool.gpus, pool.cpus) == (4, 1.0, 1.0)
    s = pool.strategy()
    assert (s.min_size, s.max_size, s.initial_size) == (1, 4, 4)
    assert plan_pool(JobConfig(source="/s", dest="/d", inference=RuntimeConfig(device="cpu")), cpus=8, gpus=4).gpus == 0.0
    with pytest.raises(RuntimeError, match="no GPU"):
        plan_pool(JobConfig(source="/s", dest="/d", inference=RuntimeConfig(device="cuda")), cpus=8, gpus=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"actor_cpus": 0.5}, "differ"), ({"decode_cpus": 0}, "decode_cpus"), ({"actor_cpus": -1}, "actor_cpus"),
    ({"actors": 0}, "actors")])
def test_pool_settings_are_validated_before_ray_starts(kwargs, message):
    from pipelines.batch.job import JobConfig

    with pytest.raises(ValueError, match=message):
        JobConfig(source="/s", dest="/d", **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"threads": 0}, "threads"), ({"torch_graph": "fast"}, "torch_graph"),
    ({"device": "tpu"}, "device must be one of auto, cpu, cuda"), ({"precision": "int4"}, "precision must be one"),
    ({"precision": "fp16", "runtime": "torch", "device": "cpu"}, "fp16 on CUDA only"),
    ({"torch_graph": "cudagraphs", "device": "cpu"}, "needs device cuda"),
    ({"providers": "cuda", "device": "cpu"}, "contradicts"), ({"model": "u3net"}, "valid models"),
    ({"weights": "/nonexistent/w.onnx"}, "does not exist")])
def test_runtime_config_is_validated_in_one_place(kwargs, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        RuntimeConfig(**kwargs)


def test_pool_is_never_larger_than_the_jobs_batches():
    from pipelines.batch.config import JobConfig
    from pipelines.batch.execution import actor_config, plan_pool

    cfg = JobConfig(source="/s", dest="/d")  # batch 8
    assert plan_pool(cfg, cpus=2, gpus=0, inputs=5).size == 1  # one batch: one actor, no idle model load
    assert plan_pool(cfg, cpus=2, gpus=0, inputs=9).size == 2
    assert plan_pool(cfg, cpus=8, gpus=4, inputs=20).size == 3
    assert plan_pool(JobConfig(source="/s", dest="/d", actors=3), cpus=16, gpus=0, inputs=0).size == 1
    # A CPU pool's actors are told device cpu (no torch import, no CUDA probe); a GPU pool's keep auto.
    assert actor_config(cfg, plan_pool(cfg, cpus=2, gpus=0)).device == "cpu"
    assert actor_config(cfg, plan_pool(cfg, cpus=8, gpus=4)).device == "auto"
    assert actor_config(cfg, plan_pool(cfg, cpus=2, gpus=0)).threads == 1
    # A pool cut to the batches keeps the full pool's threads (2 CPUs: one actor with 2 threads).
    assert plan_pool(cfg, cpus=2, gpus=0, inputs=5).threads == 2
    assert plan_pool(cfg, cpus=16, gpus=0, inputs=5).threads == 4
    assert plan_pool(JobConfig(source="/s", dest="/d", inference=RuntimeConfig(threads=1)), cpus=2, gpus=0,
                     inputs=5).threads == 1


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
    from pipelines.storage import S3Location, s3

    monkeypatch.setattr(s3.time, "sleep", lambda s: None)
    flaky = _FlakyFS(failures=3)
    S3Location("s3://b/out", flaky, "b/out").write_atomic("a.png", b"png")
    assert flaky.calls == 4 and flaky.written == {"b/out/a.png": b"png"}

    hopeless = _FlakyFS(failures=99)
    with pytest.raises(OSError, match="SLOW_DOWN"):
        S3Location("s3://b/out", hopeless, "b/out").write_atomic("a.png", b"png")
    assert hopeless.calls == 5  # bounded

    denied = _FlakyFS(failures=1, message="AWS Error ACCESS_DENIED")
    with pytest.raises(OSError, match="ACCESS_DENIED"):
        S3Location("s3://b/out", denied, "b/out").write_atomic("a.png", b"png")
    assert denied.calls == 1  # a permanent error is not retried


def test_remote_weights_are_fetched_once_by_the_storage_layer_and_model_sees_a_local_path(
        s3_server, packaged_weights, tmp_path, monkeypatch):
    import boto3

    from model import weights
    from model.runtimes import create_runtime
    from pipelines.storage import localize_weights

    monkeypatch.setenv("MATTING_WEIGHTS_DIR", str(tmp_path / "cache"))
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="prod/u2netp.onnx", Body=packaged_weights.read_bytes())
    remote = RuntimeConfig(weights="s3://models/prod/u2netp.onnx")
    with pytest.raises(ValueError, match="remote"):  # model/ reads local files only
        create_runtime(remote)
    with pytest.raises(ValueError, match="remote"):
        weights.resolve(remote.spec, remote.weights)
    local = localize_weights(remote, s3_server)
    path = Path(local.weights)
    assert path.parent == tmp_path / "cache" / "s3" and path.read_bytes() == packaged_weights.read_bytes()
    assert weights.resolve(local.spec, local.weights) == path
    s3.delete_object(Bucket="models", Key="prod/u2netp.onnx")
    assert localize_weights(remote, s3_server) == local  # cached: S3 is not asked again
    assert localize_weights(local) is local  # a local path passes through untouched
