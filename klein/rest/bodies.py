"""Reading a REST request body, JSON or a multipart form, within its size limits: the one body reader
(`read_body`) and its one error mapping, so that every problem with a body is a 4xx naming `body` or
the field (400 an unreadable form, 413 too large, 415 neither JSON nor a form, 422 a value), never a 500.
Validation errors become one `detail` string that names the field and the value."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.types import Message

from ..config import Limits
from ..errors import InvalidRequest
from ..presets import MAX_REFERENCES
from ..request import check_reference_count
from .remote import redact_url
from .schemas import (
    BOOLEAN_FIELDS,
    IGNORED_FIELDS,
    INTEGER_FIELDS,
    NUMBER_FIELDS,
    base64_image_limit,
    form_body_limit,
    json_body_limit,
)

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
MAX_DEPTH = 8  # our bodies nest two deep (an object of lists of strings); deeper is never a request
SURROGATE = re.compile("[\ud800-\udfff]")
DIGITS = re.compile(r"-?[0-9]{1,20}")
NUMBER = re.compile(r"[-+]?([0-9]{1,40}\.?[0-9]{0,40}|\.[0-9]{1,40})([eE][-+]?[0-9]{1,3})?")
BOOLEANS = {"true": True, "false": False}


@dataclass(frozen=True)
class Uploads:
    """The files of a multipart form: the reference images in order, and the inpainting mask."""

    images: list[bytes] = field(default_factory=list)
    mask: bytes | None = None


async def read_body(request: Request, model: type[BaseModel], limits: Limits,
                    forms: bool = False) -> tuple[Any, Uploads]:
    """The body as `model` and the uploaded files (forms only, when `forms`)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    is_json = content_type == "application/json" or content_type.endswith("+json")
    if not is_json and not (forms and content_type in FORM_TYPES):
        accepted = "application/json or multipart/form-data" if forms else "application/json"
        raise HTTPException(415, f"Content-Type must be {accepted}.")
    try:
        if is_json:
            data, uploads = await _read_json(_limited(request, json_body_limit(limits))), Uploads()
        else:
            data, uploads = await _read_form(_limited(request, form_body_limit(limits)), limits)
    except RecursionError:
        raise InvalidRequest("body", "is nested too deeply") from None
    except MultiPartException as exc:  # what Starlette raises outside an app; inside one, HTTPException(400)
        raise _unreadable_form(exc.message) from None
    except HTTPException as exc:
        if exc.status_code == 400:
            raise _unreadable_form(str(exc.detail)) from None
        raise
    check_values(data)
    return parse_model(model, _typed_values(data, form=not is_json)), uploads


def _unreadable_form(reason: str) -> HTTPException:
    status = 413 if "maximum size" in reason else 400  # Starlette's "Part exceeded maximum size of ..."
    return HTTPException(status, f"body: the form could not be read ({reason})")


def _limited(request: Request, limit: int) -> Request:
    """`request` whose body stops at `limit` bytes (413 past it), declared or streamed."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body: {int(declared):,} bytes is over the limit of {limit:,} bytes")
    size = 0

    async def receive() -> Message:
        nonlocal size
        message = await request.receive()
        size += len(message.get("body", b""))
        if size > limit:
            raise HTTPException(413, f"body: over the limit of {limit:,} bytes")
        return message

    return Request(request.scope, receive)


async def _read_json(request: Request) -> dict:
    try:
        data = json.loads(await request.body())
    except ValueError:  # UnicodeDecodeError and an integer of over 4300 digits included
        raise InvalidRequest("body", "is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body", f"must be a JSON object, got {type(data).__name__}")
    return data


async def _read_form(request: Request, limits: Limits) -> tuple[dict, Uploads]:
    per_image = base64_image_limit(limits)  # a base64 data URI in a text field
    form = await request.form(max_files=64, max_fields=64, max_part_size=per_image * MAX_REFERENCES)
    try:
        files = [v for v in form.getlist("images") if not isinstance(v, str)]
        check_reference_count(len(files), "images")
        uploads = [await _read_upload(f, f"images[{i}]", limits) for i, f in enumerate(files)]
        masks = [v for v in form.getlist("mask") if not isinstance(v, str) or v]
        if len(masks) > 1:
            raise InvalidRequest("mask", f"{len(masks)} masks given; send one")
        mask = await _read_upload(masks[0], "mask", limits) if masks and not isinstance(masks[0], str) else None
        fields: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str) and v != "" and k != "images"}
        texts = [v for v in form.getlist("images") if isinstance(v, str) and v]
        if texts:
            fields["images"] = texts
        if "image_uris" in fields:
            fields["image_uris"] = _uri_list(form.getlist("image_uris"))
        if "loras" in fields:
            fields["loras"] = _json_field(fields["loras"], "loras", 'a JSON array of {"path", "scale"}')
        return fields, Uploads(uploads, mask)
    finally:
        await form.close()


def _json_field(text: str, field: str, what: str) -> Any:
    """A form field that carries JSON (a form has only text)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidRequest(field, f"is not valid JSON; send {what}") from None


def _typed_values(data: dict[str, Any], form: bool) -> dict[str, Any]:
    """Integer fields as integers where JSON Schema says they are: 5.0 in JSON, "5" in a form (whose values
    are text); in a form also "0.5" as a number and "true"/"false" as booleans. Anything else (true, 5.5,
    "five", "5" in JSON) stays, for validation to refuse and name."""
    typed = {k: _whole_number(v, form) if k in INTEGER_FIELDS else v for k, v in data.items()}
    if form:
        typed |= {k: float(v) for k, v in typed.items() if k in NUMBER_FIELDS and NUMBER.fullmatch(v)}
        typed |= {k: BOOLEANS[v.lower()] for k, v in typed.items() if k in BOOLEAN_FIELDS and v.lower() in BOOLEANS}
    return typed


def _whole_number(value: Any, form: bool) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return int(value) if form and isinstance(value, str) and DIGITS.fullmatch(value) else value


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
        except (ValueError, RecursionError):
            raise InvalidRequest("image_uris", "is not a valid JSON array of URLs or data URIs") from None
        if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
            raise InvalidRequest("image_uris", "must be a JSON array of strings (URLs or data URIs)")
        return parsed
    return texts


def check_values(data: dict) -> None:
    """Refuse what no field can hold and what would break later stages: nesting deeper than MAX_DEPTH,
    and unpaired surrogates (JSON's `\\ud800`), which are not Unicode text and cannot be encoded."""
    stack: list[tuple[str, Any, int]] = [(str(k), v, 1) for k, v in data.items()]
    for key in data:
        _check_text("body", f"the field name {_shown(key)}", key)
    while stack:
        name, value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidRequest("body", f"is nested more than {MAX_DEPTH} deep")
        if isinstance(value, str):
            _check_text(name, "", value)
        elif isinstance(value, list):
            stack.extend((f"{name}[{i}]", v, depth + 1) for i, v in enumerate(value))
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_text(name, f"the key {_shown(key)}", key)
                stack.append((f"{name}.{key}", item, depth + 1))


def _check_text(field: str, what: str, text: str) -> None:
    found = SURROGATE.search(text)
    if found:
        subject = f"{what} contains" if what else "contains"
        raise InvalidRequest(field, f"{subject} an unpaired surrogate (\\u{ord(found.group()):04x}); "
                                    "send valid Unicode text")


def _shown(key: str) -> str:
    return ascii(key if len(key) <= 40 else key[:40] + "...")


def parse_model(model: type[BaseModel], data: dict) -> Any:
    """`data` validated as `model`; fields in IGNORED_FIELDS are dropped first, other unknown fields refused."""
    try:
        return model.model_validate({k: v for k, v in data.items() if k not in IGNORED_FIELDS})
    except ValidationError as exc:
        errors = exc.errors()
        unknown = [i for i, e in enumerate(errors) if e.get("type") == "extra_forbidden"]
        for i in unknown:
            errors[i]["msg"] = "is not a field of this request"
        if unknown:  # the list of fields once, after the last unknown one
            errors[unknown[-1]]["msg"] += f"; its fields are {', '.join(model.model_fields)}"
        raise RequestValidationError(errors) from None


def validation_detail(errors: list[dict]) -> str:
    """Pydantic/FastAPI errors as one line: `field: message, got value; ...`."""
    parts = []
    for error in errors:
        if error.get("type") == "json_invalid":
            parts.append("body: is not valid JSON")
            continue
        loc = list(error.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path", "header"):  # FastAPI's location, not a field: only the
            loc = loc[1:]  # first (a LoRA has a field named path)
        name = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))
        name = name if len(name) <= 80 else name[:77] + "..."
        message = str(error.get("msg", "is invalid"))
        if error.get("type") not in ("missing", "extra_forbidden") and "input" in error:
            message += f", got {_short_repr(error['input'])}"
        parts.append(f"{name or 'body'}: {message}")
    return "; ".join(parts) or "The request is invalid."


def _short_repr(value: Any) -> str:
    text = repr(redact_url(value, 10**6) if isinstance(value, str) and "://" in value else value)
    return text if len(text) <= 80 else text[:77] + "..."
