"""The webhook sender on its own: backoff doubling, and a slow receiver holding up only its own task."""

from __future__ import annotations

import collections
import json
import time

import pytest
from conftest_rest import SECRET, Loopback

from klein.rest.remote import UrlPolicy
from klein.rest.webhooks import Delivery, WebhookSender, verify


@pytest.mark.parametrize("attempt,delay", [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0)])
def test_retries_back_off_exponentially(attempt, delay):
    sender = WebhookSender(SECRET, UrlPolicy(), attempts=5, backoff=0.5)
    delivery = Delivery("http://example.invalid/hook", b"{}", "task", attempt=attempt)
    sender._queues["task"] = collections.deque([delivery])
    before = time.monotonic()
    sender._finish(delivery, ok=False)
    after = time.monotonic()
    due, _, key = sender._due[0]
    assert key == "task" and before + delay <= due <= after + delay


def test_the_last_failed_attempt_gives_up_and_moves_on():
    sender = WebhookSender(SECRET, UrlPolicy(), attempts=3, backoff=0.5)
    first, second = (Delivery("http://example.invalid/hook", b"{}", "task", attempt=3),
                     Delivery("http://example.invalid/hook", b"{}", "task"))
    sender._queues["task"] = collections.deque([first, second])
    sender._finish(first, ok=False)
    assert list(sender._queues["task"]) == [second] and sender._due[0][2] == "task"


def test_a_slow_receiver_holds_up_only_its_own_task():
    import threading

    release = threading.Event()

    def stuck_until_released(record):
        release.wait(30)
        return 200, {}, b"ok"

    sender = WebhookSender(SECRET, UrlPolicy(allow_private=True, timeout=30), attempts=1)
    sender.start()
    try:
        with Loopback(stuck_until_released) as stuck, Loopback(lambda record: (200, {}, b"ok")) as quick:
            sender.send(stuck.url + "/hook", {"task_id": "a", "status": "CREATED"}, key="a")
            wait_until(lambda: stuck.requests)  # task a's delivery is in flight, and stays so
            sender.send(quick.url + "/hook", {"task_id": "b", "status": "CREATED"}, key="b")
            wait_until(lambda: quick.requests)  # with one sender this never happens before release
            release.set()
            record = quick.requests[0]
            assert json.loads(record["body"])["task_id"] == "b"
            assert verify(SECRET, record["headers"]["X-Klein-Timestamp"], record["body"],
                          record["headers"]["X-Klein-Signature"])
    finally:
        release.set()
        sender.stop()


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_pending_deliveries_survive_a_restart_in_order(tmp_path):
    from klein.rest.webhooks import WebhookOutbox

    database = tmp_path / "tasks.db"
    policy = UrlPolicy(allow_private=True, timeout=3)
    with Loopback(lambda record: (503, {}, b"down")) as receiver:
        before = WebhookSender(SECRET, policy, attempts=5, backoff=60, outbox=WebhookOutbox(database))
        before.start()
        before.send(receiver.url + "/hook", {"task_id": "t", "status": "CREATED"}, key="t")
        before.send(receiver.url + "/hook", {"task_id": "t", "status": "IN_PROGRESS"}, key="t")
        wait_until(lambda: len(receiver.requests) == 1)  # the first attempt failed; the retry is a minute away
        before.stop()  # the process dies here

        receiver.respond = lambda record: (200, {}, b"ok")
        after = WebhookSender(SECRET, policy, attempts=5, backoff=60, outbox=WebhookOutbox(database))
        after.start()
        try:
            wait_until(lambda: len(receiver.requests) == 3)
        finally:
            after.stop()
    statuses = [json.loads(r["body"])["status"] for r in receiver.requests]
    assert statuses == ["CREATED", "CREATED", "IN_PROGRESS"]
    assert WebhookOutbox(database).pending() == []  # crossed off once delivered
