"""Property-based fuzzing (Hypothesis) of what callers control: parameters, bodies, JSON shapes, URLs,
file names and headers, against the parsers (many examples, no network) and the HTTP app (fewer,
real HTTP on a local Ray). The property everywhere: never a 5xx (or an exception other than our
4xx ApiError), never a hang, and an error body of bounded size.

Derandomized (a fixed seed): CI runs the same examples every time; the example counts are sized
so that the whole module stays within about a minute on a CI runner.
"""

from __future__ import annotations

import asyncio
import json
import re
import string

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postproc import PostprocParams
from serve.api_v1 import _download_name
from serve.errors import MESSAGE_CHARS, ApiError, echo, error_response
from serve.fetch import _check_url, address_refusal
from serve.limits import header_refusal
from serve.params import param_types, parse_params, parse_preset
from serve import removebg_layout as layout
from serve.removebg import _choice, _flag, _parsed, read_fields
from serve.settings import AppArgs, ImageUrlSettings

pytestmark = [pytest.mark.timeout(240), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

UNIT = settings(derandomize=True, max_examples=200, deadline=2000, database=None,
                suppress_health_check=[HealthCheck.too_slow])
HTTP = settings(derandomize=True, max_examples=25, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
ERROR_BODY_BYTES = MESSAGE_CHARS + 600  # the envelope around a bounded message
KEY = "fuzz-key-2b7e"

PARAM_NAMES = sorted(param_types()) + ["preset", "model", "background_image", "refine_max_megapixels"]
# Values that parse as numbers, booleans, colours and names, and values that break them.
values = st.one_of(
    st.sampled_from(["", "0", "1", "-1", "256", "257", "1e9", "nan", "inf", "-0", "true", "false", "white",
                     "#ff000080", "png", "jpeg", "mask", "trimap", "guided", "none", "id-photo", "x" * 5000]),
    st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=40), st.text(alphabet=string.printable, min_size=150, max_size=3000))
names = st.one_of(st.sampled_from(PARAM_NAMES), st.text(max_size=30))


def assert_api_error(e: ApiError) -> None:
    assert 400 <= e.status < 500, (e.status, e.code)
    assert len(error_response(e, "/v1/matte").body) <= ERROR_BODY_BYTES
    assert len(error_response(e, "/v1.0/removebg").body) <= ERROR_BODY_BYTES


# --- parsers ------------------------------------------------------------------------------------------

@UNIT
@given(st.dictionaries(names, values, max_size=6), st.one_of(st.none(), values))
def test_parse_params_gives_params_or_a_4xx(raw, preset):
    try:
        p = parse_params(raw, parse_preset(preset))
    except ApiError as e:
        assert_api_error(e)
    else:
        assert isinstance(p, PostprocParams)


@UNIT
@given(values, values, values, values)
def test_removebg_field_parsers_give_values_or_a_400(margin, size, flag, fmt):
    for call in (lambda: _parsed(layout.parse_margin, margin), lambda: _parsed(layout.parse_scale, size),
                 lambda: _parsed(layout.parse_position, flag), lambda: _parsed(layout.parse_roi, fmt, 1000, 800),
                 lambda: _choice({"size": size}, "size", ("auto", "hd"), "auto"),
                 lambda: _flag({"crop": flag}, "crop"), lambda: _choice({"format": fmt}, "format", ("png",), "png")):
        try:
            call()
        except ApiError as e:
            assert_api_error(e)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=10), children, max_size=4)),
    max_leaves=20)


def _request(body: bytes, content_type: str):
    from starlette.requests import Request

    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/v1.0/removebg", "headers": [
        (b"content-type", content_type.encode())], "query_string": b""}
    return Request(scope, receive)


@UNIT
@given(st.one_of(json_values.map(lambda v: json.dumps(v).encode()),
                 st.dictionaries(st.text(max_size=12), json_values, max_size=5).map(lambda v: json.dumps(v).encode()),
                 st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
                 st.integers(1, 5000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
                 st.binary(max_size=200)))
def test_removebg_json_bodies_give_fields_or_a_400(body):
    try:
        fields, upload = asyncio.run(read_fields(_request(body, "application/json")))
    except ApiError as e:
        assert_api_error(e)
    else:
        assert upload == {} and all(isinstance(v, str) for v in fields.values())  # JSON carries no files


hosts = st.one_of(
    st.ip_addresses().map(lambda ip: f"[{ip}]" if ip.version == 6 else str(ip)),
    st.text(alphabet=string.ascii_letters + string.digits + ".-_[]:%@", min_size=0, max_size=80),
    st.sampled_from(["a" * 70 + ".example", "a..b", "[::1", "[2002:7f00:1::]", "[64:ff9b::a9fe:a9fe]",
                     "localhost", "0x7f.1", "2130706433", "[fe80::1%25eth0]", "xn--", "ß.example"]),
    st.text(max_size=30))
urls = st.one_of(
    st.builds(lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
              st.sampled_from(["http", "https", "ftp", "file", "HTTP", ""]), hosts,
              st.one_of(st.just(""), st.integers(-5, 100_000).map(lambda p: f":{p}"), st.text(max_size=6)),
              st.text(max_size=30)),
    st.text(max_size=200))


@UNIT
@given(urls)
def test_url_checks_refuse_with_a_400_or_pass(text):
    from yarl import URL

    try:
        url = URL(text)
    except (ValueError, TypeError):
        return  # fetch_image answers these with 400 url_refused
    try:
        _check_url(url, [])
    except ApiError as e:
        assert_api_error(e)


@UNIT
@given(st.ip_addresses())
def test_address_refusal_never_raises(ip):
    why = address_refusal(str(ip))
    assert why is None or isinstance(why, str)
    if why is None:
        assert ip.is_global


@UNIT
@given(st.one_of(st.none(), st.text(max_size=300), st.binary(max_size=100).map(lambda b: b.decode("latin-1"))),
       st.sampled_from(["png", "jpeg", "webp", "mask"]))
def test_download_names_are_safe(filename, fmt):
    name = _download_name(filename, fmt)
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,100}(-mask)?\.(png|jpg|webp)", name), name
    assert '"' not in name and "/" not in name and ".." != name


@UNIT
@given(st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=3000)), max_size=80))
def test_header_limits_decide_without_raising(headers):
    why = header_refusal(headers, 64, 16384)
    assert why is None or len(why) < 200


@UNIT
@given(st.one_of(st.text(), st.binary(), st.integers(), st.lists(st.text())))
def test_echo_is_bounded(value):
    assert len(echo(value)) <= 100 + 40


# --- the HTTP app -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from serve_harness import running_app

    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(KEY + "\n")
    args = AppArgs(auth=True, rate_limit_per_minute=10_000, rate_limit_burst=10_000, max_upload_mb=1,
                   max_megapixels=1, cpu_threads=2, max_in_flight_per_key=8, deadline_s=20,
                   image_url=ImageUrlSettings(enabled=True, timeout_s=1, max_mb=1, max_redirects=1))
    overrides = {"Model_u2netp": {"ray_actor_options": {"num_cpus": 0}},
                 "MattingIngress": {"ray_actor_options": {"num_cpus": 0}}}
    with running_app(args, overrides, env={"MATTING_API_KEYS_FILE": str(keys)}) as base:
        yield base


@pytest.fixture(scope="module")
def tiny_png() -> bytes:
    import cv2
    import numpy as np

    img = np.full((48, 64, 3), 230, np.uint8)
    cv2.circle(img, (32, 24), 14, (30, 60, 200), -1)
    return cv2.imencode(".png", img)[1].tobytes()


SEEN: dict[str, list[int]] = {"matte": [], "removebg": []}  # statuses, for the last test's sanity check


def check_response(r: requests.Response, api: str) -> None:
    SEEN[api].append(r.status_code)
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert r.headers["content-type"] == "application/json", r.headers.get("content-type")
        assert len(r.content) <= ERROR_BODY_BYTES, len(r.content)
        body = r.json()
        assert "error" in body or "errors" in body
    assert r.headers.get("X-Content-Type-Options") == "nosniff"


header_text = st.text(alphabet=string.ascii_letters + string.digits + " -_.,;=/", max_size=60)
bodies = st.sampled_from(["image", "empty", "junk", "truncated"])
content_types = st.sampled_from(["image/png", "image/jpeg", "application/octet-stream", "text/plain", "",
                                 "multipart/form-data", "application/json", "image/*; charset=x"])


def _body(kind: str, png: bytes, junk: bytes) -> bytes:
    return {"image": png, "empty": b"", "junk": junk, "truncated": png[: len(png) // 2]}[kind]


@HTTP
@given(query=st.dictionaries(names, values.filter(lambda v: len(v) < 1000), max_size=4), kind=bodies,
       ctype=content_types, junk=st.binary(max_size=300), multipart=st.booleans(),
       filename=st.text(max_size=60), extra=st.dictionaries(st.sampled_from(["X-Api-Key", "Accept", "X-Fuzz"]),
                                                            header_text, max_size=2))
def test_matte_over_http_never_5xx(server, tiny_png, query, kind, ctype, junk, multipart, filename, extra):
    headers = {"X-Api-Key": KEY, **extra}
    data = _body(kind, tiny_png, junk)
    if multipart:
        files = {"file": (filename or "f", data, ctype or "image/png"),
                 **{k: (None, v) for k, v in list(query.items())[:2]}}
        r = requests.post(f"{server}/v1/matte", params=query, files=files, headers=headers, timeout=60)
    else:
        r = requests.post(f"{server}/v1/matte", params=query, data=data,
                          headers={**headers, "Content-Type": ctype}, timeout=60)
    check_response(r, "matte")


REMOVEBG_VALID = {"size": ["auto", "preview", "full", "4k"], "type": ["auto", "product", "person"],
                  "format": ["auto", "png", "jpg", "webp", "zip"], "channels": ["rgba", "alpha"],
                  "crop": ["true", "false", True], "crop_margin": ["0", "10px", "5%", "1 2 3 4"],
                  "bg_color": ["81d4fa", "red", "#00000080"], "add_shadow": ["false"]}
removebg_fields = st.fixed_dictionaries({}, optional={
    **{k: st.one_of(st.sampled_from(v), json_values) for k, v in REMOVEBG_VALID.items()},
    "roi": json_values, "unknown_field": json_values, "image_url": json_values})


@HTTP
@given(body=st.one_of(removebg_fields, json_values), url=urls, with_image=st.booleans(), form=st.booleans(),
       deep=st.sampled_from([None, None, None, None, 600, 3000]))
def test_removebg_over_http_never_5xx(server, tiny_png, body, url, with_image, form, deep):
    import base64

    headers = {"X-Api-Key": KEY}
    if deep is not None:  # a deep nesting, as raw JSON text
        n = deep
        r = requests.post(f"{server}/v1.0/removebg", data=b"[" * n + b"]" * n,
                          headers={**headers, "Content-Type": "application/json"}, timeout=60)
        check_response(r, "removebg")
        return
    if isinstance(body, dict):
        body = dict(body)
        if with_image:
            body["image_file_b64"] = base64.b64encode(tiny_png).decode()
        elif "image_url" not in body:
            body["image_url"] = url
    if form and isinstance(body, dict):
        fields = {k: (None, v if isinstance(v, str) else json.dumps(v)) for k, v in body.items()}
        r = requests.post(f"{server}/v1.0/removebg", files=fields, headers=headers, timeout=60)
    else:
        r = requests.post(f"{server}/v1.0/removebg", data=json.dumps(body),
                          headers={**headers, "Content-Type": "application/json"}, timeout=60)
    check_response(r, "removebg")


def test_the_http_fuzzing_reached_both_answers():
    """The generated requests were not all refused (or all accepted): both paths of each API ran."""
    for api, statuses in SEEN.items():
        assert statuses, f"no {api} request was made (run the module whole)"
        assert any(s == 200 for s in statuses) and any(400 <= s < 500 for s in statuses), (api, statuses)
