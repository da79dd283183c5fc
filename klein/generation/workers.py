"""The front's engine when workers generate: WorkerEngine has the interface klein/ui and klein/rest use
(generate_batch, generate, check_request, limits, output_dir, model, moderator, prompt tokens), and sends
each request to a Ray Serve worker replica (workers_replica.py) instead of running a pipeline here.

Imported only when --workers or --ray-address is given (app.py); without them nothing imports Ray.
A generation here: encode the references (PNG), send the request, wait for a free worker (`queue`),
relay its progress, stop it on Cancel or the deadline, take back the encoded images (`transfer` is the
encoding and the time on the wire), write the files the page shows. A batch (num_images > 1) is one
request to one worker, which runs it as the engine does (one pipeline call) and sends every image back.
A worker that dies mid-generation is replaced by Serve; its request is tried once more on another
worker, with the same seed.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import presets
from ..config import TINY_MODELS, ModelSpec, Settings
from ..errors import GenerationCancelled, GenerationError, GenerationTimeout, InvalidRequest, QueueFull
from ..output.files import OutputFolder
from ..request import GenerationRequest
from ..safety.policy import Moderator
from . import workers_cluster
from .engine import GenerationBatch, GenerationResult
from .inpaint import check_strength
from .job import ProgressCallback
from .result import OneImageCall
from .workers_cluster import BackPressureError, RequestCancelledError, ray_errors
from .workers_replica import ERROR, PROGRESS, RESULT, STARTED, error_from_event, payload_for

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1  # how often a waiting request looks at its Cancel flag and deadline
# What a worker's death looks like from the front, depending on when it happened.
WORKER_LOST = (ray_errors.RayActorError, ray_errors.WorkerCrashedError, ray_errors.ObjectLostError,
               ray_errors.NodeDiedError, ray_errors.OutOfMemoryError)


@dataclass(frozen=True)
class RemoteModel:
    """What the page and REST say about the model the workers run (no weights here)."""

    spec: ModelSpec
    device: str
    dtype: str

    @property
    def is_tiny(self) -> bool:
        return self.spec.name in TINY_MODELS


@dataclass(frozen=True)
class WorkerInfo:
    """The worker running a request: its name (in the result's info) and its process id."""

    name: str
    pid: int


class _WorkerLost(Exception):
    def __init__(self, worker: WorkerInfo | None, cause: BaseException):
        super().__init__(str(cause))
        self.worker = worker


class WorkerEngine(OneImageCall):
    """The engine of a front whose generations run on Ray Serve workers (docs/workers.md)."""

    def __init__(self, handle: Any, settings: Settings, description: dict[str, Any], replicas: int,
                 cluster: workers_cluster.Cluster | None = None):
        self.settings, self.replicas, self._cluster = settings, replicas, cluster
        self._stream = handle.options(stream=True).generate
        self._tokenizer = description["tokenizer"]
        self._token_limit = description["prompt_token_limit"]
        workers = f"{replicas} Ray Serve worker{'s' if replicas != 1 else ''}"
        self.model = RemoteModel(description["spec"], f"{description['device']}, {workers}", description["dtype"])
        self.model_reason = description["reason"]
        self.moderator = Moderator(settings.max_safety_tolerance, settings.image_moderation)
        self.outputs = OutputFolder(settings.output_dir)
        self._template_tokens = self.count_prompt_tokens("")
        self._busy_seconds = 5.0  # how long a generation keeps a worker (moving average): the Retry-After
        self._local = threading.local()

    @classmethod
    def start(cls, settings: Settings, threads: int | None = None, temp_dir: str | None = None) -> "WorkerEngine":
        """Start or join Ray, deploy the workers (each loads the model) and ask one what it runs.

        `threads`: torch threads per worker (default: GPU workers torch's own, CPU workers a share of the cores).
        """
        cluster = workers_cluster.connect(settings, temp_dir)
        try:
            handle = workers_cluster.deploy(settings, cluster, threads)
            description = handle.describe.remote().result()
        except BaseException:
            workers_cluster.shutdown(cluster)
            raise
        log.info("%d workers ready on %s: %s on %s", cluster.replicas, cluster.address, description["spec"].name,
                 description["device"])
        return cls(handle, settings, description, cluster.replicas, cluster)

    def close(self) -> None:
        """Remove the workers (and the local Ray instance this front started)."""
        if self._cluster is not None:
            cluster, self._cluster = self._cluster, None
            workers_cluster.shutdown(cluster)

    # -- what the adapters read ---------------------------------------------------------------------

    @property
    def limits(self):
        return self.settings.limits

    @property
    def output_dir(self) -> Path:
        return self.outputs.path

    @property
    def prompt_token_limit(self) -> int:
        return self._token_limit

    def count_prompt_tokens(self, prompt: str) -> int:
        """As Engine.count_prompt_tokens, with the tokenizer the workers sent."""
        text = self._tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
        return len(self._tokenizer(text)["input_ids"])

    def check_request(self, request: GenerationRequest) -> int:
        """As Engine.check_request, here at the front (a stored task is refused before it waits for a worker)."""
        tokens = self.count_prompt_tokens(request.prompt) - self._template_tokens
        if tokens > self.prompt_token_limit:
            raise InvalidRequest("prompt", f"is {tokens} tokens long; {self.model.spec.name} reads at most "
                                 f"{self.prompt_token_limit} tokens of prompt ({len(request.prompt)} characters "
                                 "given). Shorten it.")
        if request.mask is not None:  # as the engine's job would: a stored task that cannot run is refused now
            check_strength(request.steps if request.steps is not None else self.model.spec.steps, request.strength)
        tolerance = self.moderator.effective_tolerance(request.safety_tolerance)
        self.moderator.check_prompt(request.prompt, tolerance)
        for index, image in enumerate(request.images):
            self.moderator.check_reference(image, tolerance, "image" if len(request.images) == 1 else f"images[{index}]")
        return tolerance

    def serving(self) -> WorkerInfo | None:
        """The worker running the calling thread's request now (None before one has started it)."""
        return getattr(self._local, "worker", None)

    # -- generating -------------------------------------------------------------------------------

    def generate_batch(self, request: GenerationRequest, progress: ProgressCallback | None = None, *,
                       cancel: threading.Event | None = None, deadline: float | None = None,
                       keep_file: bool = True) -> GenerationBatch:
        """As Engine.generate_batch, on one worker: the worker checks, moderates, generates (the batch as one
        pipeline call) and encodes; the front adds the `queue` and `transfer` stages to the timings the
        images share, the worker's name to each image, and writes their files (unless `keep_file` is False)."""
        started = time.perf_counter()
        if request.seed is None:  # chosen here, so a retry on another worker makes the same image
            request = dataclasses.replace(request, seed=presets.random_seed())
        payload = payload_for(request, None)
        encode_ms = _ms_since(started)
        lost: list[str] = []
        while True:
            try:
                event, timings = self._call(payload, progress, cancel, deadline)
                break
            except _WorkerLost as exc:
                lost.append(exc.worker.name if exc.worker else "a worker that had not started it")
                if len(lost) == 2 or _stopped(cancel, deadline):
                    raise GenerationError(_lost_message(lost, request.num_images)) from exc
                log.warning("%s died during a generation (%s); trying once more on another worker",
                            lost[0], str(exc).splitlines()[0])
        timings["transfer"] = round(timings["transfer"] + encode_ms, 2)
        return self._batch(event, timings, started, keep_file)

    def _call(self, payload: dict, progress: ProgressCallback | None, cancel: threading.Event | None,
              deadline: float | None) -> tuple[dict, dict[str, float]]:
        """One attempt on one worker: returns the result event and the front's own stages."""
        self._local.worker = None
        seconds_left = None if deadline is None else max(0.0, deadline - time.monotonic())
        sent = time.perf_counter()
        try:
            stream = self._stream.remote({**payload, "seconds_left": seconds_left})
        except Exception as exc:  # the deployment is gone or failed: nothing was sent
            raise self._failure(exc, cancel, deadline) from exc
        events: queue.Queue = queue.Queue()
        threading.Thread(target=_read, args=(stream, events), name="klein-worker-stream", daemon=True).start()
        began = None
        while True:
            event = self._next_event(events, stream, cancel, deadline)
            kind = event["event"]
            if kind == STARTED:
                began = time.perf_counter()
                self._local.worker = WorkerInfo(event["worker"], event["pid"])
            elif kind == PROGRESS:
                if progress is not None:
                    progress(event["step"], event["total"])
            elif kind == RESULT:
                self._busy_seconds += 0.3 * (event["worker_ms"] / 1000 - self._busy_seconds)
                began = sent if began is None else began
                back = _ms_since(began) - event["worker_ms"]
                return event, {"queue": round((began - sent) * 1000, 2), "transfer": max(0.0, round(back, 2))}
            elif kind == ERROR:
                raise error_from_event(event)
            else:
                raise self._failure(event["exception"], cancel, deadline)

    def _next_event(self, events: queue.Queue, stream: Any, cancel: threading.Event | None,
                    deadline: float | None) -> dict:
        """The stream's next event; on Cancel or the deadline, cancel the stream (the worker stops between
        steps) and raise GenerationCancelled or GenerationTimeout."""
        while not _stopped(cancel, deadline):  # looked at before every event: progress can come faster than POLL
            try:
                return events.get(timeout=POLL_SECONDS)
            except queue.Empty:
                pass
        stream.cancel()
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled("Generation cancelled.")
        raise GenerationTimeout("Generation took longer than the time limit and was stopped.")

    def _failure(self, exc: BaseException, cancel: threading.Event | None, deadline: float | None) -> Exception:
        if isinstance(exc, BackPressureError):
            waiting = self.settings.queue_size
            retry = max(1, math.ceil(self._busy_seconds * (waiting + self.replicas) / self.replicas))
            return QueueFull(f"All {self.replicas} workers are busy and {waiting} requests are waiting for one; "
                             "try again shortly.", retry_after=retry)
        if isinstance(exc, RequestCancelledError) and _stopped(cancel, deadline):
            return GenerationCancelled("Generation cancelled.")
        if isinstance(exc, WORKER_LOST):
            return _WorkerLost(self.serving(), exc)
        log.error("worker call failed", exc_info=exc)
        return GenerationError(f"Generation failed on a worker ({type(exc).__name__}); the server log has the details.")

    def _batch(self, event: dict, front: dict[str, float], started: float, keep_file: bool) -> GenerationBatch:
        """The worker's images as a GenerationBatch: one timings dict for all of them, as the engine's."""
        timings = {**front, **{k: v for k, v in event["timings_ms"].items() if k != "total"}}
        worker = self.serving()
        results = [self._result(fields, timings, worker, keep_file) for fields in event["images"]]
        timings["total"] = _ms_since(started)
        return GenerationBatch(results, list(event["moderated"]))

    def _result(self, fields: dict, timings: dict[str, float], worker: WorkerInfo | None,
                keep_file: bool) -> GenerationResult:
        path = None
        if keep_file:
            path = self.outputs.write(fields["data"], fields["output_format"], stem=f"klein-{fields['seed']}")
        from PIL import Image

        image = Image.open(io.BytesIO(fields["data"]))  # decoded when first used (the front needs only the bytes)
        return GenerationResult(image=image, path=path, timings_ms=timings,
                                **{**fields, "worker": worker.name if worker else None})


def _lost_message(lost: list[str], num_images: int = 1) -> str:
    what, it = ("this image", "it") if num_images == 1 else (f"these {num_images} images", "they")
    if len(lost) == 1:
        return f"The worker generating {what} ({lost[0]}) stopped before {it} finished; try again."
    return (f"The workers generating {what} stopped before {it} finished, twice ({lost[0]}, then {lost[1]} "
            "on the retry); try again shortly.")


def _read(stream: Any, events: queue.Queue) -> None:
    """Move a worker's stream onto a queue the caller's thread can wait on with a timeout."""
    try:
        for event in stream:
            events.put(event)
    except BaseException as exc:  # noqa: BLE001 - every way a stream ends is the caller's to judge
        events.put({"event": "failed", "exception": exc})


def _stopped(cancel: threading.Event | None, deadline: float | None) -> bool:
    return (cancel is not None and cancel.is_set()) or (deadline is not None and time.monotonic() > deadline)


def _ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)
