"""Structured logs, the kernel's Prometheus metrics, health state and the HTTP surface every service shares."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

from terrain import http
from terrain.contracts.base import utc_text
from terrain.settings import TerrainSettings

# Kernel metrics; each service also declares its own domain metrics in its metrics.py.
CONSUMED = Counter(
    "terrain_consumer_messages_total",
    "Messages consumed, by outcome (processed, dead_lettered).",
    ["service", "topic", "outcome"],
)
PUBLISHED = Counter("terrain_published_messages_total", "Messages published.", ["service", "topic"])
RETRIES = Counter("terrain_consumer_retries_total", "Retries after a transient failure.", ["service", "topic"])
BATCH_SECONDS = Histogram(
    "terrain_consumer_batch_seconds",
    "Time to process one consumed batch, effects stored.",
    ["service", "topic"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CONSUMER_LAG = Gauge(
    "terrain_consumer_lag",
    "Messages behind the end of the partition (updated per batch and periodically).",
    ["service", "topic", "partition"],
)
DEAD_LETTER_BOUND_TRIPPED = Gauge(
    "terrain_consumer_dead_letter_bound_tripped",
    "1 while a consumer has stopped because most recent messages failed (the dead-letter bound tripped).",
    ["service", "topic"],
)
OUTBOX_DEPTH = Gauge("terrain_outbox_depth", "Messages in the outbox not yet sent.", ["service"])
PROCESSED_PRUNED = Counter(
    "terrain_processed_messages_pruned_total",
    "Processed-message records deleted after the retention window.",
    ["service"],
)
READY = Gauge("terrain_ready", "1 when the service is ready (database, broker and consumers ok).", ["service"])
HTTP_REQUESTS = Counter(
    "terrain_http_requests_total", "HTTP requests served, by route template and status class.",
    ["service", "route", "status"],
)
HTTP_DURATION = Histogram(
    "terrain_http_request_duration_seconds",
    "From a request's arrival to the end of its answer, refusals included, by route template and status class.",
    ["service", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
HTTP_REFUSED = Counter(
    "terrain_http_refused_total",
    "Requests refused before their body was read, by route template and reason (unauthorized, too_large, "
    "unsupported_media_type).",
    ["service", "route", "reason"],
)

_kafka_middleware: Any = None


def kafka_prometheus_middleware() -> Any:
    """FastStream's Prometheus middleware (message counts and durations per topic), created once per process."""
    global _kafka_middleware
    if _kafka_middleware is None:
        from faststream.kafka.prometheus import KafkaPrometheusMiddleware

        _kafka_middleware = KafkaPrometheusMiddleware(registry=REGISTRY, app_name="terrain")
    return _kafka_middleware


# --- logs -------------------------------------------------------------------------------------------

# Record attributes that are not "extra" fields (uvicorn adds a colour copy of its message).
_STD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName", "color_message"}


class _DropKnownNoise(logging.Filter):
    """Drops library lines that mislead operators: topics are created explicitly, so this warning is moot."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Auto create topics is disabled" not in record.getMessage()


_LINE_FIELDS = frozenset({"ts", "level", "service", "logger", "event", "exc"})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any `extra=` fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": utc_text(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                # An extra never replaces a line's own fields: `extra={"level": "respond"}` once made an
                # info line read as level "respond", which a level filter cannot place.
                if key not in _LINE_FIELDS:
                    out[key] = value
                elif out.get(key) != value:
                    out[f"extra_{key}"] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """Readable single lines for a terminal, extras appended as key=value."""

    def __init__(self, service: str) -> None:
        super().__init__("%(asctime)s %(levelname)-7s " + service + " %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [f"{k}={v}" for k, v in record.__dict__.items() if k not in _STD_ATTRS and not k.startswith("_")]
        return line + ("  " + " ".join(extras) if extras else "")


def configure_logging(settings: TerrainSettings, service: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if settings.log_format == "json" else ConsoleFormatter(service))
    root = logging.getLogger()
    handler.addFilter(_DropKnownNoise())
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Library chatter (per-batch "Received/Processed", access logs) stays below info.
    for noisy in ("aiokafka", "faststream", "terrain.faststream", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# --- health -----------------------------------------------------------------------------------------


@dataclass
class Check:
    ok: bool
    detail: str


class Health:
    """Readiness of a service's parts (database, consumers, broker); /readyz is ready when all are ok."""

    def __init__(self, service: str = "") -> None:
        self._checks: dict[str, Check] = {}
        self.started = False
        self.service = service

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        self._checks[name] = Check(ok, detail)
        self._export()

    def check(self, name: str) -> Check | None:
        return self._checks.get(name)

    def ready(self) -> bool:
        return self.started and all(c.ok for c in self._checks.values())

    def _export(self) -> None:
        if self.service:
            READY.labels(service=self.service).set(1 if self.ready() else 0)

    def report(self) -> dict[str, Any]:
        self._export()
        return {
            "ready": self.ready(),
            "started": self.started,
            # No process id here: /readyz is public, and a stranger learns nothing from it; /healthz names the
            # process for `terrain up`.
            "checks": {k: {"ok": c.ok, "detail": c.detail} for k, c in sorted(self._checks.items())},
        }


# --- metrics on their own port ---------------------------------------------------------------------


class MetricsServer:
    """prometheus_client's own HTTP server (a thread) for TERRAIN_METRICS_PORT: the metrics answer even while
    the event loop is busy, and a cluster can let Prometheus reach this port and nothing else."""

    def __init__(self, server: Any, thread: Any) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_address[1]

    @classmethod
    def start(cls, host: str, port: int) -> MetricsServer:
        from prometheus_client import start_http_server

        try:
            server, thread = start_http_server(port, addr=host, registry=REGISTRY)
        except OSError as exc:
            raise OSError(f"TERRAIN_METRICS_PORT: cannot serve metrics on {host}:{port} "
                          f"({exc.strerror or exc})") from None
        return cls(server, thread)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# --- HTTP -------------------------------------------------------------------------------------------

DOCS_ASSETS = "/docs-assets"


def _serve_docs_offline(app: FastAPI) -> None:
    """`/docs` with the Swagger UI files of the installed `swagger-ui-bundle` package: no CDN, works offline."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )


def build_http_app(
    *,
    service: str,
    settings: TerrainSettings,
    health: Health,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | Callable[[FastAPI], AsyncIterator[None]],
    description: str = "",
    public_routes: Mapping[str, str] | None = None,
    max_body_bytes: Mapping[str, int] | None = None,
    pool: Callable[[], Any] | None = None,
) -> FastAPI:
    """The FastAPI app every service starts from: /healthz, /readyz, /metrics (unless TERRAIN_METRICS_PORT serves
    them apart), the edge middleware (token, body type and size before the body is read, request metrics) and the
    kernel's error shapes.

    `public_routes` maps route templates a stranger may call without the token to why (a webhook signed by its
    sender); `max_body_bytes` maps route templates to a body limit other than TERRAIN_HTTP_MAX_BODY_BYTES.
    `pool` gives the service's database pool once started (None before): keys, sessions and the audit log.
    """
    from terrain.access import store as access_store
    from terrain.access.verify import Authenticator

    get_pool = pool or (lambda: None)
    authenticator = Authenticator(settings, get_pool)
    app = FastAPI(
        title=f"Terrain {service}", description=description, lifespan=lifespan,  # type: ignore[arg-type]
        docs_url=None, redoc_url=None,
    )
    app.router.route_class = http.JsonBodyRoute
    _serve_docs_offline(app)
    public = {**http.PUBLIC_ROUTES, **(public_routes or {})}
    if settings.metrics_port is not None:
        public.pop("/metrics", None)  # served on its own port; here it is an unknown path like any other
    if authenticator.configured and not settings.public_docs:
        for path in http.DOCS_ROUTES:
            public.pop(path, None)
    policy = http.EdgePolicy(
        identify=authenticator.identify,
        default_max_body_bytes=settings.http_max_body_bytes,
        max_body_bytes=dict(max_body_bytes or {}),
        public=public,
    )

    def observe(route: str, status: int, seconds: float) -> None:
        status_class = f"{status // 100}xx"
        HTTP_REQUESTS.labels(service=service, route=route, status=status_class).inc()
        HTTP_DURATION.labels(service=service, route=route, status=status_class).observe(seconds)

    def refused(route: str, reason: str) -> None:
        HTTP_REFUSED.labels(service=service, route=route, reason=reason).inc()

    async def audit(identity: Any, method: str, route: str, path: str, status: int, address: str | None) -> None:
        db_pool = get_pool()
        if db_pool is None:
            return
        entry = access_store.AuditEntry(service, identity, method, route, path, status, address)
        try:
            await access_store.record(db_pool, [entry])
        except Exception as exc:  # the answer is already sent: say so loudly, do not fail the request
            logging.getLogger("terrain.access").error("audit entry not written (%s %s by %s): %s", method, route,
                                                      identity.actor, type(exc).__name__)

    app.state.http_edge = policy  # read by the operators' reference
    app.state.service = service
    app.state.authenticator = authenticator
    app.add_middleware(http.EdgeMiddleware, policy=policy, routes=lambda: app.router.routes, observe=observe,
                       refused=refused, audit=audit)

    @app.exception_handler(http.HTTPRefusal)
    async def _refusal(_: Request, exc: http.HTTPRefusal) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return http.invalid_request(http.field_errors(exc.errors())).response()

    import asyncpg

    @app.exception_handler(asyncpg.exceptions.DataError)
    async def _unstorable(_: Request, exc: asyncpg.exceptions.DataError) -> JSONResponse:
        # A value PostgreSQL cannot hold (a NUL character, a number past 64 bits) came from the request: its
        # sender's error: a 422 that says so, not a 500 (the handler's transaction, if any, rolled back).
        what = "a NUL character" if "0x00" in str(exc) else "a value out of range" if "range" in str(exc) else ""
        return JSONResponse(status_code=422, content={
            "detail": f"invalid request: {what or 'a value'} that cannot be stored ({type(exc).__name__})"})

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str | int]:
        return {"status": "ok", "service": service, "pid": os.getpid()}

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> JSONResponse:
        report = health.report()
        return JSONResponse(status_code=200 if report["ready"] else 503, content=report)

    if settings.metrics_port is None:
        @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
        async def metrics() -> PlainTextResponse:
            return PlainTextResponse(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app
