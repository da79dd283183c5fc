"""The REST API compatible with the hosted Klein APIs: a thin adapter over the engine (routes.py has
the routes), with the task worker and the webhook sender it needs.

Every error is `{"detail": "..."}` with the status of the engine's error type (errors.py).
The routes are served by Gradio's own FastAPI app (app.py passes `RestApi.app_kwargs()` to launch)
or, for tests, by `RestApi.create_app()`.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware

from ..config import MODELS, ApiKeys, RestSettings
from ..errors import InvalidRequest, KleinError, QueueFull
from ..generation.result import GenerationBatch
from ..images import load_reference
from ..presets import MAX_NUM_IMAGES
from ..request import GenerationRequest, check_reference_count
from . import batches
from .auth import key_dependency
from .bodies import Uploads, validation_detail
from .gate import KeyGate
from .remote import UrlPolicy, reference_bytes
from .routes import TITLE, add_routes, error_responses, image_url
from .schemas import INPUT_FIELDS, GenerateBody, TaskCreate
from .tasks import MovingAverage, TaskService, work_seconds
from .webhooks import WebhookOutbox, WebhookSender

log = logging.getLogger(__name__)
ERRORS = error_responses(401, 500)  # every route's; each route adds its own (routes.py)


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
            except StarletteHTTPException as exc:  # fastapi's HTTPException is one, and Starlette raises its own
                return error_response(exc.status_code, str(exc.detail), exc.headers)
            except QueueFull as exc:
                retry = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
                return error_response(exc.http_status, str(exc), retry)
            except KleinError as exc:
                return error_response(exc.http_status, str(exc))
            except Exception:
                log.exception("unexpected error in %s %s", request.method, request.url.path)
                return error_response(500, "Internal server error; the server log has the details.")

        return route


class RestApi:
    """The REST routes over one engine, with the task worker and webhook sender they need."""

    def __init__(self, engine, settings: RestSettings):
        self.engine, self.settings = engine, settings
        self.shutdown_grace = settings.shutdown_grace
        self.keys = ApiKeys(settings.api_keys)
        self.policy = UrlPolicy(settings.allow_private_urls, settings.fetch_timeout)
        webhook_policy = UrlPolicy(settings.allow_private_urls, settings.webhook_timeout, max_redirects=0)
        self.webhooks = WebhookSender(settings.webhook_secret, webhook_policy, settings.webhook_attempts,
                                      settings.webhook_backoff, WebhookOutbox(settings.tasks_db))
        self.work = MovingAverage()  # seconds one image's generation works (sync and task ones): the sync Retry-After
        self.tasks = TaskService(engine, settings, self.webhooks, image_url, work=self.work)
        self.router = APIRouter(route_class=RestRoute, responses=ERRORS)
        add_routes(self.router, self, key_dependency(self.keys))
        self._openapi: dict | None = None
        self._sync_slots = threading.BoundedSemaphore(settings.sync_backlog)
        self._sync_images, self._sync_lock = 0, threading.Lock()  # the images the requests holding places make

    @asynccontextmanager
    async def lifespan(self, _app: Any):
        """Start the task worker and the webhook sender with the server; stop them with it (the running task
        gets `shutdown_grace` seconds, then the webhook sender flushes what is due)."""
        self.webhooks.start()
        self.tasks.start()
        try:
            yield
        finally:
            await run_in_threadpool(self.tasks.stop, self.shutdown_grace)
            await run_in_threadpool(self.webhooks.stop)

    def app_kwargs(self, gate: bool = False) -> dict[str, Any]:
        """For gr.Blocks.launch(app_kwargs=...): the REST routes and docs in Gradio's own app, and with
        `gate` (keys set, page not public) KeyGate in front of every route (gate.py)."""
        kwargs = {"routes": list(self.router.routes), "openapi_url": None, "docs_url": None, "redoc_url": None,
                  "lifespan": self.lifespan}
        if gate and self.keys:
            kwargs["middleware"] = [Middleware(KeyGate, keys=self.keys)]
        return kwargs

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
    def sync_slot(self, images: int = 1) -> Iterator[None]:
        """One of the `sync_backlog` places for a sync request (of `images` images) running or waiting for the
        GPU lane.

        Each waiting request holds a worker thread that the other routes (and Gradio) share, so past
        the limit a request is refused at once with a 503 instead of waiting; its Retry-After is the work of
        the images the requests holding places make (a batch of n counts n).
        """
        images = min(max(images, 1), MAX_NUM_IMAGES)  # a count out of range is refused (422) once it runs
        if not self._sync_slots.acquire(blocking=False):
            with self._sync_lock:
                ahead = self._sync_images
            raise QueueFull(f"{self.settings.sync_backlog} requests are already running or waiting; try again "
                            "shortly, or use the task API.", retry_after=self.work.seconds_for(ahead))
        with self._sync_lock:
            self._sync_images += images
        try:
            yield
        finally:
            with self._sync_lock:
                self._sync_images -= images
            self._sync_slots.release()

    def generate_sync(self, body: GenerateBody, uploads: Uploads, output_format: str,
                      cancel: threading.Event | None = None) -> GenerationBatch:
        """Validate, decode the references and the mask and run the engine (in a worker thread); `cancel`
        stops it between denoising steps."""
        self._check_model(body.model)
        limits = self.engine.limits
        if uploads.images:
            named = [(f"images[{i}]", data) for i, data in enumerate(uploads.images)]
        else:
            field, refs = ("images", body.images) if body.images else ("image_uris", body.image_uris or [])
            check_reference_count(len(refs), field)
            named = [(f"{field}[{i}]", self._reference(v, f"{field}[{i}]")) for i, v in enumerate(refs)]
        mask = uploads.mask if uploads.mask is not None else body.mask
        # An inpaint's image keeps its size: outside the mask the result is the input, pixel for pixel.
        images = [load_reference(data, name, limits, full_size=mask is not None and i == 0)
                  for i, (name, data) in enumerate(named)]
        request = GenerationRequest(
            prompt=body.prompt, images=tuple(images), aspect_ratio=body.aspect_ratio, resolution=body.resolution,
            seed=body.seed, width=body.width, height=body.height, output_format=output_format,
            safety_tolerance=body.safety_tolerance, loras=[lora.model_dump() for lora in body.loras or ()],
            mask=self._mask(mask, named[0][1] if named else None, "images")[1], strength=body.strength,
            enhance_prompt=body.prompt_upsampling, num_images=body.num_images, limits=limits)
        batch = batches.run(self.engine, request, deadline=time.monotonic() + self.settings.generation_timeout,
                            cancel=cancel, keep_file=False)
        self.work.add(work_seconds(batch.results[0].timings_ms) / request.num_images)
        return batch

    def _reference(self, value: str, field: str) -> bytes:
        return reference_bytes(value, field, self.engine.limits, self.policy, self.settings.allow_remote_images)

    def _mask(self, source: str | bytes | None, image: bytes | None,
              image_field: str) -> tuple[bytes | None, Image.Image | None]:
        """The mask's bytes and image (None, None without one), checked against the image painted on (`image`,
        as sent): a mask without that image names `image_field`, one of another size names `mask`."""
        if source is None:
            return None, None
        if image is None:
            raise InvalidRequest(image_field, "inpainting needs the image to paint on as well as the mask; send it "
                                 f"as the first of {image_field}")
        data = source if isinstance(source, bytes) else self._reference(source, "mask")
        mask = load_reference(data, "mask", self.engine.limits, mask=True, full_size=True)
        mask_size, image_size = _sent_size(data), _sent_size(image)
        if mask_size != image_size:
            raise InvalidRequest("mask", f"is {mask_size[0]}x{mask_size[1]}; it must be the image's size, "
                                 f"{image_size[0]}x{image_size[1]}")
        return data, mask

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
        images = [load_reference(data, name, limits, full_size=body.mask is not None and name == "input_image")
                  for (name, _), data in zip(named, inputs)]
        painted = inputs[0] if body.input_image else None  # inpainting paints on input_image itself
        mask_data, mask = self._mask(body.mask, painted, "input_image")
        params = body.model_dump(include={"prompt", "aspect_ratio", "resolution", "seed", "output_format",
                                          "safety_tolerance", "width", "height", "loras", "strength",
                                          "num_images"})
        params["enhance_prompt"] = body.prompt_upsampling
        request = GenerationRequest(images=tuple(images), mask=mask, limits=limits, **params)
        self.engine.check_request(request)  # a refused prompt or image is a 422 now, and never stored
        params["output_format"] = request.output_format
        if body.webhook_url is not None:  # "" too: a webhook asked for and unusable is refused, not dropped
            self.webhooks.check(body.webhook_url)
        task = self.tasks.submit(owner, params, inputs, body.webhook_url, base_url, mask=mask_data)
        return {"data": task.public(base_url, image_url)}

    def task(self, owner: str, task_id: str):
        task = self.tasks.get(owner, task_id)
        if task is None:
            raise HTTPException(404, f"task {task_id!r} not found (unknown, expired, or another key's)")
        return task


def _sent_size(data: bytes) -> tuple[int, int]:
    """An image's size as its sender sees it (upright, before any shrinking), from its header; the data has been
    decoded once already, so it opens."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        turned = image.getexif().get(0x0112) in (5, 6, 7, 8)  # EXIF orientations that swap the sides
    return (height, width) if turned else (width, height)


DESCRIPTION = """\
Klein Studio's REST API, compatible with the hosted Klein APIs. Authenticate with an API key from
`KLEIN_API_KEYS` in any of `Authorization: Bearer KEY`, `x-freepik-api-key: KEY`, `x-key: KEY`.
Errors are `{"detail": "..."}`: 400 (an unreadable form), 401 (key), 404 (no such task), 405 (method;
see Allow), 406 (Accept), 413 (body size), 415 (Content-Type), 422 (a field, unknown fields included;
the detail names it), 503 (busy; see Retry-After), 504 (time limit), 500 (unexpected). Task webhooks
are signed: `X-Klein-Signature: sha256=HMAC-SHA256(KLEIN_WEBHOOK_SECRET, "<X-Klein-Timestamp>.<body>")`.
"""
