"""The service's page at ``/`` in headless Chromium, against a real uvicorn server on a loopback port,
and the ``lorafit serve`` command (with the server start replaced, so the test does not block)."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from browser import BrowserPage
from lorafit.cli import main
from lorafit.config import ServeLimits
from lorafit.serve import create_app


def start_server(app) -> tuple[str, object, threading.Thread]:
    """Run ``app`` with uvicorn in a background thread on a free loopback port; return its URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    return f"http://127.0.0.1:{sock.getsockname()[1]}/", server, thread


@pytest.fixture
def live_url(served_models) -> Iterator[str]:
    url, server, thread = start_server(create_app(served_models, ServeLimits(max_chars=40), api_key="k"))
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def bars(browser_page: BrowserPage) -> list[tuple[str, float]]:
    return browser_page.page.eval_on_selector_all(
        ".bar-row", "rows => rows.map(r => [r.dataset.label, parseFloat(r.querySelector('.bar-value').textContent)])")


def test_page_shows_probability_bars_for_the_chosen_model(browser_page: BrowserPage, live_url: str) -> None:
    page = browser_page.page
    page.set_extra_http_headers({"Authorization": "Bearer k"})
    page.goto(live_url)
    page.wait_for_selector("body[data-ready=true]")
    assert page.eval_on_selector_all("#model option", "os => os.map(o => o.value)") == ["three", "two"]

    page.select_option("#model", "two")
    page.fill("#text", "a new song on the piano")
    page.click("#classify")
    page.wait_for_selector(".bar-row")
    shown = bars(browser_page)
    assert sorted(label for label, _ in shown) == ["music", "sports"]
    assert sum(p for _, p in shown) == pytest.approx(100, abs=0.2)
    assert page.text_content(".bar-row.best .bar-label") == shown[0][0]  # the best label first, highlighted

    page.select_option("#model", "three")
    page.click("#classify")
    page.wait_for_function("document.querySelectorAll('.bar-row').length === 3")
    assert sorted(label for label, _ in bars(browser_page)) == ["food", "music", "sports"]
    assert browser_page.errors == []

    page.fill("#text", "x" * 41)  # over the server's max_chars: the page shows the service's message
    page.click("#classify")
    page.wait_for_function("document.getElementById('error').textContent.length > 0")
    assert "422" in page.text_content("#error") and "too long" in page.text_content("#error")
    assert all("422" in error for error in browser_page.errors)  # Chromium logs the failed request itself


def test_a_browser_with_the_key_as_basic_credentials_uses_the_page(browser_page: BrowserPage, live_url: str) -> None:
    # What a user types into the browser's login prompt (any user name, the key as password); the page's own
    # fetch() calls then carry the same credentials.
    context = browser_page.page.context.browser.new_context(http_credentials={"username": "me", "password": "k"})
    try:
        page = context.new_page()
        page.goto(live_url)
        page.wait_for_selector("body[data-ready=true]")
        page.fill("#text", "pizza and cheese")
        page.click("#classify")
        page.wait_for_function("document.querySelectorAll('.bar-row').length === 3")
        assert page.text_content("#error") == ""
    finally:
        context.close()


# ------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Replace the blocking uvicorn start; collect (app, host, port) instead."""
    calls: list[tuple] = []
    monkeypatch.setattr("lorafit.serve.run_service", lambda app, host, port: calls.append((app, host, port)))
    return calls


def test_serve_command(started: list[tuple], run_dir: Path, two_label_run: Path, capsys: pytest.CaptureFixture,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORAFIT_API_KEY", "from-env")
    main(["serve", f"intents={run_dir}", str(two_label_run), "--port", "8123", "--max-texts", "2"])
    [(app, host, port)] = started
    assert (host, port) == ("127.0.0.1", 8123)
    assert list(app.state.models) == ["intents", "two_labels"] and app.state.limits.max_texts == 2
    with TestClient(app) as client:
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"X-API-Key": "from-env"}).status_code == 200
    assert "serving intents: 3 labels" in capsys.readouterr().err


def test_serve_command_in_bf16(started: list[tuple], run_dir: Path, two_label_run: Path,
                               capsys: pytest.CaptureFixture) -> None:
    main(["serve", str(run_dir), str(two_label_run), "--precision", "bf16"])
    [(app, _, _)] = started
    models = list(app.state.models.values())
    assert {m.backend.model.runs_in for m in models} == {"bf16"}
    with TestClient(app) as client:
        body = client.post("/v1/classify", json={"texts": ["pizza today", ""], "model": "two_labels"}).json()
        listed = client.get("/v1/models").json()["models"]
    assert [sorted(r["probabilities"]) for r in body["results"]] == [["music", "sports"]] * 2
    assert {m["precision"] for m in listed} == {"bf16"}
    assert "bf16" in capsys.readouterr().err


def test_serve_warns_when_open_to_the_network(started: list[tuple], run_dir: Path,
                                              capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LORAFIT_API_KEY", raising=False)
    main(["serve", str(run_dir), "--host", "0.0.0.0"])
    assert started[0][1] == "0.0.0.0" and "without an API key" in capsys.readouterr().err


@pytest.mark.parametrize("args, words", [(["serve", "/no/such/run"], "run directory not found"),
                                         (["serve", "{run}", "--max-texts", "0"], "max_texts must be"),
                                         (["serve", "{run}", "--precision", "fp16"], "fp16 needs a CUDA GPU"),
                                         (["serve", "{run}", "--precision", "half"], "must be one of")])
def test_serve_errors_are_one_line(started: list[tuple], run_dir: Path, capsys: pytest.CaptureFixture,
                                   args: list[str], words: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(run=run_dir) for a in args])
    assert exit_info.value.code == 1 and words in capsys.readouterr().err and not started


def test_api_docs_render_offline(browser_page: BrowserPage, live_url: str) -> None:
    """/docs is Swagger UI from the swagger-ui-bundle package (no CDN): it renders the routes on a closed network."""
    page = browser_page.page
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.set_extra_http_headers({"Authorization": "Bearer k"})
    page.goto(live_url + "docs")
    page.wait_for_selector(".opblock-summary-path")
    paths = page.eval_on_selector_all(".opblock-summary-path", "ps => ps.map(p => p.textContent.trim())")
    assert {"/v1/classify", "/v1/models", "/health"} <= set(paths)
    assert all(url.startswith(live_url) for url in requested), requested
    assert browser_page.errors == []
