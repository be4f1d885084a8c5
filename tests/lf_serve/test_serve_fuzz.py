"""Schemathesis against the running server's own OpenAPI schema: whatever the body, headers or JSON, the server
answers with a 2xx or a 4xx in OpenAI's error shape, never a 5xx (bounded to a few seconds)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

schemathesis = pytest.importorskip("schemathesis")



@pytest.fixture
def api_schema(tiny_engine):
    """The schema the running server publishes, fuzzed over a real socket (streaming included)."""
    from serve_helpers import Server

    from lf_serve.api.app import create_app

    with Server(create_app(tiny_engine, api_key="sk-fuzz")) as server:
        yield from _schema(schemathesis.openapi.from_url(server.url + "/openapi.json"))


def _schema(schema):
    @schema.hook("map_body")
    def served_model(context, body):  # most generated bodies name the served model, to reach generation
        if isinstance(body, dict) and "model" in body and len(repr(body)) % 4:
            body["model"] = "tiny"
        return body

    @schema.hook("map_headers")
    def with_key(context, headers):
        headers = dict(headers or {})
        headers.setdefault("Authorization", "Bearer sk-fuzz")
        return headers

    yield schema


def test_no_server_errors(api_schema):
    from hypothesis import given

    seen: dict[str, set[int]] = {}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/completions", "/v1/models",
                                              "/v1/score/evaluation", "/health"}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call(timeout=30)
            seen.setdefault(case.operation.path, set()).add(response.status_code)
            assert response.status_code < 500, (response.status_code, response.text[:300], case.body)
            if response.status_code >= 400:
                error = response.json()["error"]
                assert set(error) == {"message", "type", "param", "code"} and error["message"]

        check()
    assert 200 in seen["/v1/chat/completions"] and 400 in seen["/v1/chat/completions"]
