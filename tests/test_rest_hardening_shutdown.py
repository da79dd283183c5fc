"""Review findings on time: Retry-After from measured throughput (task and sync backlogs), a graceful
stop of the task worker (the running task finishes within the grace period, or is handed back without
counting the attempt), and a webhook sender that flushes what is due before it stops."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from conftest_rest import AUTH, SECRET, SMALL, TASKS, Loopback, make_client, rest_settings, wait_for_status

from klein.rest import tasks as tasks_module
from klein.rest.remote import UrlPolicy
from klein.rest.webhooks import WebhookOutbox, WebhookSender


def _within_twice(value: float, expected: float) -> bool:
    return expected / 2 <= value <= expected * 2


# -- 6. Retry-After from measured throughput -------------------------------------------------------------

def test_task_backlog_retry_after_follows_the_measured_task_time(engine, tmp_path, monkeypatch):
    real, durations, release = engine.generate, [], threading.Event()

    def timed(request, *args, **kwargs):
        started = time.monotonic()
        if request.prompt == "hold":
            release.wait(30)
        time.sleep(1.0 if request.prompt == "slow" else 0)
        result = real(request, *args, **kwargs)
        durations.append(time.monotonic() - started)
        return result

    monkeypatch.setattr(engine, "generate", timed)
    api, client = make_client(engine, rest_settings(tmp_path, task_backlog=8))
    with client:
        try:
            # The last task is fast: the old estimate (the last task's time) said 2 s for 8 tasks of ~0.9 s.
            ids = [client.post(TASKS, json={"prompt": p, **SMALL}, headers=AUTH).json()["data"]["task_id"]
                   for p in ("slow", "slow", "slow", "fast")]
            assert all(wait_for_status(client, i)["status"] == "COMPLETED" for i in ids)
            submitted = [client.post(TASKS, json={"prompt": "hold", **SMALL}, headers=AUTH) for _ in range(9)]
        finally:
            release.set()
    assert [r.status_code for r in submitted] == [200] * 8 + [503]
    expected = 8 * sum(durations[:4]) / 4  # 8 ahead (the running one included), at the measured mean
    assert _within_twice(int(submitted[-1].headers["Retry-After"]), expected), (submitted[-1].headers, durations)


def test_sync_backlog_retry_after_follows_the_measured_generation_time(engine, tmp_path, monkeypatch):
    real = engine.generate

    def slow_on_paper(request, *args, **kwargs):  # as if each generation worked 1.5 s
        result = real(request, *args, **kwargs)
        return dataclasses.replace(result, timings_ms={"denoise": 1500.0, "total": 1500.0})

    monkeypatch.setattr(engine, "generate", slow_on_paper)
    api, client = make_client(engine, rest_settings(tmp_path, sync_backlog=2))
    for seed in (1, 2):
        assert client.post("/v1/generate", json={"prompt": "fox", **SMALL, "seed": seed}, headers=AUTH).is_success
    engine._lane.acquire()  # the GPU is busy: the next two requests wait, holding both places
    waiting = [threading.Thread(target=client.post, args=("/v1/generate",),
                                kwargs={"json": {"prompt": "fox", **SMALL}, "headers": AUTH}) for _ in range(2)]
    try:
        for thread in waiting:
            thread.start()
        deadline = time.monotonic() + 10
        while api._sync_slots._value and time.monotonic() < deadline:
            time.sleep(0.02)
        refused = client.post("/v1/generate", json={"prompt": "fox", **SMALL}, headers=AUTH)
    finally:
        engine._lane.release()
        for thread in waiting:
            thread.join(30)
    assert refused.status_code == 503
    assert _within_twice(int(refused.headers["Retry-After"]), 2 * 1.5)


# -- 7. stopping the task worker ------------------------------------------------------------------------

@pytest.fixture
def held(engine, monkeypatch):
    """Generations stop in their first step until `release` is set; `started` says one got there."""
    real = engine.generate
    started, release = threading.Event(), threading.Event()

    def hold(step, total):
        started.set()
        release.wait(30)

    monkeypatch.setattr(engine, "generate", lambda request, progress=None, **kw: real(request, hold, **kw))
    yield started, release
    release.set()
    monkeypatch.setattr(engine, "generate", real)


def test_stop_hands_back_a_task_that_outlasts_the_grace_period(engine, tmp_path, held, monkeypatch):
    started, release = held
    monkeypatch.setattr(tasks_module, "CANCEL_WAIT", 0.2)  # the held step outlasts it: stop() hands back itself
    settings = rest_settings(tmp_path)
    api, client = make_client(engine, settings)
    api.tasks.start()
    task_id = client.post(TASKS, json={"prompt": "a held fox", **SMALL}, headers=AUTH).json()["data"]["task_id"]
    assert started.wait(30)
    worker = api.tasks._thread
    api.tasks.stop(0.2)
    assert (api.tasks.store.get(task_id).status, api.tasks.store.get(task_id).attempts) == ("IN_PROGRESS", 0)
    refused = client.post(TASKS, json={"prompt": "too late", **SMALL}, headers=AUTH)
    assert refused.status_code == 503 and refused.json()["detail"].startswith("The server is shutting down")
    release.set()  # the step ends; the next one sees the cancel
    worker.join(30)
    task = api.tasks.store.get(task_id)
    assert (task.status, task.attempts) == ("IN_PROGRESS", 0)  # not FAILED, and the attempt not counted
    api.tasks.store.close()

    _, restarted = make_client(engine, settings)
    with restarted:
        assert wait_for_status(restarted, task_id)["status"] == "COMPLETED"


def test_stop_lets_the_running_task_finish_within_the_grace_period(engine, tmp_path, held):
    started, release = held
    api, client = make_client(engine, rest_settings(tmp_path))
    api.tasks.start()
    task_id = client.post(TASKS, json={"prompt": "a held fox", **SMALL}, headers=AUTH).json()["data"]["task_id"]
    assert started.wait(30)
    threading.Timer(0.3, release.set).start()
    api.tasks.stop(10)
    task = api.tasks.store.get(task_id)
    assert (task.status, task.attempts) == ("COMPLETED", 1)


# -- 7. stopping the webhook sender flushes what is due ---------------------------------------------------

def test_webhook_stop_flushes_due_deliveries_and_keeps_the_rest(tmp_path):
    release = threading.Event()

    def respond(record):
        if record["path"] == "/slow":
            release.wait(10)
        return (500, {}, b"down") if record["path"] == "/down" else (200, {}, b"ok")

    outbox = WebhookOutbox(tmp_path / "tasks.db")
    policy = UrlPolicy(allow_private=True, timeout=5)
    with Loopback(respond) as receiver:
        sender = WebhookSender(SECRET, policy, attempts=5, backoff=60, outbox=outbox)
        sender.start()
        sender.send(receiver.url + "/slow", {"n": 1}, key="a")
        deadline = time.monotonic() + 10
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        sender.send(receiver.url + "/ok", {"n": 2}, key="a")  # due once n=1 is delivered
        sender.send(receiver.url + "/down", {"n": 3}, key="a")  # due after n=2; fails
        sender.send(receiver.url + "/down", {"n": 4}, key="b")  # fails now; its retry is a minute away
        stopping = threading.Thread(target=sender.stop, kwargs={"timeout": 10})
        stopping.start()
        time.sleep(0.2)
        release.set()
        stopping.join(15)
    sent = [r["body"] for r in receiver.requests]
    assert sorted(sent) == sorted([b'{"n":1}', b'{"n":2}', b'{"n":3}', b'{"n":4}']), sent  # each once
    assert [(d.key, d.body, d.attempt) for d in outbox.pending()] == [("a", b'{"n":3}', 1), ("b", b'{"n":4}', 1)]
