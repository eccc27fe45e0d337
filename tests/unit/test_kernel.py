"""Pure kernel pieces: decoding, dead-letter headers, the dead-letter rate bound."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest
from pydantic import BaseModel

from terrain.contracts import InboundCommentMessage
from terrain.kafka import DeadLetterGuard, DeadLetterRateExceeded, Record, Rejection, dead_letter, decode

GOOD = (
    b'{"message_id":"m1","occurred_at":"2026-11-25T10:00:00Z","producer":"crm","source":"facebook",'
    b'"external_id":"1","community_id":"c","thread_id":"t","text":"hello","created_at":"2026-11-25T10:00:00Z",'
    b'"some_future_field":42}'
)


def rec(value: bytes, offset: int = 7) -> Record:
    return Record("terrain.comments.inbound.v1", 2, offset, b"c", value, (("trace", b"abc"),))


def test_decode_accepts_unknown_fields():
    out = decode(InboundCommentMessage, rec(GOOD))
    assert isinstance(out, InboundCommentMessage) and out.text == "hello"


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (b"{not json", "invalid message"),  # undecodable JSON
        (GOOD.replace(b'"text":"hello",', b""), "text: Field required"),  # a required field missing
        (GOOD.replace(b'"2026-11-25T10:00:00Z","producer"', b'"2026-11-25T10:00:00","producer"'),
         "occurred_at"),  # naive timestamp refused
        (b"\xff\xfe", "invalid message"),  # not UTF-8
    ],
)
def test_decode_rejects_with_a_reason_naming_the_problem(value: bytes, needle: str):
    out = decode(InboundCommentMessage, rec(value))
    assert isinstance(out, Rejection)
    assert needle in out.reason


def test_dead_letter_keeps_key_body_and_names_origin():
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    msg = dead_letter(Rejection(rec(b"{bad", offset=41), "invalid message: x"), "terrain-ingest", now)
    assert msg.topic == "terrain.comments.inbound.v1.dlq"
    assert msg.key == "c" and msg.value == b"{bad"
    assert msg.headers["terrain-dlq-origin-topic"] == "terrain.comments.inbound.v1"
    assert msg.headers["terrain-dlq-origin-partition"] == "2"
    assert msg.headers["terrain-dlq-origin-offset"] == "41"
    assert msg.headers["terrain-dlq-reason"] == "invalid message: x"
    assert msg.headers["terrain-dlq-consumer-group"] == "terrain-ingest"
    assert msg.headers["trace"] == "abc"  # the original headers travel along


def test_guard_allows_occasional_failures():
    guard = DeadLetterGuard(window=100, max_ratio=0.5)
    for _ in range(20):
        guard.check(ok=9, failed=1)  # 10% failing: dead-letter and go on


def test_guard_stops_when_most_messages_fail():
    guard = DeadLetterGuard(window=100, max_ratio=0.5)
    guard.check(ok=30, failed=0)
    with pytest.raises(DeadLetterRateExceeded):
        guard.check(ok=0, failed=40)  # 40 of 70 failed


def test_guard_needs_enough_samples():
    guard = DeadLetterGuard(window=100, max_ratio=0.5, min_samples=20)
    guard.check(ok=0, failed=3)  # three bad messages at start-up are not a broken pipeline


# --- issue: the dead-letter bound, schema evolution, transient errors, offline docs, readiness ---------


def test_guard_trips_on_one_large_batch_of_poison():
    guard = DeadLetterGuard(window=200, max_ratio=0.5, min_samples=20)
    with pytest.raises(DeadLetterRateExceeded):
        guard.check(ok=0, failed=500)  # a large all-poison batch must not be dead-lettered whole


def test_guard_stays_tripped_rather_than_dead_lettering_small_batches_after():
    guard = DeadLetterGuard(window=100, max_ratio=0.5)
    with pytest.raises(DeadLetterRateExceeded):
        guard.check(ok=0, failed=40)
    with pytest.raises(DeadLetterRateExceeded):
        guard.check(ok=0, failed=2)  # the window was not forgotten: still refusing


def envelope(version: object) -> bytes:
    import json

    body = json.loads(GOOD)
    body["schema_version"] = version
    return json.dumps(body).encode()


@pytest.mark.parametrize("version", [1, 2, 7])
def test_newer_schema_versions_are_read(version: int):
    out = decode(InboundCommentMessage, rec(envelope(version)))
    assert isinstance(out, InboundCommentMessage), out
    assert out.schema_version == version


@pytest.mark.parametrize("version", [0, -1, "two", 1.5, None])
def test_unreadable_schema_versions_are_refused(version: object):
    out = decode(InboundCommentMessage, rec(envelope(version)))
    assert isinstance(out, Rejection) and "schema_version" in out.reason


def test_driver_misuse_is_not_transient_but_a_lost_connection_is():
    import asyncpg

    from terrain.kafka import is_transient

    assert not is_transient(asyncpg.exceptions.InterfaceError("cannot perform operation: pool is closed"))
    assert is_transient(asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"))
    assert is_transient(ConnectionRefusedError())


def _app(**settings):
    from contextlib import asynccontextmanager

    from terrain.settings import TerrainSettings
    from terrain.telemetry import Health, build_http_app

    health = Health("unittest")

    @asynccontextmanager
    async def lifespan(_app):
        yield

    return health, build_http_app(service="unittest", settings=TerrainSettings(**{"api_token": None, **settings}),
                                  health=health, lifespan=lifespan)


async def test_with_a_metrics_port_the_api_has_no_metrics_route():
    import httpx

    _, app = _app(metrics_port=9464, api_token="t")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/metrics")).status_code == 401  # no longer public: an unknown path
        assert (await client.get("/metrics", headers={"Authorization": "Bearer t"})).status_code == 404
        assert (await client.get("/readyz")).status_code == 503  # the probes stay public
    _, app = _app(api_token="t")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        got = await client.get("/metrics")  # unset: where local runs and compose scrape it
        assert got.status_code == 200 and "terrain_ready" in got.text


def test_the_metrics_server_binds_the_host_and_stops():
    import httpx

    from terrain.devstack import free_port
    from terrain.telemetry import MetricsServer

    port = free_port()
    server = MetricsServer.start("127.0.0.1", port)
    try:
        got = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert got.status_code == 200 and "terrain_consumer_messages_total" in got.text
        with pytest.raises(OSError, match=f"TERRAIN_METRICS_PORT: cannot serve metrics on 127.0.0.1:{port}"):
            MetricsServer.start("127.0.0.1", port)  # taken: one line naming the setting
    finally:
        server.stop()
    with pytest.raises(httpx.ConnectError):  # stopped: nothing listens there any more
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)


async def test_docs_work_offline_from_the_installed_package():
    import re

    import httpx

    _, app = _app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        page = await client.get("/docs")
        assert page.status_code == 200
        external = re.findall(r"""(?:src|href)=["'](https?://[^"']+)""", page.text)
        assert external == [], f"/docs loads from the network: {external}"
        assets = re.findall(r"""(?:src|href)=["'](/[^"']+)""", page.text)
        assert any(a.endswith(".js") for a in assets)
        for asset in assets:
            assert (await client.get(asset)).status_code == 200, asset


async def test_readiness_exports_a_gauge_and_only_liveness_names_the_process():
    import os

    import httpx
    from prometheus_client import REGISTRY

    health, app = _app()
    health.started = True
    health.set("database", False, "unreachable: OSError")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        got = await client.get("/readyz")
        # /readyz is public on a cluster: it says what is wrong, not which process answers.
        assert got.status_code == 503 and "pid" not in got.json()
        assert got.json()["checks"]["database"] == {"ok": False, "detail": "unreachable: OSError"}
        assert (await client.get("/healthz")).json()["pid"] == os.getpid()  # what `terrain up` checks
        assert REGISTRY.get_sample_value("terrain_ready", {"service": "unittest"}) == 0
        health.set("database", True, "connected")
        assert (await client.get("/readyz")).status_code == 200
        assert REGISTRY.get_sample_value("terrain_ready", {"service": "unittest"}) == 1


def test_serve_without_a_database_url_refuses_and_says_why():
    from typer.testing import CliRunner

    from terrain.cli import app

    result = CliRunner().invoke(app, ["serve", "sentiment"], env={"TERRAIN_DATABASE_URL": None})
    assert result.exit_code == 2
    assert "TERRAIN_DATABASE_URL is not set" in result.output


def test_a_json_log_line_keeps_its_own_level_whatever_the_extras_say():
    import json
    import logging

    from terrain.telemetry import JsonFormatter

    record = logging.LogRecord("terrain.escalation", logging.INFO, __file__, 1, "incident %s", ("opened",), None)
    record.__dict__.update({"level": "respond", "service": "escalation", "event": "x", "incident_id": "i-1"})
    line = json.loads(JsonFormatter("escalation").format(record))
    assert line["level"] == "info" and line["event"] == "incident opened"
    assert line["extra_level"] == "respond" and line["extra_event"] == "x" and line["incident_id"] == "i-1"
    assert "extra_service" not in line  # an extra that repeats the line's own value is not doubled


@pytest.mark.parametrize("exc", [
    asyncpg.exceptions.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00'),
    asyncpg.exceptions.DataError("invalid input for query argument $6: 10**30 (value out of int64 range)"),
], ids=["NUL character", "past 64 bits"])
async def test_a_value_the_database_cannot_hold_is_a_clear_422_not_a_500(exc: Exception):
    import httpx

    _, app = _app()

    @app.get("/store")
    async def store() -> None:
        raise exc

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        got = await client.get("/store")
    assert got.status_code == 422
    assert "cannot be stored" in got.json()["detail"]


class Ack(BaseModel):
    actor: str


async def test_a_json_body_sent_without_its_content_type_is_refused_with_the_header_to_set():
    import httpx

    _, app = _app()

    @app.post("/ack")
    async def ack(body: Ack) -> dict[str, str]:
        return {"actor": body.actor}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        # What `curl -d '{...}'` sends: form encoding.
        form = await client.post("/ack", content=b'{"actor":"claire"}',
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        untyped = await client.post("/ack", content=b'{"actor":"claire"}')
        typed = await client.post("/ack", json={"actor": "claire"})
        wrong = await client.post("/ack", json={"who": "claire"})
    # One rule for every service: a body is JSON and says so, else 415 naming the header to set.
    assert form.status_code == 415 and untyped.status_code == 415
    assert "Content-Type: application/json" in form.json()["detail"]
    assert "no content type" in untyped.json()["detail"]
    assert "application/x-www-form-urlencoded" in form.json()["detail"]
    assert typed.status_code == 200 and typed.json() == {"actor": "claire"}
    # A JSON body with a wrong field names the field, with no word about the header.
    assert wrong.status_code == 422 and "actor" in wrong.json()["detail"]
    assert "Content-Type" not in wrong.json()["detail"]


async def test_a_consumer_behind_without_progress_turns_not_ready_and_ready_again_when_it_moves():
    import time
    from types import SimpleNamespace

    from aiokafka.structs import TopicPartition

    from terrain.kafka import BatchConsumer
    from terrain.settings import TerrainSettings
    from terrain.telemetry import Health
    from terrain.topics import COMMENTS

    class Broker:  # what refresh_lag asks of the Kafka consumer: 10 records, `committed` of them done
        committed_offset = 0

        def assignment(self) -> set[TopicPartition]:
            return {TopicPartition(COMMENTS.name, 0)}

        async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
            return {tp: 10 for tp in tps}

        async def committed(self, tp: TopicPartition) -> int:
            return self.committed_offset

    health = Health("stucktest")
    consumer = BatchConsumer(spec=COMMENTS, group_id="g", service="stucktest",
                             settings=TerrainSettings(consumer_stuck_after_s=5), publisher=None,  # type: ignore[arg-type]
                             process=None, health=health)  # type: ignore[arg-type]
    broker = Broker()
    consumer.subscriber = SimpleNamespace(consumer=broker)
    health.started = True
    await consumer.refresh_lag()
    assert health.ready()  # behind, but it moved a moment ago
    consumer.last_progress = time.monotonic() - 60
    await consumer.refresh_lag()
    check = health.check(consumer.health_key)
    assert not health.ready() and check is not None and check.detail.startswith("stuck: 10 behind")
    broker.committed_offset = 10
    await consumer.refresh_lag()
    assert health.ready()


def test_a_service_process_tunes_its_collector_and_a_test_run_does_not():
    import gc
    import subprocess
    import sys

    from terrain import runtime

    # Only `serve` (a service's own process) turns it on; a runtime started inside a test leaves it alone.
    assert runtime._OWN_PROCESS is False
    code = (
        "import gc; from terrain.runtime import tune_gc; before = gc.get_threshold(); tune_gc(50000); "
        "after = gc.get_threshold(); print(before[0], after[0], after[1:] == before[1:], gc.get_freeze_count() > 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["700", "50000", "True", "True"]
    assert gc.get_threshold()[0] != 50000  # this process untouched


async def test_a_broker_client_that_never_stops_does_not_hang_the_service_stop(monkeypatch, caplog):
    import asyncio
    import logging
    import time

    from terrain import runtime
    from terrain.settings import TerrainSettings

    rt = runtime.ServiceRuntime("stoptest", TerrainSettings(), use_database=False)
    stopped = {"asked": False}

    async def never() -> None:  # a consumer paused by the dead-letter bound once did this
        stopped["asked"] = True
        await asyncio.sleep(3600)

    monkeypatch.setattr(rt.broker, "stop", never)
    monkeypatch.setattr(runtime, "STOP_BROKER_S", 0.3)
    caplog.set_level(logging.ERROR, logger="terrain.runtime")
    began = time.monotonic()
    await rt.stop()
    assert stopped["asked"] and time.monotonic() - began < 5
    assert any("did not stop within" in r.getMessage() for r in caplog.records)


def test_the_api_token_is_kept_in_the_home_for_its_owner_only(tmp_path):
    import stat

    from terrain.stack import Stack

    first = Stack(home=tmp_path, env={}).home_token()
    assert len(first) >= 20
    # The same home gives the same token on the next start: an exported header keeps working.
    assert Stack(home=tmp_path, env={}).home_token() == first
    assert stat.S_IMODE((tmp_path / "api-token").stat().st_mode) == 0o600
    other = tmp_path / "other"
    other.mkdir()
    assert Stack(home=other, env={}).home_token() != first  # each home its own


def test_a_bad_setting_stops_a_service_with_one_line_naming_it(monkeypatch, capsys):
    from services.sentiment.app import SentimentSettings
    from terrain.runtime import CONFIG_EXIT_CODE, configured

    monkeypatch.setenv("TERRAIN_SENTIMENT_PORT", "abc")
    monkeypatch.setenv("TERRAIN_SENTIMENT_SCORER", "bogus")
    with pytest.raises(SystemExit) as stopped:
        configured("sentiment", SentimentSettings)
    assert stopped.value.code == CONFIG_EXIT_CODE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sentiment: cannot start: ")
    assert "TERRAIN_SENTIMENT_PORT" in err and "(got 'abc')" in err
    assert "TERRAIN_SENTIMENT_SCORER" in err and "known: lexicon" in err


def test_a_start_up_step_that_fails_on_a_file_or_value_stops_with_its_reason(capsys):
    from terrain.runtime import configured

    def missing() -> None:
        raise FileNotFoundError(2, "No such file or directory", "/etc/terrain/policy.yaml")

    for failing, reason in ((missing, "policy.yaml"), (lambda: int("x"), "invalid literal")):
        with pytest.raises(SystemExit):
            configured("escalation", failing)
        assert reason in capsys.readouterr().err
    assert configured("escalation", lambda: 42) == 42


async def test_a_database_that_takes_no_connection_is_named_in_one_line():
    # Before, a service or `terrain migrate` ended on asyncpg's own 40-line traceback; now the last line
    # names the server (never its password) and the reason.
    import socket

    from terrain import db

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with pytest.raises(db.DatabaseUnreachable) as caught:
        await db.create_pool(f"postgresql://terrain:s3cret@127.0.0.1:{closed}/terrain", timeout_s=0.5)
    message = str(caught.value)
    assert message.startswith(f"PostgreSQL at postgresql://terrain@127.0.0.1:{closed}/terrain did not take")
    assert "within 0.5 s (ConnectionRefusedError" in message and "s3cret" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_the_bench_finds_py_spy_beside_its_python_when_the_venv_is_not_activated(tmp_path, monkeypatch):
    # Before, `terrain bench --profile` from a venv that was not activated said "needs py-spy on PATH" while
    # py-spy sat in the venv's bin beside terrain itself.
    from terrain.benchmark import find_py_spy

    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr("sys.executable", str(bin_dir / "python"))
    assert find_py_spy() is None
    tool = bin_dir / "py-spy"
    tool.write_text("#!/bin/sh\n")
    assert find_py_spy() is None  # not executable
    tool.chmod(0o755)
    assert find_py_spy() == str(tool)
