"""``lorafit serve``: a FastAPI service over one or more loaded models.

Routes: ``POST /v1/classify``, ``GET /v1/models``, ``GET /health``, the OpenAPI docs (``/docs``,
``/openapi.json``) and a small page at ``/``. Requests for a model go through its
:class:`~lorafit.microbatch.MicroBatcher`; inference runs in one worker thread, so the event loop
stays free to accept, check and refuse requests. Bad input of any kind is a 4xx with
``{"detail": "<what was wrong and how to fix it>"}``.

Example:
    >>> from lorafit.registry import load_runs
    >>> app = create_app(load_runs([("banking", "runs/banking")]))  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)                      # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from lorafit import __version__
from lorafit.config import MULTI_LABEL, REGRESSION, ServeLimits
from lorafit.data import pair_up
from lorafit.errors import ConfigError
from lorafit.microbatch import MicroBatcher
from lorafit.registry import ServedModel
from lorafit.serve_guard import ApiKeyGuard, BodyLimit

logger = logging.getLogger(__name__)

REQUEST_SHAPE = 'a JSON object like {"texts": ["first text", "second text"], "model": "name"}'
PAIR_SHAPE = '{"texts": ["a premise"], "text_pairs": ["a hypothesis"], "model": "name"}'


class ClassifyRequest(BaseModel):
    """Texts to classify with one model."""

    model_config = ConfigDict(extra="forbid")
    texts: list[str] = Field(description="The texts, in the order the results come back. Empty strings are fine.")
    text_pairs: list[str] | None = Field(None, description="For a model trained on text pairs (text_pairs true in "
                                         "GET /v1/models; required there, refused elsewhere): the second text of "
                                         "each text, as many as texts, in the same order.")
    model: str | None = Field(None, description="A name from GET /v1/models; optional when one model is served.")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="Abstain (answer the model's unknown label) "
                                    "below this top probability; default: the service's or the model's own; 0: never.")


class Prediction(BaseModel):
    """One text's answer: ``label``, ``score`` and ``probabilities`` from a single-label model; ``labels`` and
    ``scores`` from a multi-label one; ``value`` from a regression one."""

    label: str | None = Field(None, description="The most probable label, or the model's unknown label where it "
                                                "abstains (single-label).")
    score: float | None = Field(None, description="The top probability (single-label).")
    probabilities: dict[str, float] | None = Field(None, description="Every label's probability, in the model's "
                                                                     "label order (single-label).")
    labels: list[str] | None = Field(None, description="The labels at or above their thresholds (multi-label).")
    scores: dict[str, float] | None = Field(None, description="Every label's sigmoid score (multi-label).")
    value: float | None = Field(None, description="The predicted number (regression).")


class ClassifyResponse(BaseModel):
    """The answers, one per text, in request order."""

    model: str
    results: list[Prediction]


class ModelInfo(BaseModel):
    """A served model."""

    name: str
    labels: list[str]
    base_model: str
    task: str
    threshold: float | None = Field(None, description="The model's abstention threshold (None: never abstains).")
    unknown_label: str | None = Field(None, description="The label answered where it abstains.")
    text_pairs: bool = Field(False, description="Whether the model takes text pairs: send text_pairs beside texts.")
    precision: str = Field("fp32", description="What it predicts in: fp32, bf16 (lorafit serve --precision), or onnx "
                                               "(an ONNX export, fp32 or int8 as exported).")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    status: str
    models: int


def safe_text(value: object) -> str:
    """``value`` as text that encodes to UTF-8 (lone surrogates escaped), for error messages."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def page_html() -> str:
    """The self-contained page served at ``/``."""
    return resources.files("lorafit").joinpath("static/serve.html").read_text(encoding="utf-8")


def create_app(models: list[ServedModel], limits: ServeLimits | None = None, api_key: str | None = None,
               threshold: float | None = None) -> FastAPI:
    """The service for ``models`` (names must differ), with ``limits`` and an optional ``api_key``;
    ``threshold`` overrides every model's abstention threshold (a request's own overrides both)."""
    if not models:
        raise ConfigError("lorafit serve needs at least one model; pass one or more run directories")
    limits = limits or ServeLimits()
    by_name = {m.name: m for m in models}
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lorafit-inference")
    batchers = {m.name: MicroBatcher(m.outputs, executor, limits.max_batch_size,
                                     limits.max_wait_ms / 1000) for m in models}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        for batcher in batchers.values():
            await batcher.stop()

    # FastAPIOffline: Swagger UI and ReDoc from files in the fastapi-offline package, not from a CDN, so /docs
    # renders on a machine without internet.
    app = FastAPIOffline(title="lorafit serve", version=__version__, lifespan=lifespan,
                         description="Text classification with LoRA fine-tuned encoders trained by lorafit.")
    app.state.models, app.state.batchers, app.state.limits = by_name, batchers, limits
    _add_error_handlers(app)
    _add_routes(app, by_name, batchers, limits, threshold)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    if api_key:
        app.add_middleware(ApiKeyGuard, api_key=api_key)  # added last: runs first, before the body is read
    return app


def _add_routes(app: FastAPI, by_name: dict[str, ServedModel], batchers: dict[str, MicroBatcher],
                limits: ServeLimits, threshold: float | None) -> None:
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return page_html()

    @app.get("/health", response_model=Health, summary="Liveness (no API key needed)")
    def health() -> Health:
        return Health(status="ok", models=len(by_name))

    @app.get("/v1/models", response_model=ModelsResponse, summary="The served models and their labels")
    def list_models() -> ModelsResponse:
        return ModelsResponse(models=[ModelInfo(name=m.name, labels=m.labels, base_model=m.base_model, task=m.task,
                                                threshold=threshold if threshold is not None
                                                else getattr(m.backend, "threshold", None),
                                                unknown_label=getattr(m.backend, "unknown_label", None),
                                                text_pairs=m.pairs, precision=m.precision)
                                      for m in by_name.values()])

    @app.post("/v1/classify", response_model=ClassifyResponse, response_model_exclude_none=True,
              summary="Label, score and probabilities per text (multi-label: labels and scores; regression: value)",
              responses={400: {"description": "Malformed JSON"}, 401: {"description": "Missing or wrong API key"},
                         404: {"description": "Unknown model"}, 413: {"description": "Body too large"},
                         422: {"description": "Wrong shape, empty texts list, or a limit passed"}})
    async def classify(request: ClassifyRequest) -> ClassifyResponse:
        served = resolve_model(by_name, request.model)
        inputs = request_inputs(served, request, limits)
        if served.task == REGRESSION and request.threshold is not None:
            raise HTTPException(422, f"threshold applies to classification; {served.name} is a regression model")
        probs = await batchers[served.name].submit(inputs)
        chosen = request.threshold if request.threshold is not None else threshold
        return ClassifyResponse(model=served.name, results=_results(served, probs, chosen))


def _results(served: ServedModel, outputs, threshold: float | None) -> list[Prediction]:
    """One :class:`Prediction` per row of the model's outputs (probabilities, or regression values)."""
    if served.task == REGRESSION:
        return [Prediction(value=float(row[0])) for row in outputs]
    labels, decided = served.labels, served.decide(outputs, threshold)
    if served.task == MULTI_LABEL:
        return [Prediction(labels=chosen, scores={name: float(p) for name, p in zip(labels, row)})
                for row, chosen in zip(outputs, decided)]
    return [Prediction(label=label, score=float(row.max()), probabilities={name: float(p) for name, p in zip(labels, row)})
            for row, label in zip(outputs, decided)]


def resolve_model(by_name: dict[str, ServedModel], name: str | None) -> ServedModel:
    """The model a request names (or the only one); 404/422 with the served names otherwise."""
    names = ", ".join(by_name)
    if name is None:
        if len(by_name) == 1:
            return next(iter(by_name.values()))
        raise HTTPException(422, f"several models are served ({names}); say which with \"model\": \"name\"")
    if name not in by_name:
        raise HTTPException(404, f"unknown model '{safe_text(name)}'; served models: {names} (GET /v1/models)")
    return by_name[name]


def request_inputs(served: ServedModel, request: ClassifyRequest, limits: ServeLimits) -> list:
    """The request's texts, or ``(text, text_pair)`` pairs for a model on pairs, checked (422 otherwise)."""
    check_texts(request.texts, limits)
    if not served.pairs:
        if request.text_pairs is not None:
            raise HTTPException(422, f"model '{served.name}' was trained on single texts; leave out text_pairs "
                                     "and send " + REQUEST_SHAPE)
        return request.texts
    if request.text_pairs is None:
        raise HTTPException(422, f"model '{served.name}' was trained on text pairs; send the second texts in "
                                 f"text_pairs, one per text: {PAIR_SHAPE}")
    if len(request.text_pairs) != len(request.texts):
        raise HTTPException(422, f"texts has {len(request.texts)} item(s) but text_pairs has "
                                 f"{len(request.text_pairs)}; send one second text per text: {PAIR_SHAPE}")
    check_texts(request.text_pairs, limits, "text_pairs")
    return pair_up(request.texts, request.text_pairs)


def check_texts(texts: list[str], limits: ServeLimits, name: str = "texts") -> None:
    """422 for an empty list, too many texts, a too-long text, or text that is not valid Unicode."""
    if not texts:
        raise HTTPException(422, f"{name} is empty; send at least one text: " + REQUEST_SHAPE)
    if len(texts) > limits.max_texts:
        raise HTTPException(422, f"too many texts: {len(texts)}, the limit is {limits.max_texts} per request; "
                                 "split them over several requests (or raise --max-texts)")
    for i, text in enumerate(texts):
        if len(text) > limits.max_chars:
            raise HTTPException(422, f"{name}[{i}] is too long: {len(text)} characters, the limit is "
                                     f"{limits.max_chars}; shorten it (or raise --max-chars)")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise HTTPException(422, f"{name}[{i}] is not valid Unicode: it holds an unpaired surrogate "
                                     f"({safe_text(repr(text[exc.start:exc.end]))}) at character {exc.start}") from None


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        content_type = request.headers.get("content-type", "")
        if request.method == "POST" and "json" not in content_type.lower():
            return JSONResponse({"detail": safe_text(f"the body must be JSON sent with the header 'Content-Type: "
                                                     f"application/json' (got {content_type or 'none'!r}); send "
                                                     f"{REQUEST_SHAPE}")}, 415)
        if any(e.get("type") == "json_invalid" for e in errors):
            reason = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {}).get("error", "")
            return JSONResponse({"detail": safe_text(f"malformed JSON ({reason}); send {REQUEST_SHAPE}")}, 400)
        parts = []
        for error in errors[:5]:
            where = ".".join(str(x) for x in error.get("loc", ()) if x != "body") or "body"
            parts.append(f"{where}: {error.get('msg', 'invalid')}")
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return JSONResponse({"detail": safe_text(f"invalid request: {'; '.join(parts)}{more}; send {REQUEST_SHAPE}")},
                            422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == 400 and detail == "There was an error parsing the body":  # Starlette's words
            detail = f"the body could not be parsed as JSON (not UTF-8, or nested too deeply); send {REQUEST_SHAPE}"
        return JSONResponse({"detail": safe_text(detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def server_error(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error while answering a request")
        return JSONResponse({"detail": safe_text(f"internal error ({type(exc).__name__}); see the server log")}, 500)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    return host in ("localhost", "::1") or host.startswith("127.")


def run_service(app: FastAPI, host: str, port: int) -> None:
    """Serve ``app`` with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)

