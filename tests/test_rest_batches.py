"""num_images through REST on the tiny engine: /v1/generate answers one image as before and several as JSON or
multipart/mixed by Accept (a 406 when Accept allows neither); tasks store and list every image; a moderated image
is left out and its seed reported; a batch counts as its images in the backlogs' Retry-After."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import io
import threading
import time

import numpy as np
import pytest
from conftest_rest import (
    AUTH,
    TASKS,
    Loopback,
    make_client,
    png_bytes,
    rest_settings,
    started_client,
    wait_for_status,
)
from PIL import Image

from klein.errors import ContentModerated

GEN = "/v1/generate"
TINY = {"width": 64, "height": 64, "output_format": "png"}  # png: a batch's rounding stays one level after decoding


@pytest.fixture(scope="module")
def client(engine, tmp_path_factory):
    with started_client(engine, tmp_path_factory) as client:
        yield client


def post(client, accept=None, **body):
    headers = AUTH | ({"Accept": accept} if accept is not None else {})
    return client.post(GEN, json={"prompt": "a red fox", **TINY, **body}, headers=headers)


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def alone(client, seed: int, **body) -> np.ndarray:
    """The image `seed` makes with num_images 1."""
    response = post(client, accept="image/png", seed=seed, **body)
    assert response.status_code == 200, response.text
    return pixels(response.content)


def assert_close(batched: bytes, single: np.ndarray) -> None:
    """Equal but for batched-matmul rounding: at most one level of 255."""
    assert np.abs(pixels(batched) - single).max() <= 1


def multipart_parts(response) -> list:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode() + response.content)
    assert message.get_content_type() == "multipart/mixed"
    return list(message.iter_parts())


# -- one image: as before ---------------------------------------------------------------------------------

def test_one_image_is_answered_as_before(client):
    default, explicit = post(client, seed=5), post(client, seed=5, num_images=1)
    assert default.status_code == explicit.status_code == 200
    assert set(explicit.json()) == {"image", "mime_type", "seed", "width", "height", "model", "workflow",
                                    "output_format", "timings_ms"}
    assert explicit.json()["image"] == default.json()["image"] and explicit.json()["seed"] == 5
    raw = post(client, accept="image/png", seed=5, num_images=1)
    assert raw.headers["content-type"] == "image/png" and raw.headers["x-klein-seed"] == "5"
    assert raw.content == base64.b64decode(default.json()["image"])
    assert "x-klein-moderated-seeds" not in raw.headers


# -- several images ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("accept", [None, "application/json", "*/*", "image/png, application/json"])
def test_several_images_as_json_each_what_its_seed_makes_alone(client, accept):
    response = post(client, accept=accept, seed=40, num_images=3)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["seed"] == 40 and body["seeds"] == [40, 41, 42] and body["moderated_seeds"] == []
    assert [image["seed"] for image in body["images"]] == [40, 41, 42]
    assert {(i["content_type"], i["width"], i["height"]) for i in body["images"]} == {("image/png", 64, 64)}
    assert (body["width"], body["height"], body["workflow"], body["model"]) == (64, 64, "text_to_image", "tiny")
    assert response.headers["x-klein-seeds"] == "40,41,42" and response.headers["x-klein-seed"] == "40"
    datas = [base64.b64decode(image["data"]) for image in body["images"]]
    assert [Image.open(io.BytesIO(d)).size for d in datas] == [(64, 64)] * 3
    for seed, data in zip((40, 41, 42), datas):
        assert_close(data, alone(client, seed))
    assert np.abs(pixels(datas[0]) - pixels(datas[1])).mean() > 5  # the seeds differ, so the images do


def test_several_images_as_multipart_mixed(client):
    response = post(client, accept="multipart/mixed", seed=90, num_images=3, width=128, height=64)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("multipart/mixed; boundary=")
    assert response.headers["x-klein-seeds"] == "90,91,92"
    parts = multipart_parts(response)
    assert [(p.get_content_type(), p["X-Klein-Seed"]) for p in parts] == [("image/png", str(s)) for s in (90, 91, 92)]
    datas = [p.get_payload(decode=True) for p in parts]
    assert [Image.open(io.BytesIO(d)).size for d in datas] == [(128, 64)] * 3
    as_json = post(client, seed=90, num_images=3, width=128, height=64).json()
    assert datas == [base64.b64decode(image["data"]) for image in as_json["images"]]  # the same images either way
    assert_close(datas[2], alone(client, 92, width=128, height=64))


def test_one_image_as_multipart_mixed_when_asked(client):
    (part,) = multipart_parts(post(client, accept="multipart/mixed", seed=6))
    assert part["X-Klein-Seed"] == "6" and part.get_content_type() == "image/png"
    assert part.get_payload(decode=True) == post(client, accept="image/png", seed=6).content


@pytest.mark.parametrize("accept", ["image/png", "image/jpeg, image/webp", "text/html", "application/json;q=0"])
def test_several_images_that_accept_cannot_take_are_406(client, accept):
    response = post(client, accept=accept, num_images=3)
    assert response.status_code == 406
    detail = response.json()["detail"]
    assert detail.startswith("num_images is 3") and "Accept" in detail and "multipart/mixed" in detail


@pytest.mark.parametrize("files", [None, {"images": ("ref.png", png_bytes(), "image/png")}])
def test_a_form_asks_for_several_images_too(client, files):
    form = {"prompt": "a red fox", "seed": "7", "num_images": "2", "width": "64", "height": "64",
            "output_format": "png"}
    response = client.post(GEN, data=form, files=files, headers=AUTH)  # urlencoded, or multipart with a reference
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["seeds"] == [7, 8] and len(body["images"]) == 2
    assert body["workflow"] == ("edit" if files else "text_to_image")


@pytest.mark.parametrize("value,message", [(0, "num_images: 0 is out of range 1..4"),
                                           (5, "num_images: 5 is out of range 1..4"),
                                           (2.5, "num_images: Input should be a valid integer"),
                                           (True, "num_images: Input should be a valid integer")])
@pytest.mark.parametrize("accept", [None, "image/png"])
def test_num_images_out_of_range_is_422_naming_it(client, value, message, accept):
    response = post(client, accept=accept, num_images=value)
    assert response.status_code == 422 and response.json()["detail"].startswith(message)


@pytest.mark.parametrize("files", [None, {"images": ("ref.png", png_bytes(), "image/png")}])
@pytest.mark.parametrize("value", ["0", "5", "two"])
def test_num_images_out_of_range_in_a_form_is_422_naming_it(client, value, files):
    response = client.post(GEN, data={"prompt": "fox", "num_images": value}, files=files, headers=AUTH)
    assert response.status_code == 422 and response.json()["detail"].startswith("num_images: ")


def test_a_task_of_two_images_lists_and_serves_both(client):
    created = client.post(TASKS, json={"prompt": "a lighthouse", "seed": 20, "num_images": 2, **TINY}, headers=AUTH)
    assert created.status_code == 200, created.text
    task = wait_for_status(client, created.json()["data"]["task_id"])
    assert task["status"] == "COMPLETED", task
    assert task["generated"] == [f"http://127.0.0.1{TASKS}/{task['task_id']}/images/{i}" for i in (0, 1)]
    assert (task["seed"], task["seeds"], task["moderated_seeds"]) == (20, [20, 21], [])
    for seed, url in zip((20, 21), task["generated"]):
        served = client.get(url, headers=AUTH)
        assert served.status_code == 200 and served.headers["content-type"] == "image/png"
        assert_close(served.content, alone(client, seed, prompt="a lighthouse"))
    assert client.get(f"{TASKS}/{task['task_id']}/images/2", headers=AUTH).status_code == 404


def test_a_webhook_carries_every_image(client):
    with Loopback(lambda r: (200, {}, b"ok")) as receiver:
        created = client.post(TASKS, json={"prompt": "a tram", "seed": 3, "num_images": 3, **TINY,
                                           "webhook_url": receiver.url + "/hook"}, headers=AUTH).json()["data"]
        task = wait_for_status(client, created["task_id"])
        deadline = time.monotonic() + 10
        while len(receiver.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    final = receiver.json_bodies()[-1]
    assert final["status"] == "COMPLETED" and len(final["generated"]) == 3
    assert final["generated"] == task["generated"] and final["seeds"] == [3, 4, 5]


# -- moderation -------------------------------------------------------------------------------------------

@pytest.fixture
def second_image_refused(engine, monkeypatch):
    """The moderator refuses the second image of each generation (its checks come in seed order)."""
    calls = []

    def check_output(image, tolerance):
        calls.append(image)
        if len(calls) % 3 == 2:
            raise ContentModerated("the generated image was flagged")

    monkeypatch.setattr(engine.moderator, "check_output", check_output)


def test_a_moderated_image_is_left_out_and_reported(client, second_image_refused):
    response = post(client, seed=60, num_images=3)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["seed"] == 60 and body["seeds"] == [60, 62] and body["moderated_seeds"] == [61]
    assert [image["seed"] for image in body["images"]] == [60, 62]
    assert response.headers["x-klein-moderated-seeds"] == "61" and response.headers["x-klein-seeds"] == "60,62"
    parts = multipart_parts(post(client, accept="multipart/mixed", seed=60, num_images=3))
    assert [p["X-Klein-Seed"] for p in parts] == ["60", "62"]


def test_a_task_leaves_a_moderated_image_out(client, second_image_refused):
    created = client.post(TASKS, json={"prompt": "a beach", "seed": 70, "num_images": 3, **TINY}, headers=AUTH)
    task = wait_for_status(client, created.json()["data"]["task_id"])
    assert task["status"] == "COMPLETED" and len(task["generated"]) == 2
    assert (task["seed"], task["seeds"], task["moderated_seeds"]) == (70, [70, 72], [71])


# -- work estimates ---------------------------------------------------------------------------------------

def test_a_refused_sync_request_waits_for_the_images_ahead(engine, tmp_path):
    api, small = make_client(engine, rest_settings(tmp_path, sync_backlog=1))
    engine._lane.acquire()  # the GPU is busy: the batch waits, holding the one place
    answers = {}
    first = threading.Thread(target=lambda: answers.update(first=post(small, seed=3, num_images=3)))
    try:
        first.start()
        deadline = time.monotonic() + 10
        while api._sync_slots._value and time.monotonic() < deadline:
            time.sleep(0.02)
        refused = post(small, seed=4)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == str(api.work.seconds_for(3)) != str(api.work.seconds_for(1))
    finally:
        engine._lane.release()
        first.join(30)
    assert answers["first"].status_code == 200 and answers["first"].json()["seeds"] == [3, 4, 5]


def test_a_full_task_backlog_counts_the_images_waiting(engine, tmp_path):
    api, idle = make_client(engine, rest_settings(tmp_path, task_backlog=2))  # the worker is not started
    for n in (3, 4):
        assert idle.post(TASKS, json={"prompt": "a kite", "num_images": n, **TINY}, headers=AUTH).status_code == 200
    refused = idle.post(TASKS, json={"prompt": "a kite", **TINY}, headers=AUTH)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == str(api.tasks.task_seconds.seconds_for(7))


def test_openapi_documents_num_images_and_the_answers(client):
    schema = client.get("/openapi.json").json()
    generate = schema["paths"][GEN]["post"]
    for content in generate["requestBody"]["content"].values():
        assert content["schema"]["properties"]["num_images"] | {"description": ""} == {
            "type": "integer", "minimum": 1, "maximum": 4, "default": 1, "title": "Num Images", "description": ""}
    task_body = schema["paths"][TASKS]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert task_body["properties"]["num_images"]["maximum"] == 4
    answers = generate["responses"]["200"]
    assert {"application/json", "image/png", "image/jpeg", "image/webp", "multipart/mixed"} == set(answers["content"])
    assert {"X-Klein-Seeds", "X-Klein-Moderated-Seeds"} <= set(answers["headers"])
    assert "multipart/mixed" in generate["description"] and "406" in generate["description"]
