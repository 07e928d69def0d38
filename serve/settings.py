"""What the Serve app is told at build time: the `args:` of serve/config.yaml, validated by pydantic.

Secrets never travel this way: API keys are read by each ingress replica from its own environment
(MATTING_API_KEYS or the file named by MATTING_API_KEYS_FILE), so they never show up in the Serve
config, the dashboard or the controller's checkpoints.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from model.config import RuntimeConfig
from model.specs import MODEL_SPECS, WEIGHTS_SUFFIXES
from model.tta import check_mode


class ImageUrlSettings(BaseModel):
    """remove.bg's `image_url`: the server fetches a URL for the caller, so it is off by default."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    max_mb: float = Field(20.0, gt=0, description="largest download accepted")
    timeout_s: float = Field(10.0, gt=0, description="whole fetch, redirects included")
    max_redirects: int = Field(3, ge=0, le=10)
    # Networks an operator explicitly trusts (an internal image store). Loopback, private,
    # link-local and metadata addresses are refused unless they fall inside one of these.
    allow_networks: list[str] = Field(default_factory=list)

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for net in v:
            ipaddress.ip_network(net, strict=False)  # raises ValueError naming the bad entry
        return v


# RuntimeConfig's fields that are not server-wide: `model` and `weights` come with each entry of `models`,
# `preprocess` overrides are eval's, and TTA is each request's choice (AppArgs.tta is its default).
NOT_SERVER_WIDE = ("model", "weights", "preprocess", "tta")


def runtime_fields() -> tuple[str, ...]:
    """The RuntimeConfig fields AppArgs takes for all its models, as the job takes them (--runtime, ...)."""
    return tuple(f.name for f in dataclasses.fields(RuntimeConfig) if f.name not in NOT_SERVER_WIDE)


class AppArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(default_factory=lambda: ["u2netp"], min_length=1,
                              description="models to serve, the first the default: registered names, NAME=WEIGHTS "
                                          "(other local weights for a registered model) or checkpoint paths "
                                          "that carry their spec, as `matting run --model`")
    # How every model runs: model.config.RuntimeConfig's fields, validated there (as for the batch job).
    runtime: str = "auto"
    device: str = "auto"
    precision: str = Field("auto", description="auto: FP16 on CUDA; on CPU INT8 where it holds its quality, "
                                               "else FP32")
    threads: int | None = Field(None, ge=1, description="intra-op threads per CPU model replica")
    providers: str | list[str] | None = Field(None, description="ONNX Runtime providers, e.g. tensorrt,cuda")
    trt_cache_dir: str | None = Field(None, description="TensorRT engine cache folder on each node")
    torch_graph: str = Field("auto", description="torch on CUDA: auto (CUDA graphs), eager or compile")
    tta: str = Field("none", description="/v1/matte's test-time augmentation when a request names none: "
                                         "none or flip (about 2× the model time per image)")
    # Security on by default: `auth: false` is for a developer's own machine and is logged loudly.
    auth: bool = True
    rate_limit_per_minute: float = Field(120.0, gt=0, description="sustained requests per key")
    rate_limit_burst: int = Field(20, ge=1, description="requests a key may send at once")
    max_upload_mb: float = Field(20.0, gt=0)
    max_megapixels: float = Field(25.0, gt=0)
    cpu_threads: int = Field(4, ge=1, description="decode/post-process threads per ingress replica")
    request_timeout_s: float = Field(60.0, gt=0, description="longest wait for the model (within deadline_s)")
    # -- what one request and one caller may cost (docs/operations.md, "Server limits")
    deadline_s: float = Field(30.0, gt=0, description="whole request after its body is read: decode, inference "
                                                      "and rendering; past it: 503 deadline_exceeded, work stopped")
    max_in_flight_per_key: int = Field(2, ge=1, description="requests of one key (one address without auth) "
                                                            "in progress at once per ingress replica; more: 429")
    work_max_megapixels: float = Field(4.0, gt=0, description="erosion/feathering cost budget: pixels ...")
    work_max_radius_px: float = Field(32.0, gt=0, description="... times this radius; costlier ones run on a "
                                                              "smaller working copy, scaled back")
    auth_failures_per_minute: float = Field(10.0, gt=0, description="failed authentications per client address")
    auth_failures_burst: int = Field(20, ge=1, description="failed authentications an address may make at once")
    max_header_count: int = Field(64, ge=8, description="request headers; more: 431")
    max_header_bytes: int = Field(16384, ge=1024, description="request headers plus the URL, in bytes; more: 431")
    image_url: ImageUrlSettings = Field(default_factory=ImageUrlSettings)
    _configs: dict[str, RuntimeConfig] = PrivateAttr(default_factory=dict)

    @field_validator("models")
    @classmethod
    def _models(cls, v: list[str]) -> list[str]:
        names = [m.partition("=")[0].strip() for m in v]
        unknown = [n for n in names if not n.endswith(WEIGHTS_SUFFIXES) and n not in MODEL_SPECS]
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; registered: {sorted(MODEL_SPECS)}, or a path to a "
                             f"{'/'.join(WEIGHTS_SUFFIXES)} file that carries its spec (`matting export` writes one)")
        return v  # paths are read (their spec) by RuntimeConfig below

    @model_validator(mode="after")
    def _runtime_configs(self) -> "AppArgs":
        configs: dict[str, RuntimeConfig] = {}
        fields = {name: getattr(self, name) for name in runtime_fields()}  # every one, whatever RuntimeConfig adds
        for entry in self.models:
            try:
                config = RuntimeConfig.from_model_arg(entry, **fields)
            except (ValueError, OSError) as e:  # one message for pydantic, whatever RuntimeConfig raised
                raise ValueError(f"models: {entry}: {e}") from None
            if config.remote_weights:
                raise ValueError(f"models: {entry}: Serve loads local weights only; copy them to each node "
                                 "and name the local file")
            name = config.spec.name
            if name in configs:
                raise ValueError(f"models: two entries serve the model name {name!r}; serve one of them")
            configs[name] = config
        self._configs = configs
        return self

    @property
    def runtime_configs(self) -> dict[str, RuntimeConfig]:
        """Model name (as the APIs take it) → how to run it; the first is the default."""
        return dict(self._configs)

    @property
    def model_names(self) -> list[str]:
        return list(self._configs)

    @field_validator("tta")
    @classmethod
    def _tta(cls, v: str) -> str:
        return check_mode(v)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1e6)


class NoApiKeysError(RuntimeError):
    pass


def load_api_keys(environ: dict[str, str] | None = None) -> list[str]:
    """Keys from MATTING_API_KEYS (comma-separated) and the file MATTING_API_KEYS_FILE (one a line).

    Blank lines and lines starting with '#' in the file are skipped, so a key file can be commented.
    """
    env = os.environ if environ is None else environ
    keys = [k.strip() for k in env.get("MATTING_API_KEYS", "").split(",") if k.strip()]
    path = env.get("MATTING_API_KEYS_FILE", "").strip()
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise NoApiKeysError(f"MATTING_API_KEYS_FILE names {p}, which is not a file")
        for line in p.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                keys.append(line)
    return keys
