"""``lorafit serve``: every route, every limit and every bad input, through FastAPI's test client.

Two tiny runs with different label sets are served together (``served_models``); a fake backend
stands in where a test needs control over when inference finishes.
"""
from __future__ import annotations

import asyncio
import base64
import json
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from lorafit import Classifier, ConfigError
from lorafit.config import ServeLimits
from lorafit.registry import ServedModel
from lorafit.serve import create_app
from lorafit.serve_guard import BodyLimit

JSON = {"content-type": "application/json"}


@pytest.fixture
def client(served_models) -> TestClient:
    with TestClient(create_app(served_models), raise_server_exceptions=False) as test_client:
        yield test_client


def classify(client: TestClient, texts: list[str], model: str | None = "three", **kwargs) -> httpx.Response:
    body = {"texts": texts} if model is None else {"texts": texts, "model": model}
    return client.post("/v1/classify", json=body, **kwargs)


class FakeBackend:
    """Probabilities from text length; counts calls; optionally blocks until ``release`` is set."""

    classes_ = ["short", "long"]

    def __init__(self, block: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        if not block:
            self.release.set()

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        self.started.set()
        self.release.wait(timeout=30)
        self.calls.append(list(texts))
        p = np.array([min(len(t), 10) / 10 for t in texts])
        return np.stack([1 - p, p], axis=1)


def fake_app(backend: FakeBackend, **limits) -> object:
    return create_app([ServedModel("fake", backend, "tiny", "single_label_classification")], ServeLimits(**limits))


# ---------------------------------------------------------------------------------------- routes
def test_health(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "models": 2}


def test_models_lists_names_labels_base_and_task(client: TestClient, tiny_model: str) -> None:
    models = client.get("/v1/models").json()["models"]
    assert [(m["name"], m["labels"]) for m in models] == [("three", ["food", "music", "sports"]),
                                                          ("two", ["music", "sports"])]
    assert all(m["base_model"] == tiny_model and m["task"] == "single_label_classification" for m in models)
    assert {m["precision"] for m in models} == {"fp32"}


def test_classify_answers_with_each_models_own_labels_and_probabilities(client: TestClient, three_label_run: Path,
                                                                        two_label_run: Path) -> None:
    texts = ["pizza and cheese", "a song on the guitar", "the team scored a goal"]
    for name, path in (("three", three_label_run), ("two", two_label_run), ("three", three_label_run)):
        response = classify(client, texts, name)
        assert response.status_code == 200, response.text
        body = response.json()
        clf = Classifier.load(path)
        expected = clf.predict_proba(texts)
        assert body["model"] == name and len(body["results"]) == len(texts)
        for result, row in zip(body["results"], expected):
            assert list(result["probabilities"]) == clf.classes_
            np.testing.assert_allclose(list(result["probabilities"].values()), row, atol=1e-5)
            assert result["label"] == clf.classes_[int(row.argmax())]
            assert result["score"] == pytest.approx(row.max(), abs=1e-5)


def test_model_is_optional_with_one_model(served_models) -> None:
    with TestClient(create_app(served_models[1:])) as one:
        response = classify(one, ["pizza"], model=None)
    assert response.status_code == 200 and response.json()["model"] == "two"


@pytest.mark.parametrize("texts", [[""], ["   "], ["\x00"], ["🍕🎸⚽" * 50], ["\u202eright to left\u200f", "a\u0301"],
                                   ["日本語のテキスト", "Ελληνικά", "\U0010ffff"]])
def test_empty_and_odd_unicode_texts_are_answered(client: TestClient, texts: list[str]) -> None:
    response = classify(client, texts)
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == len(texts)


def test_page_and_docs(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "<script" in page.text and "http://" not in page.text and "https://" not in page.text  # no external assets
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static-offline-docs/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text and client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/v1/classify", "/v1/models", "/health"} <= set(schema["paths"])


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("body, status, words", [
    (b"{bad json", 400, "malformed JSON"),
    (b"", 422, "Field required"),
    (b"[1, 2]", 422, "valid dictionary"),
    (b'{"texts": "pizza", "model": "three"}', 422, "texts: Input should be a valid list"),
    (b'{"texts": [1, "a"], "model": "three"}', 422, "texts.0: Input should be a valid string"),
    (b'{"texts": null}', 422, "texts"),
    (b'{"text": ["pizza"], "model": "three"}', 422, "text"),
    (b'{"texts": [], "model": "three"}', 422, "texts is empty"),
    (b'{"texts": ["a"], "model": 5}', 422, "model: Input should be a valid string"),
    (b'{"texts": ["a"], "model": "nope"}', 404, "unknown model 'nope'; served models: three, two"),
    (b'{"texts": ["a"]}', 422, "several models are served"),
    (b'{"texts": ["\\ud800"], "model": "three"}', 422, "unpaired surrogate"),
    (b'{"texts": ["a"], "model": "\\ud800"}', 404, "unknown model"),
    (b'{"\\ud800": 1, "texts": ["a"], "model": "three"}', 422, "invalid request"),
    (b"\xff\xfe\x00", 400, "could not be parsed"),
    (b'{"texts": ["a"], "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "could not be parsed"),
])
def test_bad_input_is_a_4xx_with_a_message(client: TestClient, body: bytes, status: int, words: str) -> None:
    response = client.post("/v1/classify", content=body, headers=JSON)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and words in detail


def test_a_body_that_is_not_json_says_which_content_type(client: TestClient) -> None:
    response = client.post("/v1/classify", content=b'{"texts": ["a"]}', headers={"content-type": "text/plain"})
    assert response.status_code == 415 and "Content-Type: application/json" in response.json()["detail"]


@pytest.mark.parametrize("method, path, status", [("get", "/v1/classify", 405), ("post", "/v1/models", 405),
                                                  ("get", "/nope", 404)])
def test_wrong_route_or_method(client: TestClient, method: str, path: str, status: int) -> None:
    response = getattr(client, method)(path)
    assert response.status_code == status and isinstance(response.json()["detail"], str)


def test_the_service_keeps_answering_after_bad_requests(client: TestClient) -> None:
    for body in (b"{", b"\xff", b'{"texts": ["\\udfff"], "model": "two"}'):
        client.post("/v1/classify", content=body, headers=JSON)
    assert classify(client, ["pizza"]).status_code == 200


# ---------------------------------------------------------------------------------------- limits
def test_too_many_texts(served_models) -> None:
    with TestClient(create_app(served_models, ServeLimits(max_texts=3))) as small:
        assert classify(small, ["a"] * 3).status_code == 200
        response = classify(small, ["a"] * 4)
    assert response.status_code == 422 and "too many texts: 4, the limit is 3" in response.json()["detail"]


def test_too_long_text(served_models) -> None:
    with TestClient(create_app(served_models, ServeLimits(max_chars=10))) as small:
        assert classify(small, ["x" * 10]).status_code == 200
        response = classify(small, ["ok", "x" * 11])
    assert response.status_code == 422 and "texts[1] is too long: 11 characters" in response.json()["detail"]


def test_too_large_body_by_content_length(served_models) -> None:
    with TestClient(create_app(served_models, ServeLimits(max_body_bytes=100))) as small:
        assert classify(small, ["a" * 40]).status_code == 200
        response = classify(small, ["a" * 200])
    assert response.status_code == 413 and "limit is 100" in response.json()["detail"]


def test_too_large_streamed_body(served_models) -> None:
    chunks = (b'{"texts": ["', b"a" * 80, b"a" * 80, b'"], "model": "three"}')
    with TestClient(create_app(served_models, ServeLimits(max_body_bytes=100))) as small:
        response = small.post("/v1/classify", content=iter(chunks), headers=JSON)  # chunked: no Content-Length
    assert response.status_code == 413 and "at least" in response.json()["detail"]


def run_asgi(app, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[int, int]:
    """Call an ASGI app directly; return (status, number of body chunks it read)."""
    read, sent = [0], []

    async def receive() -> dict:
        read[0] += 1
        body = chunks[read[0] - 1] if read[0] <= len(chunks) else b""
        return {"type": "http.request", "body": body, "more_body": read[0] < len(chunks)}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/classify", "headers": headers}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], read[0]


def test_body_limit_stops_reading_early() -> None:
    async def never(scope, receive, send) -> None:
        raise AssertionError("the application must not be reached")

    limit = BodyLimit(never, max_bytes=100)
    assert run_asgi(limit, [(b"content-length", b"5000")], [b"x" * 50] * 100) == (413, 0)  # not a byte read
    assert run_asgi(limit, [], [b"x" * 50] * 100) == (413, 3)  # stops once past the limit, 97 chunks unread
    assert run_asgi(limit, [(b"content-length", b"abc")], [b"x"])[0] == 400


def test_limits_are_validated() -> None:
    with pytest.raises(ConfigError, match="max_texts"):
        ServeLimits(max_texts=0)
    with pytest.raises(ConfigError, match="max_wait_ms"):
        ServeLimits(max_wait_ms=-1)


# ------------------------------------------------------------------------------------------ API key
@pytest.fixture
def keyed(served_models) -> TestClient:
    with TestClient(create_app(served_models, api_key="s3cret")) as test_client:
        yield test_client


@pytest.mark.parametrize("method, path", [("get", "/v1/models"), ("post", "/v1/classify"), ("get", "/"),
                                          ("get", "/docs"), ("get", "/openapi.json")])
def test_every_route_but_health_needs_the_key(keyed: TestClient, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "s3cret "[:-2]}):
        response = getattr(keyed, method)(path, headers=headers)
        assert response.status_code == 401, (path, headers)
        assert "API key" in response.json()["detail"] and response.headers["www-authenticate"]
    assert keyed.get("/health").status_code == 200


@pytest.mark.parametrize("headers", [{"Authorization": "Bearer s3cret"}, {"X-API-Key": "s3cret"},
                                     {"Authorization": "Basic " + base64.b64encode(b"me:s3cret").decode()}])
def test_the_key_opens_every_route(keyed: TestClient, headers: dict) -> None:
    assert keyed.get("/v1/models", headers=headers).status_code == 200
    assert keyed.get("/", headers=headers).status_code == 200
    assert classify(keyed, ["pizza"], headers=headers).status_code == 200


def test_a_non_ascii_key(served_models) -> None:
    with TestClient(create_app(served_models, api_key="clé")) as test_client:
        assert test_client.get("/v1/models", headers={"X-API-Key": "clé".encode()}).status_code == 200
        assert test_client.get("/v1/models", headers={"X-API-Key": "cle"}).status_code == 401


def test_the_page_asks_a_browser_for_the_key(keyed: TestClient) -> None:
    assert keyed.get("/").headers["www-authenticate"].startswith("Basic")
    assert keyed.get("/v1/models").headers["www-authenticate"].startswith("Bearer")


def test_the_key_is_checked_before_the_body_is_read(served_models) -> None:
    with TestClient(create_app(served_models, ServeLimits(max_body_bytes=10), api_key="k")) as small:
        assert classify(small, ["a" * 100]).status_code == 401


# --------------------------------------------------------------------------------------- batching
async def _concurrent(app, bodies: list[dict]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as aclient:
        return await asyncio.gather(*(aclient.post("/v1/classify", json=b) for b in bodies))


def test_concurrent_requests_are_batched_and_answered_each(served_models, three_label_run: Path,
                                                           two_label_run: Path) -> None:
    app = create_app(served_models, ServeLimits(max_batch_size=12, max_wait_ms=1000))
    texts = [f"pizza {'song ' * i}goal" for i in range(12)]
    bodies = [{"texts": [t], "model": "three" if i % 3 else "two"} for i, t in enumerate(texts)]
    responses = asyncio.run(_concurrent(app, bodies))
    batchers = app.state.batchers
    assert batchers["three"].requests == 8 and batchers["two"].requests == 4
    assert batchers["three"].batches < 8 and batchers["two"].batches < 4
    alone = {"three": Classifier.load(three_label_run), "two": Classifier.load(two_label_run)}
    for body, response in zip(bodies, responses):
        assert response.status_code == 200
        clf = alone[body["model"]]
        result = response.json()["results"][0]
        np.testing.assert_allclose(list(result["probabilities"].values()), clf.predict_proba(body["texts"])[0],
                                   atol=1e-5)
        assert list(result["probabilities"]) == clf.classes_


def test_batches_are_bounded_and_requests_keep_their_rows() -> None:
    backend = FakeBackend()
    app = fake_app(backend, max_batch_size=4, max_wait_ms=1000)
    bodies = [{"texts": ["x" * (i % 10), "y" * ((i + 5) % 10)]} for i in range(10)]
    responses = asyncio.run(_concurrent(app, bodies))
    assert max(len(call) for call in backend.calls) <= 4 and len(backend.calls) < len(bodies)
    for body, response in zip(bodies, responses):
        scores = [r["probabilities"]["long"] for r in response.json()["results"]]
        assert scores == pytest.approx([min(len(t), 10) / 10 for t in body["texts"]])


def test_a_request_larger_than_the_batch_runs_alone() -> None:
    backend = FakeBackend()
    app = fake_app(backend, max_batch_size=2)
    [response] = asyncio.run(_concurrent(app, [{"texts": ["a", "bb", "ccc"]}]))
    assert response.status_code == 200 and backend.calls == [["a", "bb", "ccc"]]


def test_the_event_loop_answers_while_inference_runs() -> None:
    backend = FakeBackend(block=True)
    app = fake_app(backend)

    async def scenario() -> tuple[int, bool, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as aclient:
            pending = asyncio.ensure_future(aclient.post("/v1/classify", json={"texts": ["slow"]}))
            for _ in range(3000):  # until the forward pass has started (and blocks in the worker thread)
                if backend.started.is_set():
                    break
                await asyncio.sleep(0.01)
            health = await aclient.get("/health")
            still_running = not pending.done()
            backend.release.set()
            return health.status_code, still_running, (await pending).status_code

    assert asyncio.run(scenario()) == (200, True, 200)
    assert backend.calls == [["slow"]]


def test_an_inference_error_is_a_500_with_a_message_and_the_service_goes_on() -> None:
    class Broken(FakeBackend):
        def predict_proba(self, texts: list[str]) -> np.ndarray:
            if texts == ["boom"]:
                raise RuntimeError("broken model")
            return super().predict_proba(texts)

    with TestClient(fake_app(Broken()), raise_server_exceptions=False) as test_client:
        response = test_client.post("/v1/classify", json={"texts": ["boom"]})
        assert response.status_code == 500 and "RuntimeError" in response.json()["detail"]
        assert test_client.post("/v1/classify", json={"texts": ["fine"]}).status_code == 200


def test_create_app_needs_a_model() -> None:
    with pytest.raises(ConfigError, match="at least one model"):
        create_app([])


def test_openapi_schema_is_json(client: TestClient) -> None:
    schema = json.loads(client.get("/openapi.json").text)
    assert "ClassifyRequest" in schema["components"]["schemas"]


# ------------------------------------------------------------------------------------------ abstaining
def test_threshold_makes_the_service_abstain_with_the_models_unknown_label(served_models) -> None:
    texts = ["pizza and cheese", "a song on the guitar"]
    with TestClient(create_app(served_models, threshold=1.0)) as strict:
        models = strict.get("/v1/models").json()["models"]
        assert all(m["threshold"] == 1.0 and m["unknown_label"] == "unknown" for m in models)
        body = classify(strict, texts).json()
        assert [r["label"] for r in body["results"]] == ["unknown", "unknown"]
        assert all(r["score"] == pytest.approx(max(r["probabilities"].values())) for r in body["results"])
        # A request's own threshold overrides the service's; 0 never abstains.
        answered = strict.post("/v1/classify", json={"texts": texts, "model": "three", "threshold": 0}).json()
        assert all(r["label"] in ("food", "music", "sports") for r in answered["results"])


def test_a_run_without_a_threshold_answers_every_text_and_says_so(client: TestClient) -> None:
    models = client.get("/v1/models").json()["models"]
    assert all(m["threshold"] is None for m in models)
    strict = client.post("/v1/classify", json={"texts": ["pizza"], "model": "two", "threshold": 1.0}).json()
    assert strict["results"][0]["label"] == "unknown"


@pytest.mark.parametrize("value", [-0.1, 1.5, "high"])
def test_a_bad_threshold_is_a_422(client: TestClient, value: object) -> None:
    response = client.post("/v1/classify", json={"texts": ["pizza"], "model": "two", "threshold": value})
    assert response.status_code == 422 and "threshold" in response.text
