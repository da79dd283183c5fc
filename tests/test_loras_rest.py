"""LoRAs through the REST API (fal's shape, `loras: [{"path", "scale"}]`): sync JSON and form, the task
routes, the 422s naming `loras[i].path` / `loras[i].scale`, and the schema. Pixels compared decoded (PNG)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from conftest_loras import lora_engine, lora_state_dict, save_diffusers, save_lokr
from conftest_rest import AUTH, SMALL, TASKS, decode, make_client, rest_settings, wait_for_status
from PIL import Image

GEN = "/v1/generate"


@pytest.fixture(scope="module")
def lora_dir(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rest-loras")
    for seed, name in enumerate(("ink", "pencil"), start=1):
        save_diffusers(lora_state_dict(tiny_model.source, seed), folder, f"{name}.safetensors")
    save_lokr(folder / "lokr.safetensors")
    (folder / "broken.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    return folder


@pytest.fixture(scope="module")
def client(tiny_model, lora_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rest-lora-engine")
    engine = lora_engine(tiny_model, tmp, lora_dir, "tiny+rest-loras")
    _, client = make_client(engine, rest_settings(tmp))
    with client:
        yield client


def post(client, **body):
    return client.post(GEN, json={"prompt": "a red fox", "seed": 5, "output_format": "png", **SMALL, **body},
                       headers=AUTH)


def image(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(decode(response.json()))


def test_loras_change_the_image_and_are_echoed(client):
    base = image(post(client))
    response = post(client, loras=[{"path": "ink", "scale": 1.0}])
    assert not np.array_equal(image(response), base)
    assert response.json()["loras"] == [{"path": "ink.safetensors", "scale": 1.0}]
    assert "loras" not in post(client).json()  # absent without LoRAs: the answer is as before
    assert np.array_equal(image(post(client, loras=[{"path": "ink", "scale": 0}])), base)
    assert np.array_equal(image(post(client)), base)


def test_stacked_loras_differ_from_one(client):
    one = image(post(client, loras=[{"path": "ink"}]))
    both = image(post(client, loras=[{"path": "ink"}, {"path": "pencil.safetensors", "scale": 0.5}]))
    assert not np.array_equal(one, both)


def test_loras_in_a_form_are_a_json_array(client):
    json_pixels = image(post(client, loras=[{"path": "pencil", "scale": 2}]))
    data = {"prompt": "a red fox", "seed": "5", "output_format": "png", "width": "128", "height": "128",
            "loras": json.dumps([{"path": "pencil", "scale": 2}])}
    response = client.post(GEN, data=data, headers={**AUTH, "Accept": "image/png"})
    assert response.status_code == 200, response.text
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(response.content))), json_pixels)
    bad = client.post(GEN, data={**data, "loras": "[{not json"}, headers=AUTH)
    assert bad.status_code == 422 and bad.json()["detail"].startswith("loras: is not valid JSON")


@pytest.mark.parametrize("loras,start", [
    ([{"path": "nowhere"}], "loras[0].path: 'nowhere' is not in the LoRA folder and is not a hub id"),
    ([{"path": "ink"}, {"path": "broken"}], "loras[1].path: 'broken.safetensors' is not a readable .safetensors"),
    ([{"path": "lokr"}], "loras[0].path: 'lokr.safetensors' is a LoKr adapter; its format is not supported"),
    ([{"path": "../ink"}], "loras[0].path: '../ink' leaves the LoRA folder"),
    ([{"path": "someone/style"}], "loras[0].path: 'someone/style' is not in the Hugging Face cache and the hub "
                                  "cannot be reached"),
    ([{"path": "ink", "scale": 5}], "loras[0].scale: 5 is out of range -1..4"),
    ([{"path": "ink", "scale": "1"}], "loras[0].scale: Input should be a valid number"),
    ([{"path": "ink", "strength": 1}], "loras[0].strength: is not a field of this request"),
    ([{"scale": 1}], "loras[0].path: Field required"),
    ([{"path": "ink"}] * 4, "loras: 4 LoRAs given, at most 3"),
    ({"path": "ink"}, "loras: Input should be a valid list"),
])
def test_bad_loras_are_422s_naming_the_field(client, loras, start):
    response = post(client, loras=loras)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(start), response.json()


def test_a_task_with_loras_runs_them_and_reports_them(client):
    sync = image(post(client, loras=[{"path": "ink", "scale": 0.5}]))
    created = client.post(TASKS, json={"prompt": "a red fox", "seed": 5, "output_format": "png", **SMALL,
                                       "loras": [{"path": "ink", "scale": 0.5}]}, headers=AUTH)
    assert created.status_code == 200, created.text
    task = wait_for_status(client, created.json()["data"]["task_id"])
    assert task["status"] == "COMPLETED", task
    assert task["loras"] == [{"path": "ink.safetensors", "scale": 0.5}]
    result = client.get(task["generated"][0], headers=AUTH)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(result.content))), sync)


def test_a_task_naming_a_missing_lora_is_refused_before_it_is_stored(client):
    before = client.get(TASKS, headers=AUTH).json()["meta"]["total"]
    response = client.post(TASKS, json={"prompt": "fox", "loras": [{"path": "ink"}, {"path": "gone"}]}, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("loras[1].path: 'gone' is not in the LoRA folder")
    assert client.get(TASKS, headers=AUTH).json()["meta"]["total"] == before


def test_the_schema_says_what_loras_may_be(client):
    schema = client.get("/openapi.json").json()
    body = schema["paths"][GEN]["post"]["requestBody"]["content"]
    rule = body["application/json"]["schema"]["properties"]["loras"]["anyOf"][0]
    assert rule["maxItems"] == 3 and rule["items"]["required"] == ["path"]
    assert rule["items"]["properties"]["scale"].items() >= {"minimum": -1.0, "maximum": 4.0}.items()
    assert rule["items"]["additionalProperties"] is False
    assert body["multipart/form-data"]["schema"]["properties"]["loras"]["type"] == "string"
    task = schema["paths"][TASKS]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert task["properties"]["loras"]["anyOf"][0] == rule

