"""What the Serve app is told at build time: the `args:` of serve/config.yaml, validated by pydantic.

Secrets never travel this way: API keys are read by each ingress replica from its own environment
(MATTING_API_KEYS or the file named by MATTING_API_KEYS_FILE), so they never show up in the Serve
config, the dashboard or the controller's checkpoints.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from model.runtime import DEVICES, RUNTIMES, TORCH_GRAPHS
from model.specs import MODEL_SPECS
from model.tta import TTA_MODES


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


class AppArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(default_factory=lambda: ["u2netp"], min_length=1,
                              description="registered models to serve; the first is the default")
    runtime: str = "auto"
    device: str = "auto"
    threads: int | None = Field(None, ge=1, description="intra-op threads per CPU model replica")
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
    request_timeout_s: float = Field(60.0, gt=0, description="longest wait for the model")
    image_url: ImageUrlSettings = Field(default_factory=ImageUrlSettings)

    @field_validator("models")
    @classmethod
    def _models(cls, v: list[str]) -> list[str]:
        unknown = [m for m in v if m not in MODEL_SPECS]
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; registered: {sorted(MODEL_SPECS)}")
        return v

    @field_validator("runtime", "device", "torch_graph", "tta")
    @classmethod
    def _choice(cls, v: str, info) -> str:
        choices = {"runtime": RUNTIMES, "device": DEVICES, "torch_graph": TORCH_GRAPHS,
                   "tta": TTA_MODES}[info.field_name]
        if v not in choices:
            raise ValueError(f"{info.field_name} must be one of {choices}, got {v!r}")
        return v

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
