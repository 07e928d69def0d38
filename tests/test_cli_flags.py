"""The command line's flags are derived from the dataclasses' fields (pipelines/cli/flags.py): every field
has its flag with its help and choices, and the defaults and values round-trip into the dataclass."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from model.config import RuntimeConfig
from pipelines.batch.config import JobConfig
from pipelines.cli import build_parser, main
from pipelines.cli.eval import BASE_PARAMS, OWN_SYNTAX
from pipelines.cli.flags import add_flags, cli_fields, field_default, flag_name, from_flags
from pipelines.cli.run import job_config
from pipelines.training.train import TrainConfig
from postproc import PostprocParams


def subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def flags_of(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    out = {}
    for a in parser._actions:
        for s in a.option_strings or [a.dest]:
            out[s] = a
    return out


# (subcommand, dataclass, fields it takes in its own syntax or not at all)
COVERAGE = [
    ("run", JobConfig, ()), ("run", RuntimeConfig, ()), ("run", PostprocParams, ()),
    ("demo", JobConfig, ("source", "dest")), ("demo", RuntimeConfig, ()), ("demo", PostprocParams, ()),
    ("train", TrainConfig, ()),
    ("eval", RuntimeConfig, OWN_SYNTAX),
]


@pytest.mark.parametrize("command,cls,own", COVERAGE, ids=[f"{c}-{k.__name__}" for c, k, _ in COVERAGE])
def test_every_field_has_its_flag_with_its_help_and_choices(command, cls, own):
    flags = flags_of(subparser(command))
    fields = cli_fields(cls, exclude=own)
    assert fields, cls
    for f in fields:
        name = f.name if f.metadata.get("positional") else flag_name(f)
        assert name in flags, f"`matting {command}` has no flag for {cls.__name__}.{f.name}"
        action = flags[name]
        assert action.help and f.metadata["help"].replace("%", "%%") in action.help, (f.name, action.help)
        if f.metadata.get("choices"):
            assert tuple(action.choices) == tuple(f.metadata["choices"]), f.name
    # What is not a flag says so: nested configs, decoded pixels, eval's preprocessing overrides.
    hidden = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("cli", True)}
    assert hidden <= {"inference", "params", "background", "preprocess"}, hidden


def test_eval_takes_the_base_post_processing_flags():
    flags = flags_of(subparser("eval"))
    for name in BASE_PARAMS:
        f = next(f for f in dataclasses.fields(PostprocParams) if f.name == name)
        assert f.metadata["help"] in flags[flag_name(f)].help


def test_help_shows_the_dataclass_defaults():
    flags = flags_of(subparser("run"))
    assert "(default: 50)" in flags["--max-megapixels"].help
    assert "(default: 0.5)" in flags["--decode-cpus"].help
    assert "(default: 8 on Ray; 1 in this process" in flags["--batch-size"].help  # a default per executor, said once
    assert "(default: auto)" in flags["--executor"].help
    assert "(default: 10)" in flags["--trimap-erode"].help  # post-processing flags are unset, but show theirs
    assert "(default: 0.0001)" in flags["--guided-eps"].help


def test_no_flag_gives_the_dataclass_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("MATTING_S3_ENDPOINT", raising=False)
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    args = build_parser().parse_args(["run", src, dst])
    assert job_config(args, args.source, args.dest) == JobConfig(source=src, dest=dst)
    args = build_parser().parse_args(["train", src, "--out", str(tmp_path / "x.safetensors")])
    assert TrainConfig(**from_flags(TrainConfig, args)) == TrainConfig(images=(src,), out=str(tmp_path / "x.safetensors"))
    args = build_parser().parse_args(["eval", "--data", src])
    assert RuntimeConfig(**from_flags(RuntimeConfig, args, exclude=OWN_SYNTAX)) == RuntimeConfig()
    # The environment supplies the endpoint's default.
    monkeypatch.setenv("MATTING_S3_ENDPOINT", "http://127.0.0.1:9")
    args = build_parser().parse_args(["run", src, dst])
    assert job_config(args, args.source, args.dest).s3_endpoint == "http://127.0.0.1:9"


def test_flag_values_reach_the_dataclasses(tmp_path):
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    args = build_parser().parse_args([
        "run", src, dst, "--max-megapixels", "12.5", "--max-megabytes", "3", "--stall-timeout", "5",
        "--incremental", "--batch-size", "4", "--actor-cpus", "1", "--decode-cpus", "0.25", "--runtime", "onnxruntime",
        "--device", "cpu", "--threads", "2", "--providers", "cpu", "--tta", "flip", "--gpu-path", "off",
        "--manifest-flush-rows", "7", "--run-name", "x", "--erode", "3", "--feather", "1.5", "--crop",
        "--preset", "ecommerce", "--refine-max-mp", "2"])
    cfg = job_config(args, args.source, args.dest)
    assert (cfg.max_pixels, cfg.max_bytes, cfg.stall_timeout_s, cfg.incremental, cfg.batch_size) == (
        12_500_000, 3_000_000, 5.0, True, 4)
    assert (cfg.actor_cpus, cfg.decode_cpus, cfg.gpu_path, cfg.manifest_flush_rows, cfg.run_name) == (
        1.0, 0.25, "off", 7, "x")
    assert cfg.inference == RuntimeConfig(runtime="onnxruntime", device="cpu", threads=2, providers=("cpu",),
                                          tta="flip")
    assert cfg.params == PostprocParams.create(preset="ecommerce", erode=3, feather=1.5, crop=True,
                                               refine_max_megapixels=2.0)
    args = build_parser().parse_args(["train", src, "--out", "m.safetensors", "--no-pack-cache", "--no-amp",
                                      "--weight-decay", "0.01", "--max-minutes", "3"])
    t = TrainConfig(**from_flags(TrainConfig, args))
    assert (t.images, t.pack_cache, t.amp, t.weight_decay, t.max_minutes) == ((src,), False, False, 0.01, 3.0)


@pytest.mark.parametrize("argv,message", [
    (["--erode", "two"], "erode must be a whole number, got 'two'"),  # typed by PostprocParams.from_strings
    (["--quality", "0"], "quality must be within 1–100"),
    (["--batch-size", "0"], "batch_size must be at least 1"),  # validated by JobConfig, not argparse
    (["--threads", "0"], "threads must be a whole number of at least 1"),
])
def test_bad_values_are_refused_by_the_dataclasses_in_one_line(argv, message, tmp_path, capsys):
    (tmp_path / "src").mkdir()
    assert main(["run", str(tmp_path / "src"), str(tmp_path / "dst"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("matting: error:") and message in err, err


def test_a_field_without_help_is_refused():
    @dataclasses.dataclass
    class NoHelp:
        size: int = 3

    with pytest.raises(TypeError, match="NoHelp.size has no help"):
        add_flags(argparse.ArgumentParser(), NoHelp)
    with pytest.raises(ValueError, match="has no field 'colour'; fields: size"):
        cli_fields(NoHelp, only=("colour",))
    assert field_default(dataclasses.fields(NoHelp)[0]) == 3
