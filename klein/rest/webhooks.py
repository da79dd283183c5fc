"""Signed webhook deliveries, in their own thread so a slow receiver never holds up generation.

Each delivery is a POST of the task's JSON with
    X-Klein-Timestamp: <unix seconds>
    X-Klein-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
A failure (connection error, timeout, non-2xx) is retried after backoff, 2 x backoff, 4 x backoff...
up to `attempts` tries. Deliveries for one task keep their order: a later status waits for the
earlier one to be delivered or given up. A few sender threads share the work, so a slow receiver
holds up only its own task's deliveries. With an outbox (WebhookOutbox, a table in the task database) every
pending delivery is written down before it is queued and crossed off when delivered or given up,
so a restart sends what a crash left pending, in order. Stopping flushes: each delivery due by then is
attempted once more (within a time limit); what is left stays in the outbox for the next start.
"""

from __future__ import annotations

import collections
import hashlib
import heapq
import hmac
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ..errors import InvalidRequest
from .remote import UrlPolicy, check_url, redact_url
from .store import connect

log = logging.getLogger(__name__)
SENDERS = 4  # deliveries in flight at once; one task's deliveries are never sent in parallel
SIGNATURE_HEADER = "X-Klein-Signature"
TIMESTAMP_HEADER = "X-Klein-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for a body sent at `timestamp`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does: recompute the signature and compare in constant time."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


@dataclass
class Delivery:
    url: str
    body: bytes
    key: str
    attempt: int = 0
    history: list[str] = field(default_factory=list)
    outbox_id: int | None = None


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


class WebhookSender:
    """A queue of deliveries and the SENDERS threads that send them (one task's, one at a time, in order)."""

    def __init__(self, secret: str | None, policy: UrlPolicy, attempts: int = 5, backoff: float = 1.0,
                 outbox: WebhookOutbox | None = None):
        self._secret = secret
        self._outbox = outbox
        self.policy, self.attempts, self.backoff = policy, max(1, attempts), backoff
        self._queues: dict[str, collections.deque[Delivery]] = {}
        self._due: list[tuple[float, int, str]] = []
        self._counter = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._flush_until = 0.0  # while stopping, due deliveries are still attempted until then
        self._threads: list[threading.Thread] = []

    @property
    def enabled(self) -> bool:
        return bool(self._secret)

    def check(self, url: str) -> None:
        """Refuse (InvalidRequest on webhook_url) a URL we would not deliver to."""
        if not self.enabled:
            raise InvalidRequest(
                "webhook_url", "webhooks are off on this server; set KLEIN_WEBHOOK_SECRET to sign them"
            )
        check_url(url, "webhook_url", self.policy)

    def send(self, url: str, payload: dict, key: str) -> None:
        """Queue `payload` for `url`; `key` (the task id) orders deliveries of one task."""
        delivery = Delivery(url, json.dumps(payload, separators=(",", ":")).encode(), key)
        if self._outbox is not None:
            delivery.outbox_id = self._outbox.add(delivery)
        self._enqueue(delivery)

    def _enqueue(self, delivery: Delivery) -> None:
        with self._cond:
            queue = self._queues.setdefault(delivery.key, collections.deque())
            queue.append(delivery)
            if len(queue) == 1:
                self._schedule(delivery.key, time.monotonic())
            self._cond.notify()

    def start(self) -> None:
        """Start the sender threads, first queueing what the outbox holds from an earlier run."""
        if not self._threads:
            self._stopping = False
            if self._outbox is not None and self.enabled and not self._queues:
                for delivery in self._outbox.pending():
                    self._enqueue(delivery)
            self._due = []  # what a stop left queued goes first, each task's oldest delivery once
            for key in self._queues:
                self._schedule(key, time.monotonic())
            self._threads = [threading.Thread(target=self._loop, name=f"klein-webhooks-{i}", daemon=True)
                             for i in range(SENDERS)]
            for thread in self._threads:
                thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the senders after a flush: each delivery due by then (a later status of a task included,
        once the earlier one is delivered) is attempted once more, for at most `timeout` seconds in all.
        What is left (a failed attempt, a retry not due yet) stays in the outbox for the next start."""
        with self._cond:
            self._stopping = True
            self._flush_until = time.monotonic() + timeout
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(max(0.0, self._flush_until - time.monotonic()))
        self._threads = []

    def pending(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    def _schedule(self, key: str, when: float) -> None:
        self._counter += 1
        heapq.heappush(self._due, (when, self._counter, key))

    def _loop(self) -> None:
        while True:
            with self._cond:
                delivery = self._next_due()
                if delivery is None:
                    return
            ok = self._attempt(delivery)
            self._write_down(delivery, ok)  # outside the lock: an fsync must not hold up the other senders
            with self._cond:
                self._finish(delivery, ok)

    def _next_due(self) -> Delivery | None:
        while True:
            now = time.monotonic()
            due = bool(self._due) and self._due[0][0] <= now
            if self._stopping and (not due or now >= self._flush_until):
                return None
            if due:
                _, _, key = heapq.heappop(self._due)
                return self._queues[key][0]
            self._cond.wait(self._due[0][0] - now if self._due else None)

    def _will_retry(self, delivery: Delivery, ok: bool) -> bool:
        return not ok and delivery.attempt < self.attempts

    def _write_down(self, delivery: Delivery, ok: bool) -> None:
        """Record the attempt in the outbox, or cross the delivery off once delivered or given up."""
        if self._outbox is None:
            return
        if self._will_retry(delivery, ok):
            self._outbox.attempted(delivery)
        else:
            self._outbox.done(delivery)

    def _finish(self, delivery: Delivery, ok: bool) -> None:
        queue = self._queues[delivery.key]
        if self._will_retry(delivery, ok):
            if not self._stopping:  # stopping: the retry is the next start's (the outbox has it)
                self._schedule(delivery.key, time.monotonic() + self.backoff * 2 ** (delivery.attempt - 1))
            return
        if not ok:
            log.warning("webhook for task %s to %s given up after %d attempts: %s", delivery.key,
                        redact_url(delivery.url), delivery.attempt, "; ".join(delivery.history))
        queue.popleft()
        if queue:
            self._schedule(delivery.key, time.monotonic())
        else:
            del self._queues[delivery.key]

    def _attempt(self, delivery: Delivery) -> bool:
        delivery.attempt += 1
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret or "", timestamp, delivery.body),
            "User-Agent": "klein-studio-webhooks",
        }
        try:
            target = check_url(delivery.url, "webhook_url", self.policy)
            args = target.request_args()
            with httpx.Client(timeout=self.policy.timeout, follow_redirects=False, trust_env=False) as client:
                response = client.post(args["url"], content=delivery.body, headers={**headers, **args["headers"]},
                                       extensions=args["extensions"])
            if 200 <= response.status_code < 300:
                return True
            delivery.history.append(f"HTTP {response.status_code}")
        except InvalidRequest as exc:
            delivery.history.append(str(exc))
            delivery.attempt = self.attempts  # the address is refused: retrying will not help
        except httpx.HTTPError as exc:
            delivery.history.append(type(exc).__name__)
        return False
