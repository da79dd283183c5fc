"""The task API's backend: one worker thread that runs stored tasks through the engine.

At start-up CREATED tasks run in order; a task that was IN_PROGRESS when the process died runs again
(it keeps its id and status) unless it has already been started `max_task_attempts` times, in which
case it FAILS with that reason (a task that crashes the process must not crash it forever). Results
are written atomically and deleted, with their task, `result_ttl` seconds after the task finished.
One process per database.

Stopping (the server's shutdown) is not a crash: the running task may finish within a grace period,
else it is cancelled and handed back, still IN_PROGRESS and without counting the attempt, so it runs
first on the next start and ordinary restarts never fail a task.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from ..config import RestSettings
from ..errors import GenerationCancelled, KleinError, QueueFull
from ..images import load_reference
from ..output.encode import EXTENSIONS
from ..request import GenerationRequest
from .batches import first_seed, run
from .schemas import INPUT_FIELDS
from .store import COMPLETED, CREATED, FAILED, IN_PROGRESS, ImageUrl, Task, TaskStore
from .webhooks import WebhookSender

log = logging.getLogger(__name__)
SHUTDOWN_GRACE = 20.0  # seconds the running task may take to finish when the server stops
CANCEL_WAIT = 5.0  # seconds more for a cancelled generation to reach its next step
FIRST_GUESS = 5.0  # seconds per task (or generation) until one has been measured


class MovingAverage:
    """An exponentially weighted moving average of durations in seconds; `prior` until one is added."""

    def __init__(self, prior: float = FIRST_GUESS, weight: float = 0.3):
        self.value, self.weight, self._seen = prior, weight, False
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self.value = self.value + self.weight * (seconds - self.value) if self._seen else seconds
            self._seen = True

    def seconds_for(self, count: int) -> int:
        """Seconds that `count` more of these take, rounded up and at least 1: a Retry-After."""
        return max(1, math.ceil(self.value * count))


def work_seconds(timings_ms: dict[str, float]) -> float:
    """The time a generation worked (its stages), without the time it waited for the GPU lane."""
    return sum(v for k, v in timings_ms.items() if k != "total") / 1000


class TaskService:
    """Accepts tasks, runs them one at a time through the engine, reports each status change.

    `task_seconds` averages how long a task takes per image (the task backlog's Retry-After, for the images
    waiting); `work`, when given, is fed every generation's working time per image (the sync backlog's
    Retry-After, in RestApi). A task of num_images n counts as n images of work in both.
    """

    def __init__(self, engine, settings: RestSettings, webhooks: WebhookSender, image_url: ImageUrl,
                 work: MovingAverage | None = None):
        self.engine, self.settings, self.webhooks, self.image_url = engine, settings, webhooks, image_url
        self.store = TaskStore(settings.tasks_db)
        self.results_dir = settings.results_path
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.task_seconds, self.work = MovingAverage(), work
        self._submit_lock, self._current_lock = threading.Lock(), threading.Lock()
        self._current: str | None = None  # the task running now, until it finishes or is handed back
        # Each start gets its own events, so a worker still finishing after stop() never resumes.
        self._wake, self._draining, self._cancel = threading.Event(), threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._grace = SHUTDOWN_GRACE
        self._next_cleanup = 0.0

    def start(self) -> None:
        if self._thread is None or self._draining.is_set():
            self._draining, self._cancel = threading.Event(), threading.Event()
            self._thread = threading.Thread(target=self._loop, args=(self._draining, self._cancel),
                                            name="klein-tasks", daemon=True)
            self._thread.start()

    def stop(self, grace_seconds: float = SHUTDOWN_GRACE) -> None:
        """Take no more tasks; let the running one finish within `grace_seconds`, else cancel it and hand it
        back (IN_PROGRESS, its attempt not counted) to run first on the next start."""
        self._grace = grace_seconds
        self._draining.set()
        self._wake.set()
        if self._thread is not None:  # a second stop() (the app's, after the server's) waits for the same one
            self._thread.join(grace_seconds)
            if self._thread.is_alive():
                self._cancel.set()
                self._thread.join(CANCEL_WAIT)
        self._hand_back()  # still in a step (or waiting for the GPU): hand it back now, before the process ends

    def submit(self, owner: str, params: dict, inputs: list[bytes], webhook_url: str | None, base_url: str,
               mask: bytes | None = None) -> Task:
        """Store a validated task (its input images and mask with it); raises QueueFull (503) when the backlog
        is full."""
        now = time.time()
        task = Task(str(uuid.uuid4()), owner, CREATED, params, webhook_url, base_url, None, None, 0, now, now, None)
        with self._submit_lock:
            if self._draining.is_set():
                raise QueueFull("The server is shutting down; try again shortly.",
                                retry_after=max(1, math.ceil(self._grace)))
            pending = self.store.pending_count()  # the running task included: all of them are ahead
            if pending >= self.settings.task_backlog:
                raise QueueFull(f"The task backlog is full ({pending} tasks waiting); try again later.",
                                retry_after=self.task_seconds.seconds_for(self.store.pending_images()))
            self.store.add(task, inputs, mask)
        self._notify(task)
        self._wake.set()
        return task

    def get(self, owner: str, task_id: str) -> Task | None:
        task = self.store.get(task_id)
        return task if task is not None and task.owner == owner else None

    def result_file(self, task: Task, index: int) -> Path | None:
        files = (task.result or {}).get("files", [])
        return self.results_dir / files[index] if task.status == COMPLETED and 0 <= index < len(files) else None

    def _loop(self, draining: threading.Event, cancel: threading.Event) -> None:
        for stray in self.results_dir.glob("*.part"):
            stray.unlink(missing_ok=True)
        while not draining.is_set():
            self._cleanup_if_due()
            task = self.store.next_runnable()
            if task is None:
                self._wake.wait(timeout=min(60.0, self.settings.result_ttl / 2))
                self._wake.clear()
                continue
            try:
                self._run(task, cancel)
            except Exception:  # the worker must outlive any one task
                log.exception("task %s: unexpected error in the worker", task.id)
                self._finish(task, FAILED, error="The task failed unexpectedly; the server log has the details.")

    def _run(self, task: Task, cancel: threading.Event) -> None:
        if task.attempts >= self.settings.max_task_attempts:
            self._finish(task, FAILED, error=f"Interrupted by a server restart {task.attempts} times; not retried.")
            return
        previous = task.status
        task = self.store.update(task.id, status=IN_PROGRESS, attempts=task.attempts + 1)
        with self._current_lock:
            self._current = task.id
        if previous != IN_PROGRESS:
            self._notify(task)
        started = time.monotonic()
        try:
            self._generate(task, cancel, deadline=started + self.settings.generation_timeout)
        except GenerationCancelled as exc:
            if cancel.is_set():  # stopping: not this task's fault, so not one of its attempts
                self._hand_back(task.id)
                return
            self._finish(task, FAILED, error=str(exc))
        except KleinError as exc:
            self._finish(task, FAILED, error=str(exc))
        finally:
            with self._current_lock:
                if self._current == task.id:
                    self._current = None
        self.task_seconds.add((time.monotonic() - started) / task.params.get("num_images", 1))

    def _generate(self, task: Task, cancel: threading.Event, deadline: float) -> None:
        """Run the task and store every image kept, with the seeds of the images and of those left out."""
        request = self._request_for(task)
        batch = run(self.engine, request, cancel=cancel, deadline=deadline, keep_file=False)
        if self.work is not None:
            self.work.add(work_seconds(batch.results[0].timings_ms) / request.num_images)
        names = [f"{task.id}-{i}.{EXTENSIONS[r.output_format]}" for i, r in enumerate(batch.results)]
        for name, result in zip(names, batch.results):
            _write_atomically(self.results_dir / name, result.data)
        info = batch.results[0].info()
        info.pop("steps", None), info.pop("guidance", None)
        info["seed"] = first_seed(batch)  # the batch's: image i used seed + i, whether or not image 0 was kept
        self._finish(task, COMPLETED, result={"files": names, **info, **batch.info()})

    def _hand_back(self, task_id: str | None = None) -> None:
        """Undo the running task's attempt, once, whoever comes first (the worker, or stop() when the
        worker is still busy); the task stays IN_PROGRESS and runs first on the next start."""
        with self._current_lock:
            current = self._current
            if current is None or task_id not in (None, current):
                return
            self._current = None
        task = self.store.get(current)
        if task is not None and task.status == IN_PROGRESS:
            self.store.update(current, attempts=max(0, task.attempts - 1))
            log.info("task %s handed back for the next start", current)

    def _request_for(self, task: Task) -> GenerationRequest:
        limits = self.engine.limits
        mask = self.store.mask(task.id)
        images = [load_reference(data, INPUT_FIELDS[i], limits, full_size=mask is not None and i == 0)
                  for i, data in enumerate(self.store.inputs(task.id))]
        mask_image = load_reference(mask, "mask", limits, mask=True, full_size=True) if mask is not None else None
        return GenerationRequest(images=tuple(images), mask=mask_image, limits=limits, **task.params)

    def _finish(self, task: Task, status: str, **fields: Any) -> None:
        task = self.store.update(task.id, status=status, finished_at=time.time(), **fields)
        self.store.drop_inputs(task.id)
        self._notify(task)

    def _notify(self, task: Task) -> None:
        if task.webhook_url:
            self.webhooks.send(task.webhook_url, task.public(task.base_url, self.image_url), key=task.id)

    def _cleanup_if_due(self) -> None:
        if time.monotonic() < self._next_cleanup:
            return
        self._next_cleanup = time.monotonic() + min(60.0, self.settings.result_ttl / 2)
        for task_id in self.store.delete_finished_before(time.time() - self.settings.result_ttl):
            for path in self.results_dir.glob(f"{task_id}-*"):
                path.unlink(missing_ok=True)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
