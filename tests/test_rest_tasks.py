"""The task API through TestClient: create, poll, fetch, list, ownership, backlog, webhooks,
recovery after a crash and result expiry."""

from __future__ import annotations

import base64
import io
import time

import pytest
from conftest_rest import (
    AUTH,
    OTHER,
    SECRET,
    SMALL,
    TASKS,
    Loopback,
    make_client,
    png_bytes,
    rest_settings,
    started_client,
    wait_for_status,
)
from PIL import Image

from klein.rest.tasks import IN_PROGRESS
from klein.rest.webhooks import verify


@pytest.fixture(scope="module")
def client(engine, tmp_path_factory):
    with started_client(engine, tmp_path_factory) as client:
        yield client


def create(client, headers=AUTH, **body):
    return client.post(TASKS, json={"prompt": "a lighthouse", **SMALL, **body}, headers=headers)


def test_create_poll_fetch(client):
    response = create(client, seed=5, output_format="png")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["status"] == "CREATED" and data["generated"] == []
    done = wait_for_status(client, data["task_id"])
    assert done["status"] == "COMPLETED", done
    assert (done["seed"], done["width"], done["height"], done["workflow"]) == (5, 128, 128, "text_to_image")
    [url] = done["generated"]
    assert url == f"http://127.0.0.1{TASKS}/{data['task_id']}/images/0"
    image = client.get(url, headers=AUTH)
    assert image.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(image.content)).size == (128, 128)
    assert client.get(url).status_code == 401
    assert client.get(url, headers=OTHER).status_code == 404


def test_default_preset_and_input_images_choose_the_workflow(client):
    encoded = base64.b64encode(png_bytes()).decode()
    two = {"input_image": encoded, "input_image_2": encoded}
    task = create(client, **two).json()["data"]
    assert wait_for_status(client, task["task_id"])["workflow"] == "multi_reference"
    plain = client.post(TASKS, json={"prompt": "x", "resolution": "1k"}, headers=AUTH).json()["data"]
    done = wait_for_status(client, plain["task_id"])
    assert (done["width"], done["height"], done["workflow"]) == (1024, 1024, "text_to_image")


def test_each_key_sees_only_its_own_tasks(client):
    mine = create(client).json()["data"]["task_id"]
    theirs = create(client, headers=OTHER).json()["data"]["task_id"]
    assert client.get(f"{TASKS}/{theirs}", headers=AUTH).status_code == 404
    assert client.get(f"{TASKS}/{mine}", headers=OTHER).json()["detail"].startswith("task")
    mine_listed = {t["task_id"] for t in client.get(TASKS, params={"per_page": 100}, headers=AUTH).json()["data"]}
    assert mine in mine_listed and theirs not in mine_listed


def test_list_is_newest_first_and_paginated(engine, tmp_path):
    _, client = make_client(engine, rest_settings(tmp_path))  # not started: tasks stay CREATED
    ids = [create(client, prompt=f"p{i}").json()["data"]["task_id"] for i in range(5)]
    page = client.get(TASKS, params={"page": 2, "per_page": 2}, headers=AUTH).json()
    assert [t["task_id"] for t in page["data"]] == [ids[2], ids[1]]
    assert page["meta"] == {"current_page": 2, "per_page": 2, "last_page": 3, "total": 5}
    bad = client.get(TASKS, params={"per_page": 0}, headers=AUTH)
    assert bad.status_code == 422 and bad.json()["detail"].startswith("per_page: Input should be greater than")


@pytest.mark.parametrize("body,start", [
    ({"prompt": ""}, "prompt: is empty"),
    ({"aspect_ratio": "huge"}, "aspect_ratio: 'huge' is not a preset"),
    ({"resolution": "4k"}, "resolution: '4k' is not one of"),
    ({"seed": 2**33}, "seed: 8589934592 is out of range"),
    ({"safety_tolerance": -1}, "safety_tolerance: -1 is out of range"),
    ({"output_format": "bmp"}, "output_format: 'bmp' is not one of"),
    ({"input_image": "not base64!"}, "input_image: not a URL, a data URI or valid base64"),
    ({"input_image_3": base64.b64encode(b"junk").decode()}, "input_image_3: not a readable image"),
    ({"webhook_url": "ftp://example.com/hook"}, "webhook_url: 'ftp://example.com/hook' must be an http"),
    ({"prompt": None}, "prompt: Input should be a valid string"),
])
def test_invalid_task_is_422_and_not_created(client, body, start):
    before = client.get(TASKS, headers=AUTH).json()["meta"]["total"]
    response = create(client, **body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(start)
    assert client.get(TASKS, headers=AUTH).json()["meta"]["total"] == before


def test_failed_task_says_why(engine, tmp_path):
    _, client = make_client(engine, rest_settings(tmp_path, generation_timeout=0.001))
    with client:
        task = create(client).json()["data"]
        done = wait_for_status(client, task["task_id"])
    assert done["status"] == "FAILED"
    # Stopped between steps, or still waiting for the lane (another test's task): both name the limit.
    assert "longer than the time limit" in done["error"]


def test_full_backlog_is_503_with_retry_after(engine, tmp_path):
    _, client = make_client(engine, rest_settings(tmp_path, task_backlog=2))
    assert create(client).status_code == create(client).status_code == 200
    response = create(client)
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["detail"].startswith("The task backlog is full")


# -- webhooks --------------------------------------------------------------------------------------

def test_webhook_gets_each_status_change_signed(client):
    with Loopback(lambda r: (200, {}, b"ok")) as receiver:
        task = create(client, webhook_url=receiver.url + "/hook").json()["data"]
        wait_for_status(client, task["task_id"])
        deadline = time.monotonic() + 10
        while len(receiver.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert [b["status"] for b in receiver.json_bodies()] == ["CREATED", "IN_PROGRESS", "COMPLETED"]
    for request in receiver.requests:
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert verify(SECRET, headers["x-klein-timestamp"], request["body"], headers["x-klein-signature"])
        assert not verify("wrong-secret", headers["x-klein-timestamp"], request["body"], headers["x-klein-signature"])
    final = receiver.json_bodies()[-1]
    assert final["task_id"] == task["task_id"] and final["generated"][0].endswith("/images/0")
    assert "data" not in final


def test_failing_receiver_is_retried_in_order(client):
    calls = []

    def flaky(record):
        calls.append(record)
        return (500, {}, b"down") if len(calls) <= 2 else (200, {}, b"ok")

    with Loopback(flaky) as receiver:
        task = create(client, webhook_url=receiver.url + "/hook").json()["data"]
        wait_for_status(client, task["task_id"])
        deadline = time.monotonic() + 10
        while len(calls) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    statuses = [b["status"] for b in receiver.json_bodies()]
    assert statuses == ["CREATED", "CREATED", "CREATED", "IN_PROGRESS", "COMPLETED"]


def test_webhook_url_rules(engine, tmp_path):
    _, strict = make_client(engine, rest_settings(tmp_path, allow_private_urls=False))
    refused = create(strict, webhook_url="http://127.0.0.1:9/hook")
    assert refused.status_code == 422 and "private, loopback" in refused.json()["detail"]
    _, unsigned = make_client(engine, rest_settings(tmp_path / "b", webhook_secret=None))
    off = create(unsigned, webhook_url="http://127.0.0.1:9/hook")
    assert off.status_code == 422 and "KLEIN_WEBHOOK_SECRET" in off.json()["detail"]


# -- durability ------------------------------------------------------------------------------------

def test_tasks_survive_a_crash(engine, tmp_path):
    settings = rest_settings(tmp_path)
    crashed, client = make_client(engine, settings)  # never started: as if it died before running anything
    waiting = create(client).json()["data"]["task_id"]
    running = create(client).json()["data"]["task_id"]
    crashed.tasks.store.update(running, status=IN_PROGRESS, attempts=1)  # died mid-generation
    doomed = create(client).json()["data"]["task_id"]
    crashed.tasks.store.update(doomed, status=IN_PROGRESS, attempts=settings.max_task_attempts)
    crashed.tasks.store.close()

    _, restarted = make_client(engine, settings)
    with restarted:
        assert wait_for_status(restarted, waiting)["status"] == "COMPLETED"
        assert wait_for_status(restarted, running)["status"] == "COMPLETED"
        failed = wait_for_status(restarted, doomed)
    assert failed["status"] == "FAILED"
    assert failed["error"] == "Interrupted by a server restart 3 times; not retried."


def test_results_expire_and_are_deleted(engine, tmp_path):
    api, client = make_client(engine, rest_settings(tmp_path, result_ttl=0.3))
    with client:
        task = create(client).json()["data"]
        wait_for_status(client, task["task_id"])
        assert list(api.tasks.results_dir.glob(f"{task['task_id']}-*"))
        deadline = time.monotonic() + 10
        while client.get(f"{TASKS}/{task['task_id']}", headers=AUTH).status_code == 200:
            assert time.monotonic() < deadline, "the result did not expire"
            time.sleep(0.1)
    assert not list(api.tasks.results_dir.glob(f"{task['task_id']}-*"))
