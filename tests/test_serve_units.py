"""The Serve app's parts as plain callables: keys, rate limit, address checks, parameters, crop
arithmetic, the config files, and the model deployment's health check. No network, no Ray cluster."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from serve.errors import ApiError
from serve.fetch import _check_url, address_refusal, fetch_image
from serve.params import parse_params, parse_preset
from postproc.alpha import bounding_box
from serve import removebg_layout as layout
from serve.security import ApiKeys, RateLimiter, fingerprint
from serve.settings import AppArgs, ImageUrlSettings, NoApiKeysError, load_api_keys

REPO = Path(__file__).resolve().parent.parent


# --- keys and rate limit ----------------------------------------------------------------------------

def test_api_keys_accept_only_exact_keys():
    keys = ApiKeys(["alpha-key", "beta-key"])
    assert keys.check("alpha-key") and keys.check("beta-key")
    for wrong in (None, "", "alpha", "alpha-key ", "ALPHA-KEY", "beta-keyx"):
        assert not keys.check(wrong), wrong
    with pytest.raises(ValueError):
        ApiKeys([])
    assert fingerprint("alpha-key") != fingerprint("beta-key") and "alpha" not in fingerprint("alpha-key")


def test_keys_from_environment_and_file(tmp_path):
    f = tmp_path / "keys"
    f.write_text("# comment\nfile-key-1\n\n  file-key-2  \n")
    assert load_api_keys({"MATTING_API_KEYS": " a, b ,,"}) == ["a", "b"]
    assert load_api_keys({"MATTING_API_KEYS_FILE": str(f)}) == ["file-key-1", "file-key-2"]
    both = {"MATTING_API_KEYS": "a", "MATTING_API_KEYS_FILE": str(f)}
    assert load_api_keys(both) == ["a", "file-key-1", "file-key-2"]
    assert load_api_keys({}) == []
    with pytest.raises(NoApiKeysError, match="not a file"):
        load_api_keys({"MATTING_API_KEYS_FILE": str(tmp_path / "missing")})


def test_rate_limiter_bucket_refills_and_names_the_wait():
    now = [1000.0]
    rl = RateLimiter(per_minute=60, burst=3, clock=lambda: now[0])
    assert [rl.hit("k").allowed for _ in range(3)] == [True] * 3
    refused = rl.hit("k")
    assert not refused.allowed and refused.retry_after_s == 1 and refused.remaining == 0
    assert rl.hit("other").allowed  # buckets are per identity
    now[0] += 1.0  # one token per second at 60/min
    assert rl.hit("k").allowed and not rl.hit("k").allowed
    now[0] += 10.0
    assert rl.hit("k").remaining == 2  # refilled to the burst, never past it


def test_rate_limiter_table_is_bounded():
    rl = RateLimiter(per_minute=60, burst=1, max_identities=10)
    for i in range(100):
        rl.hit(f"id{i}")
    assert len(rl._buckets) == 10


# --- image_url address checks (pure functions: nothing is contacted) --------------------------------

@pytest.mark.parametrize("address,why", [
    ("127.0.0.1", "loopback"), ("127.9.9.9", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fd12::1", "private"),
    ("169.254.169.254", "metadata"), ("fd00:ec2::254", "metadata"), ("169.254.10.1", "link-local"),
    ("fe80::1", "link-local"), ("100.64.0.1", "not a public"), ("0.0.0.0", "not a public"),
    ("224.0.0.1", "not a public"), ("240.0.0.1", "address"),
])
def test_non_public_addresses_are_refused(address, why):
    reason = address_refusal(address)
    assert reason and why in reason


def test_public_and_explicitly_allowed_addresses_pass():
    assert address_refusal("93.184.216.34") is None
    assert address_refusal("2606:4700::1111") is None
    assert address_refusal("10.1.2.3", ["10.1.0.0/16"]) is None
    assert address_refusal("10.2.0.1", ["10.1.0.0/16"]) is not None


@pytest.mark.parametrize("url,fragment", [
    ("file:///etc/passwd", "http or https"), ("ftp://example.org/a.jpg", "http or https"),
    ("http://10.0.0.8/a.jpg", "private"), ("http://169.254.169.254/latest/meta-data", "metadata"),
    ("http://[::1]:8080/", "loopback"), ("http://[::ffff:10.0.0.1]/", "private"), ("/relative.jpg", "http or https"),
])
def test_urls_refused_before_any_connection(url, fragment):
    from yarl import URL

    with pytest.raises(ApiError) as e:
        _check_url(URL(url), [])
    assert e.value.code == "url_refused" and fragment in e.value.message


def test_image_url_is_off_unless_enabled():
    with pytest.raises(ApiError) as e:
        asyncio.run(fetch_image("http://127.0.0.1:9/a.jpg", ImageUrlSettings()))
    assert e.value.code == "url_disabled"


# --- parameters -------------------------------------------------------------------------------------

def test_params_from_strings_are_typed_and_validated():
    p = parse_params({"alpha_threshold": "20", "erode": "2", "feather": "1.5", "background": "", "format": "jpeg"})
    assert (p.alpha_threshold, p.erode, p.feather, p.format) == (20, 2, 1.5, "jpeg")
    assert p.background == "white"  # postproc's rule: JPEG has no alpha
    for raw, fragment in (({"erode": "x"}, "erode"), ({"quality": "0"}, "quality"), ({"nope": "1"}, "unknown"),
                          ({"background": "#12"}, "background")):
        with pytest.raises(ApiError) as e:
            parse_params(raw)
        assert e.value.status == 422 and fragment in e.value.message


def test_presets_are_validated_by_name_and_explicit_values_win():
    assert parse_preset("id-photo") == "id-photo" and parse_preset("") is None and parse_preset(None) is None
    with pytest.raises(ApiError, match="known: id-photo"):
        parse_preset("passport")
    p = parse_params({"erode": "5"}, "id-photo")
    assert (p.erode, p.alpha_threshold, p.format, p.background) == (5, 20, "jpeg", "white")


def test_removebg_crop_margin_is_parsed_in_css_order_and_capped():
    assert layout.parse_margin("10px") == [(10.0, "px")] * 4
    assert layout.parse_margin("5% 20px") == [(5.0, "%"), (20.0, "px")] * 2
    assert layout.parse_margin(None) == [(0.0, "px")] * 4
    assert layout.parse_margin("80% 900px") == [(50.0, "%"), (500.0, "px")] * 2  # remove.bg's maximum
    for bad in ("1 2 3", "ten", "-5px"):
        with pytest.raises(ValueError, match="crop_margin"):
            layout.parse_margin(bad)
    # subject 100×50: 10 % of its height (5 px) top and bottom, 20 px left and right
    assert layout.margin_px(layout.parse_margin("10% 20px"), 100, 50) == (5, 20, 5, 20)


def test_removebg_size_roi_scale_position_parsing():
    assert layout.fit_megapixels(1000, 800, 0.25) == (559, 447) and 559 * 447 <= 250_000
    assert layout.fit_megapixels(400, 300, 0.25) == (400, 300)  # never enlarged
    assert layout.fit_megapixels(4000, 3000, None) == (4000, 3000)
    assert layout.parse_roi("10% 20% 50% 100%", 200, 100) == (20, 20, 100, 100)
    assert layout.parse_roi("5px 6px 300px 70px", 200, 100) == (5, 6, 200, 70)  # clipped to the image
    assert layout.parse_roi(None, 200, 100) is None
    for bad in ("0 0 10", "50% 0% 10% 100%", "0% 0% 120% 100%", "a b c d"):
        with pytest.raises(ValueError, match="roi"):
            layout.parse_roi(bad, 200, 100)
    assert layout.parse_scale("original") is None and layout.parse_scale("50%") == 0.5
    for bad in ("5%", "101%", "big"):
        with pytest.raises(ValueError, match="scale"):
            layout.parse_scale(bad)
    assert layout.parse_position("center") == "center" and layout.parse_position("25%") == (0.25, 0.25)
    assert layout.parse_position("0% 100%") == (0.0, 1.0) and layout.parse_position(None) is None
    for bad in ("left", "120%", "1% 2% 3%"):
        with pytest.raises(ValueError, match="position"):
            layout.parse_position(bad)


def _subject(width=200, height=100, box=(40, 20, 30, 40)):
    """An image whose matte is one opaque rectangle (left, top, width, height)."""
    rgb = np.full((height, width, 3), 90, np.uint8)
    alpha = np.zeros((height, width), np.uint8)
    x, y, w, h = box
    alpha[y:y + h, x:x + w] = 255
    rgb[y:y + h, x:x + w] = (250, 10, 10)
    return rgb, alpha, box


def test_removebg_layout_crop_pads_past_the_edge_scale_and_position_move_the_subject():
    rgb, alpha, box = _subject()
    plan = layout.plan(200, 100, box, crop=True, margin=layout.parse_margin("30px"), scale=None, position=None)
    assert plan.canvas == (90, 100) and plan.dest == (30, 30, 30, 40)
    out_rgb, out_a = layout.arrange(rgb, alpha, plan)
    assert out_a.shape == (100, 90) and bounding_box(out_a) == (30, 30, 30, 40)
    assert out_a[:10].max() == 0 and out_rgb[:10].max() == 0  # 30 px above a subject 20 px from the top: padding

    plan = layout.plan(200, 100, box, crop=False, margin=[], scale=0.5, position=None)  # implies center
    _, out_a = layout.arrange(rgb, alpha, plan)
    x, y, w, h = bounding_box(out_a)
    assert (w, h) == (38, 50) and (x + w / 2, y + h / 2) == (100, 50)  # half the canvas's height, centred

    plan = layout.plan(200, 100, box, crop=False, margin=[], scale=None, position=(1.0, 0.0))
    _, out_a = layout.arrange(rgb, alpha, plan)
    assert bounding_box(out_a) == (170, 0, 30, 40)  # right, top: the free space is all on the left

    plan = layout.plan(200, 100, box, crop=False, margin=[], scale=None, position="original")
    out_rgb, out_a = layout.arrange(rgb, alpha, plan)
    assert out_a is alpha and out_rgb is rgb  # nothing to move


def test_removebg_produce_applies_size_roi_background_and_format():
    from serve.removebg import produce

    rgb, alpha, _ = _subject(800, 600, (100, 100, 200, 300))
    rgb[100:400, 500:700] = (10, 250, 10)
    prob = np.zeros((600, 800), np.float32)
    prob[100:400, 100:300] = 1.0
    prob[100:400, 500:700] = 1.0  # two subjects; the roi keeps the left one
    common = dict(crop=False, margin=layout.parse_margin(None), scale=None, position=None, channels="rgba",
                  bg_image=None)
    data, fmt, size, box = produce(rgb, prob, None, megapixels=0.25, roi_text="0% 0% 50% 100%", fmt="auto",
                                   bg_color=None, **common)
    out = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert fmt == "png" and size == (577, 433) and out.shape == (433, 577, 4) and 577 * 433 <= 250_000
    assert out[..., 3][:, 577 // 2:].max() == 0  # the right-hand subject is outside the roi
    assert box == bounding_box(out[..., 3])
    data, fmt, size, _ = produce(rgb, prob, None, megapixels=None, roi_text=None, fmt="auto",
                                 bg_color=(0, 0, 255, 255), **common)
    out = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert fmt == "jpg" and size == (800, 600) and out.shape == (600, 800, 3)
    assert out[550:, :50].mean(axis=(0, 1))[0] > 240  # BGR: the blue background in a corner
    with pytest.raises(ApiError, match="foreground"):
        produce(rgb, np.zeros_like(prob), None, megapixels=None, roi_text=None, fmt="auto", bg_color=None, **common)


# --- config files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["config.yaml", "config.gpu.yaml"])
def test_config_files_are_valid_serve_configs(name):
    from ray.serve.schema import ServeDeploySchema

    from serve.app import INGRESS_NAME, model_deployment_name

    raw = yaml.safe_load((REPO / "serve" / name).read_text())
    ServeDeploySchema.model_validate(raw)
    (app,) = raw["applications"]
    args = AppArgs.model_validate(app["args"])
    assert args.auth is True and args.image_url.enabled is False  # secure by default
    deployments = {d["name"]: d for d in app["deployments"]}
    assert set(deployments) == {INGRESS_NAME, *(model_deployment_name(m) for m in args.models)}
    for m in args.models:
        d = deployments[model_deployment_name(m)]
        assert d["max_ongoing_requests"] >= d["user_config"]["max_batch_size"]
        assert d["max_queued_requests"] > 0 and d["autoscaling_config"]["max_replicas"] >= 1
        assert d["ray_actor_options"]["num_gpus"] == (1 if "gpu" in name else 0)


def test_matting_serve_overrides_host_port_and_auth():
    from serve.local import CPU_CONFIG, local_config

    cfg = local_config(CPU_CONFIG, "0.0.0.0", 9001, auth=False)
    assert cfg["http_options"]["host"] == "0.0.0.0" and cfg["http_options"]["port"] == 9001
    assert cfg["applications"][0]["args"]["auth"] is False
    cpu_app = yaml.safe_load(CPU_CONFIG.read_text())["applications"][0]
    assert cfg["applications"][0]["deployments"] == cpu_app["deployments"]


def test_unknown_model_in_args_names_the_registered_ones():
    with pytest.raises(ValueError, match="registered: \\['u2netp'"):
        AppArgs(models=["u2net-xl"])


# --- the model deployment's health check ------------------------------------------------------------

def test_check_health_runs_the_model_and_rejects_a_broken_one():
    from serve.model_deployment import MattingModel

    replica = MattingModel.func_or_class("u2netp", runtime="onnxruntime", device="cpu")
    asyncio.run(replica.check_health())
    assert replica.describe()["version"] == "u2netp-rembg-0.1.3"

    def broken(images):
        return np.full((len(images), *replica.runtime.input_size), np.nan, np.float32)

    replica.runtime.predict = broken
    with pytest.raises(RuntimeError, match="health probe"):
        asyncio.run(replica.check_health())
