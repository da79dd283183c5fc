"""The REST API's request and response shapes, and the body size limits.

Field values are checked by klein.request.GenerationRequest, as for the UI, so the messages match;
the models here fix the types (integers strictly: `true` is not a seed) and refuse unknown fields.
The OpenAPI schema of a body (`body_schema`) adds the rules GenerationRequest applies (ranges,
enums, multiples) from the parameter table, so what the schema allows is what the server accepts.
Defaults and descriptions come from the parameter table (presets.PARAMETERS) where the hosted APIs'
defaults agree with it.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..config import Limits
from ..presets import (
    ASPECT_PRESETS,
    ASPECT_PRESETS_V1,
    ASPECT_PRESETS_V2,
    DEFAULT_OUTPUT_FORMAT,
    DEFAULT_SAFETY_TOLERANCE,
    LORA_SCALE,
    LORAS,
    MATCH_INPUT,
    MAX_LORA_PATH,
    MAX_REFERENCES,
    NUM_IMAGES,
    OUTPUT_FORMATS,
    PARAMETERS,
    RESOLUTIONS,
    SIZE_MULTIPLE,
    STRENGTH,
)

# A character Python's str.strip() keeps, spelled out rather than as `\S`: a schema reader's \s (ECMA-262's,
# or a generator's) need not count \x1c-\x1f and \x85 as spaces, and a prompt of "\x1c" is empty here.
PYTHON_SPACES = r"\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_A_SPACE = f"[^{PYTHON_SPACES}]"
V1_NAMES, V2_NAMES = ", ".join(ASPECT_PRESETS_V1), ", ".join(ASPECT_PRESETS_V2)
INPUT_FIELDS = ("input_image", "input_image_2", "input_image_3", "input_image_4")
INTEGER_FIELDS = ("seed", "safety_tolerance", "width", "height", "num_images")
NUMBER_FIELDS = ("strength",)  # a form's text is read as a number for these (JSON's numbers are numbers)
BOOLEAN_FIELDS = ("prompt_upsampling",)  # and as true/false for these
FORMAT_NAMES = (*OUTPUT_FORMATS, "jpg")  # GenerationRequest reads "jpg" as "jpeg"
# Fields the hosted APIs take that this server accepts and ignores (any other unknown field is a 422
# naming it). None today: each candidate either has a meaning here or is better refused than ignored:
# `webhook_secret` would sign with the client's secret, and ignoring it would make every signature check
# fail on the client's side, silently.
IGNORED_FIELDS: frozenset[str] = frozenset()
STRICT_INT = {"strict": True}


class LoraBody(BaseModel):
    """One LoRA of a request (fal's shape, and klein.request.LoraSpec's)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="A .safetensors file or folder in the server's LoRA folder (by its path there, "
                      "with or without .safetensors), a Hugging Face hub id (owner/name or "
                      "owner/name/file.safetensors) or a huggingface.co file URL.")
    scale: float = Field(float(LORA_SCALE.default), description=LORA_SCALE.doc, strict=True)
    weight_name: str | None = Field(None, description="Which .safetensors file of a hub repository or folder "
                                    "holding several.")


LORAS_FIELD = Field(None, description=LORAS.doc + " A Klein Studio extension in fal's shape: "
                    '[{"path": "...", "scale": 1.0}]. Unknown or unreadable: a 422 naming loras[i].path.')
MASK_DOC = ("Inpainting (a Klein Studio extension): a grayscale mask the size of the image painted on; white "
            "repaints, black keeps, transparent keeps; all white repaints the whole image.")
STRENGTH_FIELD = Field(float(STRENGTH.default), description=STRENGTH.doc + " Used only with a mask.", strict=True)
UPSAMPLING_FIELD = Field(False, strict=True, description="Rewrite the prompt with the model's own text encoder "
                         "first (BFL's field name); the rewrite is moderated, generated from and returned as "
                         "enhanced_prompt.")
NUM_IMAGES_DOC = NUM_IMAGES.doc[0].upper() + NUM_IMAGES.doc[1:]


class GenerateBody(BaseModel):
    """POST /v1/generate as JSON (a multipart form has the same fields; `images` are then files)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="What to generate, or how to change the reference images; not blank.")
    model: str | None = Field(None, description="A model name; must be the loaded one. Omitted: the loaded model "
                              "(flux2-klein-4b on a GPU install, tiny without a GPU).")
    images: list[str] | None = Field(None, description="Reference images as base64 or data URIs (JSON); uploaded "
                                     "files in a form. 0: text-to-image, 1: edit, 2..4: multi-reference.")
    image_uris: list[str] | None = Field(None, description="Reference images as http(s) URLs or base64 data URIs; "
                                         "ignored when `images` are given. In a form, a JSON array.")
    aspect_ratio: str = Field("landscape", description=f"{V2_NAMES} (also {V1_NAMES}, match_input).")
    resolution: str = Field("1k", description="1k (about 1 MP) or 2k (about 4 MP).")
    seed: int | None = Field(None, description=PARAMETERS["seed"].doc, **STRICT_INT)
    safety_tolerance: int = Field(DEFAULT_SAFETY_TOLERANCE, description=PARAMETERS["safety_tolerance"].doc,
                                  **STRICT_INT)
    output_format: str | None = Field(None, description="jpeg (default), png or webp; with an image Accept "
                                      "header and no output_format, the Accept's format.")
    loras: list[LoraBody] | None = LORAS_FIELD
    width: int | None = Field(None, description=PARAMETERS["width"].doc, **STRICT_INT)
    height: int | None = Field(None, description=PARAMETERS["height"].doc, **STRICT_INT)
    mask: str | None = Field(None, description=MASK_DOC + " Base64, a data URI or an http(s) URL (JSON); an "
                             "uploaded file in a form. The image painted on is the first of images / image_uris; "
                             "the others are references. The output has that image's size.")
    strength: float = STRENGTH_FIELD
    prompt_upsampling: bool = UPSAMPLING_FIELD
    num_images: int = Field(int(NUM_IMAGES.default), description=NUM_IMAGES_DOC + " One image answers as "
                            "before; several as JSON (BatchResponse) or multipart/mixed, by Accept.", **STRICT_INT)


class GenerateResponse(BaseModel):
    image: str = Field(description="The image file, base64-encoded.")
    mime_type: str
    seed: int
    width: int
    height: int
    model: str
    workflow: str = Field(description="text_to_image, edit or multi_reference (from the number of images), or "
                          "inpaint (with a mask).")
    output_format: str
    timings_ms: dict[str, float] = Field(description="Milliseconds per stage and in total.")
    loras: list[LoraBody] | None = Field(None, description="The LoRAs applied (those of scale 0 left out), each "
                                         "path as it can be named again; absent without LoRAs.")
    enhanced_prompt: str | None = Field(None, description="The rewritten prompt generated from, with "
                                        "prompt_upsampling; absent without it.")


class BatchImage(BaseModel):
    data: str = Field(description="The image file, base64-encoded.")
    content_type: str = Field(description="image/jpeg, image/png or image/webp.")
    seed: int = Field(description="This image's seed: sent with num_images 1 it makes this image again (up to "
                      "rounding: a batch computes in other orders).")
    width: int
    height: int


class BatchResponse(BaseModel):
    """/v1/generate's JSON answer for num_images over 1."""

    images: list[BatchImage] = Field(description="The images moderation kept, in seed order.")
    seed: int = Field(description="The batch's seed: image i used seed + i (mod 2**32); send it again with the same "
                      "num_images for the same images.")
    seeds: list[int] = Field(description="The seed of each image in `images`.")
    moderated_seeds: list[int] = Field(description="The seeds of the images moderation left out (Content "
                                       "moderated); empty when all were kept.")
    width: int
    height: int
    model: str
    workflow: str = Field(description="text_to_image, edit, multi_reference or inpaint.")
    output_format: str
    timings_ms: dict[str, float] = Field(description="Milliseconds per stage and in total, for the whole batch.")
    loras: list[LoraBody] | None = Field(None, description="The LoRAs applied; absent without LoRAs.")
    enhanced_prompt: str | None = Field(None, description="The rewritten prompt generated from, with "
                                        "prompt_upsampling; absent without it.")


class TaskCreate(BaseModel):
    """POST /v1/ai/text-to-image/flux-2-klein."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="What to generate, or how to change the input images; not blank.")
    aspect_ratio: str = Field("square_1_1", description=f"{V1_NAMES} (also {V2_NAMES}).")
    resolution: str = Field("1k", description="1k or 2k.")
    seed: int | None = Field(None, description=PARAMETERS["seed"].doc, **STRICT_INT)
    input_image: str | None = Field(None, description="Reference image: base64, a data URI or an http(s) URL.")
    input_image_2: str | None = Field(None, description="Second reference image.")
    input_image_3: str | None = Field(None, description="Third reference image.")
    input_image_4: str | None = Field(None, description="Fourth reference image.")
    safety_tolerance: int = Field(DEFAULT_SAFETY_TOLERANCE, description=PARAMETERS["safety_tolerance"].doc,
                                  **STRICT_INT)
    output_format: str = Field(DEFAULT_OUTPUT_FORMAT, description="jpeg or png (webp also works).")
    loras: list[LoraBody] | None = LORAS_FIELD
    width: int | None = Field(None, description="Klein Studio extension: custom width (with height), as /v1/generate.",
                              **STRICT_INT)
    height: int | None = Field(None, description="Klein Studio extension: custom height (with width).", **STRICT_INT)
    mask: str | None = Field(None, description=MASK_DOC + " Base64, a data URI or an http(s) URL; input_image is "
                             "the image painted on, input_image_2..4 references. The output has its size.")
    strength: float = STRENGTH_FIELD
    prompt_upsampling: bool = UPSAMPLING_FIELD
    num_images: int = Field(int(NUM_IMAGES.default), description=NUM_IMAGES_DOC + " The task's `generated` lists "
                            "every image kept.", **STRICT_INT)
    webhook_url: str | None = Field(None, description="Gets a signed POST of the task on every status change.")


class TaskData(BaseModel):
    task_id: str
    status: str = Field(description="CREATED, IN_PROGRESS, COMPLETED or FAILED.")
    generated: list[str] = Field(description="URLs of the result images (same API key), once COMPLETED: one per "
                                 "image kept, in seed order.")
    error: str | None = Field(None, description="Why the task FAILED.")
    seed: int | None = Field(None, description="The seed: image i used seed + i (mod 2**32).")
    seeds: list[int] | None = Field(None, description="The seed of each image in `generated`.")
    moderated_seeds: list[int] | None = Field(None, description="The seeds of the images moderation left out.")
    width: int | None = None
    height: int | None = None
    model: str | None = None
    workflow: str | None = None
    output_format: str | None = None
    timings_ms: dict[str, float] | None = None
    loras: list[LoraBody] | None = None
    enhanced_prompt: str | None = None
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


def _integer(name: str, multiple: int | None = None) -> dict[str, Any]:
    parameter = PARAMETERS[name]
    rule = {"type": "integer", "minimum": int(parameter.minimum), "maximum": int(parameter.maximum)}
    return rule | ({"multipleOf": multiple} if multiple else {})


def field_rules() -> dict[str, dict[str, Any]]:
    """What GenerationRequest (and the body reader) accept for each field, as JSON Schema."""
    references = {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": MAX_REFERENCES}
    prompt = PARAMETERS["prompt"]
    return {
        "prompt": {"type": "string", "minLength": 1, "pattern": NOT_A_SPACE}
        | ({"maxLength": int(prompt.maximum)} if prompt.maximum else {}),
        "seed": _integer("seed"),
        "safety_tolerance": _integer("safety_tolerance"),
        "num_images": _integer("num_images"),
        "width": _integer("width", SIZE_MULTIPLE),
        "height": _integer("height", SIZE_MULTIPLE),
        "aspect_ratio": {"type": "string", "enum": [*ASPECT_PRESETS, MATCH_INPUT]},
        "resolution": {"type": "string", "enum": list(RESOLUTIONS)},
        "output_format": {"type": "string", "enum": list(FORMAT_NAMES)},
        "images": references,
        "image_uris": references,
        "webhook_url": {"type": "string", "format": "uri", "pattern": r"^https?://[^\s/?#@]+(/\S*)?$"},
        "loras": lora_rule(),
        "mask": {"type": "string", "minLength": 1},
        "strength": {"type": "number", "minimum": STRENGTH.minimum, "maximum": STRENGTH.maximum},
        "prompt_upsampling": {"type": "boolean"},
    }


def lora_rule() -> dict[str, Any]:
    """`loras` as GenerationRequest takes it (whether a path names an adapter is beyond any schema)."""
    text = {"type": "string", "minLength": 1, "maxLength": MAX_LORA_PATH,
            "pattern": rf"^[^\x00-\x1f]*{NOT_A_SPACE}[^\x00-\x1f]*$"}
    return {"type": "array", "maxItems": int(LORAS.maximum), "items": {
        "type": "object", "additionalProperties": False, "required": ["path"], "properties": {
            "path": text,
            "scale": {"type": "number", "minimum": LORA_SCALE.minimum, "maximum": LORA_SCALE.maximum,
                      "default": LORA_SCALE.default},
            "weight_name": {"anyOf": [text | {"pattern": r"^[^\x00-\x1f]*\.safetensors$"}, {"type": "null"}]},
        }}}


SIZES = {"width": {"type": "integer"}, "height": {"type": "integer"}}
# A custom size is width and height both, or neither: absent or null in JSON, absent in a form.
BOTH_OR_NEITHER = {"anyOf": [{"required": ["width", "height"], "properties": SIZES},
                             {"properties": {"width": {"type": "null"}, "height": {"type": "null"}}}]}
FORM_BOTH_OR_NEITHER = {"dependentRequired": {"width": ["height"], "height": ["width"]}}


def needs_image(*fields: str) -> dict[str, Any]:
    """In JSON, a mask (not null) needs the image it paints on: one of `fields` (a non-empty list or a string)."""
    if not fields:
        return {}
    given = [{"required": [f], "properties": {f: {"type": ["array", "string"], "minItems": 1, "minLength": 1}}}
             for f in fields]
    mask = {"required": ["mask"], "properties": {"mask": {"type": "string"}}}
    return {"if": mask, "then": given[0] if len(given) == 1 else {"anyOf": given}}


def body_schema(model: type[BaseModel], overrides: dict[str, dict[str, Any]] | None = None,
                form: bool = False, image_fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """The model's JSON schema with the value rules of `field_rules` (and `overrides`) on its fields; for
    a form, without null (a form field is text or absent)."""
    schema = model.model_json_schema()
    rules = field_rules() | (overrides or {})
    for name, prop in schema["properties"].items():
        _apply_rule(prop, rules.get(name, {}), form)
    return schema | (FORM_BOTH_OR_NEITHER if form else BOTH_OR_NEITHER) | needs_image(*image_fields)


def _apply_rule(prop: dict[str, Any], rule: dict[str, Any], form: bool) -> None:
    """Put `rule` on a property, on its non-null branch when the property is nullable."""
    branches = prop.pop("anyOf", None)
    if not branches or {"type": "null"} not in branches:
        prop.update(copy.deepcopy(rule), **({"anyOf": branches} if branches else {}))
        return
    typed = [copy.deepcopy(rule) or b for b in branches if b != {"type": "null"}]
    if form:
        prop.update(typed[0] if len(typed) == 1 else {"anyOf": typed})
        prop.pop("default", None)
    else:
        prop["anyOf"] = [*typed, {"type": "null"}]


def generate_body_openapi(model_name: str) -> dict[str, Any]:
    """The request body of /v1/generate for the OpenAPI page: JSON or a multipart form. `model_name` is
    the loaded model, the one name `model` may have."""
    model_rule = {"model": {"type": "string", "enum": [model_name]}}
    json_schema = body_schema(GenerateBody, model_rule, image_fields=("images", "image_uris"))
    form_schema = body_schema(GenerateBody, model_rule | {
        "images": {"type": "array", "items": {"type": "string", "format": "binary"}, "maxItems": MAX_REFERENCES},
        "image_uris": {"type": "string", "description": "A JSON array of URLs / data URIs."},
        "loras": {"type": "string", "description": 'A JSON array of {"path", "scale"}.'},
        "mask": {"type": "string", "format": "binary"}}, form=True)  # no needs_image: a condition on a form with a
    # file breaks schemathesis' fuzzer (tests/test_rest_fuzz.py); a mask without an image is a 422 naming images
    form_schema["properties"]["images"]["description"] = "Reference image files (0..4)."
    form_schema["properties"]["mask"]["description"] = "The inpainting mask file (white repaints, black keeps)."
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": json_schema},
        "multipart/form-data": {"schema": form_schema},
    }}}


def task_body_openapi() -> dict[str, Any]:
    """The request body of task creation for the OpenAPI page (the route reads it itself, after auth)."""
    schema = body_schema(TaskCreate, image_fields=("input_image",))
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def base64_image_limit(limits: Limits) -> int:
    """The most characters one reference image (or mask) can take as base64 (a data URI header included)."""
    return limits.max_image_bytes * 4 // 3 + 1024


def json_body_limit(limits: Limits) -> int:
    """The largest JSON body worth reading: every reference image and the mask as base64, plus room for the rest."""
    return (MAX_REFERENCES + 1) * base64_image_limit(limits) + 1024 * 1024


def form_body_limit(limits: Limits) -> int:
    """The largest form worth reading: the JSON limit (text fields), plus every reference image and the mask as
    files."""
    return json_body_limit(limits) + (MAX_REFERENCES + 1) * (limits.max_image_bytes + 64 * 1024)
