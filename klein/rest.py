"""FastAPI routes compatible with the hosted Klein APIs: a thin adapter over the engine.

    POST /v1/generate                                  sync: the image in the response
    POST /v1/ai/text-to-image/flux-2-klein             async: a task id at once
    GET  /v1/ai/text-to-image/flux-2-klein             the caller's tasks, newest first
    GET  /v1/ai/text-to-image/flux-2-klein/{id}        one task
    GET  /v1/ai/text-to-image/flux-2-klein/{id}/images/{n}   a result image
    GET  /docs, /openapi.json                          this API's documentation

Every error is `{"detail": "..."}` with the status of the engine's error type (errors.py).
The routes are served by Gradio's own FastAPI app (app.py passes `RestApi.app_kwargs()` to launch)
or, for tests, by `RestApi.create_app()`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi.routing import APIRoute

from .auth import ApiKeys
from .config import MODELS
from .encode import MIME_TYPES
from .errors import InvalidRequest, KleinError, QueueFull
from .images import load_reference
from .remote import UrlPolicy, reference_bytes
from .request import DEFAULT_OUTPUT_FORMAT, GenerationRequest
from .rest_config import RestSettings
from .rest_models import (
    INPUT_FIELDS,
    ErrorBody,
    GenerateBody,
    GenerateResponse,
    TaskCreate,
    TaskEnvelope,
    TaskPage,
    generate_body_openapi,
    json_body_limit,
    parse_model,
    read_generate_body,
    read_json_object,
    task_body_openapi,
    validation_detail,
)
from .tasks import TaskService, WebhookOutbox
from .webhooks import WebhookSender

log = logging.getLogger(__name__)
TITLE = "Klein Studio REST API"
TASKS = "/v1/ai/text-to-image/flux-2-klein"
DISCONNECT_POLL = 0.25  # seconds between checks that a sync client is still there
RAW_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in ((401, "Missing or invalid API key"), (422, "A field has a value that cannot be used"),
                       (500, "Unexpected server error"))
}


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class RestRoute(APIRoute):
    """Turns every error of a REST route into `{"detail": "..."}`, whatever app serves the route."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return error_response(422, validation_detail(list(exc.errors())))
            except HTTPException as exc:
                return error_response(exc.status_code, str(exc.detail), exc.headers)
            except KleinError as exc:
                retry = getattr(exc, "retry_after", None)
                return error_response(exc.http_status, str(exc), {"Retry-After": str(retry)} if retry else None)
            except Exception:
                log.exception("unexpected error in %s %s", request.method, request.url.path)
                return error_response(500, "Internal server error; the server log has the details.")

        return route


def image_url(base_url: str, task_id: str, index: int) -> str:
    return f"{base_url.rstrip('/')}{TASKS}/{task_id}/images/{index}"


class RestApi:
    """The REST routes over one engine, with the task worker and webhook sender they need."""

    def __init__(self, engine, settings: RestSettings):
        self.engine, self.settings = engine, settings
        self.keys = ApiKeys(settings.api_keys)
        self.policy = UrlPolicy(settings.allow_private_urls, settings.fetch_timeout)
        webhook_policy = UrlPolicy(settings.allow_private_urls, settings.webhook_timeout, max_redirects=0)
        self.webhooks = WebhookSender(settings.webhook_secret, webhook_policy, settings.webhook_attempts,
                                      settings.webhook_backoff, WebhookOutbox(settings.tasks_db))
        self.tasks = TaskService(engine, settings, self.webhooks, image_url)
        self.router = APIRouter(route_class=RestRoute, responses=ERRORS)
        self._add_routes(self.router, self.keys.dependency())
        self._openapi: dict | None = None
        self._sync_slots = threading.BoundedSemaphore(settings.sync_backlog)

    @asynccontextmanager
    async def lifespan(self, _app: Any):
        """Start the task worker and the webhook sender with the server; stop them with it."""
        self.webhooks.start()
        self.tasks.start()
        try:
            yield
        finally:
            await run_in_threadpool(self.tasks.stop)
            await run_in_threadpool(self.webhooks.stop)

    def app_kwargs(self) -> dict[str, Any]:
        """For gr.Blocks.launch(app_kwargs=...): the REST routes and docs in Gradio's own app."""
        return {"routes": list(self.router.routes), "openapi_url": None, "docs_url": None, "redoc_url": None,
                "lifespan": self.lifespan}

    def create_app(self) -> FastAPI:
        """A FastAPI app with only the REST API (tests, or to mount elsewhere)."""
        return FastAPI(title=TITLE, **self.app_kwargs())

    def openapi(self) -> dict:
        if self._openapi is None:
            routes = [r for r in self.router.routes if getattr(r, "include_in_schema", False)]
            self._openapi = get_openapi(title=TITLE, version="1", routes=routes, description=DESCRIPTION)
        return self._openapi

    # -- sync -------------------------------------------------------------------------------------

    @contextmanager
    def sync_slot(self) -> Iterator[None]:
        """One of the `sync_backlog` places for a sync request running or waiting for the GPU lane.

        Each waiting request holds a worker thread that the other routes (and Gradio) share, so past
        the limit a request is refused at once with a 503 instead of waiting.
        """
        if not self._sync_slots.acquire(blocking=False):
            busy = QueueFull(f"{self.settings.sync_backlog} requests are already running or waiting; try again "
                             "shortly, or use the task API.")
            busy.retry_after = 1  # type: ignore[attr-defined]
            raise busy
        try:
            yield
        finally:
            self._sync_slots.release()

    def generate_sync(self, body: GenerateBody, uploads: list[bytes], output_format: str,
                      cancel: threading.Event | None = None):
        """Validate, decode the references and run the engine (in a worker thread); `cancel` stops it
        between denoising steps."""
        self._check_model(body.model)
        limits = self.engine.limits
        if uploads:
            images = [load_reference(data, f"images[{i}]", limits) for i, data in enumerate(uploads)]
        else:
            field, refs = ("images", body.images) if body.images else ("image_uris", body.image_uris or [])
            if len(refs) > limits.max_references:
                raise InvalidRequest(field, f"{len(refs)} reference images given, "
                                     f"at most {limits.max_references} are supported")
            images = [load_reference(self._reference(v, f"{field}[{i}]"), f"{field}[{i}]", limits)
                      for i, v in enumerate(refs)]
        request = GenerationRequest(
            prompt=body.prompt, images=tuple(images), aspect_ratio=body.aspect_ratio, resolution=body.resolution,
            seed=body.seed, width=body.width, height=body.height, output_format=output_format,
            safety_tolerance=body.safety_tolerance, limits=limits)
        return self.engine.generate(request, deadline=time.monotonic() + self.settings.generation_timeout,
                                    cancel=cancel, keep_file=False)

    def _reference(self, value: str, field: str) -> bytes:
        return reference_bytes(value, field, self.engine.limits, self.policy, self.settings.allow_remote_images)

    def _check_model(self, name: str | None) -> None:
        loaded = self.engine.model.spec.name
        if name is None or name == loaded:
            return
        if name in MODELS:
            raise InvalidRequest("model", f"{name!r} is not loaded on this server; it runs {loaded!r}. "
                                 f"Send model={loaded!r} or leave model out.")
        raise InvalidRequest("model", f"{name!r} is not a model name; use one of {', '.join(MODELS)} "
                             f"(this server runs {loaded!r})")

    # -- tasks ------------------------------------------------------------------------------------

    def submit_task(self, body: TaskCreate, owner: str, base_url: str) -> dict:
        """Validate and moderate everything now (a 422 before the task exists), then store it for the worker."""
        limits = self.engine.limits
        named = [(name, getattr(body, name)) for name in INPUT_FIELDS if getattr(body, name)]
        inputs = [self._reference(value, name) for name, value in named]
        images = [load_reference(data, name, limits) for (name, _), data in zip(named, inputs)]
        params = body.model_dump(include={"prompt", "aspect_ratio", "resolution", "seed", "output_format",
                                          "safety_tolerance", "width", "height"})
        request = GenerationRequest(images=tuple(images), limits=limits, **params)
        self.engine.check_request(request)  # a refused prompt or image is a 422 now, and never stored
        params["output_format"] = request.output_format
        if body.webhook_url:
            self.webhooks.check(body.webhook_url)
        task = self.tasks.submit(owner, params, inputs, body.webhook_url, base_url)
        return {"data": task.public(base_url, image_url)}

    def _add_routes(self, router: APIRouter, require_key: Callable) -> None:
        api = self

        @router.post("/v1/generate", response_model=GenerateResponse, openapi_extra=generate_body_openapi(),
                     tags=["sync"], responses={200: {"content": {t: {} for t in RAW_TYPES}},
                                               503: {"model": ErrorBody, "description": "Too many requests waiting"},
                                               504: {"model": ErrorBody, "description": "Generation timed out"}})
        async def generate(request: Request, owner: str = Depends(require_key)) -> Response:
            """Generate one image and answer with it.

            The body is JSON or a multipart form (`images` as uploaded files). The workflow follows the
            number of reference images: 0 text-to-image, 1 edit, 2..4 multi-reference. The answer is JSON
            with the image in base64, or the image itself with `Accept: image/png` or `image/jpeg`.
            """
            body, uploads = await read_generate_body(request, api.engine.limits)
            raw = _raw_format(request.headers.get("accept"))
            if raw and body.output_format and body.output_format.lower().replace("jpg", "jpeg") != raw:
                raise HTTPException(406, f"output_format {body.output_format!r} does not match Accept: image/{raw}")
            fmt = body.output_format or raw or DEFAULT_OUTPUT_FORMAT
            with api.sync_slot():
                result = await until_disconnected(request, api.generate_sync, body, uploads, fmt)
            if raw:
                return Response(result.data, media_type=result.mime_type,
                                headers={"X-Klein-Seed": str(result.seed), "X-Klein-Workflow": result.workflow.value})
            return JSONResponse(GenerateResponse(
                image=base64.b64encode(result.data).decode(), mime_type=result.mime_type, seed=result.seed,
                width=result.width, height=result.height, model=result.model, workflow=result.workflow.value,
                output_format=result.output_format, timings_ms=result.timings_ms).model_dump())

        @router.post(TASKS, response_model=TaskEnvelope, response_model_exclude_none=True, tags=["tasks"],
                     openapi_extra=task_body_openapi(),
                     responses={503: {"model": ErrorBody, "description": "The backlog is full; see Retry-After"}})
        async def create_task(request: Request, owner: str = Depends(require_key)) -> dict:
            """Queue a generation and answer at once with its task id (status CREATED).

            Up to four input images (base64, data URIs or http(s) URLs) choose the workflow as for
            /v1/generate. Poll the task, or give `webhook_url` to be told of each status change.
            """
            # Read here, after the key is checked: a declared body parameter is parsed before auth.
            body = parse_model(TaskCreate, await read_json_object(request, json_body_limit(api.engine.limits)))
            return await run_in_threadpool(api.submit_task, body, owner, str(request.base_url))

        @router.get(TASKS, response_model=TaskPage, response_model_exclude_none=True, tags=["tasks"])
        def list_tasks(request: Request, page: int = Query(1, ge=1, le=1_000_000),
                       per_page: int = Query(20, ge=1, le=100), owner: str = Depends(require_key)) -> dict:
            """The caller's tasks (this API key's), newest first, a page at a time."""
            tasks, total = api.tasks.store.page(owner, (page - 1) * per_page, per_page)
            base = str(request.base_url)
            return {"data": [t.public(base, image_url) for t in tasks],
                    "meta": {"current_page": page, "per_page": per_page, "total": total,
                             "last_page": max(1, -(-total // per_page))}}

        @router.get(TASKS + "/{task_id}", response_model=TaskEnvelope, response_model_exclude_none=True, tags=["tasks"],
                    responses={404: {"model": ErrorBody, "description": "No such task for this key"}})
        def get_task(task_id: str, request: Request, owner: str = Depends(require_key)) -> dict:
            """One task: CREATED, IN_PROGRESS, COMPLETED (with `generated` image URLs) or FAILED (with `error`)."""
            return {"data": api._task(owner, task_id).public(str(request.base_url), image_url)}

        @router.get(TASKS + "/{task_id}/images/{index}", tags=["tasks"], response_class=FileResponse,
                    responses={200: {"content": {t: {} for t in RAW_TYPES}},
                               404: {"model": ErrorBody, "description": "No such image"}})
        def task_image(task_id: str, index: int, owner: str = Depends(require_key)) -> FileResponse:
            """A result image of a COMPLETED task, as listed in its `generated`."""
            path = api.tasks.result_file(api._task(owner, task_id), index)
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

    def _task(self, owner: str, task_id: str):
        task = self.tasks.get(owner, task_id)
        if task is None:
            raise HTTPException(404, f"task {task_id!r} not found (unknown, expired, or another key's)")
        return task


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


def _raw_format(accept: str | None) -> str | None:
    """The image format asked for by Accept, or None for JSON (the first known type wins)."""
    for part in (accept or "").split(","):
        media = part.split(";")[0].strip().lower()
        if media in RAW_TYPES:
            return RAW_TYPES[media]
        if media in ("application/json", "*/*", "application/*"):
            return None
    return None


DESCRIPTION = """\
Klein Studio's REST API, compatible with the hosted Klein APIs. Authenticate with an API key from
`KLEIN_API_KEYS` in any of `Authorization: Bearer KEY`, `x-freepik-api-key: KEY`, `x-key: KEY`.
Errors are `{"detail": "..."}`: 401 (key), 422 (a field; the detail names it), 503 (busy),
504 (time limit), 500 (unexpected). Task webhooks are signed: `X-Klein-Signature: sha256=HMAC-SHA256(
KLEIN_WEBHOOK_SECRET, "<X-Klein-Timestamp>.<body>")`.
"""
