"""Outages on real servers: PostgreSQL stopped mid-stream and restarted, the broker unreachable at start
and frozen mid-run. Consumers wait and retry, nothing is lost or applied twice, readiness is false
during the outage and true after."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from pathlib import Path

import asyncpg
import pytest

from terrain import db
from terrain.contracts import CommentMessage
from terrain.devstack import EmbeddedPostgres, TansuBroker, free_port
from terrain.kafka import Decoded, Rejection, ensure_topics
from terrain.runtime import ServiceRuntime
from terrain.settings import TerrainSettings
from terrain.topics import COMMENTS, all_topic_names
from tests.faults.test_poison import good
from tests.kafka_helpers import produce

pytestmark = pytest.mark.integration

FAST = {
    "health_probe_interval_s": 0.5,
    "retry_base_delay_s": 0.1,
    "retry_max_delay_s": 1.0,
    "kafka_session_timeout_ms": 6000,
    "kafka_heartbeat_interval_ms": 500,
    "batch_timeout_ms": 50,
    "batch_max_records": 100,
    "outbox_relay_interval_s": 0.5,
    "api_token": "t",
}


def store_effects(rt: ServiceRuntime):
    """A consumer as the services write them: claim the ids and store the effects in one transaction."""

    async def process(batch: list[Decoded[CommentMessage]]) -> list[Rejection]:
        async with rt.pool.acquire() as conn, conn.transaction():
            fresh = await db.claim_new(conn, "outage-test", [d.message.message_id for d in batch])
            await conn.executemany(
                "INSERT INTO outage_effects (message_id) VALUES ($1)",
                [(d.message.message_id,) for d in batch if d.message.message_id in fresh],
            )
        return []

    return process


async def _until(predicate, timeout_s: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if await predicate():
            return time.monotonic() - t0
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


async def run_database_outage(tmp_path: Path, kafka_bootstrap: str, unique: str, outage_s: float, n: int) -> dict:
    pg = EmbeddedPostgres(tmp_path / "pg").start()
    url = pg.url
    conn = await asyncpg.connect(url)
    await conn.execute("CREATE TABLE outage_effects (message_id text NOT NULL)")  # no key: a double shows
    await conn.close()
    overrides = {name: f"{name}.o{unique}" for name in all_topic_names()}
    settings = TerrainSettings(kafka_bootstrap_servers=kafka_bootstrap, database_url=url,
                               kafka_group_prefix=f"outage-{unique}", **FAST)
    rt = ServiceRuntime("outagetest", settings, topic_overrides=overrides)
    rt.consumer(COMMENTS, store_effects(rt))
    topic = overrides[COMMENTS.name]
    figures: dict[str, float] = {"outage_s": outage_s}
    await rt.start()
    try:
        async def feed() -> None:
            for start in range(0, n, n // 20):
                await produce(kafka_bootstrap, topic, [(f"c{i % 7}", good(i)) for i in range(start, start + n // 20)])
                await asyncio.sleep(0.2)

        feeding = asyncio.create_task(feed())
        await asyncio.sleep(1.0)  # mid-stream
        pg.stop()
        down_at = time.monotonic()
        figures["not_ready_after_s"] = await _until(lambda: _not_ready(rt), 10, "readiness to turn false")
        await asyncio.sleep(max(0.0, outage_s - (time.monotonic() - down_at)))
        assert not rt.health.ready(), "ready while the database is down"
        pg = EmbeddedPostgres(tmp_path / "pg", port=pg.port).start()
        figures["ready_again_after_s"] = await _until(lambda: _ready(rt), 60, "readiness after the outage")
        await feeding

        async def all_stored() -> bool:
            c = await asyncpg.connect(url)
            try:
                return int(await c.fetchval("SELECT count(DISTINCT message_id) FROM outage_effects")) >= n
            finally:
                await c.close()

        figures["caught_up_after_s"] = await _until(all_stored, 90, "every message stored")
        await asyncio.sleep(1.0)
        c = await asyncpg.connect(url)
        rows = await c.fetchval("SELECT count(*) FROM outage_effects")
        distinct = await c.fetchval("SELECT count(DISTINCT message_id) FROM outage_effects")
        await c.close()
        figures.update(rows=rows, distinct=distinct)
    finally:
        await rt.stop()
        pg.stop()
        shutil.rmtree(tmp_path / "pg", ignore_errors=True)  # about 50 MB that pytest would keep for three runs
    return figures


async def _ready(rt: ServiceRuntime) -> bool:
    return rt.health.ready()


async def _not_ready(rt: ServiceRuntime) -> bool:
    return not rt.health.ready()


async def test_database_stopped_mid_stream_then_restarted_loses_nothing(tmp_path, kafka_bootstrap, unique):
    n = 2000
    figures = await run_database_outage(tmp_path, kafka_bootstrap, unique, outage_s=6.0, n=n)
    print(f"database outage figures: {figures}")
    assert figures["rows"] == n and figures["distinct"] == n  # nothing lost, nothing applied twice


@pytest.mark.soak
async def test_database_stopped_30s_mid_stream_then_restarted_loses_nothing(tmp_path, kafka_bootstrap, unique):
    n = 20_000
    figures = await run_database_outage(tmp_path, kafka_bootstrap, unique, outage_s=30.0, n=n)
    print(f"database outage figures: {figures}")
    assert figures["rows"] == n and figures["distinct"] == n


async def test_broker_unreachable_at_start_and_frozen_mid_run(tmp_path, schema_url, unique):
    port = free_port()
    overrides = {name: f"{name}.b{unique}" for name in all_topic_names()}
    settings = TerrainSettings(kafka_bootstrap_servers=f"127.0.0.1:{port}", database_url=schema_url,
                               kafka_group_prefix=f"brk-{unique}", create_topics=False, **FAST)
    conn = await asyncpg.connect(schema_url)
    await conn.execute("CREATE TABLE outage_effects (message_id text NOT NULL)")
    await conn.close()
    rt = ServiceRuntime("brokertest", settings, topic_overrides=overrides)
    rt.consumer(COMMENTS, store_effects(rt))
    starting = asyncio.create_task(rt.start())
    await asyncio.sleep(3.0)  # nothing listens on the port yet
    assert not starting.done() and not rt.health.ready()
    broker = TansuBroker(port=port).start()
    try:
        await ensure_topics(broker.bootstrap_servers, overrides.values(), partitions=2)
        await asyncio.wait_for(starting, 60)
        await _until(lambda: _ready(rt), 30, "ready once the broker is there")
        topic = overrides[COMMENTS.name]
        await produce(broker.bootstrap_servers, topic, [(f"c{i % 5}", good(i)) for i in range(300)])
        assert broker.proc is not None
        os.kill(broker.proc.pid, signal.SIGSTOP)  # unreachable: connections hang, nothing answers
        try:
            await _until(lambda: _not_ready(rt), 20, "readiness to turn false while the broker is frozen")
        finally:
            os.kill(broker.proc.pid, signal.SIGCONT)
        await _until(lambda: _ready(rt), 60, "ready again after the broker came back")
        await produce(broker.bootstrap_servers, topic, [(f"c{i % 5}", good(i)) for i in range(300, 600)])

        async def all_stored() -> bool:
            return int(await rt.pool.fetchval("SELECT count(DISTINCT message_id) FROM outage_effects")) >= 600

        await _until(all_stored, 60, "every message stored")
        rows = await rt.pool.fetchval("SELECT count(*) FROM outage_effects")
    finally:
        if not starting.done():
            starting.cancel()
        await rt.stop()
        broker.stop()
    assert rows == 600
