"""The Serve application: a thin FastAPI ingress in front of one batched model deployment per model.

    serve run serve/config.yaml        # or: matting serve [--host 127.0.0.1] [--port 8000]
    serve deploy serve/config.yaml     # onto a running cluster

`build_app` is the builder serve/config.yaml names; its `args:` are validated as AppArgs. Replica
counts, autoscaling, batching (`user_config`), queue limits and GPUs are deployment options set in
the config file's `deployments:` section, not here.
"""

# No `from __future__ import annotations` here: FastAPI reads the route methods' annotations at run time.
import asyncio
import hashlib
import logging
import re
import time
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from ray import serve
from ray.serve import Application
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from postproc import PRESETS
from postproc import formats
from postproc.alpha import WorkLimit
from serve import api_v1, removebg
from serve.errors import ApiError, error_response, is_removebg_path
from serve.limits import (HeaderLimitMiddleware, InFlight, RateLimitHeadersMiddleware, SecurityHeadersMiddleware, csp,
                          inline_script_hashes)
from serve.model_deployment import MattingModel
from serve.pipeline import Pipeline
from serve.security import ApiKeys, RateLimiter, fingerprint
from serve.settings import AppArgs, NoApiKeysError, load_api_keys
from serve.uploads import BodyLimitMiddleware

log = logging.getLogger("ray.serve")
STATIC = Path(__file__).parent / "static"
INGRESS_NAME = "MattingIngress"


def model_deployment_name(model: str) -> str:
    """Model_u2netp; a model named by a file path: Model_<file stem>_<hash of the path> (no '/' in names)."""
    if "/" not in model and "." not in model:
        return f"Model_{model}"
    digest = hashlib.blake2b(model.encode(), digest_size=4).hexdigest()
    return f"Model_{re.sub(r'[^A-Za-z0-9_-]', '_', Path(model).stem)}_{digest}"


fastapi_app = FastAPI(
    title="unet-matting",
    description="Background removal: our API (/v1), a remove.bg-compatible API (/v1.0/removebg) and the web page (/). "
                "Send the API key as `X-Api-Key` (or `Authorization: Bearer KEY`).",
    version="1",
    docs_url=None,  # /docs is MattingIngress.docs below: Swagger UI from serve/static/vendor, not a CDN
    redoc_url=None,
)
fastapi_app.state.max_upload_bytes = AppArgs().max_upload_bytes
fastapi_app.state.header_limits = (AppArgs().max_header_count, AppArgs().max_header_bytes)
fastapi_app.add_middleware(BodyLimitMiddleware, limit=lambda: fastapi_app.state.max_upload_bytes)
# Added last, so outermost: headers are counted before anything else runs, and every response
# (errors from the inner middleware included) gets the security headers.
fastapi_app.add_middleware(HeaderLimitMiddleware, limits=lambda: fastapi_app.state.header_limits)
# Outside the header and body limits, so that their refusals under /v1.0/ carry the rate-limit headers too.
fastapi_app.state.rate_limit_headers = lambda scope: None  # set by the ingress: it holds the limiters
fastapi_app.add_middleware(RateLimitHeadersMiddleware,
                           headers=lambda scope: fastapi_app.state.rate_limit_headers(scope))
fastapi_app.add_middleware(SecurityHeadersMiddleware)
fastapi_app.mount("/static", StaticFiles(directory=STATIC), name="static")


@fastapi_app.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError):
    return error_response(exc, request.url.path)


@fastapi_app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError):
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body"))
    return error_response(ApiError(422, "bad_parameter", f"{where}: {first['msg']}"), request.url.path)


@fastapi_app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException):
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(ApiError(exc.status_code, code, str(exc.detail)), request.url.path)


@fastapi_app.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception):
    log.exception("unexpected error on %s", request.url.path)  # the path only: queries may hold secrets
    return error_response(ApiError(500, "internal", "internal error; it was logged"), request.url.path)


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.5})
@serve.ingress(fastapi_app)
class MattingIngress:
    def __init__(self, handles: dict, args: AppArgs):
        self.args = AppArgs.model_validate(args)
        self.models = self.args.model_names
        self.pipeline = Pipeline(handles, self.args.max_pixels, self.args.cpu_threads, self.args.request_timeout_s,
                                 self.args.deadline_s,
                                 WorkLimit(int(self.args.work_max_megapixels * 1e6), self.args.work_max_radius_px))
        self.handles = handles
        self.limiter = RateLimiter(self.args.rate_limit_per_minute, self.args.rate_limit_burst)
        # Failed authentications, per client address: guessing keys gets 429s, not more answers.
        self.auth_failures = RateLimiter(self.args.auth_failures_per_minute, self.args.auth_failures_burst)
        self.in_flight = InFlight(self.args.max_in_flight_per_key)
        fastapi_app.state.max_upload_bytes = self.args.max_upload_bytes
        fastapi_app.state.header_limits = (self.args.max_header_count, self.args.max_header_bytes)
        fastapi_app.state.rate_limit_headers = lambda scope: self.current_rate_headers(Request(scope))
        if self.args.auth:
            keys = load_api_keys()
            if not keys:
                raise NoApiKeysError(
                    "authentication is on but no API key is configured: set MATTING_API_KEYS (comma-separated) "
                    "or MATTING_API_KEYS_FILE (one key per line) in the server's environment, or turn auth off "
                    "for local use only (`matting serve --no-auth`, or `auth: false` in the config's args)")
            self.keys = ApiKeys(keys)
            log.info("API keys required: %d configured", len(self.keys))
        else:
            self.keys = None
            log.warning("!!! AUTHENTICATION IS OFF: anyone who can reach this port can use the API. "
                        "Use this only on your own machine. !!!")
        if self.args.image_url.enabled:
            log.warning("image_url is enabled: the server fetches URLs for callers (public addresses only%s)",
                        f"; also allowed: {self.args.image_url.allow_networks}" if self.args.image_url.allow_networks
                        else "")

    @staticmethod
    def _presented_key(request: Request) -> str | None:
        key = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if key is None and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        return key

    @staticmethod
    def _rate_headers(d, path: str) -> dict[str, str]:
        # remove.bg's X-RateLimit-Reset is a Unix time; our API's is seconds from now.
        reset = int(time.time()) + d.reset_s if is_removebg_path(path) else d.reset_s
        return {"X-RateLimit-Limit": str(d.limit), "X-RateLimit-Remaining": str(d.remaining),
                "X-RateLimit-Reset": str(reset)}

    def current_rate_headers(self, request: Request) -> dict[str, str]:
        """The rate-limit headers of an answer that did not pass `guard` (RateLimitHeadersMiddleware): the
        bucket that limits this caller, as it stands, nothing taken. A valid key's (or, without auth,
        the address's) request bucket; for a missing or refused key, the address's failed-authentication
        bucket, the limit such requests meet."""
        address = request.client.host if request.client else "unknown"
        if self.keys is None:
            d = self.limiter.peek("ip:" + address)
        else:
            key = self._presented_key(request)
            d = (self.limiter.peek("key:" + fingerprint(key)) if self.keys.check(key)
                 else self.auth_failures.peek(address))
        return self._rate_headers(d, request.url.path)

    def guard(self, request: Request) -> tuple[dict[str, str], str]:
        """403 without a valid key, 429 over the key's rate (or the address's failed authentications);
        returns the rate-limit headers and the caller's identity."""
        address = request.client.host if request.client else "unknown"
        if self.keys is not None:
            key = self._presented_key(request)
            failures = self.auth_failures.peek(address)
            if not failures.allowed:  # even a right key is not checked: a guesser learns nothing more
                raise ApiError(429, "too_many_auth_failures",
                               f"too many failed authentications from this address; retry in "
                               f"{failures.retry_after_s} s", retry_after_s=failures.retry_after_s)
            if not self.keys.check(key):
                if key is not None:  # a wrong key is a guess; a missing one is not (the page's own calls, a typo)
                    self.auth_failures.hit(address)
                raise ApiError(403, "forbidden" if key is None else "invalid_api_key",
                               "missing API key: send it as X-Api-Key" if key is None else "the API key is not valid")
            identity = "key:" + fingerprint(key)
        else:
            identity = "ip:" + address
        d = self.limiter.hit(identity)
        headers = self._rate_headers(d, request.url.path)
        if not d.allowed:
            raise ApiError(429, "rate_limited", f"rate limit of {self.args.rate_limit_per_minute:g}/min "
                                                f"(burst {self.args.rate_limit_burst}) exceeded; retry in "
                                                f"{d.retry_after_s} s", retry_after_s=d.retry_after_s, headers=headers)
        return headers, identity

    @fastapi_app.get("/", include_in_schema=False)
    async def page(self):
        return FileResponse(STATIC / "index.html")

    @fastapi_app.get("/favicon.ico", include_in_schema=False)
    async def favicon(self):
        return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon")

    @fastapi_app.get("/docs", include_in_schema=False)
    async def docs(self, request: Request):
        # Swagger UI is vendored from npm's swagger-ui-dist 5.35.0 (Apache-2.0, serve/static/vendor/swagger-ui.*)
        # so that /docs works offline: no CDN, and an empty favicon instead of FastAPI's fastapi.tiangolo.com one.
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_swagger_ui_html(
            openapi_url=root + fastapi_app.openapi_url, title=f"{fastapi_app.title} - Swagger UI",
            swagger_js_url=f"{root}/static/vendor/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/static/vendor/swagger-ui.css", swagger_favicon_url="data:,",
            swagger_ui_parameters={"validatorUrl": None})  # no badge from validator.swagger.io
        # The page's one inline script (Swagger UI's set-up) is allowed by its hash, nothing else inline.
        page.headers["content-security-policy"] = csp(inline_script_hashes(page.body.decode()))
        return page

    @fastapi_app.get("/healthz", summary="Liveness and readiness: every model replica set answers")
    async def healthz(self):
        try:
            described = await asyncio.wait_for(
                asyncio.gather(*(self.handles[m].describe.remote() for m in self.models)), 10)
        except (asyncio.TimeoutError, TimeoutError):
            raise ApiError(503, "unavailable", "a model did not answer within 10 s") from None
        return {"status": "ok", "auth": self.keys is not None,
                "image_url": self.args.image_url.enabled,
                "limits": {"max_upload_mb": self.args.max_upload_mb, "max_megapixels": self.args.max_megapixels,
                           "deadline_s": self.args.deadline_s},
                "models": dict(zip(self.models, described))}

    @fastapi_app.get("/v1/presets", summary="The named parameter presets and their values (no key needed)")
    async def presets(self):
        return {name: dict(values) for name, values in PRESETS.items()}

    @fastapi_app.get("/v1/formats", summary="The output formats: name, extension, media type, alpha (no key needed)")
    async def list_formats(self):
        # The page builds its format picker from this: the formats table (postproc/formats.py), one place.
        return {"default": formats.DEFAULT, "formats": formats.describe()}

    @fastapi_app.get("/v1/models", summary="The served models, their versions and devices")
    async def list_models(self, request: Request):
        headers, _ = self.guard(request)
        described = await asyncio.gather(*(self.handles[m].describe.remote() for m in self.models))
        body = {"default": self.models[0], "models": [{"name": m, **d} for m, d in zip(self.models, described)]}
        return JSONResponse(body, headers=headers)

    @fastapi_app.post("/v1/matte", summary="Cut out the subject of one image", openapi_extra=api_v1.openapi_matte())
    async def matte(self, request: Request):
        headers, identity = self.guard(request)
        with self.in_flight.slot(identity, headers):
            response = await api_v1.matte(request, self.pipeline, self.models, self.args.tta)
        response.headers.update(headers)
        return response

    @fastapi_app.post("/v1.0/removebg", summary="remove.bg-compatible background removal",
                      description=removebg.__doc__, openapi_extra=removebg.openapi_removebg())
    async def removebg_endpoint(self, request: Request):
        headers, identity = self.guard(request)
        try:
            with self.in_flight.slot(identity, headers):
                response = await removebg.removebg(request, self.pipeline, self.args)
        except ApiError as e:  # remove.bg sends the rate-limit headers on its errors too
            e.headers = {**headers, **e.headers}
            raise
        response.headers.update(headers)
        return response

    @fastapi_app.get("/v1.0/account", summary="remove.bg-compatible account: credits, free calls, sizes",
                     description=removebg.account.__doc__)
    async def account(self, request: Request):
        headers, _ = self.guard(request)
        return JSONResponse(removebg.account(self.args, int(headers["X-RateLimit-Remaining"])), headers=headers)


def make_app(args: AppArgs, overrides: dict[str, dict] | None = None) -> Application:
    """The application graph; `overrides` maps a deployment name to `.options(...)` (tests, bench)."""
    overrides = overrides or {}
    handles = {}
    for m, config in args.runtime_configs.items():
        name = model_deployment_name(m)
        dep = MattingModel.options(name=name, **overrides.get(name, {}))
        handles[m] = dep.bind(config)
    return MattingIngress.options(**overrides.get(INGRESS_NAME, {})).bind(handles, args)


def build_app(args: AppArgs) -> Application:
    """The builder `serve run` / `serve deploy` call with the config file's `args:`."""
    return make_app(args)
