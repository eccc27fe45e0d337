"""The HTTP edge every service shares: token and body limits checked before a body is read, and the error shapes."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from terrain.access.model import Refused
from terrain.contracts.base import error_message

# Routes anyone may call without the bearer token, each with why. Everything else needs the token (when
# TERRAIN_API_TOKEN is set), unknown paths included. A service adds its own public routes, with a reason,
# through `build_http_app(public_routes=...)`.
PUBLIC_ROUTES: Mapping[str, str] = {
    "/healthz": "the liveness probe",
    "/readyz": "the readiness probe",
    "/metrics": "Prometheus scrapes it",
    "/docs": "the API's documentation page",
    "/docs-assets": "that page's scripts and styles",
    "/openapi.json": "the API's description",
}
# Public only where no authentication is configured, or with TERRAIN_PUBLIC_DOCS=true (the local runner).
DOCS_ROUTES = ("/docs", "/docs-assets", "/openapi.json")

UNAUTHORIZED_DETAIL = ("missing or wrong bearer token (set Authorization: Bearer <an API key, a session token, "
                       "an OIDC access token or $TERRAIN_API_TOKEN>)")


# --- the error shapes ------------------------------------------------------------------------------------


class HTTPRefusal(HTTPException):
    """A request refused in the one shape every service answers with: `detail`, one sentence saying why, plus
    what a client can act on (`line` and `column` of broken JSON, `errors` naming the fields)."""

    def __init__(self, status_code: int, detail: str, *, headers: Mapping[str, str] | None = None,
                 **fields: Any) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=dict(headers) if headers else None)
        self.fields = fields

    def response(self) -> JSONResponse:
        return JSONResponse(status_code=self.status_code, content={"detail": self.detail, **self.fields},
                            headers=self.headers)


def unauthorized(reason: str | None = None) -> HTTPRefusal:
    detail = f"{reason} (Authorization: Bearer <an API key, a session token or an OIDC access token>)" if reason \
        else UNAUTHORIZED_DETAIL
    return HTTPRefusal(401, detail, headers={"WWW-Authenticate": "Bearer"})


def too_large(limit: int) -> HTTPRefusal:
    return HTTPRefusal(413, f"request body larger than {limit} bytes")


def unsupported_media_type(sent: str | None) -> HTTPRefusal:
    return HTTPRefusal(415, "the body must be JSON: send it with the header 'Content-Type: application/json' "
                            f"(this request said {sent or 'no content type'!r})")


def malformed_json(exc: json.JSONDecodeError) -> HTTPRefusal:
    return HTTPRefusal(400, f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
                       line=exc.lineno, column=exc.colno)


def decode_json(body: bytes) -> Any:
    """The JSON document of a request body, or an HTTPRefusal 400 that says where and why it does not read."""
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise malformed_json(exc) from None
    except UnicodeDecodeError as exc:
        raise HTTPRefusal(400, f"body is not UTF-8: {exc.reason}") from None
    except RecursionError:
        raise HTTPRefusal(400, "malformed JSON: nested too deeply") from None


def invalid_request(errors: Sequence[Mapping[str, Any]], *, what: str = "invalid request",
                    status_code: int = 422) -> HTTPRefusal:
    """A readable document with bad values: `errors` name each field (`field`, `message`, and any more keys);
    the detail sums them up as "what: field: message; ..."."""
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:20])
    return HTTPRefusal(status_code, f"{what}: {summary}", errors=[dict(e) for e in errors])


def field_errors(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """pydantic's errors as {field, message}: the field a dotted path (`matchers.level`, `1.text`) without
    FastAPI's leading "body", "(body)" for the document as a whole."""
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        out.append({"field": ".".join(loc) or "(body)", "message": error_message(err)})
    return out


# --- decoding bodies ------------------------------------------------------------------------------------


class _KernelJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = decode_json(await self.body())
        return self._json


class JsonBodyRoute(APIRoute):
    """A FastAPI route whose JSON body is decoded by `decode_json`: the same 400 (line and column) as a route
    that reads its body itself, where FastAPI's own answer is a 422 with a character offset for a field."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def decoded(request: Request) -> Response:
            return await handler(_KernelJsonRequest(request.scope, request.receive))

        return decoded


def is_json(content_type: str | None) -> bool:
    """application/json or application/<anything>+json, parameters aside: what FastAPI reads as JSON."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


# --- the edge middleware --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EdgePolicy:
    """What a request must satisfy before a service reads its body.

    `public` (route to why anyone may call it) and `max_body_bytes` are keyed by route template
    (`/v1/events/{event_id}/close`): a template names a route whatever its path values, and is what the metrics
    carry.
    """

    identify: Callable[[str | None], Awaitable[Any]]
    default_max_body_bytes: int
    max_body_bytes: Mapping[str, int] = field(default_factory=dict)
    public: Mapping[str, str] = field(default_factory=lambda: dict(PUBLIC_ROUTES))

    def body_limit(self, route: str | None) -> int:
        return self.max_body_bytes.get(route, self.default_max_body_bytes) if route else self.default_max_body_bytes

    async def authenticate(self, route: str | None, headers: Headers) -> tuple[Any, HTTPRefusal | None]:
        """(the caller's identity, None) or (None, the 401 to answer); (None, None) on a public route."""
        if route in self.public:
            return None, None
        try:
            identity = await self.identify(headers.get("authorization"))
        except Refused as exc:  # its message says why, never the credential
            return None, unauthorized(str(exc))
        return (identity, None) if identity is not None else (None, unauthorized())


def route_template(routes: Iterable[BaseRoute], scope: Scope) -> str | None:
    """The template of the route the router will pick (a wrong method still names its path), else None."""
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", "")) or None
        if match is Match.PARTIAL and partial is None:
            partial = str(getattr(route, "path", "")) or None
    return partial


MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class _ClientGone(Exception):
    pass


class EdgeMiddleware:
    """Pure ASGI, before routing: the bearer token, the body's type and size, all from the headers, then the
    body read while counting; a refused body is never read (and its connection is closed, so the server does
    not read it either). Every request, refused or served, is timed and counted by route template.

    `observe(route, status, seconds)` and `refused(route, reason)` report to the caller's metrics.
    """

    def __init__(self, app: ASGIApp, *, policy: EdgePolicy, routes: Callable[[], Sequence[BaseRoute]],
                 observe: Callable[[str, int, float], None], refused: Callable[[str, str], None],
                 audit: Callable[[Any, str, str, str, int, str | None], Awaitable[None]] | None = None) -> None:
        self.app = app
        self.audit = audit
        self.policy = policy
        self.routes = routes
        self.observe = observe
        self.refused = refused
        self._checked = False

    def _check_declarations(self) -> None:
        # A limit or public route declared for a path no route has is a typo that would silently not apply.
        known = {str(getattr(r, "path", "")) for r in self.routes()}
        unknown = sorted((set(self.policy.max_body_bytes) | set(self.policy.public)) - known)
        if unknown:
            raise RuntimeError(f"HTTP limits or public routes declared for paths no route has: {', '.join(unknown)}")
        self._checked = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._checked:  # at the server's start (the lifespan call comes first): the service stops there
            self._check_declarations()
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        identity = None
        route = route_template(self.routes(), scope)
        status = 500  # what the server answers when the app raises before it starts a response

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            headers = Headers(scope=scope)
            declared = headers.get("content-length")
            length = int(declared) if declared and declared.isdigit() else None
            announced = bool(length) or "transfer-encoding" in headers
            content_type = headers.get("content-type")
            limit = self.policy.body_limit(route)
            refusal: tuple[str, HTTPRefusal] | None = None
            identity, denied = await self.policy.authenticate(route, headers)
            scope.setdefault("state", {})["identity"] = identity
            if denied is not None:
                refusal = ("unauthorized", denied)
            elif length is not None and length > limit:
                refusal = ("too_large", too_large(limit))
            elif announced and not is_json(content_type):
                refusal = ("unsupported_media_type", unsupported_media_type(content_type))
            # Read even a body no header announced (HTTP/2 may send one without a length): counted all the same.
            unread = length != 0
            body = b""
            if refusal is None and unread:
                try:
                    read = await _read_body(receive, limit)
                except _ClientGone:
                    status = 499  # nginx's "client closed request": nobody is left to answer
                    return
                if read is None:
                    refusal = ("too_large", too_large(limit))
                else:
                    body, unread = read, False
                    if body and not is_json(content_type):
                        refusal = ("unsupported_media_type", unsupported_media_type(content_type))
            if refusal is not None:
                reason, answer = refusal
                self.refused(route or "unmatched", reason)
                response = answer.response()
                if unread:
                    # The rest of the body was never read: close rather than keep the connection and have the
                    # server read (and throw away) the rest of it before the next request.
                    response.headers["Connection"] = "close"
                await response(scope, receive, send_status)
                return
            await self.app(scope, receive if length == 0 else _replay(body, receive), send_status)
        finally:
            if identity is not None and self.audit is not None and scope["method"] in MUTATING:
                client = scope.get("client")
                await self.audit(identity, scope["method"], route or "unmatched", scope["path"], status,
                                 client[0] if client else None)
            self.observe(route or "unmatched", status, time.perf_counter() - started)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as more than `limit` bytes came (the rest is left unread)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, as one message; then the server's own messages (a disconnect)."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
