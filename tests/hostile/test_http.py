"""Hostile HTTP requests against every service of a running pipeline: bad JSON, wrong types, megabyte texts,
invalid UTF-8, control characters, SQL-injection text, path traversal, bad or replayed signatures, missing or
wrong tokens. The outcome is always a clear answer below 500 (a 4xx says why), and a rejected request stores
no row.

Two generators share the work. schemathesis reads each service's OpenAPI and generates requests that follow
it and requests that break it. It is thorough but slow to generate (tens of milliseconds a case), so most of
the volume comes from a hypothesis strategy of our own: a valid request of each operation with one part
made hostile (a field, the body, a path or query parameter, the token, the content type). The default run
sends over ten thousand requests in all; TERRAIN_HOSTILE_EXAMPLES and TERRAIN_HOSTILE_SCHEMA_EXAMPLES scale
both (examples per operation).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from terrain.stack import Stack
from tests.conftest import run_seed
from tests.hostile.conftest import META_SECRET, META_VERIFY, TOKEN, Rows

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

AUTH = {"Authorization": f"Bearer {TOKEN}"}
SERVICES = ("sentiment", "escalation", "events", "ingest")  # ingest last: what it accepts flows downstream
MUTATION_EXAMPLES = int(os.environ.get("TERRAIN_HOSTILE_EXAMPLES", "420"))
SCHEMA_EXAMPLES = int(os.environ.get("TERRAIN_HOSTILE_SCHEMA_EXAMPLES", "6"))
SKIP_PATHS = {"/metrics"}  # plain text for Prometheus, no input to attack

# The rows each service's HTTP handlers write, and only they: a rejected request must leave their counts as
# they were. Rows the pipeline writes on its own (the escalation engine's steps and timers, events from
# topics) are told apart by their actor or origin.
WRITTEN_BY_HTTP: dict[str, tuple[str, ...]] = {
    "ingest": ("ingest_comments",),
    "sentiment": ("sentiment_corrections",),
    "escalation": ("escalation_silences", "escalation_incident_events WHERE actor <> 'terrain-escalation'"),
    "events": ("events_log WHERE origin = 'http'",
               "events_transitions WHERE event_id IN (SELECT id FROM events_log WHERE origin = 'http')"),
}


# --- hostile values --------------------------------------------------------------------------------------

SQL = ["'; DROP TABLE ingest_comments; --", "x' OR '1'='1", "1; SELECT pg_sleep(5)--", "$1", "\\x00'||'",
       "%27%20OR%201=1", "') ON CONFLICT DO NOTHING; --"]
TRAVERSAL = ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "/etc/shadow", "..\\..\\windows\\win.ini",
             "%2e%2e%2f%2e%2e%2f", "file:///etc/passwd", "....//....//"]
CONTROL = ["\x00", "a\x00b", "\x1b[31mred\x1b[0m", "\u202eevil", "\r\nX-Injected: 1", "\ufeff", "\u0085",
           "\x7f", "\t\v\f", "\u2028", "𝕿𝖊𝖗𝖗𝖆𝖎𝖓", "é" * 300, "<script>alert(1)</script>", "{{7*7}}", "${jndi:x}"]
ODD = ["", " ", "null", "NaN", "-1", "1e309", "9" * 400, "2026-13-45T99:99:99Z", "0000-00-00", "true", "[]", "{}"]
HOSTILE_STRINGS = SQL + TRAVERSAL + CONTROL + ODD



def hostile_value(rng: random.Random, depth: int = 0) -> Any:
    """A value of any JSON type, most of them chosen to hurt: injection text, control characters, extremes."""
    roll = rng.random()
    if roll < 0.45:
        return rng.choice(HOSTILE_STRINGS)
    if roll < 0.55:
        return "".join(chr(rng.choice([rng.randrange(32), rng.randrange(32, 0x3000), rng.randrange(0x1F000, 0x1FAFF)]))
                       for _ in range(rng.randrange(1, 40)))
    if roll < 0.65:
        return rng.choice([0, -1, 1, 2**31, -(2**63), 2**64, 10**30, 1.5, -0.0, 1e308, True, False, None])
    if roll < 0.75:
        return rng.randrange(-(2**70), 2**70)
    if depth < 2 and roll < 0.88:
        return [hostile_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if depth < 2:
        return {rng.choice([*HOSTILE_STRINGS[:12], "id", "text", "a"]): hostile_value(rng, depth + 1)
                for _ in range(rng.randrange(4))}
    return None


RAW_BODIES = [
    b"", b"{", b'{"text": "a"', b"[1, 2", b"null", b"42", b'"a string"', b"[]", b"{}", b"[[[[[]]]]]",
    b'{"text": NaN}', b'{"text": Infinity}', b"\xff\xfe\xfd", b'{"text": "\xc3\x28"}', b'{"a": "\xed\xa0\x80"}',
    b'{"text": "\\ud800"}', b"\x00\x00\x00", b"<xml/>", b"text=plain&form=1", b'{"a": 1}{"b": 2}',
    b"[" * 5000 + b"]" * 5000, b'{"' + b"k" * 10_000 + b'": 1}', b"\xef\xbb\xbf{}",
]
TOKENS = {
    "valid": AUTH,
    "missing": {},
    "wrong": {"Authorization": "Bearer not-the-token"},
    "wrong scheme": {"Authorization": f"Basic {TOKEN}"},
    "empty": {"Authorization": "Bearer "},
    "token prefix": {"Authorization": f"Bearer {TOKEN[:-1]}"},
    "two tokens": {"Authorization": f"Bearer {TOKEN} {TOKEN}"},
}
CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded", "application/xml", None]

# --- valid requests, one per operation, that the mutations start from ---------------------------------------


def sign(body: bytes, secret: str = META_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# Ahead of any run: a planned event stays scheduled (not done) and may be scheduled again.
WEEK_AHEAD = time.strftime("%Y-%m-%dT18:00:00Z", time.gmtime(time.time() + 7 * 86400))


def base_bodies(now: str) -> dict[tuple[str, str], Any]:
    comment = {"source": "forum", "external_id": "fuzz-base", "community_id": "c-fuzz", "thread_id": "t-fuzz",
               "author_id": "fuzz-author", "text": "Bonjour, une question sur les horaires", "created_at": now}
    return {
        ("POST", "/v1/comments"): comment,
        ("POST", "/v1/score"): {"text": "Service lent mais personnel aimable", "lang": "fr"},
        ("POST", "/v1/corrections"): {"text": "Très bon accueil", "label": "positive", "corrected_by": "fuzz"},
        ("POST", "/v1/incidents/{incident_id}/ack"): {"actor": "fuzz", "note": "looking"},
        ("POST", "/v1/incidents/{incident_id}/resolve"): {"actor": "fuzz", "note": "done"},
        ("POST", "/v1/incidents/{incident_id}/notes"): {"actor": "fuzz", "text": "called the author"},
        ("POST", "/v1/silences"): {"matchers": {"community_id": "c-fuzz"}, "duration_minutes": 5,
                                   "created_by": "fuzz", "comment": "maintenance"},
        ("POST", "/v1/events"): {"community_id": "c-fuzz", "kind": "meetup", "title": "Apéro", "starts_at": now},
        # A visit is scheduled ahead: one in the past is refused (422), however long the run takes.
        ("POST", "/v1/events/{event_id}/schedule"): {"actor": "fuzz", "starts_at": WEEK_AHEAD},
        ("POST", "/v1/events/{event_id}/assign"): {"actor": "fuzz", "assignee": "someone"},
        ("POST", "/v1/events/{event_id}/close"): {"actor": "fuzz", "outcome": {"result": "success"}},
        ("POST", "/v1/events/{event_id}/cancel"): {"actor": "fuzz", "note": "rain"},
        ("POST", "/webhooks/meta"): {"object": "page", "entry": [{"id": "page-fuzz", "time": 1764000000, "changes": [
            {"field": "feed", "value": {"item": "comment", "verb": "add", "comment_id": "fuzz-meta", "post_id": "p",
                                        "message": "Bonjour", "created_time": 1764000000,
                                        "from": {"id": "u-fuzz", "name": "Fuzz"}}}]}]},
    }


BASE_QUERY: dict[tuple[str, str], dict[str, str]] = {
    ("GET", "/webhooks/meta"): {"hub.mode": "subscribe", "hub.verify_token": META_VERIFY, "hub.challenge": "42"},
    ("GET", "/v1/incidents"): {"community_id": "c-fuzz", "limit": "10"},
    ("GET", "/v1/events"): {"community_id": "c-fuzz", "limit": "10"},
    ("GET", "/v1/corrections"): {"limit": "10"},
    ("GET", "/v1/events/{event_id}/impact"): {"window_days": "14"},
    ("DELETE", "/v1/silences/{silence_id}"): {"actor": "fuzz"},
}


@dataclass
class Operation:
    service: str
    method: str
    path: str
    protected: bool
    params: list[str]
    body: Any = None
    query: dict[str, str] = field(default_factory=dict)


def operations(stack: Stack) -> list[Operation]:
    """Every operation of every service, from its live OpenAPI document."""
    bodies = base_bodies(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    out = []
    for service in SERVICES:
        spec = httpx.get(f"{stack.urls()[service]}/openapi.json", timeout=10).json()
        for path, ops in spec["paths"].items():
            if path in SKIP_PATHS:
                continue
            for method, op in ops.items():
                key = (method.upper(), path)
                out.append(Operation(
                    service, method.upper(), path, protected=bool(op.get("security")),
                    params=[p["name"] for p in op.get("parameters", []) if p.get("in") == "query"],
                    body=bodies.get(key, {} if "requestBody" in op else None), query=BASE_QUERY.get(key, {}),
                ))
    return out


# --- one hostile request per example --------------------------------------------------------------------


@dataclass
class Request:
    op: Operation
    label: str
    token: str
    url: str
    headers: dict[str, str]
    params: dict[str, str]
    content: bytes | None
    malformed: bool  # sure to break the operation's contract: anything but a 4xx is wrong

    @property
    def authorised(self) -> bool:
        return self.token == "valid" or not self.op.protected


def _body_bytes(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")


def places(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document: the containers and the leaves."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += places(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += places(v, (*prefix, i))
    return out


def hostile_request(rng: random.Random, op: Operation, base_url: str, path_values: dict[str, str]) -> Request:
    """A valid request of `op` with one part made hostile."""
    kinds = ["token", "query", "header"]
    if op.body is not None:
        kinds += ["field", "field", "field", "drop", "extra", "raw", "content-type", "whole"]
    if "{" in op.path:
        kinds += ["path", "path"]
    kind = rng.choice(kinds)
    token = rng.choice(list(TOKENS)) if kind == "token" else "valid"
    body = json.loads(json.dumps(op.body)) if op.body is not None else None
    params = dict(op.query)
    path = op.path
    content_type: str | None = "application/json"
    extra_headers: dict[str, str] = {}
    malformed = False
    content: bytes | None = None
    label = kind
    if kind in ("field", "drop") and isinstance(body, dict) and body:
        where = rng.choice(places(body))  # any depth: a Meta delivery's comment is four levels down
        parent: Any = body
        for p in where[:-1]:
            parent = parent[p]
        if kind == "drop" and isinstance(parent, dict):
            del parent[where[-1]]
        else:
            parent[where[-1]] = hostile_value(rng)
        label = f"{kind} {'.'.join(map(str, where))}"
    elif kind == "extra" and isinstance(body, dict):
        body[rng.choice(["__proto__", "id", "'; --", "../x", "\x00", "z" * 300])] = hostile_value(rng)
    elif kind == "whole":
        body = hostile_value(rng)
    elif kind == "raw":
        content = rng.choice(RAW_BODIES) if rng.random() < 0.7 else rng.randbytes(rng.randrange(64))
        try:
            json.loads(content)
        except (ValueError, RecursionError):
            malformed = content != b""  # an empty body is "no body", which some operations accept
    elif kind == "content-type":
        content_type = rng.choice(CONTENT_TYPES[1:])
    elif kind == "path":
        placeholder = path[path.index("{") + 1: path.index("}")]
        value = rng.choice([*HOSTILE_STRINGS, "x" * 5000, "00000000-0000-0000-0000-000000000000"])
        path = path.replace("{" + placeholder + "}", urllib.parse.quote(value, safe=""), 1)
        label = f"path {placeholder}"
    elif kind == "query":
        name = rng.choice([*op.params, "unexpected", "limit", "offset"])
        value = hostile_value(rng)
        params[name] = value if isinstance(value, str) else json.dumps(value)
        label = f"query {name}"
    elif kind == "header":
        name, value = rng.choice(["X-Forwarded-For", "Content-Length-X", "X-Hub-Signature-256", "Accept",
                                  "Cookie"]), rng.choice(HOSTILE_STRINGS)
        if value.isprintable() and value.isascii():
            extra_headers[name] = value
    for name, value in path_values.items():
        path = path.replace("{" + name + "}", value)
    if op.body is not None and content is None:
        content = _body_bytes(body)
    headers = {**TOKENS[token], **extra_headers}
    if content is not None and content_type:
        headers["Content-Type"] = content_type
    if op.path == "/webhooks/meta" and op.method == "POST":
        # Meta signs every delivery; most of these are signed right, so the parser behind the check is attacked.
        how = rng.choice(["signed", "signed", "signed", "none", "zeros", "other secret", "not hex", "replayed"])
        signature = {"signed": sign(content or b""), "none": None, "zeros": "sha256=" + "0" * 64,
                     "other secret": sign(content or b"", "another"), "not hex": "sha256=zz",
                     "replayed": sign(_body_bytes(op.body))}[how]  # a real signature, of another body
        if signature:
            headers["X-Hub-Signature-256"] = signature
        label += f", signature {how}"
        token = "valid" if how == "signed" or (how == "replayed" and content == _body_bytes(op.body)) else how
    return Request(op, label, token, f"{base_url}{path}", headers, params, content, malformed)


# --- running them ------------------------------------------------------------------------------------------


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    unsendable: int = 0
    resent: int = 0

    @property
    def sent(self) -> int:
        return sum(self.outcomes.values())


@dataclass
class Watch:
    """One service's watched rows as last counted; requests to it are sent and counted one at a time."""

    counts: dict[str, int]
    lock: threading.Lock = field(default_factory=threading.Lock)


class Sender:
    """Sends requests to one service and checks each answer; a rejected request must not change its tables."""

    def __init__(self, service: str, database_url: str, tally: Tally, watch: Watch) -> None:
        self.service, self.tally, self.watch = service, tally, watch
        self.rows = Rows(database_url)
        self.client = httpx.Client(timeout=60)
        self.watched = WRITTEN_BY_HTTP[service]

    def close(self) -> None:
        self.client.close()
        self.rows.close()

    def send(self, req: Request) -> None:
        with self.watch.lock:
            self._send(req)

    def _send(self, req: Request) -> None:
        tally = self.tally
        what = f"{req.op.service} {req.op.method} {req.op.path} [{req.label}, token {req.token}]"
        try:
            try:
                r = self.client.request(req.op.method, req.url, headers=req.headers, params=req.params,
                                        content=req.content)
            except (httpx.ReadError, httpx.RemoteProtocolError):
                # A server that answers before reading a whole body (a 401, a 413) closes the connection; the
                # next request on it finds it reset. Send again once on a new connection, and judge that answer.
                tally.resent += 1
                self.client.close()
                self.client = httpx.Client(timeout=60)
                r = self.client.request(req.op.method, req.url, headers=req.headers, params=req.params,
                                        content=req.content)
        except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeEncodeError):
            tally.unsendable += 1  # the client library refuses to send it: no server sees such a request
            return
        except httpx.HTTPError as exc:
            tally.problems.append(f"{what}: no answer ({type(exc).__name__})")
            return
        tally.outcomes[str(r.status_code)] += 1
        before = self.watch.counts
        if req.op.method != "GET":  # a read writes nothing: only requests that may write are counted after
            self.watch.counts = self.rows.count(self.watched)
        if r.status_code >= 500 and not (r.status_code == 503 and req.op.path == "/readyz"):
            tally.problems.append(f"{what}: {r.status_code} {r.text[:300]}")
        elif not req.authorised and r.status_code not in (401, 403):
            tally.problems.append(f"{what}: {r.status_code} without a valid token or signature")
        elif req.malformed and req.authorised and not 400 <= r.status_code < 500:
            tally.problems.append(f"{what}: {r.status_code} for a body that cannot be read")
        if 400 <= r.status_code < 500:
            if r.headers.get("content-type", "").startswith("application/json"):
                try:
                    detail = r.json().get("detail")
                except (ValueError, AttributeError):
                    detail = None
                if not detail:
                    tally.problems.append(f"{what}: {r.status_code} without a detail saying why: {r.text[:200]}")
            if self.watch.counts != before:
                tally.problems.append(f"{what}: rejected ({r.status_code}) yet rows {before} -> {self.watch.counts}")


def fuzz_mutations(stack: Stack, ops: list[Operation], path_values: dict[str, str], examples: int,
                   seed: int, tallies: dict[str, Tally], watches: dict[str, Watch]) -> list[threading.Thread]:
    """Each service in its own thread (their tables are their own), each request checked as it is answered."""

    def one_service(service: str) -> None:
        sender = Sender(service, stack.database_url, tallies[service], watches[service])
        rng = random.Random(f"{seed}-{service}")
        try:
            for op in (o for o in ops if o.service == service):
                # A probe with nothing to vary but the token and the headers needs fewer examples.
                n = examples if (op.body is not None or op.params or "{" in op.path) else max(20, examples // 10)
                for _ in range(n):
                    sender.send(hostile_request(rng, op, stack.urls()[service], path_values))
        except BaseException as exc:
            tallies[service].problems.append(f"{service}: the fuzzer failed: {exc!r}")
        finally:
            sender.close()

    threads = [threading.Thread(target=one_service, args=(s,), name=f"fuzz-{s}") for s in SERVICES]
    for t in threads:
        t.start()
    return threads


def generate(strategy: st.SearchStrategy[Any], examples: int, check: Any) -> None:
    """Run `check` on `examples` values drawn from `strategy` (the same ones each run: derandomized)."""

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(value=strategy)
    def run(value: Any) -> None:
        check(value)

    run()


def fuzz_schemas(stack: Stack, examples: int, tallies: dict[str, Tally], watches: dict[str, Watch]) -> None:
    """schemathesis: requests that follow each OpenAPI document and requests that break it."""
    for service in SERVICES:
        base = stack.urls()[service]
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        sender = Sender(service, stack.database_url, tallies[service], watches[service])
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path in SKIP_PATHS:
                continue
            op = Operation(service, operation.method.upper(), operation.path,
                           protected=bool(operation.definition.raw.get("security")), params=[])
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    strategy = operation.as_strategy(generation_mode=mode)
                except Exception:  # an operation with nothing to break (no parameters) has no negative cases
                    continue

                def one(case: Any, mode: GenerationMode = mode, op: Operation = op, base: str = base,
                        sender: Sender = sender) -> None:
                    kwargs = case.as_transport_kwargs(base_url=base, headers=AUTH)
                    content = kwargs.get("content") or kwargs.get("data")
                    if content is None and kwargs.get("json") is not None:
                        content = _body_bytes(kwargs["json"])
                    headers = {k: v for k, v in (kwargs.get("headers") or {}).items()
                               if k.lower() not in ("content-length", "host")}
                    if isinstance(content, str):
                        content = content.encode("utf-8", "surrogatepass")
                    if content is not None and not isinstance(content, bytes):
                        content = None
                    sender.send(Request(op, f"schemathesis {mode.value}", "valid", kwargs["url"], headers,
                                        kwargs.get("params") or {}, content, False))

                try:
                    generate(strategy, examples, one)
                except Exception as exc:  # hypothesis found no example for a mode: nothing was sent
                    if "Unsatisfiable" not in type(exc).__name__:
                        raise
        sender.close()


def seed_targets(stack: Stack) -> dict[str, str]:
    """Real ids for the path parameters, so that requests reach the handlers and not only the 404."""
    urls = stack.urls()
    with httpx.Client(timeout=30, headers=AUTH) as c:
        event = c.post(f"{urls['events']}/v1/events", json={
            "community_id": "c-fuzz", "kind": "meetup", "title": "Base", "starts_at": WEEK_AHEAD})
        assert event.status_code in (200, 201), event.text
        silence = c.post(f"{urls['escalation']}/v1/silences", json={
            "matchers": {"community_id": "c-fuzz-silence"}, "duration_minutes": 5, "created_by": "fuzz",
            "comment": "base"})
        assert silence.status_code in (200, 201), silence.text
        incidents = c.get(f"{urls['escalation']}/v1/incidents", params={"limit": "1"}).json()["items"]
    return {
        "event_id": str(event.json()["id"]), "silence_id": str(silence.json()["id"]),
        "incident_id": incidents[0]["id"] if incidents else str(uuid.uuid4()),
    }


def wait_quiet(stack: Stack, rows: Rows, timeout_s: float = 60) -> None:
    """Wait until the pipeline has carried what earlier tests sent: the watched tables stop changing."""
    tables = tuple(t for ts in WRITTEN_BY_HTTP.values() for t in ts)
    deadline = time.monotonic() + timeout_s
    last, since = rows.count(tables), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = rows.count(tables)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 3 and rows.count(("terrain_outbox",))["terrain_outbox"] == 0:
            return
    raise AssertionError("the pipeline did not go quiet")


def test_ten_thousand_generated_hostile_requests_get_a_clear_answer_and_store_nothing(pipeline: Stack, rows: Rows):
    wait_quiet(pipeline, rows)
    path_values = seed_targets(pipeline)
    ops = operations(pipeline)
    seed = run_seed("TERRAIN_HOSTILE_SEED")
    t0 = time.monotonic()
    tallies = {s: Tally() for s in SERVICES}
    watches = {s: Watch(rows.count(WRITTEN_BY_HTTP[s])) for s in SERVICES}
    # The four services in threads of their own; schemathesis (hypothesis: one thread only) meanwhile here.
    threads = fuzz_mutations(pipeline, ops, path_values, MUTATION_EXAMPLES, seed, tallies, watches)
    fuzz_schemas(pipeline, SCHEMA_EXAMPLES, tallies, watches)
    t1 = time.monotonic()
    for t in threads:
        t.join()
    for name, url in pipeline.urls().items():  # every service still answers after the barrage
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200, name
    total = sum(t.sent for t in tallies.values())
    for service, t in tallies.items():
        classes = Counter(f"{int(code) // 100}xx" for code in t.outcomes.elements())
        print(f"hostile requests, {service}: {t.sent} {dict(classes)}")
    print(f"hostile requests in all: {total} (seed {seed}) in {time.monotonic() - t0:.0f}s (schemathesis "
          f"{t1 - t0:.0f}s of it); refused by the client library: "
          f"{sum(t.unsendable for t in tallies.values())}, sent again after a connection reset: "
          f"{sum(t.resent for t in tallies.values())}")
    problems = [p for t in tallies.values() for p in t.problems]
    assert problems == [], f"seed {seed}, {len(problems)} problems:\n" + "\n".join(problems[:30])
    if MUTATION_EXAMPLES >= 420 and SCHEMA_EXAMPLES >= 6:  # the defaults
        assert total >= 10_000


# --- by hand: named cases an attacker or a broken client sends ---------------------------------------------

GOOD_COMMENT = {
    "source": "forum", "external_id": "hostile-ok", "community_id": "c-hostile", "thread_id": "t",
    "text": "Bonjour", "created_at": "2026-11-25T12:00:00Z",
}


def hand_written(urls: dict[str, str]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(label, method, url, httpx kwargs) of requests that must all be refused with a 4xx."""
    ingest, sentiment, escalation, events = (urls[s] for s in ("ingest", "sentiment", "escalation", "events"))
    comment = f"{ingest}/v1/comments"
    json_h = {**AUTH, "Content-Type": "application/json"}
    out: list[tuple[str, str, str, dict[str, Any]]] = [
        ("no token", "POST", comment, {"json": GOOD_COMMENT}),
        ("wrong token", "POST", comment, {"json": GOOD_COMMENT, "headers": {"Authorization": "Bearer nope"}}),
        ("token in the wrong scheme", "POST", comment, {"json": GOOD_COMMENT,
                                                         "headers": {"Authorization": f"Basic {TOKEN}"}}),
        ("bad JSON", "POST", comment, {"content": b'{"source": "forum", ', "headers": json_h}),
        ("invalid UTF-8", "POST", comment, {"content": b'{"text": "\xff\xfe\xfd"}', "headers": json_h}),
        ("wrong types", "POST", comment, {"json": {**GOOD_COMMENT, "text": 42, "created_at": [1]}, "headers": AUTH}),
        ("10 MB body", "POST", comment, {"content": b"[" + b"1," * 5_000_000 + b"1]", "headers": json_h}),
        ("deep nesting", "POST", comment, {"content": b"[" * 100_000 + b"]" * 100_000, "headers": json_h}),
        ("a timestamp without offset", "POST", comment, {"json": {**GOOD_COMMENT, "external_id": "naive",
                                                                  "created_at": "2026-11-25T12:00:00"},
                                                         "headers": AUTH}),
        ("an unknown source", "POST", comment, {"json": {**GOOD_COMMENT, "source": "../../etc/passwd"},
                                                "headers": AUTH}),
        ("SQL in the source", "POST", comment, {"json": {**GOOD_COMMENT, "source": "forum'; DROP TABLE x;--"},
                                                "headers": AUTH}),
        ("NaN score", "POST", f"{sentiment}/v1/score", {"content": b'{"text": NaN}', "headers": json_h}),
        ("score without text", "POST", f"{sentiment}/v1/score", {"json": {"lang": "fr"}, "headers": AUTH}),
        ("score without token", "POST", f"{sentiment}/v1/score", {"json": {"text": "a"}}),
        ("path traversal on an incident", "GET", f"{escalation}/v1/incidents/..%2F..%2Fetc%2Fpasswd",
         {"headers": AUTH}),
        ("SQL in an incident id", "POST", f"{escalation}/v1/incidents/x'%20OR%20'1'%3D'1/ack",
         {"json": {"actor": "a"}, "headers": AUTH}),
        ("silence with no matcher", "POST", f"{escalation}/v1/silences", {"json": {}, "headers": AUTH}),
        ("silence in the past", "POST", f"{escalation}/v1/silences", {"json": {
            "matchers": {"community_id": "c"}, "ends_at": "2000-01-01T00:00:00Z", "created_by": "x",
            "comment": "y"}, "headers": AUTH}),
        ("event with wrong types", "POST", f"{events}/v1/events", {"json": {"kind": 7, "title": None},
                                                                    "headers": AUTH}),
        ("event path traversal", "GET", f"{events}/v1/events/..%2F..%2Fsecret/impact", {"headers": AUTH}),
        ("events without token", "GET", f"{events}/v1/events", {}),
        ("webhook without signature", "POST", f"{ingest}/webhooks/meta", {"content": b'{"object": "page"}'}),
        ("webhook with a bad signature", "POST", f"{ingest}/webhooks/meta",
         {"content": b'{"object": "page"}', "headers": {"X-Hub-Signature-256": "sha256=" + "0" * 64}}),
        ("webhook signed for another body", "POST", f"{ingest}/webhooks/meta",
         {"content": b'{"object": "page", "entry": []}', "headers": {"X-Hub-Signature-256": sign(b"{}")}}),
        ("webhook signature not hex", "POST", f"{ingest}/webhooks/meta",
         {"content": b"{}", "headers": {"X-Hub-Signature-256": "sha256=\u00e9\u00e9".encode()}}),
        ("a NUL in a filter", "GET", f"{escalation}/v1/incidents", {"params": {"community_id": "a\x00b"},
                                                                   "headers": AUTH}),
        ("a NUL in an incident id", "GET", f"{escalation}/v1/incidents/a%00b", {"headers": AUTH}),
        ("an offset past 64 bits", "GET", f"{escalation}/v1/incidents", {"params": {"offset": str(10**30)},
                                                                        "headers": AUTH}),
        ("a NUL in an event", "POST", f"{events}/v1/events", {"json": {
            "community_id": "a\x00b", "kind": "meetup", "title": "t", "starts_at": "2026-12-01T18:00:00Z"},
            "headers": AUTH}),
        ("a NUL in a correction", "POST", f"{sentiment}/v1/corrections", {"json": {
            "text": "a\x00b", "label": "negative", "corrected_by": "x"}, "headers": AUTH}),
        ("handshake with a wrong verify token", "GET", f"{ingest}/webhooks/meta",
         {"params": {"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "123"}}),
    ]
    for i, ch in enumerate(["\x00", "\x1b[31m", "\u202e", "\ud800"]):
        out.append((f"control character {i} in an id", "POST", comment, {
            "content": json.dumps({**GOOD_COMMENT, "external_id": f"x{ch}", "text": ""}).encode(),
            "headers": json_h}))
    return out


def test_hand_written_hostile_requests_are_refused_with_a_clear_4xx_and_store_nothing(pipeline: Stack, rows: Rows):
    urls = pipeline.urls()
    tables = tuple(t for ts in WRITTEN_BY_HTTP.values() for t in ts)
    wait_quiet(pipeline, rows)
    before = rows.count(tables)
    problems = []
    with httpx.Client(timeout=60) as client:
        for label, method, url, kwargs in hand_written(urls):
            try:
                r = client.request(method, url, **kwargs)
            except httpx.HTTPError as exc:
                problems.append(f"{label}: no answer ({type(exc).__name__})")
                continue
            if not 400 <= r.status_code < 500:
                problems.append(f"{label}: {r.status_code} {r.text[:200]}")
            elif r.headers.get("content-type", "").startswith("application/json") and not r.json().get("detail"):
                problems.append(f"{label}: {r.status_code} without a detail saying why")
    assert problems == [], "\n".join(problems)
    assert rows.count(tables) == before, "a rejected request stored rows"


def test_megabyte_texts_are_cut_to_the_limit_or_refused_never_a_500(pipeline: Stack):
    urls = pipeline.urls()
    mb = 1_048_576
    cases = [
        (f"{urls['ingest']}/v1/comments", {**GOOD_COMMENT, "external_id": "one-megabyte", "text": "a" * mb}),
        (f"{urls['ingest']}/v1/comments", {**GOOD_COMMENT, "external_id": "x" * mb}),
        (f"{urls['sentiment']}/v1/score", {"text": "é" * mb}),
        (f"{urls['sentiment']}/v1/corrections", {"text": "z" * mb, "label": "negative"}),
        (f"{urls['escalation']}/v1/silences", {"matchers": {"community_id": "c" * mb}, "duration_minutes": 5,
                                               "created_by": "fuzz", "comment": "big"}),
        (f"{urls['events']}/v1/events", {"community_id": "c-fuzz", "kind": "meetup", "title": "t" * mb,
                                         "starts_at": "2026-12-01T18:00:00Z"}),
    ]
    for url, body in cases:
        r = httpx.post(url, json=body, headers=AUTH, timeout=60)
        assert r.status_code < 500, f"{url}: {r.status_code} {r.text[:200]}"


def test_a_replayed_signed_delivery_stores_its_comment_once(pipeline: Stack, rows: Rows):
    ingest = pipeline.urls()["ingest"]
    body = json.dumps({"object": "page", "entry": [{"id": "page-1", "time": 1764000000, "changes": [{
        "field": "feed", "value": {"item": "comment", "verb": "add", "comment_id": "replay-1", "post_id": "p-1",
                                   "message": "Replayed delivery", "created_time": 1764000000,
                                   "from": {"id": "u-1", "name": "Someone"}}}]}]}).encode()
    headers = {"X-Hub-Signature-256": sign(body), "Content-Type": "application/json"}
    first = httpx.post(f"{ingest}/webhooks/meta", content=body, headers=headers, timeout=30)
    assert first.status_code == 200, first.text
    middle = rows.count(("ingest_comments",))
    for _ in range(3):
        again = httpx.post(f"{ingest}/webhooks/meta", content=body, headers=headers, timeout=30)
        assert again.status_code == 200, again.text
    assert rows.count(("ingest_comments",)) == middle  # a replay adds nothing
    assert rows.fetch("SELECT revision FROM ingest_comments WHERE external_id = 'replay-1'")[0]["revision"] == 1
    handshake = httpx.get(f"{ingest}/webhooks/meta", params={
        "hub.mode": "subscribe", "hub.verify_token": META_VERIFY, "hub.challenge": "4242"}, timeout=10)
    assert handshake.text == "4242"
