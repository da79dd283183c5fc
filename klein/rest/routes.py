"""The REST routes, a thin adapter over RestApi (api.py): each reads its body, checks its key and
answers in the hosted Klein APIs' shapes.

    POST /v1/generate                                  sync: the image(s) in the response (batches.py: Accept)
    POST /v1/ai/text-to-image/flux-2-klein             async: a task id at once
    GET  /v1/ai/text-to-image/flux-2-klein             the caller's tasks, newest first
    GET  /v1/ai/text-to-image/flux-2-klein/{id}        one task
    GET  /v1/ai/text-to-image/flux-2-klein/{id}/images/{n}   a result image
    GET  /docs, /openapi.json                          this API's documentation

Any other method on these paths is a 405 whose Allow lists the path's methods (add_method_fallbacks).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse
from fastapi.routing import APIRoute
from starlette.routing import Route

from ..output.encode import MIME_TYPES
from ..presets import DEFAULT_OUTPUT_FORMAT
from .batches import ACCEPT_RULES, IMAGE_TYPES, JSON, MULTIPART, batch_json, headers, multipart, negotiate
from .bodies import read_body
from .schemas import (
    BatchResponse,
    ErrorBody,
    GenerateBody,
    GenerateResponse,
    TaskCreate,
    TaskEnvelope,
    TaskPage,
    generate_body_openapi,
    task_body_openapi,
)

log = logging.getLogger(__name__)
TASKS = "/v1/ai/text-to-image/flux-2-klein"
TITLE = "Klein Studio REST API"
DISCONNECT_POLL = 0.25  # seconds between checks that a sync client is still there
RAW_TYPES = IMAGE_TYPES
ERROR_TEXT = {
    400: "The multipart form could not be read",
    401: "Missing or invalid API key",
    404: "No such task (or image) for this key",
    406: "The Accept header and output_format disagree, or Accept allows no answer for num_images over 1",
    413: "The body (or a form field) is over the size limit",
    415: "The Content-Type is not one this route reads",
    422: "A field has a value that cannot be used (the detail names it); also moderation refusals",
    500: "Unexpected server error",
    503: "Too many requests waiting; see Retry-After",
    504: "Generation took longer than the time limit",
}
SEED_LIST = {"type": "string", "pattern": "^[0-9]+(,[0-9]+)*$"}
RAW_HEADERS = {  # the answer's headers when it is the image itself (Accept: image/...), multipart or a batch's JSON
    "X-Klein-Seed": {"description": "The seed used (with several images, the first's: image i used seed + i).",
                     "schema": {"type": "string", "pattern": "^[0-9]+$"}},
    "X-Klein-Seeds": {"description": "The seeds of the images in the answer, comma-separated, in order.",
                      "schema": SEED_LIST},
    "X-Klein-Moderated-Seeds": {"description": "The seeds of the images moderation left out, comma-separated; "
                                "absent when none was.", "schema": SEED_LIST},
    "X-Klein-Workflow": {"description": "text_to_image, edit, multi_reference or inpaint.",
                         "schema": {"type": "string"}},
    "X-Klein-Enhanced-Prompt": {"description": "With prompt_upsampling: the rewritten prompt, UTF-8 percent-encoded "
                                "(decodeURIComponent, urllib.parse.unquote).", "schema": {"type": "string"}},
}
ERROR_HEADERS = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    503: {"Retry-After": {"description": "Seconds until the backlog is likely to have room: the measured time of "
                          "a generation (or task) times the ones ahead.", "required": True,
                          "schema": {"type": "integer", "minimum": 1}}},
}


BINARY = {"type": "string", "format": "binary"}
PARTS = {"type": "string", "format": "binary", "description": "One part per image, each with its own Content-Type "
         "and X-Klein-Seed header."}
GENERATE_DOC = f"""Generate 1..4 images and answer with them.

The body is JSON or a multipart form (`images` as uploaded files). The workflow follows the number of
reference images: 0 text-to-image, 1 edit, 2..4 multi-reference; with a `mask`, inpainting of the first
image. With `num_images` n, image i uses seed + i; an image refused by moderation is left out and its
seed reported (`moderated_seeds`, X-Klein-Moderated-Seeds), and when every image is refused the answer
is the usual 422. The answer is JSON with the image in base64 (one image), JSON with `images` (several),
the image itself, or multipart/mixed; the seed, the images' seeds, the workflow and any enhanced prompt
also come in X-Klein-* headers with the image itself, with multipart/mixed and with several images' JSON.

{ACCEPT_RULES}
"""


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses a route answers, each `{"detail": "..."}`."""
    return {code: {"model": ErrorBody, "description": ERROR_TEXT[code],
                   **({"headers": ERROR_HEADERS[code]} if code in ERROR_HEADERS else {})} for code in codes}


def image_url(base_url: str, task_id: str, index: int) -> str:
    return f"{base_url.rstrip('/')}{TASKS}/{task_id}/images/{index}"


def add_routes(router: APIRouter, api: Any, require_key: Callable) -> None:
    """Every REST route on `router`, each depending on `require_key`; `api` is the RestApi (api.py) they
    call, passed in so that this module need not import the one that imports it."""

    @router.post("/v1/generate", response_model=GenerateResponse | BatchResponse, tags=["sync"],
                 openapi_extra=generate_body_openapi(api.engine.model.spec.name), description=GENERATE_DOC,
                 responses={200: {"content": {**{t: {"schema": BINARY} for t in RAW_TYPES},
                                              "multipart/mixed": {"schema": PARTS}}, "headers": RAW_HEADERS},
                            **error_responses(400, 406, 413, 415, 422, 503, 504)})
    async def generate(request: Request, owner: str = Depends(require_key)) -> Response:
        body, uploads = await read_body(request, GenerateBody, api.engine.limits, forms=True)
        answer = negotiate(request.headers.get("accept"), body.num_images)
        raw = answer if answer in RAW_TYPES.values() else None
        if raw and body.output_format and body.output_format.lower().replace("jpg", "jpeg") != raw:
            raise HTTPException(406, f"output_format {body.output_format!r} does not match Accept: image/{raw}")
        fmt = body.output_format or raw or DEFAULT_OUTPUT_FORMAT
        with api.sync_slot(body.num_images):
            batch = await until_disconnected(request, api.generate_sync, body, uploads, fmt)
        if answer == MULTIPART:
            content, content_type = multipart(batch.results)
            return Response(content, media_type=content_type, headers=headers(batch))
        if raw:
            return Response(batch.results[0].data, media_type=batch.results[0].mime_type, headers=headers(batch))
        if answer == JSON and body.num_images > 1:
            return JSONResponse(batch_json(batch), headers=headers(batch))
        result = batch.results[0]
        return JSONResponse(GenerateResponse(
            image=base64.b64encode(result.data).decode(), mime_type=result.mime_type, seed=result.seed,
            width=result.width, height=result.height, model=result.model, workflow=result.workflow.value,
            output_format=result.output_format, timings_ms=result.timings_ms,
            loras=result.loras or None, enhanced_prompt=result.enhanced_prompt).model_dump(exclude_none=True))

    @router.post(TASKS, response_model=TaskEnvelope, response_model_exclude_none=True, tags=["tasks"],
                 openapi_extra=task_body_openapi(), responses=error_responses(413, 415, 422, 503))
    async def create_task(request: Request, owner: str = Depends(require_key)) -> dict:
        """Queue a generation and answer at once with its task id (status CREATED).

        Up to four input images (base64, data URIs or http(s) URLs) choose the workflow as for
        /v1/generate; with a `mask`, input_image is inpainted. Poll the task, or give `webhook_url` to be
        told of each status change.
        """
        # Read here, after the key is checked: a declared body parameter is parsed before auth.
        body, _ = await read_body(request, TaskCreate, api.engine.limits)
        return await run_in_threadpool(api.submit_task, body, owner, str(request.base_url))

    @router.get(TASKS, response_model=TaskPage, response_model_exclude_none=True, tags=["tasks"],
                responses=error_responses(422))
    def list_tasks(request: Request, page: int = Query(1, ge=1, le=1_000_000),
                   per_page: int = Query(20, ge=1, le=100), owner: str = Depends(require_key)) -> dict:
        """The caller's tasks (this API key's), newest first, a page at a time."""
        tasks, total = api.tasks.store.page(owner, (page - 1) * per_page, per_page)
        base = str(request.base_url)
        return {"data": [t.public(base, image_url) for t in tasks],
                "meta": {"current_page": page, "per_page": per_page, "total": total,
                         "last_page": max(1, -(-total // per_page))}}

    @router.get(TASKS + "/{task_id}", response_model=TaskEnvelope, response_model_exclude_none=True, tags=["tasks"],
                responses=error_responses(404))
    def get_task(task_id: str, request: Request, owner: str = Depends(require_key)) -> dict:
        """One task: CREATED, IN_PROGRESS, COMPLETED (with `generated` image URLs) or FAILED (with `error`)."""
        return {"data": api.task(owner, task_id).public(str(request.base_url), image_url)}

    @router.get(TASKS + "/{task_id}/images/{index}", tags=["tasks"], response_class=FileResponse,
                responses={200: {"content": {t: {} for t in RAW_TYPES}}, **error_responses(404, 422)})
    def task_image(task_id: str, index: int, owner: str = Depends(require_key)) -> FileResponse:
        """A result image of a COMPLETED task, as listed in its `generated`."""
        path = api.tasks.result_file(api.task(owner, task_id), index)
        if path is None or not path.is_file():
            raise HTTPException(404, f"task {task_id} has no image {index}")
        return FileResponse(path, media_type=MIME_TYPES[path.suffix.lstrip(".").replace("jpg", "jpeg")])

    @router.get("/openapi.json", include_in_schema=False)
    def openapi() -> JSONResponse:
        return JSONResponse(api.openapi())

    @router.get("/docs", include_in_schema=False)
    def docs(request: Request) -> Response:
        return get_swagger_ui_html(openapi_url=request.scope.get("root_path", "") + "/openapi.json",
                                   title=TITLE)

    add_method_fallbacks(router)


def add_method_fallbacks(router: APIRouter) -> None:
    """After every route, one per REST path that answers any other method with a 405 whose Allow lists
    every method of the path. Without it Starlette answers from the first route whose path matches, so
    the task path (POST, then GET) would say `Allow: POST`."""
    methods: dict[str, set[str]] = {}
    for route in router.routes:
        if isinstance(route, APIRoute) and route.include_in_schema:
            methods.setdefault(route.path, set()).update(route.methods)
    for path, allowed in methods.items():
        router.routes.append(Route(path, MethodNotAllowed(path, ", ".join(sorted(allowed))), include_in_schema=False))


class MethodNotAllowed:
    """An ASGI app answering 405 with Allow; as an app (not a function) its Route matches every method."""

    def __init__(self, path: str, allow: str):
        self.path, self.allow = path, allow

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        detail = f"{scope['method']} is not allowed on {self.path}; use {self.allow}"
        await JSONResponse({"detail": detail}, status_code=405, headers={"Allow": self.allow})(scope, receive, send)


async def until_disconnected(request: Request, fn: Callable, *args: Any) -> Any:
    """Run fn(*args, cancel) in a worker thread; if the client goes away meanwhile, set `cancel`, so the
    GPU lane is not spent on an image nobody will receive."""
    cancel = threading.Event()

    async def watch() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(DISCONNECT_POLL)
        log.info("client of %s disconnected: cancelling its generation", request.url.path)
        cancel.set()

    watcher = asyncio.ensure_future(watch())
    try:
        return await run_in_threadpool(fn, *args, cancel)
    finally:
        watcher.cancel()

