"""What bounds one request and one caller: a deadline for the whole request, a cap on one identity's
requests in flight, limits on request headers, and the security headers every response carries.

The numbers come from AppArgs (serve/config.yaml's `args:`); docs/operations.md lists them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import threading
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.errors import ApiError, error_response


class DeadlineExceeded(Exception):
    """Raised at a checkpoint of work whose request is past its deadline or gone."""


class Deadline:
    """The end of one request's time: checked between stages and inside the render's steps.

    `cancel()` (the request was answered with a timeout, or the client left) makes the next
    checkpoint raise at once, so a worker thread stops at its next step instead of finishing.
    """

    def __init__(self, seconds: float, clock=time.monotonic):
        self.seconds = seconds
        self.clock = clock
        self.end = clock() + seconds
        self._cancelled = threading.Event()

    def remaining(self) -> float:
        return self.end - self.clock()

    def cancel(self) -> None:
        self._cancelled.set()

    def check(self) -> None:
        if self._cancelled.is_set() or self.remaining() <= 0:
            raise DeadlineExceeded(f"past the request's deadline of {self.seconds:g} s")

    def error(self) -> ApiError:
        return ApiError(503, "deadline_exceeded",
                        f"the request took longer than the server's limit of {self.seconds:g} s (decode, inference "
                        "and rendering); send a smaller image or cheaper parameters, or retry later",
                        retry_after_s=5)


class InFlight:
    """At most `limit` requests of one identity (an API key, or a client address without auth) at once.

    Counted per ingress replica: with N replicas an identity may hold up to N·limit.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self._counts: dict[str, int] = {}

    def count(self, identity: str) -> int:
        return self._counts.get(identity, 0)

    @contextlib.contextmanager
    def slot(self, identity: str, headers: dict[str, str] | None = None):
        n = self._counts.get(identity, 0)
        if n >= self.limit:
            raise ApiError(429, "too_many_in_flight",
                           f"this key already has {n} requests in progress (the limit is {self.limit}); wait for "
                           "one to finish", retry_after_s=1, headers=headers)
        self._counts[identity] = n + 1
        try:
            yield
        finally:  # the event loop is single-threaded: no lock needed
            left = self._counts[identity] - 1
            if left:
                self._counts[identity] = left
            else:
                del self._counts[identity]


# -- request headers -------------------------------------------------------------------------------

def header_refusal(headers: list[tuple[bytes, bytes]], max_count: int, max_bytes: int, url_bytes: int = 0
                   ) -> str | None:
    """Why a request's headers are refused (too many, too large, with the URL counted in), or None."""
    if len(headers) > max_count:
        return f"the request has {len(headers)} headers; the limit is {max_count}"
    size = url_bytes + sum(len(k) + len(v) + 4 for k, v in headers)  # "name: value\r\n"
    if size > max_bytes:
        return f"the request's URL and headers are {size} bytes; the limit is {max_bytes}"
    return None


class HeaderLimitMiddleware:
    """431 for requests with too many or too large headers, before routing, auth or the body.

    Serve's proxy (uvicorn with httptools) has already read the headers by then: this keeps them
    from reaching auth, logging and the handlers, but does not bound the proxy's own buffer
    (docs/operations.md, "What stays").
    """

    def __init__(self, app: ASGIApp, limits):
        self.app = app
        self.limits = limits  # () -> (max_count, max_bytes), read per request like the body limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            url_bytes = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string") or b"")
            why = header_refusal(scope.get("headers") or [], *self.limits(), url_bytes=url_bytes)
            if why:
                err = ApiError(431, "headers_too_large", why)
                await error_response(err, scope["path"])(scope, receive, send)
                return
        await self.app(scope, receive, send)


# -- security headers ------------------------------------------------------------------------------

# The page and Swagger UI load scripts and styles from this server only. Inline styles: the page's
# markup and Swagger UI's React components set style attributes. Images: data: (Swagger UI's icons)
# and blob: (the page's before/after previews). /docs adds the hash of its one inline script.
CSP = ("default-src 'self'; script-src 'self'{extra}; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}


def csp(script_hashes: list[str] = ()) -> str:
    return CSP.format(extra="".join(f" '{h}'" for h in script_hashes))


def inline_script_hashes(html: str) -> list[str]:
    """CSP source expressions ('sha256-...') for every inline <script> in `html`."""
    bodies = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    return ["sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() for b in bodies]


class SecurityHeadersMiddleware:
    """Adds nosniff, frame denial, the referrer policy and the CSP to every response that lacks them."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {k.lower() for k, _ in headers}
                extra = dict(SECURITY_HEADERS, **{"content-security-policy": csp()})
                headers += [(k.encode(), v.encode()) for k, v in extra.items() if k.encode() not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- rate-limit headers on every remove.bg response ------------------------------------------------

class RateLimitHeadersMiddleware:
    """Adds X-RateLimit-Limit, -Remaining and -Reset to every response under /v1.0/ that lacks them.

    remove.bg's clients read them on every answer, errors included. The ingress's guard sets them on
    what passes it; this covers what does not: a refused key (403), a body over the limit (413, from
    BodyLimitMiddleware, before routing), an unknown path (404) or method (405). `headers(scope)`
    gives the caller's bucket as it stands, taking nothing from it (None: not ready, none added).
    """

    def __init__(self, app: ASGIApp, headers, applies=lambda path: path.startswith("/v1.0/")):
        self.app = app
        self.headers = headers  # (scope) -> dict[str, str] | None, read per request like the body limit
        self.applies = applies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.applies(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                if b"x-ratelimit-limit" not in {k.lower() for k, _ in headers}:
                    extra = self.headers(scope) or {}
                    headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
