"""One error type for every refusal, and the two envelopes it is written in.

Our API: `{"error": {"code", "message"}}` with the status that fits (400, 403, 413, 415, 422, 429, 503).
The remove.bg-compatible API: `{"errors": [{"title", "code", "detail"}]}` with remove.bg's statuses,
which put every problem with the input or its parameters under 400.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

# remove.bg answers 400 for anything wrong with the input; it has no 413/415/422.
_REMOVEBG_STATUS = {413: 400, 415: 400, 422: 400, 404: 404, 405: 405}

_TITLES = {
    400: "Invalid request", 403: "Authentication failed", 404: "Not found", 405: "Method not allowed",
    413: "File too large", 415: "Unsupported file type", 422: "Invalid parameter", 429: "Rate limit exceeded",
    431: "Request headers too large", 500: "Internal error", 503: "Service overloaded",
}

# An error names what was wrong, never repeats a caller's megabytes: values are shown up to
# ECHO_CHARS, and a whole message is cut at MESSAGE_CHARS whatever built it.
ECHO_CHARS = 100
MESSAGE_CHARS = 1000


def echo(value: object) -> str:
    """repr(value) for an error message, cut to ECHO_CHARS with the full length named."""
    text = repr(value)
    if len(text) <= ECHO_CHARS:
        return text
    size = f"{len(value)} chars" if isinstance(value, str) else f"{len(text)} chars as text"
    return f"{text[:ECHO_CHARS]}... ({size})"


def echo_names(names: list[str], most: int = 10) -> str:
    """A list of caller-given names for a message: each cut by echo(), at most `most` of them."""
    shown = ", ".join(echo(n) for n in names[:most])
    return f"[{shown}{f', ... ({len(names)} in all)' if len(names) > most else ''}]"


def bounded(message: str) -> str:
    return message if len(message) <= MESSAGE_CHARS else f"{message[:MESSAGE_CHARS]}... (cut)"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, retry_after_s: int | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        if retry_after_s is not None:
            self.headers["Retry-After"] = str(int(retry_after_s))


def is_removebg_path(path: str) -> bool:
    return path.startswith("/v1.0/")


def error_response(err: ApiError, path: str) -> JSONResponse:
    message = bounded(err.message)
    if is_removebg_path(path):
        status = _REMOVEBG_STATUS.get(err.status, err.status)
        body = {"errors": [{"title": _TITLES.get(err.status, "Error"), "code": err.code, "detail": message}]}
    else:
        status = err.status
        body = {"error": {"code": err.code, "message": message}}
    return JSONResponse(body, status_code=status, headers=err.headers)
