"""Fuzz every documented route from the OpenAPI schema (schemathesis): no answer is a 500 and
every error has the one `{"detail": "..."}` shape. Bounded: about 30 examples per route."""

from __future__ import annotations

import pytest
import schemathesis
from conftest_rest import AUTH, make_client, rest_settings
from hypothesis import HealthCheck, given, settings

MAX_EXAMPLES = 30


@pytest.fixture(scope="module")
def fuzz_app(engine, tmp_path_factory):
    # A short time limit keeps fuzzed 2k generations cheap (they end as 504s); the worker is not
    # started, so fuzzed tasks are stored but never run; the backlog then fills (503s).
    settings_ = rest_settings(tmp_path_factory.mktemp("fuzz"), generation_timeout=0.3, allow_private_urls=False,
                              fetch_timeout=1, task_backlog=8)
    api, _ = make_client(engine, settings_)
    return api.create_app()


@pytest.fixture(scope="module")
def api_schema(fuzz_app):
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


ROUTES = [("/v1/generate", "POST"), ("/v1/ai/text-to-image/flux-2-klein", "POST"),
          ("/v1/ai/text-to-image/flux-2-klein", "GET"), ("/v1/ai/text-to-image/flux-2-klein/{task_id}", "GET"),
          ("/v1/ai/text-to-image/flux-2-klein/{task_id}/images/{index}", "GET")]


def test_every_route_is_fuzzed(api_schema):
    documented = {(op.path, op.method.upper()) for op in (r.ok() for r in api_schema.get_all_operations())}
    assert documented == set(ROUTES)


# schemathesis.pytest.from_fixture does not run under pytest 9, so each route's strategy is drawn here.
@pytest.mark.parametrize("path,method", ROUTES)
def test_no_server_errors(api_schema, path, method):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case):
        response = case.call(headers=AUTH)
        assert response.status_code != 500, response.text
        if response.status_code >= 400:
            body = response.json()
            assert list(body) == ["detail"] and isinstance(body["detail"], str), body

    check()
