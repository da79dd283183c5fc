"""Fuzz every documented route from the OpenAPI schema with schemathesis' engine, as its CLI runs it:
every phase (coverage, fuzzing with valid and invalid data, stateful) and every check, so the server
does what its schema says: no 500, only documented statuses and content types, responses that match
their schemas, invalid data refused and valid data accepted, auth enforced, 405 with Allow.
Bounded: about 30 examples per route, well under two minutes."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest
import schemathesis
from conftest_rest import AUTH, make_client, rest_settings
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema
from schemathesis.generation.jsonschema import strategy as jsonschema_strategy
from schemathesis.specs.openapi.checks import positive_data_acceptance
from schemathesis.transport.serialization import Binary

MAX_EXAMPLES = 30
ROUTES = [("/v1/generate", "POST"), ("/v1/ai/text-to-image/flux-2-klein", "POST"),
          ("/v1/ai/text-to-image/flux-2-klein", "GET"), ("/v1/ai/text-to-image/flux-2-klein/{task_id}", "GET"),
          ("/v1/ai/text-to-image/flux-2-klein/{task_id}/images/{index}", "GET")]
# A 422 for what no JSON Schema can say, so schema-valid data can get it: whether a string is a readable
# image or mask (or a URL of a public host that serves one) and whether a mask fits its image, whether a
# LoRA path names a usable adapter, what the moderation policy refuses, how many tokens the model's
# tokenizer makes of a prompt, and match_input's need of a reference image (which the schema could require,
# but not that the image can be read).
# Anything else refused is a schema bug.
BEYOND_THE_SCHEMA = re.compile(r"((images|image_uris)(\[\d\])?|input_image(_\d)?|webhook_url|mask|"
                               r"loras\[\d\]\.(path|weight_name)): |"
                               r"prompt: is [\d,]+ tokens long|aspect_ratio: 'match_input' needs a reference image|"
                               r"Request moderated|Content moderated")
# In a form, `loras` and `image_uris` are JSON inside a text field: no form schema can say what that text must
# be; and a mask's need of an image is not in the form's schema (schemathesis cannot evaluate a condition on
# a form holding a file: "Unsupported type: 'Binary'"), so a mask without one is a 422 naming `images`.
BEYOND_A_FORM_SCHEMA = re.compile(r"(loras(\[\d\](\.\w+)?)?|images): ")


@schemathesis.check
def positive_data_acceptance_within_the_schema(ctx, response, case):
    """schemathesis' positive_data_acceptance (turned off below), except for the 422s of BEYOND_THE_SCHEMA."""
    detail = response.json().get("detail", "") if response.status_code == 422 else ""
    if BEYOND_THE_SCHEMA.match(detail) or (case.media_type == "multipart/form-data" and
                                           BEYOND_A_FORM_SCHEMA.match(detail)):
        return None
    return positive_data_acceptance(ctx, response, case)


CONFIG = {
    "headers": AUTH,
    "workers": 1,
    "continue-on-failure": True,
    "generation": {"max-examples": MAX_EXAMPLES, "mode": "all", "database": "none"},
    # Every check is on by default; max_response_time needs its limit, and positive_data_acceptance is
    # replaced by the check above.
    "checks": {"max_response_time": 30, "positive_data_acceptance": {"enabled": False}},
    # A generation over the fuzzing app's short time limit is a documented 504 (and a full sync backlog a
    # 503), not a server error.
    "operations": [{"include-path": "/v1/generate", "include-method": "POST",
                    "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503", "504"]}}}],
}


@pytest.fixture(scope="module")
def fuzz_app(engine, tmp_path_factory):
    # A short time limit keeps fuzzed 2k generations cheap (they end as 504s); the worker is not started,
    # so fuzzed tasks are stored but never run, and the backlog is large enough never to fill.
    settings_ = rest_settings(tmp_path_factory.mktemp("fuzz"), generation_timeout=0.2, allow_private_urls=False,
                              fetch_timeout=1, webhook_timeout=1, task_backlog=100_000)
    api, _ = make_client(engine, settings_)
    return api.create_app()


@pytest.fixture(scope="module")
def api_schema(fuzz_app):
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app, config=SchemathesisConfig.from_dict(CONFIG))


def _files_as_text(value):
    """A drawn value with its files (schemathesis' Binary) as empty strings: `format: binary` is an annotation,
    so the rest of the value is judged as before."""
    if isinstance(value, (Binary, bytes)):
        return ""
    if isinstance(value, dict):
        return {k: _files_as_text(v) for k, v in value.items()}
    return [_files_as_text(v) for v in value] if isinstance(value, list) else value


def _validator_reading_files(schema):
    """schemathesis 4.32.5's draw filter, made to take a form holding files. Its own validator (jsonschema_rs)
    raises "Unsupported type: 'Binary'" on one, and a negative mutation of the /v1/generate form (since that form
    has 16 fields) sometimes draws the form whole and filters it so: an engine error about 1 run in 50. schemathesis
    strips files the same way before its other validations (negative._strip_binary)."""
    is_valid = UNPATCHED_VALIDATOR(schema)
    return lambda value: is_valid(_files_as_text(value))


UNPATCHED_VALIDATOR = jsonschema_strategy._validator


@pytest.fixture(scope="module")
def failures(api_schema) -> dict[str, list[str]]:
    """One run of the engine: each failed check, by operation ("METHOD /path"), with the request it sent."""
    found: dict[str, list[str]] = defaultdict(list)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jsonschema_strategy, "_validator", _validator_reading_files)
        for event in from_schema(api_schema).execute():
            if isinstance(event, (events.NonFatalError, events.FatalError)):
                found["engine"].append(event.info.format())
            if not isinstance(event, events.ScenarioFinished):
                continue
            for case_id, checks in event.recorder.checks.items():
                for check in (c for c in checks if c.status == Status.FAILURE):
                    failure = check.failure_info.failure
                    found[failure.operation].append(f"{check.name}: {failure.title}\n{failure.message}\n"
                                                    f"{check.failure_info.code_sample}")
    return found


def test_every_route_is_fuzzed(api_schema):
    documented = {(op.path, op.method.upper()) for op in (r.ok() for r in api_schema.get_all_operations())}
    assert documented == set(ROUTES)


def test_the_engine_ran_without_errors(failures):
    assert not failures.get("engine"), "\n\n".join(failures["engine"])


@pytest.mark.parametrize("path,method", ROUTES)
def test_every_check_passes(failures, path, method):
    found = failures.get(f"{method} {path}", [])
    assert not found, f"{len(found)} failed checks:\n\n" + "\n\n".join(dict.fromkeys(found))
