"""The service never answers 5xx: every route fuzzed from its own OpenAPI schema (schemathesis), a bounded
number of examples per route, against two tiny runs served together; model names are only ever keys."""
from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from lorafit.serve import create_app


FUZZ_EXAMPLES = 40
"""Generated requests per route (a bounded run for the test suite; hypothesis shrinks any failure)."""


def test_no_route_answers_a_server_error(served_models) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(served_models))
    tried: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def no_server_error(case) -> None:
            response = case.call()
            tried[operation.label] = tried.get(operation.label, 0) + 1
            assert response.status_code < 500, (case.path, case.body, response.text)

        no_server_error()
    assert {"POST /v1/classify", "GET /v1/models", "GET /health"} <= set(tried)
    assert tried["POST /v1/classify"] >= FUZZ_EXAMPLES // 2


@pytest.mark.parametrize("name", ["../two", "/etc/passwd", "three/../../two", "..", "three\x00", "~/runs/three"])
def test_a_model_name_never_reaches_a_path(served_models, name: str) -> None:
    with TestClient(create_app(served_models)) as client:
        response = client.post("/v1/classify", json={"texts": ["pizza"], "model": name})
    assert response.status_code == 404 and "served models: three, two" in response.json()["detail"]
