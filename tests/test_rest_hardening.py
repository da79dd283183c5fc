"""Findings of the REST API's security review, each pinned by a test: every body problem a 4xx naming
`body` or the field (never a 500), unknown fields and booleans-as-integers refused, an OpenAPI document
that says what the server does (statuses, value rules, 405 with every method in Allow), and URLs that
never carry their secrets into a log or an error."""

from __future__ import annotations

import logging
import re
import time

import pytest
from conftest_rest import AUTH, SMALL, TASKS, Loopback, data_uri, make_client, rest_settings

from klein.presets import ASPECT_PRESETS, MATCH_INPUT, PARAMETERS, RESOLUTIONS, SEED_MAX, SIZE_MULTIPLE
from klein.rest import bodies
from klein.rest.remote import UrlPolicy, redact_url
from klein.rest.schemas import NOT_A_SPACE
from klein.rest.webhooks import WebhookSender

GEN = "/v1/generate"
JSON = {**AUTH, "Content-Type": "application/json"}
SIGNED = "?X-Amz-Signature=secret123&token=abc"


@pytest.fixture(scope="module")
def client(engine, tmp_path_factory):
    _, client = make_client(engine, rest_settings(tmp_path_factory.mktemp("hardening")))
    return client  # not started: tasks are stored, never run


# -- 1. one body reader: every problem is a 4xx naming the body or the field -----------------------------

@pytest.mark.parametrize("path", [GEN, TASKS])
@pytest.mark.parametrize("content", ["[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000,
                                     '{"prompt": "x", "images": ' + "[" * 20 + "]" * 20 + "}"])
def test_deeply_nested_json_is_a_422_naming_the_body(client, path, content):
    response = client.post(path, content=content, headers=JSON)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("body: is nested")


@pytest.mark.parametrize("content_type,content,reason", [
    ("multipart/form-data", b"--x\r\n", "Missing boundary"),
    ("multipart/form-data; boundary=zz", b"garbage", "Invalid multipart data"),
])
def test_an_unreadable_form_is_a_400_naming_the_body(client, content_type, content, reason):
    response = client.post(GEN, content=content, headers={**AUTH, "Content-Type": content_type})
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith(f"body: the form could not be read ({reason}")


def test_a_form_of_more_than_64_fields_is_a_400(client):
    response = client.post(GEN, data={f"field{i}": "x" for i in range(65)}, headers=AUTH)
    assert response.status_code == 400, response.text
    assert "Too many fields" in response.json()["detail"]


def test_a_form_field_over_its_size_limit_is_a_413(client, monkeypatch):
    monkeypatch.setattr(bodies, "base64_image_limit", lambda limits: 1000)  # 4,000 bytes a text field
    response = client.post(GEN, data={"prompt": "x" * 5000}, headers=AUTH)
    assert response.status_code == 413, response.text
    assert response.json()["detail"].startswith("body: the form could not be read (Field exceeded maximum size")


@pytest.mark.parametrize("path,content,start", [
    (GEN, r'{"prompt": "\ud800"}', r"prompt: contains an unpaired surrogate (\ud800); send valid Unicode text"),
    (GEN, r'{"prompt": "fox", "image_uris": ["x", "a\udc00"]}', r"image_uris[1]: contains an unpaired surrogate"),
    (GEN, r'{"prompt": "fox", "\udc00": 1}', r"body: the field name '\udc00' contains an unpaired surrogate"),
    (TASKS, r'{"prompt": "fox", "input_image": "\udbff"}', r"input_image: contains an unpaired surrogate"),
])
def test_an_unpaired_surrogate_is_a_422_naming_the_field(client, path, content, start):
    response = client.post(path, content=content, headers=JSON)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(start)


def test_a_task_body_must_be_json(client):
    response = client.post(TASKS, content=b'{"prompt": "fox"}', headers={**AUTH, "Content-Type": "text/plain"})
    assert response.status_code == 415 and response.json()["detail"] == "Content-Type must be application/json."


# -- 2. unknown fields and booleans --------------------------------------------------------------------

@pytest.mark.parametrize("path,extra", [(TASKS, {"input_image_5": "x"}), (GEN, {"foo": 1}),
                                        (TASKS, {"input_image_5": "x", "foo": None})])
def test_unknown_fields_are_a_422_naming_them(client, path, extra):
    response = client.post(path, json={"prompt": "fox", **SMALL, **extra}, headers=AUTH)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    for name in extra:
        assert f"{name}: is not a field of this request" in detail
    assert detail.endswith("webhook_url" if path == TASKS else "num_images")  # then the fields it has


def test_an_unknown_form_field_is_a_422(client):
    response = client.post(GEN, data={"prompt": "fox", "colour": "red"}, headers=AUTH)
    assert response.status_code == 422 and response.json()["detail"].startswith("colour: is not a field")


def test_fields_listed_as_ignored_are_dropped(client, monkeypatch):
    monkeypatch.setattr(bodies, "IGNORED_FIELDS", frozenset({"client_tag"}))
    response = client.post(TASKS, json={"prompt": "fox", **SMALL, "client_tag": "x"}, headers=AUTH)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", [GEN, TASKS])
@pytest.mark.parametrize("field", ["seed", "width", "height", "safety_tolerance"])
def test_a_boolean_is_not_an_integer(client, path, field):
    response = client.post(path, json={"prompt": "fox", **SMALL, field: True}, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == f"{field}: Input should be a valid integer, got True"


def test_whole_numbers_are_integers_in_json_and_forms(client):
    as_json = client.post(GEN, json={"prompt": "fox", "width": 128.0, "height": 128, "seed": 9.0}, headers=AUTH)
    assert as_json.status_code == 200 and as_json.json()["seed"] == 9
    as_form = client.post(GEN, data={"prompt": "fox", "width": "128", "height": "128", "seed": "9"}, headers=AUTH)
    assert as_form.status_code == 200 and as_form.json()["seed"] == 9
    text = client.post(GEN, json={"prompt": "fox", **SMALL, "seed": "9"}, headers=AUTH)
    assert text.json()["detail"] == "seed: Input should be a valid integer, got '9'"  # in JSON, text is not a number


# -- 3. the OpenAPI document says what the server does --------------------------------------------------

def _bodies(client) -> dict[str, dict]:
    paths = client.get("/openapi.json").json()["paths"]
    content = paths[GEN]["post"]["requestBody"]["content"]
    return {"json": content["application/json"]["schema"], "form": content["multipart/form-data"]["schema"],
            "task": paths[TASKS]["post"]["requestBody"]["content"]["application/json"]["schema"]}


def _typed(prop: dict) -> dict:
    """A property's schema without its null branch."""
    return next((b for b in prop.get("anyOf", []) if b != {"type": "null"}), prop)


@pytest.mark.parametrize("which", ["json", "form", "task"])
def test_the_body_schema_has_the_rules_the_server_checks(client, which):
    schema = _bodies(client)[which]
    props = {name: _typed(prop) for name, prop in schema["properties"].items()}
    assert schema["additionalProperties"] is False
    assert props["prompt"] | {"description": None, "title": None} == {
        "type": "string", "minLength": 1, "pattern": NOT_A_SPACE, "maxLength": PARAMETERS["prompt"].maximum,
        "description": None, "title": None}
    assert (props["seed"]["type"], props["seed"]["minimum"], props["seed"]["maximum"]) == ("integer", 0, SEED_MAX)
    for side in ("width", "height"):
        assert (props[side]["minimum"], props[side]["maximum"], props[side]["multipleOf"]) == (
            PARAMETERS[side].minimum, PARAMETERS[side].maximum, SIZE_MULTIPLE)
    tolerance = PARAMETERS["safety_tolerance"]
    assert (props["safety_tolerance"]["minimum"], props["safety_tolerance"]["maximum"]) == (
        tolerance.minimum, tolerance.maximum)
    assert props["resolution"]["enum"] == list(RESOLUTIONS)
    assert props["aspect_ratio"]["enum"] == [*ASPECT_PRESETS, MATCH_INPUT]
    assert set(props["output_format"]["enum"]) == {"jpeg", "jpg", "png", "webp"}


def test_the_model_field_names_the_loaded_model(client):
    assert _typed(_bodies(client)["json"]["properties"]["model"])["enum"] == ["tiny"]


def test_openapi_lists_the_statuses_each_route_answers(client):
    paths = client.get("/openapi.json").json()["paths"]
    statuses = {(path, method): set(op["responses"]) for path, ops in paths.items() for method, op in ops.items()}
    assert statuses[(GEN, "post")] >= {"200", "400", "401", "406", "413", "415", "422", "503", "504"}
    assert statuses[(TASKS, "post")] >= {"200", "401", "413", "415", "422", "503"}
    assert all("401" in codes for codes in statuses.values())
    assert {"404"} <= statuses[(TASKS + "/{task_id}", "get")] & statuses[(TASKS + "/{task_id}/images/{index}", "get")]
    retry_after = paths[TASKS]["post"]["responses"]["503"]["headers"]["Retry-After"]
    assert retry_after["required"] and retry_after["schema"]["type"] == "integer"


@pytest.mark.parametrize("method,path,allow", [("DELETE", TASKS, "GET, POST"), ("PUT", TASKS + "/abc", "GET"),
                                               ("GET", GEN, "POST"), ("OPTIONS", TASKS, "GET, POST")])
def test_a_wrong_method_is_a_405_allowing_every_method_of_the_path(client, method, path, allow):
    response = client.request(method, path, headers=AUTH)
    assert response.status_code == 405 and response.headers["Allow"] == allow
    assert response.json()["detail"].startswith(f"{method} is not allowed on ")


# -- 5. URLs lose their secrets before they are logged or shown -----------------------------------------

@pytest.mark.parametrize("url,shown", [
    ("https://user:pass@host.example/p/a.png?X-Amz-Signature=s#frag", "https://host.example/p/a.png"),
    ("http://host:8080" + SIGNED, "http://host:8080"), ("ftp://example.com/hook", "ftp://example.com/hook"),
    ("not a url?token=abc", "not a url"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_image_urls_keep_their_secrets(client, caplog):
    caplog.set_level(logging.DEBUG)
    with Loopback(lambda r: (404, {}, b"gone")) as server:
        url = f"http://user:pw@{server.url.removeprefix('http://')}/image.png{SIGNED}"
        response = client.post(GEN, json={"prompt": "fox", **SMALL, "image_uris": [url]}, headers=AUTH)
        as_text = client.post(GEN, json={"prompt": "fox", "image_uris": url}, headers=AUTH)  # not a list
    assert response.status_code == 422 and "answered HTTP 404" in response.json()["detail"]
    assert as_text.status_code == 422 and "/image.png" in as_text.json()["detail"]
    for text in (response.text, as_text.text, caplog.text):
        assert "secret123" not in text and "token=abc" not in text and "pw@" not in text


def test_webhook_urls_keep_their_secrets_in_the_log(caplog):
    caplog.set_level(logging.DEBUG)
    with Loopback(lambda r: (500, {}, b"down")) as receiver:
        sender = WebhookSender("secret", UrlPolicy(allow_private=True, timeout=3), attempts=1, backoff=0.01)
        sender.start()
        try:
            sender.send(receiver.url + "/hook" + SIGNED, {"status": "CREATED"}, key="task-1")
            deadline = time.monotonic() + 10
            while sender.pending() and time.monotonic() < deadline:  # until given up
                time.sleep(0.02)
        finally:
            sender.stop(timeout=0)
        assert len(receiver.requests) == 1 and "X-Amz-Signature=secret123" in receiver.requests[0]["path"]
    assert "given up" in caplog.text and receiver.url + "/hook" in caplog.text
    assert "secret123" not in caplog.text and "token=abc" not in caplog.text


def test_a_refused_webhook_url_keeps_its_secrets(engine, tmp_path):
    _, strict = make_client(engine, rest_settings(tmp_path, allow_private_urls=False))
    response = strict.post(TASKS, json={"prompt": "fox", "webhook_url": "http://127.0.0.1:9/h" + SIGNED},
                           headers=AUTH)
    assert response.status_code == 422 and "'http://127.0.0.1:9/h' resolves to a private" in response.text


def test_an_empty_webhook_url_is_refused_not_dropped(client):
    response = client.post(TASKS, json={"prompt": "fox", "webhook_url": ""}, headers=AUTH)
    assert response.status_code == 422 and response.json()["detail"].startswith("webhook_url: ''")


def test_data_uris_still_work(client):
    response = client.post(GEN, json={"prompt": "fox", **SMALL, "image_uris": [data_uri()]}, headers=AUTH)
    assert response.status_code == 200 and response.json()["workflow"] == "edit"


def test_the_prompt_pattern_counts_as_a_space_what_the_server_strips():
    """A prompt of one "\\x1c" matched `\\S` for a schema fuzzer yet is empty to str.strip(): a 422 for valid data."""
    assert "\\s" not in NOT_A_SPACE.lower(), "ECMA-262's \\s is not Python's: spell the characters out"
    for code in range(0x110000):
        char = chr(code)
        assert bool(re.fullmatch(NOT_A_SPACE, char)) == bool(char.strip()), hex(code)
