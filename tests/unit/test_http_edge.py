"""The kernel's HTTP edge on a tiny app: the token and the body's type and size are checked before the body is
read (counted here by the chunks the server pulled from the client's stream), and the error shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from prometheus_client import REGISTRY
from pydantic import BaseModel, Field

from terrain.access.deps import need
from terrain.access.model import Permission
from terrain.settings import TerrainSettings
from terrain.telemetry import Health, build_http_app

TOKEN = "edge-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 10_000
BIG_ROUTE_LIMIT = 50_000
CHUNK = 1_000


class Silence(BaseModel):
    actor: str = Field(min_length=1)
    minutes: int = Field(gt=0)


def edge_app(service: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    settings = TerrainSettings(api_token=TOKEN, http_max_body_bytes=LIMIT)
    app = build_http_app(service=service, settings=settings, health=Health(service), lifespan=lifespan,
                         public_routes={"/hook": "signed by its sender"}, max_body_bytes={"/big": BIG_ROUTE_LIMIT})
    auth = need(Permission.read)

    @app.post("/silences", dependencies=[Depends(auth)])
    async def silences(body: Silence) -> dict[str, Any]:
        return body.model_dump()

    @app.post("/big", dependencies=[Depends(auth)])
    async def big(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.post("/hook")
    async def hook(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    return app


class Stream:
    """A request body of `total` bytes that counts the chunks the server pulled before it answered."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        while sent < self.total:
            self.pulled += 1
            chunk = b" " * min(CHUNK, self.total - sent)
            sent += len(chunk)
            yield chunk


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_a_stranger_gets_401_before_one_byte_of_the_body_is_read():
    app = edge_app("edge-401")
    stream = Stream(5_000_000)
    async with client(app) as c:
        got = await c.post("/silences", content=stream, headers={"Content-Type": "application/json"})
        wrong = await c.post("/silences", json={"actor": "a", "minutes": 1},
                             headers={"Authorization": "Bearer nope"})
        read = await c.get("/healthz")
        docs = await c.get("/openapi.json")
        unknown = await c.get("/nothing-here")
    assert got.status_code == 401 and got.headers["WWW-Authenticate"] == "Bearer"
    assert stream.pulled == 0
    assert got.headers["Connection"] == "close"  # the unread body is not left for the server to drain
    assert got.json()["detail"].startswith("missing or wrong bearer token")
    assert wrong.status_code == 401
    assert read.status_code == 200  # public
    assert docs.status_code == 401  # the API's description too, where authentication is configured
    assert unknown.status_code == 401  # a stranger learns nothing about which paths exist
    assert REGISTRY.get_sample_value(
        "terrain_http_refused_total", {"service": "edge-401", "route": "/silences", "reason": "unauthorized"}) == 2


async def test_a_public_route_takes_a_body_without_the_token_within_its_limit():
    app = edge_app("edge-public")
    async with client(app) as c:
        ok = await c.post("/hook", content=b"{}", headers={"Content-Type": "application/json"})
        stream = Stream(LIMIT * 3)
        too_big = await c.post("/hook", content=stream, headers={"Content-Type": "application/json"})
    assert ok.status_code == 200 and ok.json() == {"bytes": 2}
    assert too_big.status_code == 413
    assert stream.pulled == LIMIT // CHUNK + 1


async def test_a_declared_length_over_the_limit_is_413_unread_and_a_stream_stops_as_it_passes_it():
    app = edge_app("edge-413")
    json_h = {**AUTH, "Content-Type": "application/json"}
    async with client(app) as c:
        declared = Stream(5_000_000)
        by_length = await c.post("/silences", content=declared, headers={**json_h, "Content-Length": "5000000"})
        chunked = Stream(5_000_000)
        by_count = await c.post("/silences", content=chunked, headers=json_h)
        # A route that declares a larger limit takes what the default refuses, and refuses past its own.
        big_ok = await c.post("/big", content=Stream(BIG_ROUTE_LIMIT), headers=json_h)
        big_stream = Stream(5_000_000)
        big_refused = await c.post("/big", content=big_stream, headers=json_h)
    assert by_length.status_code == 413 and declared.pulled == 0
    assert by_length.json() == {"detail": f"request body larger than {LIMIT} bytes"}
    assert by_count.status_code == 413
    assert chunked.pulled == LIMIT // CHUNK + 1  # the first chunk past the limit, not one more
    assert by_count.headers["Connection"] == "close"
    assert big_ok.status_code == 200 and big_ok.json() == {"bytes": BIG_ROUTE_LIMIT}
    assert big_refused.status_code == 413 and big_stream.pulled == BIG_ROUTE_LIMIT // CHUNK + 1
    assert REGISTRY.get_sample_value(
        "terrain_http_refused_total", {"service": "edge-413", "route": "/silences", "reason": "too_large"}) == 2


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "application/xml", "multipart/form-data; boundary=x", None,
])
async def test_a_body_not_sent_as_json_is_415_unread(content_type: str | None):
    app = edge_app("edge-415")
    stream = Stream(2_000)
    headers = {**AUTH, **({"Content-Type": content_type} if content_type else {})}
    async with client(app) as c:
        got = await c.post("/silences", content=stream, headers=headers)
    assert got.status_code == 415 and stream.pulled == 0
    assert "Content-Type: application/json" in got.json()["detail"]
    assert repr(content_type or "no content type") in got.json()["detail"]


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "application/merge-patch+json"])
async def test_json_media_types_are_read(content_type: str):
    app = edge_app("edge-json")
    async with client(app) as c:
        got = await c.post("/silences", content=b'{"actor": "a", "minutes": 5}',
                           headers={**AUTH, "Content-Type": content_type})
    assert got.status_code == 200 and got.json() == {"actor": "a", "minutes": 5}


@pytest.mark.parametrize(("body", "status", "expect"), [
    # Broken JSON: 400 with where it breaks, not FastAPI's 422 with a character offset as the field.
    (b'{"actor": "a",\n "minutes": oops}', 400,
     {"line": 2, "column": 13, "detail": "malformed JSON at line 2, column 13: Expecting value"}),
    (b'{"actor": "\xff"}', 400, {"detail": "body is not UTF-8: invalid start byte"}),
    (b"[" * 4_000 + b"]" * 4_000, 400, {"detail": "malformed JSON: nested too deeply"}),
    # A readable document with a bad value: 422 naming the field.
    (b'{"actor": "a", "minutes": -1}', 422,
     {"detail": "invalid request: minutes: Input should be greater than 0",
      "errors": [{"field": "minutes", "message": "Input should be greater than 0"}]}),
    (b"42", 422, {"detail": "invalid request: (body): Input should be a valid dictionary or object to extract "
                            "fields from",
                  "errors": [{"field": "(body)", "message": "Input should be a valid dictionary or object to "
                                                            "extract fields from"}]}),
], ids=["broken JSON", "not UTF-8", "nested too deeply", "a bad value", "not an object"])
async def test_the_error_shapes(body: bytes, status: int, expect: dict[str, Any]):
    app = edge_app("edge-shapes")
    async with client(app) as c:
        got = await c.post("/silences", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert got.status_code == status
    assert got.json() == expect


async def test_every_request_is_timed_by_route_template_and_status_class():
    app = edge_app("edge-red")

    @app.get("/things/{thing_id}", dependencies=[Depends(need(Permission.read))])
    async def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    async with client(app) as c:
        for i in range(3):
            assert (await c.get(f"/things/{i}", headers=AUTH)).status_code == 200
        assert (await c.get("/things/x")).status_code == 401

    def count(status: str) -> float | None:
        return REGISTRY.get_sample_value("terrain_http_request_duration_seconds_count",
                                         {"service": "edge-red", "route": "/things/{thing_id}", "status": status})

    assert count("2xx") == 3 and count("4xx") == 1
    assert REGISTRY.get_sample_value("terrain_http_requests_total",
                                     {"service": "edge-red", "route": "/things/{thing_id}", "status": "2xx"}) == 3


async def test_a_limit_declared_for_a_path_no_route_has_stops_the_first_request():
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    app = build_http_app(service="edge-typo", settings=TerrainSettings(api_token=None), health=Health(),
                         lifespan=lifespan, max_body_bytes={"/v1/coments": 10})
    async with client(app) as c:
        with pytest.raises(RuntimeError, match="/v1/coments"):
            await c.get("/healthz")
