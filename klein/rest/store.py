"""The task database: tasks and their input images (and inpainting mask) in one SQLite file (WAL), shared
between threads.

Durability: a task is committed (with its input images) before its id is returned, so an accepted
task survives a crash; synchronous=FULL makes that hold across a power cut too.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
MASK_INDEX = -1  # the inpainting mask's row in task_inputs; the input images are 0, 1, ...
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

    def add(self, task: Task, inputs: list[bytes], mask: bytes | None = None) -> None:
        """Store a task with its input images and mask, in one transaction."""
        row = _row(task)
        rows = [(task.id, i, data) for i, data in enumerate(inputs)]
        rows += [(task.id, MASK_INDEX, mask)] if mask is not None else []
        with self._lock, self._db:
            self._db.execute(f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", row)
            self._db.executemany("INSERT INTO task_inputs VALUES (?, ?, ?)", rows)

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

    def pending_images(self) -> int:
        """The images the pending tasks make (a task of num_images n counts n; a task stored before
        num_images, 1)."""
        with self._lock:
            query = ("SELECT COALESCE(SUM(COALESCE(json_extract(params, '$.num_images'), 1)), 0) FROM tasks "
                     "WHERE status IN (?, ?)")
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
        """The task's input images, in order (not the mask)."""
        with self._lock:
            rows = self._db.execute("SELECT data FROM task_inputs WHERE task_id = ? AND idx >= 0 ORDER BY idx",
                                    (task_id,))
            return [bytes(r[0]) for r in rows.fetchall()]

    def mask(self, task_id: str) -> bytes | None:
        """The task's inpainting mask, or None."""
        with self._lock:
            row = self._db.execute("SELECT data FROM task_inputs WHERE task_id = ? AND idx = ?",
                                   (task_id, MASK_INDEX)).fetchone()
        return bytes(row[0]) if row else None

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
