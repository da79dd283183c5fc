"""Moderation refusals through REST: the engine's RequestModerated / ContentModerated are 422s
(sync) or a FAILED task with the reason; safety_tolerance reaches the engine."""

from __future__ import annotations

import pytest
from conftest_rest import AUTH, SMALL, TASKS, started_client, wait_for_status

from klein.errors import ContentModerated

PROMPT = "a bloody knife on a table"  # violence severity 1: refused at tolerance 0, allowed at 2


@pytest.fixture(scope="module")
def client(engine, tmp_path_factory):
    with started_client(engine, tmp_path_factory) as client:
        yield client


def test_request_moderated_is_422_and_tolerance_passes_through(client):
    refused = client.post("/v1/generate", json={"prompt": PROMPT, "safety_tolerance": 0, **SMALL}, headers=AUTH)
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("Request moderated")
    allowed = client.post("/v1/generate", json={"prompt": PROMPT, "safety_tolerance": 2, **SMALL}, headers=AUTH)
    assert allowed.status_code == 200, allowed.text


def test_moderated_task_is_refused_before_anything_is_stored(client):
    before = client.get(TASKS, headers=AUTH).json()["meta"]["total"]
    refused = client.post(TASKS, json={"prompt": PROMPT, "safety_tolerance": 0, **SMALL}, headers=AUTH)
    assert refused.status_code == 422 and refused.json()["detail"].startswith("Request moderated")
    assert client.get(TASKS, headers=AUTH).json()["meta"]["total"] == before  # no task, no stored prompt


def test_content_moderated_task_fails_with_the_reason(client, engine, monkeypatch):
    def refuse(image, tolerance):
        raise ContentModerated("the generated image was flagged")

    monkeypatch.setattr(engine.moderator, "check_output", refuse)
    task = client.post(TASKS, json={"prompt": "a cup", **SMALL}, headers=AUTH).json()["data"]
    done = wait_for_status(client, task["task_id"])
    assert done["status"] == "FAILED" and done["error"].startswith("Content moderated")
    assert "generated" not in done or done["generated"] == []


def test_content_moderated_is_422(client, engine, monkeypatch):
    def refuse(image, tolerance):
        raise ContentModerated("the generated image was flagged")

    monkeypatch.setattr(engine.moderator, "check_output", refuse)
    response = client.post("/v1/generate", json={"prompt": "a cup", **SMALL}, headers=AUTH)
    assert response.status_code == 422
    assert response.json() == {"detail": "Content moderated: the generated image was flagged"}
