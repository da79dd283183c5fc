"""A worker: one Ray Serve replica holding one Engine (one cached pipeline), one generation at a time.

The front (workers.py) deploys `KleinWorker` and talks to it in plain data: the request's fields and
its reference images as encoded bytes go in; events come out of a stream: `started` (which worker,
its process), `progress` (step, total) after each denoising step, then `result` (every image of the
request's batch, encoded here, with its info, and the seeds moderation left out) or `error` (a
KleinError's type and message, rebuilt by the front).

Cancelling the stream (the front's Cancel or deadline) raises CancelledError at the generator's
next await; the Engine is then told to stop between steps, and the replica is free once it has.
This module imports ray only inside a replica (its name), so it loads without Ray.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from PIL import Image

from ..config import Limits, Settings
from ..errors import (
    ContentModerated,
    GenerationCancelled,
    GenerationError,
    GenerationTimeout,
    InvalidRequest,
    KleinError,
    ModelLoadError,
    QueueFull,
    RequestModerated,
)
from ..images import decode_image_bytes
from ..request import GenerationRequest

if TYPE_CHECKING:
    from .engine import GenerationBatch

log = logging.getLogger(__name__)

STARTED, PROGRESS, RESULT, ERROR = "started", "progress", "result", "error"
NOT_SENT = ("images", "mask", "limits")  # images travel as bytes; limits are the worker's own Settings'
RESULT_NOT_SENT = ("image", "path", "timings_ms")  # the bytes are the image; the front writes the file
ERROR_TYPES = {cls.__name__: cls for cls in (ContentModerated, GenerationCancelled, GenerationError,
                                             GenerationTimeout, ModelLoadError, QueueFull, RequestModerated)}


# -- the wire format (both sides) -------------------------------------------------------------------

def payload_for(request: GenerationRequest, seconds_left: float | None) -> dict[str, Any]:
    """A request as plain data: its fields, its references as lossless PNG bytes (the same pixels reach
    the model as in one process), and the seconds left before its deadline (clocks differ by machine)."""
    fields = {f.name: getattr(request, f.name) for f in dataclasses.fields(request) if f.name not in NOT_SENT}
    mask = png_bytes(request.mask) if request.mask is not None else None
    return {"fields": fields, "images": [png_bytes(image) for image in request.images], "mask": mask,
            "seconds_left": seconds_left}


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # fast: the bytes cross a local network at most
    return buffer.getvalue()


def request_from_payload(payload: dict[str, Any], limits: Limits) -> GenerationRequest:
    """The worker's side of payload_for: decode the references (naming their fields) and validate."""
    images = payload["images"]
    names = ["image"] if len(images) == 1 else [f"images[{i}]" for i in range(len(images))]
    mask = payload.get("mask")
    # An inpaint's image and mask keep their size (the front read them whole); references are shrunk as ever.
    decoded = tuple(decode_image_bytes(data, name, limits, full_size=mask is not None and index == 0)
                    for index, (name, data) in enumerate(zip(names, images)))
    mask_image = decode_image_bytes(mask, "mask", limits, mask=True, full_size=True) if mask is not None else None
    return GenerationRequest(images=decoded, mask=mask_image, limits=limits, **payload["fields"])


def result_event(batch: GenerationBatch, worker_ms: float) -> dict[str, Any]:
    """A batch as plain data: each image's fields with its encoded bytes (not the PIL image), in seed order;
    the timings the images share, once; the seeds moderation left out; how long the worker had the request."""
    images = [{f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name not in RESULT_NOT_SENT}
              for result in batch.results]
    return {"event": RESULT, "images": images, "timings_ms": dict(batch.results[0].timings_ms),
            "moderated": list(batch.moderated), "worker_ms": worker_ms}


def error_event(exc: BaseException) -> dict[str, Any]:
    """What the front needs to raise the same KleinError (Ray would pickle some of them wrongly)."""
    if not isinstance(exc, KleinError):
        log.error("generation failed on this worker", exc_info=exc)
        exc = GenerationError(f"Generation failed on a worker ({type(exc).__name__}); its log has the details.")
    return {"event": ERROR, "kind": type(exc).__name__, "message": str(exc), "field": getattr(exc, "field", None)}


def error_from_event(event: dict[str, Any]) -> KleinError:
    """The front's side of error_event."""
    if event["kind"] == InvalidRequest.__name__:
        field = event["field"]
        return InvalidRequest(field, event["message"].removeprefix(f"{field}: "))
    return ERROR_TYPES.get(event["kind"], GenerationError)(event["message"])


# -- the replica ------------------------------------------------------------------------------------

class KleinWorker:
    """The Ray Serve deployment's class (workers_cluster.py wraps it): one Engine, loaded and warmed up
    in the constructor, so a replica that cannot generate fails its deployment with the reason."""

    def __init__(self, settings: Settings, threads: int | None = None):
        import torch

        from .engine import Engine

        if threads:
            torch.set_num_threads(threads)
        # Results go back to the front as bytes: a worker writes no files of its own.
        self.engine = Engine.from_settings(dataclasses.replace(settings, output_dir=None))
        self.name = replica_name()
        self.pid = os.getpid()
        log.info("%s ready: %s on %s, %d torch threads", self.name, self.engine.model.spec.name,
                 self.engine.model.device, torch.get_num_threads())

    def describe(self) -> dict[str, Any]:
        """What the front shows and checks without a model: the model's spec, device and dtype, why it was
        chosen, and its tokenizer (for the prompt's length)."""
        model = self.engine.model
        return {"spec": model.spec, "device": model.device, "dtype": str(model.dtype).removeprefix("torch."),
                "reason": self.engine.model_reason, "tokenizer": model.pipe.tokenizer,
                "prompt_token_limit": self.engine.prompt_token_limit, "worker": self.name}

    async def generate(self, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Run one request (all its num_images in one Engine.generate_batch): yield `started`, `progress`
        events (the steps of the whole batch), then `result` or `error`."""
        started = time.perf_counter()
        yield {"event": STARTED, "worker": self.name, "pid": self.pid}
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def progress(step: int, total: int) -> None:
            loop.call_soon_threadsafe(events.put_nowait, {"event": PROGRESS, "step": step, "total": total})

        job = loop.run_in_executor(None, self._run, payload, progress, cancel)
        try:
            while not job.done() or not events.empty():
                getter = asyncio.ensure_future(events.get())
                try:
                    await asyncio.wait({getter, job}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not getter.done():
                        getter.cancel()  # an event it had not taken stays queued for the next turn
                if getter.done():
                    yield getter.result()
        except (asyncio.CancelledError, GeneratorExit):
            cancel.set()  # the Engine stops at its next step; keep the replica busy until it has
            await asyncio.wait({job})
            job.exception()  # GenerationCancelled, expected: taken, so asyncio does not log it as lost
            log.info("%s: generation cancelled by the front", self.name)
            raise
        yield self._outcome(job, started)

    def _run(self, payload: dict[str, Any], progress, cancel: threading.Event):
        request = request_from_payload(payload, self.engine.limits)
        left = payload["seconds_left"]
        deadline = None if left is None else time.monotonic() + left
        return self.engine.generate_batch(request, progress, cancel=cancel, deadline=deadline, keep_file=False)

    def _outcome(self, job: asyncio.Future, started: float) -> dict[str, Any]:
        if job.exception() is not None:
            return error_event(job.exception())
        return result_event(job.result(), round((time.perf_counter() - started) * 1000, 2))


def replica_name() -> str:
    """`worker-<rank>@<host>`: the rank Serve gives this replica, the machine it runs on."""
    from ray import serve

    context = serve.get_replica_context()
    rank = getattr(getattr(context, "rank", None), "rank", None)
    label = rank if rank is not None else context.replica_id.unique_id
    return f"worker-{label}@{socket.gethostname()}"
