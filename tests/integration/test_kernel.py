"""Kernel delivery guarantees against the real broker and PostgreSQL: retries, poison isolation, outbox, claims."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from terrain import db
from terrain.contracts import CommentMessage, comment_id_for
from terrain.contracts.comments import Comment
from terrain.kafka import Decoded, OutMessage, Rejection
from terrain.runtime import ServiceRuntime
from terrain.settings import TerrainSettings
from terrain.topics import COMMENTS, COMMENTS_SCORED
from tests.kafka_helpers import consume, headers_of, produce

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def message(i: int, text: str = "ok") -> dict:
    comment = Comment(source="forum", external_id=str(i), community_id="c", thread_id="t", text=text,
                      created_at=NOW, comment_id=comment_id_for("forum", str(i)))
    return CommentMessage(message_id=f"m-{i}", occurred_at=NOW, producer="test", comment=comment).model_dump(
        mode="json")


async def test_transient_failures_are_retried_and_poison_is_isolated(settings_kwargs, topic_overrides,
                                                                     kafka_bootstrap):
    settings = TerrainSettings(**settings_kwargs, retry_base_delay_s=0.05)
    rt = ServiceRuntime("kerneltest", settings, use_database=False, topic_overrides=topic_overrides)
    processed: list[str] = []
    failures = {"left": 2}

    async def process(batch: list[Decoded[CommentMessage]]) -> list[Rejection]:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise ConnectionError("database away")  # transient: retried with backoff, nothing lost
        for d in batch:
            if d.message.comment.text == "boom":
                raise ValueError("a bug this message triggers")  # permanent: only this one is dead-lettered
        processed.extend(d.message.message_id for d in batch)
        return []

    rt.consumer(COMMENTS, process)
    await rt.start()
    try:
        await produce(kafka_bootstrap, topic_overrides[COMMENTS.name],
                      [("c", message(i, "boom" if i == 3 else "ok")) for i in range(6)])
        dlq = await consume(kafka_bootstrap, topic_overrides[COMMENTS.dlq], expect=1, timeout_s=30)
        for _ in range(100):
            if len(processed) >= 5:
                break
            await asyncio.sleep(0.1)
    finally:
        await rt.stop()
    assert sorted(processed) == [f"m-{i}" for i in (0, 1, 2, 4, 5)]
    assert len(dlq) == 1
    assert "ValueError" in headers_of(dlq[0])["terrain-dlq-reason"]
    assert failures["left"] == 0


async def test_outbox_relay_sends_what_a_crash_left(settings_kwargs, topic_overrides, kafka_bootstrap):
    settings = TerrainSettings(**settings_kwargs)
    rt = ServiceRuntime("kerneltest", settings, topic_overrides=topic_overrides)
    await rt.start()
    try:
        topic = topic_overrides[COMMENTS_SCORED.name]
        msgs = [OutMessage(topic, "c", b'{"n": %d}' % i, {"h": "v"}) for i in range(3)]
        async with rt.pool.acquire() as conn, conn.transaction():
            await rt.outbox.enqueue(conn, msgs)
        # no flush: as if the process died right after commit; the relay must send them
        got = await consume(kafka_bootstrap, topic, expect=3, timeout_s=20)
        # the relay deletes the rows in the transaction that published them: wait for its commit
        for _ in range(50):
            left = await rt.pool.fetchval("SELECT count(*) FROM terrain_outbox WHERE service = 'kerneltest'")
            if left == 0:
                break
            await asyncio.sleep(0.1)
    finally:
        await rt.stop()
    assert sorted(r.value for r in got) == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    assert headers_of(got[0])["h"] == "v"
    assert left == 0


async def test_claims_make_redelivery_a_noop_and_roll_back_with_the_transaction(schema_url):
    pool = await db.create_pool(schema_url)
    try:
        await db.migrate(pool, "kernel", "terrain")
        async with pool.acquire() as conn:
            async with conn.transaction():
                assert await db.claim_new(conn, "svc", ["a", "b"]) == {"a", "b"}
            async with conn.transaction():
                assert await db.claim_new(conn, "svc", ["b", "c"]) == {"c"}  # b was processed already
            assert await db.claim_new(conn, "other", ["a"]) == {"a"}  # claims are per consumer
            with pytest.raises(RuntimeError):
                async with conn.transaction():
                    await db.claim_new(conn, "svc", ["d"])
                    raise RuntimeError("effects failed")
            async with conn.transaction():
                assert await db.claim_new(conn, "svc", ["d"]) == {"d"}  # the failed claim rolled back
    finally:
        await pool.close()


async def test_concurrent_migrations_apply_once(schema_url):
    pools = [await db.create_pool(schema_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(db.migrate(p, "kernel", "terrain") for p in pools))
        conn: asyncpg.Connection = await asyncpg.connect(schema_url)
        rows = await conn.fetch("SELECT version FROM terrain_schema_migrations WHERE component = 'kernel'")
        await conn.close()
    finally:
        for p in pools:
            await p.close()
    assert sorted(len(r) for r in results) == [0, 0, 1]
    assert [r["version"] for r in rows] == [1]
