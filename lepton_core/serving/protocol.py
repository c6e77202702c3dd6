"""The model API, the same on-prem and in the cloud.

``POST /predict`` with JSON ``{"image": B64}`` or ``{"images": [B64, ...]}`` (each an encoded image,
PNG or JPEG, of the model's input size) answers ``{"predictions": [{"label", "index", "confidence"}],
"model", "version"}``, one prediction per image in order. ``GET /health`` answers ``ok``; ``GET
/info`` the model, version, metrics and serving configuration.

Requests are checked here, in the API server, before they are queued: a bad request gets a 4xx
with a one-line reason and never reaches a batch (LitServe fails every request of a batch when
one of them fails to decode).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass

from fastapi.responses import JSONResponse
from starlette.middleware.base import BaseHTTPMiddleware

PREDICT_PATH = "/predict"


@dataclass(frozen=True)
class Limits:
    input_size: int  # the model's square input, pixels
    max_images: int = 64  # images per request
    max_bytes: int = 8 * 1024 * 1024  # request body


class RequestError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse(body: bytes, limits: Limits) -> list[bytes]:
    """The request's encoded images, each checked to decode at the model's size; RequestError otherwise."""
    from PIL import Image, UnidentifiedImageError

    if not body:
        raise RequestError(400, "empty body: send JSON {\"image\": BASE64} or {\"images\": [BASE64, ...]}")
    if len(body) > limits.max_bytes:
        raise RequestError(413, f"body of {len(body):,} bytes; at most {limits.max_bytes:,}")
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RequestError(400, "body is not JSON: send {\"image\": BASE64} or {\"images\": [BASE64, ...]}") from None
    if not isinstance(payload, dict) or ("image" in payload) == ("images" in payload):
        raise RequestError(400, "send exactly one of \"image\" (one image) or \"images\" (a list)")
    items = [payload["image"]] if "image" in payload else payload["images"]
    if not isinstance(items, list) or not items:
        raise RequestError(400, "\"images\" must be a non-empty list")
    if len(items) > limits.max_images:
        raise RequestError(413, f"batch of {len(items)} images; at most {limits.max_images} per request")
    images = []
    for i, item in enumerate(items):
        where = "image" if "image" in payload else f"images[{i}]"
        if not isinstance(item, str):
            raise RequestError(400, f"{where}: not a base64 string")
        try:
            raw = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, f"{where}: not valid base64") from None
        try:
            with Image.open(io.BytesIO(raw)) as img:
                img.load()
                size = img.size
        except (UnidentifiedImageError, OSError, ValueError):
            raise RequestError(415, f"{where}: not an image (PNG or JPEG expected)") from None
        if size != (limits.input_size, limits.input_size):
            raise RequestError(422, f"{where}: {size[0]}x{size[1]} pixels; the model takes "
                                    f"{limits.input_size}x{limits.input_size}")
        images.append(raw)
    return images


class CheckRequests(BaseHTTPMiddleware):
    """Refuse a bad ``/predict`` request with its 4xx before it is queued for the model."""

    def __init__(self, app, input_size: int, max_images: int, max_bytes: int) -> None:
        super().__init__(app)
        self.limits = Limits(input_size, max_images, max_bytes)

    async def dispatch(self, request, call_next):
        if request.url.path == PREDICT_PATH and request.method == "POST":
            try:
                declared = request.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > self.limits.max_bytes:  # refused unread
                    raise RequestError(413, f"body of {int(declared):,} bytes; at most {self.limits.max_bytes:,}")
                parse(await request.body(), self.limits)
            except RequestError as exc:
                return JSONResponse({"error": str(exc)}, status_code=exc.status)
        return await call_next(request)
