"""Reading a REST request body, JSON or a multipart form, within its size limits, and turning
validation errors into one `detail` string that names the field and the value."""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from ..config import Limits
from ..errors import InvalidRequest
from ..presets import MAX_REFERENCES
from ..request import check_reference_count
from .schemas import GenerateBody, base64_image_limit, json_body_limit


async def read_json_object(request: Request, limit: int) -> dict:
    """The request's JSON object, read only up to `limit` bytes (413 past it)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body: {int(declared):,} bytes is over the limit of {limit:,} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"body: over the limit of {limit:,} bytes")
        chunks.append(chunk)
    try:
        data = json.loads(b"".join(chunks))
    except ValueError:
        raise InvalidRequest("body", "is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body", f"must be a JSON object, got {type(data).__name__}")
    return data


async def read_generate_body(request: Request, limits: Limits) -> tuple[GenerateBody, list[bytes]]:
    """The body of /v1/generate and the uploaded files' bytes (in order), whatever its content type."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        return parse_model(GenerateBody, await read_json_object(request, json_body_limit(limits))), []
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return await _read_form(request, limits)
    raise HTTPException(415, "Content-Type must be application/json or multipart/form-data.")


async def _read_form(request: Request, limits: Limits) -> tuple[GenerateBody, list[bytes]]:
    per_image = base64_image_limit(limits)  # a base64 data URI in a text field
    try:
        form = await request.form(max_files=64, max_fields=64, max_part_size=per_image * MAX_REFERENCES)
    except HTTPException as exc:
        raise InvalidRequest("body", f"the form could not be read ({exc.detail})") from None
    try:
        files = [v for v in form.getlist("images") if not isinstance(v, str)]
        check_reference_count(len(files), "images")
        uploads = [await _read_upload(f, f"images[{i}]", limits) for i, f in enumerate(files)]
        fields: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str) and v != "" and k != "images"}
        texts = [v for v in form.getlist("images") if isinstance(v, str) and v]
        if texts:
            fields["images"] = texts
        if "image_uris" in fields:
            fields["image_uris"] = _uri_list(form.getlist("image_uris"))
        return parse_model(GenerateBody, fields), uploads
    finally:
        await form.close()


async def _read_upload(upload: Any, field: str, limits: Limits) -> bytes:
    data = await upload.read(limits.max_image_bytes + 1)
    if len(data) > limits.max_image_bytes:
        raise InvalidRequest(field, f"image is over the limit of {limits.max_image_bytes:,} bytes")
    return data


def _uri_list(values: list) -> list[str]:
    texts = [v for v in values if isinstance(v, str) and v]
    if len(texts) == 1 and texts[0].lstrip().startswith("["):
        try:
            parsed = json.loads(texts[0])
        except ValueError:
            raise InvalidRequest("image_uris", "is not a valid JSON array of URLs or data URIs") from None
        if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
            raise InvalidRequest("image_uris", "must be a JSON array of strings (URLs or data URIs)")
        return parsed
    return texts


def parse_model(model: type[BaseModel], data: dict) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def validation_detail(errors: list[dict]) -> str:
    """Pydantic/FastAPI errors as one line: `field: message, got value; ...`."""
    parts = []
    for error in errors:
        if error.get("type") == "json_invalid":
            parts.append("body: is not valid JSON")
            continue
        loc = [p for p in error.get("loc", ()) if p not in ("body", "query", "path", "header")]
        name = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))
        message = str(error.get("msg", "is invalid"))
        if error.get("type") != "missing" and "input" in error:
            message += f", got {_short_repr(error['input'])}"
        parts.append(f"{name or 'body'}: {message}")
    return "; ".join(parts) or "The request is invalid."


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
