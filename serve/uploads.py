"""Request bodies: a size cap enforced while the body streams in, and the upload forms we accept."""

from __future__ import annotations

from typing import Callable

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.errors import ApiError, error_response

RAW_TYPES = ("application/octet-stream",)


def too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the request body is over the upload limit of {limit / 2**20:g} MB")


class BodyLimitMiddleware:
    """Refuses bodies over `limit` bytes: at once when Content-Length says so, else once the count passes it.

    A pure ASGI middleware, so no body is buffered before it is counted.
    """

    def __init__(self, app: ASGIApp, limit: Callable[[], int]):
        self.app = app
        self.limit = limit  # read per request: the ingress sets it from its args after the app is built

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await error_response(too_large(limit), scope["path"])(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_large(limit)
            return message

        await self.app(scope, counting_receive, send)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _acceptable_part_type(content_type: str | None) -> bool:
    t = (content_type or "").split(";", 1)[0].strip().lower()
    return t == "" or t.startswith("image/") or t in RAW_TYPES


async def read_form(request: Request) -> tuple[dict[str, str], dict[str, UploadFile]]:
    """A multipart or urlencoded form → (text fields, file fields)."""
    # Text parts may carry a whole image (remove.bg's image_file_b64: 4/3 of the file's size); the
    # body limit middleware caps the request as a whole.
    limit = request.app.state.max_upload_bytes
    form = await request.form(max_files=4, max_fields=100, max_part_size=max(2**20, limit * 4 // 3 + 1024))
    texts, files = {}, {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            files[name] = value
        else:
            texts[name] = value
    return texts, files


async def read_file(upload: UploadFile) -> bytes:
    if not _acceptable_part_type(upload.content_type):
        raise ApiError(415, "unsupported_type", f"the uploaded file is {upload.content_type}, not an image")
    return await upload.read()


async def read_image_body(request: Request) -> tuple[bytes, dict[str, str], str | None]:
    """Our API's body: a multipart form with a `file` part, or the image itself as the raw body.

    Returns (image bytes, the form's text fields, the uploaded file's name).
    """
    mt = media_type(request)
    if mt == "multipart/form-data":
        texts, files = await read_form(request)
        upload = files.get("file") or files.get("image_file") or next(iter(files.values()), None)
        if upload is None:
            raise ApiError(400, "missing_file", "the multipart form has no file part; send the image as `file`")
        return await read_file(upload), texts, upload.filename
    if mt == "" or mt.startswith("image/") or mt in RAW_TYPES:
        return await request.body(), {}, None
    raise ApiError(415, "unsupported_type", f"Content-Type {mt} is not accepted: send multipart/form-data with a "
                                            "`file` part, or the image as the body with an image/* type")
