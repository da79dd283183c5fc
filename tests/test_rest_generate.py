"""POST /v1/generate through FastAPI's TestClient over the tiny engine: auth, validation, workflows."""

from __future__ import annotations

import io
import json

import pytest
from conftest_rest import AUTH, KEY, SMALL, data_uri, decode, make_client, png_bytes, rest_settings, started_client
from PIL import Image

GEN = "/v1/generate"


@pytest.fixture(scope="module")
def client(engine, tmp_path_factory):
    with started_client(engine, tmp_path_factory) as client:
        yield client


def post(client, headers=AUTH, **body):
    return client.post(GEN, json={"prompt": "a red fox", **SMALL, **body}, headers=headers)


# -- auth ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {KEY}"}, {"x-freepik-api-key": KEY}, {"x-key": KEY}])
def test_each_key_header_is_accepted(client, headers):
    response = post(client, headers=headers, seed=1)
    assert response.status_code == 200, response.text
    assert response.json()["seed"] == 1


@pytest.mark.parametrize("headers,word", [({}, "Missing API key"), ({"x-key": "wrong"}, "Invalid API key"),
                                          ({"Authorization": "Bearer wrong"}, "Invalid API key"),
                                          ({"Authorization": f"Basic {KEY}"}, "Missing API key")])
def test_missing_or_wrong_key_is_401(client, headers, word):
    response = post(client, headers=headers)
    assert response.status_code == 401
    assert response.json()["detail"].startswith(word)
    assert KEY not in response.text and "wrong" not in response.text


def test_no_keys_configured_says_how_to_configure(engine, tmp_path):
    _, client = make_client(engine, rest_settings(tmp_path, api_keys=()))
    response = post(client, headers={"x-key": "anything"})
    assert response.status_code == 401
    assert "KLEIN_API_KEYS" in response.json()["detail"]


# -- the image -------------------------------------------------------------------------------------

def test_text_to_image_json(client):
    response = post(client, seed=7)
    body = response.json()
    assert response.status_code == 200
    assert body | {"image": None, "timings_ms": None} == {
        "image": None, "mime_type": "image/jpeg", "seed": 7, "width": 128, "height": 128, "model": "tiny",
        "workflow": "text_to_image", "output_format": "jpeg", "timings_ms": None}
    assert body["timings_ms"]["total"] > 0
    assert decode(body).size == (128, 128)


def test_same_seed_same_bytes(client):
    assert post(client, seed=3).json()["image"] == post(client, seed=3).json()["image"]


@pytest.mark.parametrize("accept,fmt", [("image/png", "PNG"), ("image/jpeg", "JPEG")])
def test_accept_image_returns_raw_bytes(client, accept, fmt):
    response = client.post(GEN, json={"prompt": "fox", **SMALL}, headers={**AUTH, "Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"] == accept
    assert Image.open(io.BytesIO(response.content)).format == fmt
    assert response.headers["x-klein-seed"].isdigit()


def test_accept_and_output_format_disagree_is_406(client):
    response = client.post(GEN, json={"prompt": "fox", "output_format": "png"},
                           headers={**AUTH, "Accept": "image/jpeg"})
    assert response.status_code == 406
    assert "output_format" in response.json()["detail"]


@pytest.mark.parametrize("count,workflow", [(0, "text_to_image"), (1, "edit"), (2, "multi_reference"),
                                            (4, "multi_reference")])
def test_workflow_follows_uploaded_image_count(client, count, workflow):
    files = [("images", (f"ref{i}.png", png_bytes(color=(i * 50, 0, 0)), "image/png")) for i in range(count)]
    data = {"prompt": "combine them", **{k: str(v) for k, v in SMALL.items()}}
    response = client.post(GEN, data=data, files=files or None, headers=AUTH) if files else \
        client.post(GEN, data=data, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["workflow"] == workflow


def test_image_uris_data_uris_json(client):
    response = post(client, image_uris=[data_uri(), data_uri(png_bytes(color=(0, 200, 0)))])
    assert response.json()["workflow"] == "multi_reference"


def test_image_uris_in_a_form_as_json_array(client):
    data = {"prompt": "edit", "width": "128", "height": "128", "image_uris": json.dumps([data_uri()])}
    assert client.post(GEN, data=data, headers=AUTH).json()["workflow"] == "edit"


def test_uploaded_images_take_priority_over_image_uris(client):
    data = {"prompt": "edit", "width": "128", "height": "128", "image_uris": json.dumps([data_uri(), data_uri()])}
    files = [("images", ("a.png", png_bytes(), "image/png"))]
    assert client.post(GEN, data=data, files=files, headers=AUTH).json()["workflow"] == "edit"


def test_omitted_model_is_the_loaded_one_and_tiny_is_accepted(client):
    assert post(client).json()["model"] == "tiny"
    assert post(client, model="tiny").status_code == 200


# -- validation: one 422 per field, naming it ------------------------------------------------------

@pytest.mark.parametrize("body,start", [
    ({"prompt": "   "}, "prompt: is empty"),
    ({"prompt": 5}, "prompt: Input should be a valid string"),
    ({"model": "flux2-klein-9b"}, "model: 'flux2-klein-9b' is not loaded on this server; it runs 'tiny'"),
    ({"model": "dall-e"}, "model: 'dall-e' is not a model name"),
    ({"aspect_ratio": "cinema", "width": None, "height": None}, "aspect_ratio: 'cinema' is not a preset"),
    ({"resolution": "8k"}, "resolution: '8k' is not one of 1k, 2k"),
    ({"seed": -1}, "seed: -1 is out of range"),
    ({"seed": "abc"}, "seed: Input should be a valid integer"),
    ({"safety_tolerance": 6}, "safety_tolerance: 6 is out of range 0..5"),
    ({"output_format": "gif"}, "output_format: 'gif' is not one of png, jpeg, webp"),
    ({"width": 100}, "width: 100 is not a multiple of 16"),
    ({"width": 128, "height": None}, "height: custom size needs both width and height"),
    ({"height": 4096}, "height: 4096 is out of range 64..2048"),
    ({"image_uris": ["data:image/png;base64,!!!"]}, "image_uris[0]: not a URL, a data URI or valid base64"),
    ({"image_uris": [data_uri(b"not an image")]}, "image_uris[0]: not a readable image"),
    ({"image_uris": [data_uri(png_bytes((32, 32)))]}, "image_uris[0]: image is 32x32"),
    ({"image_uris": [data_uri()] * 5}, "image_uris: 5 reference images given, at most 4"),
    ({"image_uris": "/etc/passwd"}, "image_uris: Input should be a valid list"),
    ({"images": ["/etc/hostname"]}, "images[0]: not a URL, a data URI or valid base64"),
])
def test_each_bad_field_is_a_422_naming_it(client, body, start):
    full = {"prompt": "fox", **SMALL, **body}
    response = client.post(GEN, json={k: v for k, v in full.items() if v is not None}, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(start), response.json()


def test_missing_prompt_names_the_field(client):
    assert client.post(GEN, json={}, headers=AUTH).json()["detail"] == "prompt: Field required"


@pytest.mark.parametrize("content,ctype,status,start", [
    ("{not json", "application/json", 422, "body: is not valid JSON"),
    ("[1, 2]", "application/json", 422, "body: must be a JSON object"),
    ("prompt=fox", "text/plain", 415, "Content-Type must be"),
])
def test_bad_bodies(client, content, ctype, status, start):
    response = client.post(GEN, content=content, headers={**AUTH, "Content-Type": ctype})
    assert response.status_code == status
    assert response.json()["detail"].startswith(start)


def test_five_uploads_is_a_422(client):
    files = [("images", (f"{i}.png", png_bytes(), "image/png")) for i in range(5)]
    response = client.post(GEN, data={"prompt": "x"}, files=files, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("images: 5 reference images given")


def test_corrupt_upload_names_its_index(client):
    files = [("images", ("a.png", png_bytes(), "image/png")), ("images", ("b.png", b"garbage", "image/png"))]
    response = client.post(GEN, data={"prompt": "x"}, files=files, headers=AUTH)
    assert response.json()["detail"].startswith("images[1]: not a readable image")


def test_form_field_types_are_checked(client):
    response = client.post(GEN, data={"prompt": "x", "seed": "twelve"}, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("seed: Input should be a valid integer")


# -- limits and failures ---------------------------------------------------------------------------

def test_time_limit_is_a_504(engine, tmp_path):
    _, client = make_client(engine, rest_settings(tmp_path, generation_timeout=0.001))
    response = post(client)
    assert response.status_code == 504
    assert response.json() == {"detail": "Generation took longer than the time limit and was stopped."}


def test_unexpected_error_is_a_500_without_traceback(engine, tmp_path, monkeypatch):
    api, client = make_client(engine, rest_settings(tmp_path))

    def boom(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(api, "generate_sync", boom)
    response = post(client)
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error; the server log has the details."}


def test_openapi_documents_every_route(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths) == {"/v1/generate", "/v1/ai/text-to-image/flux-2-klein",
                          "/v1/ai/text-to-image/flux-2-klein/{task_id}",
                          "/v1/ai/text-to-image/flux-2-klein/{task_id}/images/{index}"}
    generate = paths["/v1/generate"]["post"]
    assert {"application/json", "multipart/form-data"} <= set(generate["requestBody"]["content"])
    assert "Generate 1..4 images" in generate["description"]
    assert client.get("/docs").status_code == 200


def test_rest_results_are_not_written_to_the_ui_output_folder(client, engine):
    # The UI's folder is served by Gradio without the API key; REST answers with the bytes instead.
    before = set(engine.output_dir.iterdir())
    assert post(client, seed=5).status_code == 200
    assert set(engine.output_dir.iterdir()) == before


def test_task_body_is_not_read_before_the_key_is_checked(client):
    response = client.post("/v1/ai/text-to-image/flux-2-klein", content=b"{not json",
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 401


@pytest.mark.parametrize("path", [GEN, "/v1/ai/text-to-image/flux-2-klein"])
def test_an_oversized_json_body_is_413_before_it_is_read(client, path):
    response = client.post(path, content=b"{}", headers={**AUTH, "Content-Type": "application/json",
                                                          "Content-Length": str(10**10)})
    assert response.status_code == 413 and response.json()["detail"].startswith("body: 10,000,000,000 bytes")


def test_sync_requests_past_the_backlog_are_503_at_once(engine, tmp_path):
    import threading
    import time

    api, small = make_client(engine, rest_settings(tmp_path, sync_backlog=1))
    engine._lane.acquire()  # the GPU is busy with someone else's generation
    answers = {}
    first = threading.Thread(target=lambda: answers.update(first=post(small, seed=3)))
    try:
        first.start()
        deadline = time.monotonic() + 10
        while api._sync_slots._value and time.monotonic() < deadline:  # until the first request holds the slot
            time.sleep(0.02)
        refused = post(small, seed=4)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == str(api.work.seconds_for(1))  # nothing measured yet: the guess
        assert refused.json()["detail"].startswith("1 requests are already running or waiting")
    finally:
        engine._lane.release()
        first.join(30)
    assert answers["first"].status_code == 200  # the waiting one was served once the lane came free


def test_a_client_that_disconnects_cancels_its_generation(engine, tmp_path, monkeypatch):
    import socket
    import threading
    import time

    import uvicorn
    from conftest import free_port

    from klein.errors import GenerationCancelled
    from klein.rest.api import RestApi
    from klein.rest.routes import DISCONNECT_POLL

    first_step, closed, outcome = threading.Event(), threading.Event(), {}
    real_generate = engine.generate

    def hold_after_first_step(step, total):
        first_step.set()
        closed.wait(10)
        time.sleep(4 * DISCONNECT_POLL)  # time for the server to notice the client has gone

    def recording(request, progress=None, **kwargs):
        try:
            return real_generate(request, hold_after_first_step, **kwargs)
        except GenerationCancelled:
            outcome["cancelled"] = True
            raise

    monkeypatch.setattr(engine, "generate", recording)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(RestApi(engine, rest_settings(tmp_path)).create_app(), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        body = json.dumps({"prompt": "a fox nobody waits for", **SMALL}).encode()
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        assert first_step.wait(30)
        client.close()
        closed.set()
        deadline = time.monotonic() + 20
        while "cancelled" not in outcome and time.monotonic() < deadline:
            time.sleep(0.05)
        assert outcome == {"cancelled": True}  # stopped at the next step, not run to the end
    finally:
        closed.set()
        server.should_exit = True
        thread.join(10)
