"""The REST API's request and response shapes, and the body size limits.

Field values are checked by klein.request.GenerationRequest, as for the UI, so the messages match;
the models here only fix the types. Defaults and descriptions come from the parameter table
(presets.PARAMETERS) where the hosted APIs' defaults agree with it.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..config import Limits
from ..presets import (
    ASPECT_PRESETS_V1,
    ASPECT_PRESETS_V2,
    DEFAULT_OUTPUT_FORMAT,
    DEFAULT_SAFETY_TOLERANCE,
    MAX_REFERENCES,
    PARAMETERS,
)

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
    seed: int | None = Field(None, description=PARAMETERS["seed"].doc)
    safety_tolerance: int = Field(DEFAULT_SAFETY_TOLERANCE, description=PARAMETERS["safety_tolerance"].doc)
    output_format: str | None = Field(None, description="jpeg (default), png or webp; with an image Accept "
                                      "header and no output_format, the Accept's format.")
    width: int | None = Field(None, description=PARAMETERS["width"].doc)
    height: int | None = Field(None, description=PARAMETERS["height"].doc)


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
    seed: int | None = Field(None, description=PARAMETERS["seed"].doc)
    input_image: str | None = Field(None, description="Reference image: base64, a data URI or an http(s) URL.")
    input_image_2: str | None = Field(None, description="Second reference image.")
    input_image_3: str | None = Field(None, description="Third reference image.")
    input_image_4: str | None = Field(None, description="Fourth reference image.")
    safety_tolerance: int = Field(DEFAULT_SAFETY_TOLERANCE, description=PARAMETERS["safety_tolerance"].doc)
    output_format: str = Field(DEFAULT_OUTPUT_FORMAT, description="jpeg or png (webp also works).")
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
    return MAX_REFERENCES * base64_image_limit(limits) + 1024 * 1024


def task_body_openapi() -> dict[str, Any]:
    """The request body of task creation for the OpenAPI page (the route reads it itself, after auth)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": TaskCreate.model_json_schema()}}}}
