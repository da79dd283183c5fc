"""The task API's backend: one worker thread that runs stored tasks through the engine.

At start-up CREATED tasks run in order; a task that was IN_PROGRESS when the process died runs again
(it keeps its id and status) unless it has already been started `max_task_attempts` times, in which
case it FAILS with that reason (a task that crashes the process must not crash it forever). Results
are written atomically and deleted, with their task, `result_ttl` seconds after the task finished.
One process per database.
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
from .schemas import INPUT_FIELDS
from .store import COMPLETED, CREATED, FAILED, IN_PROGRESS, ImageUrl, Task, TaskStore
from .webhooks import WebhookSender

log = logging.getLogger(__name__)


class TaskService:
    """Accepts tasks, runs them one at a time through the engine, reports each status change."""

    def __init__(self, engine, settings: RestSettings, webhooks: WebhookSender, image_url: ImageUrl):
        self.engine, self.settings, self.webhooks, self.image_url = engine, settings, webhooks, image_url
        self.store = TaskStore(settings.tasks_db)
        self.results_dir = settings.results_path
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self._submit_lock = threading.Lock()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._seconds_per_task = 5.0
        self._next_cleanup = 0.0

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="klein-tasks", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current step; an interrupted task stays IN_PROGRESS and runs on the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def submit(self, owner: str, params: dict, inputs: list[bytes], webhook_url: str | None, base_url: str) -> Task:
        """Store a validated task; raises QueueFull (503) when the backlog is full."""
        now = time.time()
        task = Task(str(uuid.uuid4()), owner, CREATED, params, webhook_url, base_url, None, None, 0, now, now, None)
        with self._submit_lock:
            pending = self.store.pending_count()
            if pending >= self.settings.task_backlog:
                raise QueueFull(f"The task backlog is full ({pending} tasks waiting); try again later.",
                                retry_after=max(1, math.ceil(self._seconds_per_task * pending)))
            self.store.add(task, inputs)
        self._notify(task)
        self._wake.set()
        return task

    def get(self, owner: str, task_id: str) -> Task | None:
        task = self.store.get(task_id)
        return task if task is not None and task.owner == owner else None

    def result_file(self, task: Task, index: int) -> Path | None:
        files = (task.result or {}).get("files", [])
        return self.results_dir / files[index] if task.status == COMPLETED and 0 <= index < len(files) else None

    def _loop(self) -> None:
        for stray in self.results_dir.glob("*.part"):
            stray.unlink(missing_ok=True)
        while not self._stop.is_set():
            self._cleanup_if_due()
            task = self.store.next_runnable()
            if task is None:
                self._wake.wait(timeout=min(60.0, self.settings.result_ttl / 2))
                self._wake.clear()
                continue
            try:
                self._run(task)
            except Exception:  # the worker must outlive any one task
                log.exception("task %s: unexpected error in the worker", task.id)
                self._finish(task, FAILED, error="The task failed unexpectedly; the server log has the details.")

    def _run(self, task: Task) -> None:
        if task.attempts >= self.settings.max_task_attempts:
            self._finish(task, FAILED, error=f"Interrupted by a server restart {task.attempts} times; not retried.")
            return
        previous = task.status
        task = self.store.update(task.id, status=IN_PROGRESS, attempts=task.attempts + 1)
        if previous != IN_PROGRESS:
            self._notify(task)
        started = time.monotonic()
        try:
            result = self.engine.generate(self._request_for(task), cancel=self._stop,
                                          deadline=started + self.settings.generation_timeout, keep_file=False)
        except GenerationCancelled as exc:
            if self._stop.is_set():  # shutting down: run it again on the next start
                self.store.update(task.id, attempts=task.attempts - 1)
                return
            self._finish(task, FAILED, error=str(exc))
            return
        except KleinError as exc:
            self._finish(task, FAILED, error=str(exc))
            return
        self._seconds_per_task = time.monotonic() - started
        name = f"{task.id}-0.{EXTENSIONS[result.output_format]}"
        _write_atomically(self.results_dir / name, result.data)
        info = result.info()
        info.pop("steps", None), info.pop("guidance", None)
        self._finish(task, COMPLETED, result={"files": [name], **info})

    def _request_for(self, task: Task) -> GenerationRequest:
        limits = self.engine.limits
        images = [load_reference(data, INPUT_FIELDS[i], limits) for i, data in enumerate(self.store.inputs(task.id))]
        return GenerationRequest(images=tuple(images), limits=limits, **task.params)

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
