"""The HTTP edge of every service, on the running pipeline: a stranger's 50 MB body is refused before it is read,
an over-limit body gets 413 (declared or streamed), and the error shapes are one for all services.

The large bodies go over raw sockets, so that the test sees what the server did before the client finished
sending: httpx writes a whole request before it reads the answer.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.ingest.app import IngestSettings
from services.sentiment.app import MAX_SCORE_BODY_BYTES
from terrain.settings import TerrainSettings
from terrain.stack import Stack
from tests.hostile.conftest import TOKEN

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

FIFTY_MB = 50 * 1024 * 1024
CHUNK = 64 * 1024
DEFAULT_LIMIT = TerrainSettings.model_fields["http_max_body_bytes"].default
INGEST_LIMIT = IngestSettings.model_fields["ingest_max_body_bytes"].default
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass(frozen=True)
class Route:
    service: str
    path: str
    limit: int
    bad_value: dict[str, object]  # a readable document with one bad value
    bad_field: str  # the field the 422 must name


NOW = "2026-11-25T12:00:00Z"
ROUTES = [
    Route("ingest", "/v1/comments", INGEST_LIMIT,
          {"source": "forum", "external_id": "edge-1", "community_id": "c-edge", "thread_id": "t", "text": "Bonjour",
           "created_at": "hier"}, "created_at"),
    Route("sentiment", "/v1/score", MAX_SCORE_BODY_BYTES, {"text": 42}, "text"),
    Route("escalation", "/v1/silences", DEFAULT_LIMIT,
          {"matchers": {"community_id": "c-edge"}, "duration_minutes": -5, "created_by": "edge", "comment": "x"},
          "duration_minutes"),
    Route("events", "/v1/events", DEFAULT_LIMIT,
          {"community_id": "c-edge", "kind": "meetup", "title": "t", "starts_at": "not a date"}, "starts_at"),
]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float  # from the end of the request's headers to the first byte of the answer
    sent_before_answer: int  # body bytes the client had handed to its socket when the answer came
    sent_in_all: int  # body bytes the client managed to send before the connection ended


def exchange(base: str, path: str, headers: dict[str, str], body: Iterator[bytes] | None,
             timeout_s: float = 20) -> Answer:
    """One HTTP/1.1 request over a raw socket: the head, then `body` sent from a thread of its own while this
    thread waits for the answer (no body: the head alone, the declared body never comes)."""
    url = urllib.parse.urlsplit(base)
    sock = socket.create_connection((url.hostname, url.port), timeout=timeout_s)
    head = f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sent = 0
    stop = threading.Event()

    def pour() -> None:
        nonlocal sent
        try:
            for chunk in body or ():
                if stop.is_set():
                    return
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            return  # the server closed the connection: it will not read more

    try:
        sock.sendall(head.encode() + b"\r\n")
        started = time.perf_counter()
        sender = threading.Thread(target=pour, daemon=True)
        sender.start()
        data = b""
        seconds = None
        sent_before = 0
        while b"\r\n\r\n" not in data:
            piece = sock.recv(65536)
            if seconds is None:
                seconds, sent_before = time.perf_counter() - started, sent
            if not piece:
                raise AssertionError(f"{path}: the connection closed without an answer")
            data += piece
        raw_head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *lines = raw_head.decode("latin-1").split("\r\n")
        got = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(got.get("content-length", "0"))
        while len(rest) < length:
            piece = sock.recv(65536)
            if not piece:
                break
            rest += piece
        stop.set()
        sender.join(timeout=timeout_s)
        assert seconds is not None
        return Answer(int(status_line.split()[1]), got, rest[:length], seconds, sent_before, sent)
    finally:
        stop.set()
        sock.close()


def fifty_megabytes() -> Iterator[bytes]:
    chunk = b" " * CHUNK
    for _ in range(FIFTY_MB // CHUNK):
        yield chunk


def chunked(total: int) -> Iterator[bytes]:
    """`total` bytes in chunked transfer coding, without the last (empty) chunk: the body never ends."""
    left = total
    while left > 0:
        n = min(CHUNK, left)
        left -= n
        yield f"{n:x}\r\n".encode() + b" " * n + b"\r\n"


def peak_rss_mb(stack: Stack, service: str) -> float:
    status = Path(f"/proc/{stack.procs[service].pid}/status").read_text()
    return next(int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:"))


@pytest.mark.parametrize("route", ROUTES, ids=[r.service for r in ROUTES])
def test_a_strangers_50_mb_post_is_refused_before_its_body_is_read(pipeline: Stack, route: Route):
    base = pipeline.urls()[route.service]
    headers = {"Content-Type": "application/json", "Content-Length": str(FIFTY_MB)}
    peak_before = peak_rss_mb(pipeline, route.service)
    # The head alone: a server that waited for the body would never answer.
    unsent = exchange(base, route.path, headers, None)
    # The whole body offered as fast as the socket takes it.
    poured = exchange(base, route.path, headers, fifty_megabytes())
    peak_after = peak_rss_mb(pipeline, route.service)
    print(f"{route.service} {route.path}: 401 in {unsent.seconds * 1000:.1f} ms with no body sent, in "
          f"{poured.seconds * 1000:.1f} ms with {poured.sent_before_answer / 1e6:.1f} MB of 52.4 MB handed to the "
          f"socket ({poured.sent_in_all / 1e6:.1f} MB before the server closed); peak RSS "
          f"{peak_before:.0f} -> {peak_after:.0f} MB")
    for answer in (unsent, poured):
        assert answer.status == 401, answer.body
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.headers["connection"] == "close"
        assert answer.seconds < 0.1
    assert unsent.sent_in_all == 0
    # The server closed the connection instead of reading the rest: the client could not send it all.
    assert poured.sent_in_all < FIFTY_MB


def test_the_meta_webhook_needs_no_token_yet_refuses_a_50_mb_body_unread(pipeline: Stack):
    base = pipeline.urls()["ingest"]
    headers = {"Content-Type": "application/json", "Content-Length": str(FIFTY_MB)}
    answer = exchange(base, "/webhooks/meta", headers, None)
    assert answer.status == 413 and answer.seconds < 0.1, answer.body
    small = httpx.post(f"{base}/webhooks/meta", content=b'{"object": "page"}',
                       headers={"Content-Type": "application/json"}, timeout=10)
    assert small.status_code == 401 and "signature" in small.json()["detail"]  # its own check: the signature


@pytest.mark.parametrize("route", ROUTES, ids=[r.service for r in ROUTES])
def test_an_authenticated_body_over_the_limit_gets_413_declared_or_streamed(pipeline: Stack, route: Route):
    base = pipeline.urls()[route.service]
    json_h = {**AUTH, "Content-Type": "application/json"}
    declared = exchange(base, route.path, {**json_h, "Content-Length": str(route.limit + 1)}, None)
    # Chunked, and the body never ends: only a server that counts while it reads can answer.
    streamed = exchange(base, route.path, {**json_h, "Transfer-Encoding": "chunked"}, chunked(route.limit + 1))
    within = httpx.post(f"{base}{route.path}", content=b" " * route.limit, headers=json_h, timeout=30)
    for answer in (declared, streamed):
        assert answer.status == 413, answer.body
        assert answer.body.decode() == f'{{"detail":"request body larger than {route.limit} bytes"}}'
    assert declared.sent_in_all == 0
    assert within.status_code == 400  # as large as allowed: read, and found not to be JSON


@pytest.mark.parametrize("route", ROUTES, ids=[r.service for r in ROUTES])
def test_one_error_shape_for_every_service(pipeline: Stack, route: Route):
    url = f"{pipeline.urls()[route.service]}{route.path}"
    with httpx.Client(timeout=30, headers=AUTH) as client:
        broken = client.post(url, content=b'{"a": 1,\n  "b": oops}', headers={"Content-Type": "application/json"})
        as_text = client.post(url, content=b'{"text": "ok"}', headers={"Content-Type": "text/plain"})
        untyped = client.post(url, content=b'{"text": "ok"}')
        bad = client.post(url, json=route.bad_value)
    assert broken.status_code == 400
    assert broken.json() == {"detail": "malformed JSON at line 2, column 8: Expecting value", "line": 2,
                             "column": 8}
    for refused in (as_text, untyped):
        assert refused.status_code == 415
        assert "Content-Type: application/json" in refused.json()["detail"]
    assert bad.status_code == 422, bad.text
    assert route.bad_field in [e["field"] for e in bad.json()["errors"]]
    assert f"{route.bad_field}: " in bad.json()["detail"]
