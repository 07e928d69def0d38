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
    with pytest.raises(ValueError, match="registered: \\['u2net', 'u2netp'"):
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


def test_serve_takes_what_the_job_takes_validated_by_the_same_runtime_config(tmp_path):
    from model.specs import get_spec
    from model.weights import save_safetensors
    from model.architectures import UNet

    spec = get_spec("unet-small")
    spec = type(spec).from_json_dict({**spec.to_json_dict(), "name": "mine", "version": "mine-1"})
    ckpt = save_safetensors(UNet(**spec.arch_kwargs).state_dict(), spec, tmp_path / "mine.safetensors")
    args = AppArgs(models=["u2netp", str(ckpt)], providers="cpu", trt_cache_dir=str(tmp_path / "trt"),
                   precision="fp32", threads=2)
    assert args.model_names == ["u2netp", "mine"]  # a checkpoint is served under its spec's name
    mine = args.runtime_configs["mine"]
    assert (mine.model, mine.providers, mine.precision, mine.threads) == (str(ckpt), ("cpu",), "fp32", 2)
    assert mine.trt_cache_dir == str(tmp_path / "trt")
    for bad, message in (({"precision": "int4"}, "precision must be one of"),
                         ({"providers": "cpu", "runtime": "torch"}, "--runtime onnxruntime"),
                         ({"models": ["u2netp=/nonexistent/w.onnx"]}, "does not exist"),
                         ({"models": ["u2netp=s3://bucket/w.onnx"]}, "local weights only"),
                         ({"models": ["u2netp", "u2netp"]}, "two entries")):
        with pytest.raises(ValueError, match=message):
            AppArgs(**bad)



def test_every_runtime_setting_the_job_takes_reaches_each_served_model(packaged_weights):
    """AppArgs takes each server-wide RuntimeConfig field (derived from the dataclass, so a field added
    there fails here until Serve takes it) and hands it to every model's config; ONNX weights by path too."""
    import dataclasses

    from model.config import RuntimeConfig
    from serve.settings import NOT_SERVER_WIDE, runtime_fields

    names = {f.name for f in dataclasses.fields(RuntimeConfig)}
    assert set(runtime_fields()) == names - set(NOT_SERVER_WIDE) and set(runtime_fields()) <= set(AppArgs.model_fields)
    chosen = {"runtime": "onnxruntime", "device": "cpu", "precision": "fp32", "threads": 3, "providers": "cpu",
              "trt_cache_dir": "/tmp/engines", "torch_graph": "eager"}
    assert set(chosen) == set(runtime_fields())
    args = AppArgs(models=[f"u2netp={packaged_weights}", "unet-small"], **chosen)
    for config in args.runtime_configs.values():
        assert config == RuntimeConfig(model=config.model, weights=config.weights, **chosen)
    assert args.runtime_configs["u2netp"].weights == str(packaged_weights)

# --- issue 16: IPv6 embeddings, URLs that broke the fetcher, bounded errors, limits ---------------

@pytest.mark.parametrize("address,how", [
    ("2002:7f00:1::", "6to4"), ("2002:a00:1::1", "6to4"), ("2002:a9fe:a9fe::", "6to4"),
    ("::ffff:7f00:1", "IPv4-mapped"), ("64:ff9b::7f00:1", "NAT64"), ("64:ff9b::a00:1", "NAT64"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo"), ("::7f00:1", "IPv4-compatible"),
])
def test_ipv6_addresses_embedding_private_ipv4_are_refused(address, how):
    reason = address_refusal(address)
    assert reason and how in reason, reason


def test_embedded_public_ipv4_is_not_refused_for_its_embedding():
    assert address_refusal("2002:808:808::1") is None  # 6to4 of 8.8.8.8


@pytest.mark.parametrize("url", ["http://" + "a" * 70 + ".example/", "http://a..b/", "http://[2002:7f00:1::]/"])
def test_urls_that_used_to_escape_as_500_are_refused(url):
    with pytest.raises(ApiError) as e:
        asyncio.run(fetch_image(url, ImageUrlSettings(enabled=True, timeout_s=2)))
    assert e.value.status == 400 and e.value.code == "url_refused", e.value.message


@pytest.mark.parametrize("location", ["http://example.org:99999/a.jpg", "http://[::1/a.jpg", "http://[zz::1]/"])
def test_redirect_to_a_broken_url_is_a_400(location):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(302)
            self.send_header("Location", location)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = ImageUrlSettings(enabled=True, timeout_s=5, allow_networks=["127.0.0.1/32"])
        with pytest.raises(ApiError) as e:
            asyncio.run(fetch_image(f"http://127.0.0.1:{server.server_port}/r", settings))
        assert e.value.status == 400 and e.value.code in ("url_fetch_failed", "url_refused"), e.value.message
    finally:
        server.shutdown()


def test_error_messages_never_echo_a_value_whole():
    from serve.errors import ECHO_CHARS, MESSAGE_CHARS, echo, error_response

    big = "x" * 5_000_000
    assert len(echo(big)) < ECHO_CHARS + 40 and "5000000 chars" in echo(big)
    for raw in ({"format": big}, {"background": big}, {big: "1"}, {f"p{i}" * 50: "1" for i in range(500)}):
        with pytest.raises(ApiError) as e:
            parse_params(raw)
        assert len(e.value.message) < 2 * MESSAGE_CHARS, len(e.value.message)
    with pytest.raises(ApiError) as e:
        parse_preset(big)
    assert len(e.value.message) < 300
    body = error_response(ApiError(422, "bad_parameter", big), "/v1/matte").body
    assert len(body) < MESSAGE_CHARS + 200


def test_auth_failure_limiter_peeks_without_taking():
    now = [0.0]
    rl = RateLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    assert rl.peek("a").allowed and "a" not in rl._buckets  # an unseen address adds nothing
    rl.hit("a")
    rl.hit("a")
    assert not rl.peek("a").allowed and not rl.peek("a").allowed and rl.peek("a").retry_after_s == 1
    now[0] += 1.0
    assert rl.peek("a").allowed and rl.peek("a").allowed  # peeking never spends the refilled token


def test_in_flight_cap_per_identity():
    from serve.limits import InFlight

    cap = InFlight(2)
    with cap.slot("k"), cap.slot("k"):
        with pytest.raises(ApiError) as e:
            with cap.slot("k"):
                pass
        assert e.value.status == 429 and e.value.code == "too_many_in_flight"
        with cap.slot("other"):
            assert cap.count("other") == 1
    assert cap.count("k") == 0 and cap._counts == {}


def test_header_limits():
    from serve.limits import header_refusal

    assert header_refusal([(b"host", b"x")] * 10, 64, 16384) is None
    assert "headers" in header_refusal([(b"x-a", b"1")] * 65, 64, 16384)
    assert "bytes" in header_refusal([(b"x-api-key", b"k" * 20000)], 64, 16384)


def test_deadline_stops_the_render_thread_and_answers_503():
    """The deadline ends the request at once and the thread at its next checkpoint (CPU is freed)."""
    import threading
    import time

    from serve.pipeline import Pipeline

    pipeline = Pipeline({}, 10**6, cpu_threads=1, request_timeout_s=5, deadline_s=0.5)
    stopped = threading.Event()
    steps = []

    def endless(*, checkpoint, limit):
        try:
            while True:
                checkpoint()
                steps.append(1)
                time.sleep(0.01)  # one bounded step of work
        finally:
            stopped.set()

    async def run():
        deadline = pipeline.deadline()
        t0 = time.monotonic()
        with pytest.raises(ApiError) as e:
            await pipeline.in_thread(deadline, pipeline.render_call(endless, deadline))
        return e.value, time.monotonic() - t0

    err, took = asyncio.run(run())
    assert err.status == 503 and err.code == "deadline_exceeded" and err.headers["Retry-After"]
    assert took < 1.5, took
    assert stopped.wait(2.0), "the worker thread kept running after the deadline"
    n = len(steps)
    time.sleep(0.1)
    assert len(steps) == n
    # The one worker is free again: the next request's work runs.
    ok = asyncio.run(pipeline.in_thread(pipeline.deadline(), lambda: "done"))
    assert ok == "done"


def test_config_proxy_timeout_must_exceed_the_deadline():
    from serve.local import check_proxy_timeout

    check_proxy_timeout({"request_timeout_s": 120}, AppArgs(deadline_s=30))
    with pytest.raises(ValueError, match="deadline_s"):
        check_proxy_timeout({"request_timeout_s": 20}, AppArgs(deadline_s=30))
    for name in ("config.yaml", "config.gpu.yaml"):
        raw = yaml.safe_load((REPO / "serve" / name).read_text())
        check_proxy_timeout(raw["http_options"], AppArgs.model_validate(raw["applications"][0]["args"]))
        assert raw["http_options"]["keep_alive_timeout_s"] <= 10


def test_docs_csp_allows_exactly_its_inline_script():
    from serve.limits import csp, inline_script_hashes

    html = "<html><script src='/a.js'></script><script>const ui = 1;</script></html>"
    hashes = inline_script_hashes(html)
    assert len(hashes) == 1 and hashes[0].startswith("sha256-")
    policy = csp(hashes)
    assert f"'{hashes[0]}'" in policy and "frame-ancestors 'none'" in policy and "'unsafe-inline'" not in \
        policy.split("script-src")[1].split(";")[0]


def test_a_client_leaving_stops_the_render_thread():
    """Serve cancels the handler when the client disconnects: the thread stops at its next step."""
    import threading
    import time

    from serve.pipeline import Pipeline

    pipeline = Pipeline({}, 10**6, cpu_threads=1, request_timeout_s=5, deadline_s=60)
    stopped = threading.Event()

    def endless(*, checkpoint, limit):
        try:
            while True:
                checkpoint()
                time.sleep(0.01)
        finally:
            stopped.set()

    async def run():
        deadline = pipeline.deadline()
        task = asyncio.ensure_future(pipeline.in_thread(deadline, pipeline.render_call(endless, deadline)))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert stopped.wait(2.0), "the worker thread kept running after the client left"
