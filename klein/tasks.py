"""The task API's backend: tasks in SQLite, results on disk, one worker thread over the engine.

Durability: a task is committed (with its input images) before its id is returned, so an accepted
task survives a crash. At start-up CREATED tasks run in order; a task that was IN_PROGRESS when
the process died runs again (it keeps its id and status) unless it has already been started
`max_task_attempts` times, in which case it FAILS with that reason (a task that crashes the
process must not crash it forever). Results are written atomically and deleted, with their task,
`result_ttl` seconds after the task finished. One process per database.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .encode import EXTENSIONS
from .errors import GenerationCancelled, KleinError, QueueFull
from .images import load_reference
from .request import GenerationRequest
from .rest_config import RestSettings
from .webhooks import Delivery, WebhookSender

log = logging.getLogger(__name__)
CREATED, IN_PROGRESS, COMPLETED, FAILED = "CREATED", "IN_PROGRESS", "COMPLETED", "FAILED"
ImageUrl = Callable[[str, str, int], str]  # (base_url, task_id, index) -> URL of a result image
SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    params TEXT NOT NULL,
    webhook_url TEXT,
    base_url TEXT NOT NULL,
    error TEXT,
    result TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS tasks_by_owner ON tasks (owner, seq);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks (status, seq);
CREATE TABLE IF NOT EXISTS task_inputs (
    task_id TEXT NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (task_id, idx)
);
"""
COLUMNS = ("id", "owner", "status", "params", "webhook_url", "base_url", "error", "result", "attempts",
           "created_at", "updated_at", "finished_at")


@dataclass(frozen=True)
class Task:
    id: str
    owner: str
    status: str
    params: dict
    webhook_url: str | None
    base_url: str
    error: str | None
    result: dict | None
    attempts: int
    created_at: float
    updated_at: float
    finished_at: float | None

    def public(self, base_url: str, image_url: ImageUrl) -> dict[str, Any]:
        """The task as clients see it (GET response and webhook body)."""
        data: dict[str, Any] = {"task_id": self.id, "status": self.status, "generated": []}
        if self.status == COMPLETED and self.result:
            data["generated"] = [image_url(base_url, self.id, i) for i in range(len(self.result["files"]))]
            data.update({k: v for k, v in self.result.items() if k != "files"})
        if self.status == FAILED:
            data["error"] = self.error
        data["created_at"], data["updated_at"] = _iso(self.created_at), _iso(self.updated_at)
        return data


def connect(path: Path) -> sqlite3.Connection:
    """The task database, shared between threads (each class guards its connection with a lock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # an accepted task survives a power cut
    db.execute("PRAGMA secure_delete=ON")  # deleted inputs are overwritten, not left in free pages
    return db


class TaskStore:
    """Tasks and their input images in one SQLite file (WAL); safe to share between threads."""

    def __init__(self, path: Path):
        self._lock = threading.Lock()
        self._db = connect(path)
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, task: Task, inputs: list[bytes]) -> None:
        row = _row(task)
        with self._lock, self._db:
            self._db.execute(f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", row)
            self._db.executemany("INSERT INTO task_inputs VALUES (?, ?, ?)",
                                 [(task.id, i, data) for i, data in enumerate(inputs)])

    def get(self, task_id: str) -> Task | None:
        rows = self._select("WHERE id = ?", (task_id,))
        return rows[0] if rows else None

    def page(self, owner: str, offset: int, limit: int) -> tuple[list[Task], int]:
        tasks = self._select("WHERE owner = ? ORDER BY seq DESC LIMIT ? OFFSET ?", (owner, limit, offset))
        with self._lock:
            total = self._db.execute("SELECT COUNT(*) FROM tasks WHERE owner = ?", (owner,)).fetchone()[0]
        return tasks, total

    def pending_count(self) -> int:
        with self._lock:
            query = "SELECT COUNT(*) FROM tasks WHERE status IN (?, ?)"
            return self._db.execute(query, (CREATED, IN_PROGRESS)).fetchone()[0]

    def next_runnable(self) -> Task | None:
        """An interrupted task first, then the oldest waiting one."""
        rows = self._select("WHERE status IN (?, ?) ORDER BY status = ? DESC, seq LIMIT 1",
                            (CREATED, IN_PROGRESS, IN_PROGRESS))
        return rows[0] if rows else None

    def update(self, task_id: str, **fields: Any) -> Task:
        fields["updated_at"] = time.time()
        values = [json.dumps(v) if k in ("params", "result") and v is not None else v for k, v in fields.items()]
        with self._lock, self._db:
            self._db.execute(f"UPDATE tasks SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                             (*values, task_id))
        return self.get(task_id)  # type: ignore[return-value]

    def inputs(self, task_id: str) -> list[bytes]:
        with self._lock:
            rows = self._db.execute("SELECT data FROM task_inputs WHERE task_id = ? ORDER BY idx", (task_id,))
            return [bytes(r[0]) for r in rows.fetchall()]

    def drop_inputs(self, task_id: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM task_inputs WHERE task_id = ?", (task_id,))

    def delete_finished_before(self, cutoff: float) -> list[str]:
        with self._lock, self._db:
            ids = [r[0] for r in self._db.execute(
                "SELECT id FROM tasks WHERE finished_at IS NOT NULL AND finished_at < ?", (cutoff,))]
            self._db.executemany("DELETE FROM task_inputs WHERE task_id = ?", [(i,) for i in ids])
            self._db.executemany("DELETE FROM tasks WHERE id = ?", [(i,) for i in ids])
        return ids

    def _select(self, where: str, args: tuple) -> list[Task]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM tasks {where}", args).fetchall()
        return [_task(row) for row in rows]


class WebhookOutbox:
    """Pending deliveries on disk, so a crash loses none of them (a table in the task database)."""

    def __init__(self, path: Path):
        self._lock = threading.Lock()
        self._db = connect(path)
        self._db.execute("CREATE TABLE IF NOT EXISTS webhook_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                         "task_id TEXT NOT NULL, url TEXT NOT NULL, body BLOB NOT NULL, attempt INTEGER NOT NULL)")

    def add(self, delivery: Delivery) -> int:
        with self._lock, self._db:
            cursor = self._db.execute("INSERT INTO webhook_outbox (task_id, url, body, attempt) VALUES (?, ?, ?, ?)",
                                      (delivery.key, delivery.url, delivery.body, delivery.attempt))
            return int(cursor.lastrowid)

    def attempted(self, delivery: Delivery) -> None:
        with self._lock, self._db:
            self._db.execute("UPDATE webhook_outbox SET attempt = ? WHERE id = ?", (delivery.attempt, delivery.outbox_id))

    def done(self, delivery: Delivery) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM webhook_outbox WHERE id = ?", (delivery.outbox_id,))

    def pending(self) -> list[Delivery]:
        """What a previous run left undelivered, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT id, task_id, url, body, attempt FROM webhook_outbox ORDER BY id").fetchall()
        return [Delivery(url, bytes(body), key, attempt, outbox_id=row_id) for row_id, key, url, body, attempt in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


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
                exc = QueueFull(f"The task backlog is full ({pending} tasks waiting); try again later.")
                exc.retry_after = max(1, math.ceil(self._seconds_per_task * pending))  # type: ignore[attr-defined]
                raise exc
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
        fields = ["input_image"] + [f"input_image_{i}" for i in range(2, 5)]
        images = [load_reference(data, fields[i], limits) for i, data in enumerate(self.store.inputs(task.id))]
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


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _row(task: Task) -> tuple:
    values = {**task.__dict__, "params": json.dumps(task.params),
              "result": json.dumps(task.result) if task.result is not None else None}
    return tuple(values[c] for c in COLUMNS)


def _task(row: tuple) -> Task:
    values = dict(zip(COLUMNS, row))
    values["params"] = json.loads(values["params"])
    values["result"] = json.loads(values["result"]) if values["result"] else None
    return Task(**values)
