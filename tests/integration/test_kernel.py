"""Kernel delivery guarantees against the real broker and PostgreSQL: retries, poison isolation, outbox, claims."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from terrain import db
from terrain.contracts import CommentMessage, comment_id_for
from terrain.contracts.comments import Comment
from terrain.kafka import Decoded, OutMessage, Rejection, ensure_topics
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


async def test_outbox_flush_sends_older_leftovers_first_then_its_own(settings_kwargs, topic_overrides, kafka_bootstrap):
    # A relay that only takes rows older than a minute: the flush alone must find the leftover.
    settings = TerrainSettings(**{**settings_kwargs, "outbox_relay_min_age_s": 60.0})
    rt = ServiceRuntime("kerneltest", settings, topic_overrides=topic_overrides)
    await rt.start()
    try:
        topic = topic_overrides[COMMENTS_SCORED.name]
        left = OutMessage(topic, "k", b'{"n": 0}')
        mine = [OutMessage(topic, "k", b'{"n": 1}'), OutMessage(topic, "k", b'{"n": 2}')]
        async with rt.pool.acquire() as conn, conn.transaction():
            await rt.outbox.enqueue(conn, [left])  # committed, never sent: a failed send, a crashed replica
        async with rt.pool.acquire() as conn, conn.transaction():
            ids = await rt.outbox.enqueue(conn, mine)
        await rt.outbox.flush(ids, mine)
        got = await consume(kafka_bootstrap, topic, expect=3, timeout_s=20, settle_s=1.0)
        depth = await rt.outbox.depth()
    finally:
        await rt.stop()
    assert [r.value for r in sorted(got, key=lambda r: r.offset)] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    assert depth == 0


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
    kernel_migrations = len(db.migration_files("terrain"))
    assert sorted(len(r) for r in results) == [0, 0, kernel_migrations]
    assert sorted(r["version"] for r in rows) == list(range(1, kernel_migrations + 1))


# --- the delivery-path defects of the fault review ----------------------------------------------------


def _acks_of(rt: ServiceRuntime) -> object:
    real = rt.broker.config.producer._producer  # FastStream's holder of the aiokafka producer
    return real.producer._sender._acks


async def test_producers_wait_for_every_in_sync_replica(settings_kwargs, topic_overrides, kafka_bootstrap):
    rt = ServiceRuntime("kerneltest", TerrainSettings(**settings_kwargs), use_database=False,
                        topic_overrides=topic_overrides)
    await rt.start()
    try:
        assert _acks_of(rt) == -1  # aiokafka's spelling of acks=all
        topic = topic_overrides[COMMENTS_SCORED.name]
        await rt.publisher.publish([OutMessage(topic, "c", b'{"n": 1}')])  # and Tansu accepts it
        assert len(await consume(kafka_bootstrap, topic, expect=1, timeout_s=10)) == 1
    finally:
        await rt.stop()


async def test_a_start_up_failure_closes_the_database_pool(settings_kwargs, topic_overrides):
    rt = ServiceRuntime("kerneltest", TerrainSettings(**settings_kwargs), topic_overrides=topic_overrides)

    async def fail() -> None:
        raise RuntimeError("a start hook failed")

    rt.on_started.append(fail)
    with pytest.raises(RuntimeError, match="start hook"):
        await rt.start()
    assert rt._pool is None  # closed, not leaked
    with pytest.raises(RuntimeError, match="not started"):
        _ = rt.pool


async def test_outbox_flush_and_relay_never_send_twice_and_keep_each_key_in_order(
    settings_kwargs, topic_overrides, kafka_bootstrap
):
    # The relay sends anything committed (age 0), so it races every flush: the rows must still go out once.
    settings = TerrainSettings(**{**settings_kwargs, "outbox_relay_min_age_s": 0.0, "outbox_relay_interval_s": 0.01})
    rt = ServiceRuntime("kerneltest", settings, topic_overrides=topic_overrides)
    await rt.start()
    topic = topic_overrides[COMMENTS_SCORED.name]
    keys = ["a", "b", "c"]
    try:
        async def writer(key: str) -> None:
            for n in range(40):
                msg = OutMessage(topic, key, b'{"k": "%s", "n": %d}' % (key.encode(), n))
                async with rt.pool.acquire() as conn, conn.transaction():
                    ids = await rt.outbox.enqueue(conn, [msg])
                await rt.outbox.flush(ids, [msg])

        await asyncio.gather(*(writer(k) for k in keys), *(rt.outbox.relay_once(0.0) for _ in range(20)))
        got = await consume(kafka_bootstrap, topic, expect=120, timeout_s=30, settle_s=2.0)
        depth = await rt.outbox.depth()
    finally:
        await rt.stop()
    import json

    bodies = [json.loads(r.value) for r in got]
    assert len(bodies) == 120, f"{len(bodies)} sent for 120 rows"
    for key in keys:
        sequence = [b["n"] for b in bodies if b["k"] == key]
        sent_order = [json.loads(r.value)["n"] for r in sorted(got, key=lambda r: r.offset) if r.key == key.encode()]
        assert sorted(sequence) == list(range(40))
        assert sent_order == list(range(40)), f"key {key} out of order"
    assert depth == 0
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("terrain_outbox_depth", {"service": "kerneltest"}) == 0


async def test_processed_records_are_pruned_after_the_window_in_bounded_batches(schema_url):
    from prometheus_client import REGISTRY

    pool = await db.create_pool(schema_url)
    try:
        await db.migrate(pool, "kernel", "terrain")
        await pool.execute(
            """INSERT INTO terrain_processed_messages (consumer, message_id, processed_at)
               SELECT 'svc', 'old-' || i, now() - interval '8 days' FROM generate_series(1, 25) i"""
        )
        async with pool.acquire() as conn, conn.transaction():
            await db.claim_new(conn, "svc", ["fresh-1", "fresh-2"])
        before = REGISTRY.get_sample_value("terrain_processed_messages_pruned_total", {"service": "prunetest"}) or 0
        assert await db.prune_processed(pool, "prunetest", retention_s=7 * 86400, batch=10) == 25
        left = sorted(r["message_id"] for r in await pool.fetch("SELECT message_id FROM terrain_processed_messages"))
        after = REGISTRY.get_sample_value("terrain_processed_messages_pruned_total", {"service": "prunetest"})
    finally:
        await pool.close()
    assert left == ["fresh-1", "fresh-2"]
    assert after - before == 25


async def test_a_failed_batch_spanning_partitions_is_read_again_whole(
    settings_kwargs, topic_overrides, kafka_bootstrap
):
    # One batch holds records of four partitions; its first attempt fails for good (no retries left), so the
    # batch must be read again from each partition's first record: nothing skipped, nothing committed early.
    settings = TerrainSettings(**{**settings_kwargs, "retry_attempts": 1, "batch_max_records": 1000,
                                  "batch_timeout_ms": 500, "topic_partitions": 4})
    rt = ServiceRuntime("kerneltest", settings, use_database=False, topic_overrides=topic_overrides)
    seen: list[str] = []
    batches: list[set[int]] = []
    failed = {"done": False}

    async def process(batch: list[Decoded[CommentMessage]]) -> list[Rejection]:
        partitions = {d.record.partition for d in batch}
        if not failed["done"] and len(partitions) > 1:
            failed["done"] = True
            batches.append(partitions)
            raise ConnectionError("database away")  # transient, retries exhausted: the batch is rewound
        seen.extend(d.message.message_id for d in batch)
        return []

    topic = topic_overrides[COMMENTS.name]
    await ensure_topics(kafka_bootstrap, [topic], partitions=4)
    await produce(kafka_bootstrap, topic, [(f"community-{i % 8}", message(i)) for i in range(200)])
    rt.consumer(COMMENTS, process)
    await rt.start()
    try:
        for _ in range(200):
            if len(set(seen)) >= 200:
                break
            await asyncio.sleep(0.1)
    finally:
        await rt.stop()
    assert failed["done"] and len(batches[0]) > 1, "the test needs a failed batch over several partitions"
    assert sorted(set(seen)) == sorted(f"m-{i}" for i in range(200)), f"{200 - len(set(seen))} skipped"


def test_a_test_run_leaves_no_postgresql_folder_behind(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRAIN_")}
    env["TMPDIR"] = str(tmp_path)
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/integration/test_kernel.py::test_claims_make_redelivery_a_noop_and_roll_back_with_the_transaction"],
        cwd=root, env=env, capture_output=True, text=True, timeout=360,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("terrain-test-pg-")] == []
