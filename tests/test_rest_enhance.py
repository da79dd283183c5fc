"""Prompt enhancement through the REST API on the tiny model: `prompt_upsampling` (BFL's name) on
/v1/generate (JSON, raw image, form) and the task API returns the rewrite it generated from; a refused
rewrite is refused like a refused prompt."""

from __future__ import annotations

import base64
import io
from urllib.parse import unquote

import numpy as np
import pytest
from conftest_rest import AUTH, SMALL, TASKS, started_client, wait_for_status
from PIL import Image

from klein.generation import engine as engine_module

GEN = "/v1/generate"
TOKENS = 24  # short rewrites keep these fast (test_enhance.py tests the bound)


@pytest.fixture(scope="module")
def client(engine, tmp_path_factory):
    engine.enhance_max_tokens = TOKENS
    try:
        with started_client(engine, tmp_path_factory) as client:
            yield client
    finally:
        engine.enhance_max_tokens = engine_module.MAX_NEW_TOKENS


def post(client, headers=AUTH, **body):
    return client.post(GEN, json={"prompt": "a lighthouse at dusk", "seed": 3, "output_format": "png", **SMALL,
                                  **body}, headers=headers)


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def image_of(response) -> np.ndarray:
    return pixels(base64.b64decode(response.json()["image"]))


def test_the_rewrite_is_returned_and_is_what_was_generated_from(client):
    enhanced = post(client, prompt_upsampling=True)
    assert enhanced.status_code == 200, enhanced.text
    rewrite = enhanced.json()["enhanced_prompt"]
    assert rewrite and rewrite != "a lighthouse at dusk"
    assert "enhance_prompt" in enhanced.json()["timings_ms"]
    plain = post(client)
    assert "enhanced_prompt" not in plain.json() and not np.array_equal(image_of(enhanced), image_of(plain))
    assert np.array_equal(image_of(enhanced), image_of(post(client, prompt=rewrite)))
    assert post(client, prompt_upsampling=True).json()["enhanced_prompt"] == rewrite  # the seed reproduces it


def test_a_raw_answer_carries_the_rewrite_percent_encoded(client):
    rewrite = post(client, prompt_upsampling=True).json()["enhanced_prompt"]
    raw = post(client, headers={**AUTH, "Accept": "image/png"}, prompt_upsampling=True)
    header = raw.headers["x-klein-enhanced-prompt"]
    assert header.isascii() and " " not in header and unquote(header) == rewrite
    assert "x-klein-enhanced-prompt" not in post(client, headers={**AUTH, "Accept": "image/png"}).headers


def test_a_form_takes_true_and_false(client):
    form = {"prompt": "a lighthouse at dusk", "seed": "3", "output_format": "png", "width": "128", "height": "128"}
    rewrite = post(client, prompt_upsampling=True).json()["enhanced_prompt"]
    assert client.post(GEN, data={**form, "prompt_upsampling": "true"}, headers=AUTH).json()["enhanced_prompt"] \
        == rewrite
    assert "enhanced_prompt" not in client.post(GEN, data={**form, "prompt_upsampling": "False"}, headers=AUTH).json()
    bad = client.post(GEN, data={**form, "prompt_upsampling": "maybe"}, headers=AUTH)
    assert bad.status_code == 422 and bad.json()["detail"].startswith("prompt_upsampling: Input should be a valid")


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_prompt_upsampling_must_be_a_boolean(client, value):
    response = post(client, prompt_upsampling=value)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("prompt_upsampling: Input should be a valid boolean")


def test_a_task_returns_the_rewrite(client):
    rewrite = post(client, prompt_upsampling=True).json()["enhanced_prompt"]
    body = {"prompt": "a lighthouse at dusk", "seed": 3, "output_format": "png", **SMALL, "prompt_upsampling": True}
    task = client.post(TASKS, json=body, headers=AUTH).json()["data"]
    done = wait_for_status(client, task["task_id"])
    assert done["status"] == "COMPLETED" and done["enhanced_prompt"] == rewrite, done
    plain = client.post(TASKS, json={**body, "prompt_upsampling": False}, headers=AUTH).json()["data"]
    assert "enhanced_prompt" not in wait_for_status(client, plain["task_id"])


def test_a_refused_rewrite_is_refused_like_a_prompt(client, monkeypatch):
    # A stub for the language model, so the rewrite is one the policy refuses (the tiny model's never is).
    monkeypatch.setattr(engine_module, "enhance_prompt", lambda *args: "explicit porn scene")
    refused = post(client, prompt_upsampling=True)
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("Request moderated: the prompt matched category sexual")
    body = {"prompt": "a lighthouse at dusk", **SMALL, "prompt_upsampling": True}
    task = client.post(TASKS, json=body, headers=AUTH).json()["data"]
    done = wait_for_status(client, task["task_id"])
    assert done["status"] == "FAILED" and done["error"].startswith("Request moderated: the prompt matched"), done
