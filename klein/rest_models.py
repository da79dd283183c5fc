"""The REST API's request and response shapes, reading a body that is JSON or a multipart form,
and turning validation errors into one `detail` string that names the field and the value.

Field values are checked by klein.request.GenerationRequest, as for the UI, so the messages match;
the models here only fix the types.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import Limits
from .errors import InvalidRequest
from .presets import ASPECT_PRESETS_V1, ASPECT_PRESETS_V2

V1_NAMES, V2_NAMES = ", ".join(ASPECT_PRESETS_V1), ", ".join(ASPECT_PRESETS_V2)
INPUT_FIELDS = ("input_image", "input_image_2", "input_image_3", "input_image_4")


class GenerateBody(BaseModel):
    """POST /v1/generate as JSON (a multipart form has the same fields; `images` are then files)."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(description="What to generate, or how to change the reference images.")
    model: str | None = Field(None, description="A model name; must be the loaded one. Omitted: the loaded model "
                              "(flux2-klein-4b on a GPU install, tiny without a GPU).")
    images: list[str] | None = Field(None, description="Reference images as base64 or data URIs (JSON); uploaded "
                                     "files in a form. 0: text-to-image, 1: edit, 2..4: multi-reference.")
    image_uris: list[str] | None = Field(None, description="Reference images as http(s) URLs or base64 data URIs; "
                                         "ignored when `images` are given. In a form, a JSON array.")
    aspect_ratio: str = Field("landscape", description=f"{V2_NAMES} (also {V1_NAMES}, match_input).")
    resolution: str = Field("1k", description="1k (about 1 MP) or 2k (about 4 MP).")
    seed: int | None = Field(None, description="0..4294967295; random when omitted. The seed used is returned.")
    safety_tolerance: int = Field(2, description="0 (strictest) .. 5 (most permissive).")
    output_format: str | None = Field(None, description="jpeg (default), png or webp; with an image Accept "
                                      "header and no output_format, the Accept's format.")
    width: int | None = Field(None, description="Custom width, a multiple of 16 in 64..2048 (with height).")
    height: int | None = Field(None, description="Custom height, a multiple of 16 in 64..2048 (with width).")


class GenerateResponse(BaseModel):
    image: str = Field(description="The image file, base64-encoded.")
    mime_type: str
    seed: int
    width: int
    height: int
    model: str
    workflow: str = Field(description="text_to_image, edit or multi_reference (from the number of images).")
    output_format: str
    timings_ms: dict[str, float] = Field(description="Milliseconds per stage and in total.")


class TaskCreate(BaseModel):
    """POST /v1/ai/text-to-image/flux-2-klein."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(description="What to generate, or how to change the input images.")
    aspect_ratio: str = Field("square_1_1", description=f"{V1_NAMES} (also {V2_NAMES}).")
    resolution: str = Field("1k", description="1k or 2k.")
    seed: int | None = Field(None, description="0..4294967295; random when omitted.")
    input_image: str | None = Field(None, description="Reference image: base64, a data URI or an http(s) URL.")
    input_image_2: str | None = Field(None, description="Second reference image.")
    input_image_3: str | None = Field(None, description="Third reference image.")
    input_image_4: str | None = Field(None, description="Fourth reference image.")
    safety_tolerance: int = Field(2, description="0 (strictest) .. 5 (most permissive).")
    output_format: str = Field("jpeg", description="jpeg or png (webp also works).")
    width: int | None = Field(None, description="Klein Studio extension: custom width (with height), as /v1/generate.")
    height: int | None = Field(None, description="Klein Studio extension: custom height (with width).")
    webhook_url: str | None = Field(None, description="Gets a signed POST of the task on every status change.")


class TaskData(BaseModel):
    task_id: str
    status: str = Field(description="CREATED, IN_PROGRESS, COMPLETED or FAILED.")
    generated: list[str] = Field(description="URLs of the result images (same API key), once COMPLETED.")
    error: str | None = Field(None, description="Why the task FAILED.")
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    model: str | None = None
    workflow: str | None = None
    output_format: str | None = None
    timings_ms: dict[str, float] | None = None
    created_at: str
    updated_at: str


class TaskEnvelope(BaseModel):
    data: TaskData


class PageMeta(BaseModel):
    current_page: int
    per_page: int
    last_page: int
    total: int


class TaskPage(BaseModel):
    data: list[TaskData]
    meta: PageMeta


class ErrorBody(BaseModel):
    detail: str


def generate_body_openapi() -> dict[str, Any]:
    """The request body of /v1/generate for the OpenAPI page: JSON or a multipart form."""
    json_schema = GenerateBody.model_json_schema()
    form_schema = json.loads(json.dumps(json_schema))
    form_schema["properties"]["images"] = {"type": "array", "items": {"type": "string", "format": "binary"},
                                           "description": "Reference image files (0..4)."}
    form_schema["properties"]["image_uris"] = {"type": "string", "description": "A JSON array of URLs / data URIs."}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": json_schema},
        "multipart/form-data": {"schema": form_schema},
    }}}


def base64_image_limit(limits: Limits) -> int:
    """The most characters one reference image can take as base64 (a data URI header included)."""
    return limits.max_image_bytes * 4 // 3 + 1024


def json_body_limit(limits: Limits) -> int:
    """The largest JSON body worth reading: every reference image as base64, plus room for the rest."""
    return limits.max_references * base64_image_limit(limits) + 1024 * 1024


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


def task_body_openapi() -> dict[str, Any]:
    """The request body of task creation for the OpenAPI page (the route reads it itself, after auth)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": TaskCreate.model_json_schema()}}}}


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
        form = await request.form(max_files=64, max_fields=64, max_part_size=per_image * limits.max_references)
    except HTTPException as exc:
        raise InvalidRequest("body", f"the form could not be read ({exc.detail})") from None
    try:
        files = [v for v in form.getlist("images") if not isinstance(v, str)]
        if len(files) > limits.max_references:
            raise InvalidRequest("images", f"{len(files)} reference images given, "
                                 f"at most {limits.max_references} are supported")
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
