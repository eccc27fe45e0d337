"""A batch with a failing message: the others are stored and published exactly once, the failing one dead-lettered.

The batch path is one transaction per batch (claims, effects, outbox rows) and one publish per batch; when
a message makes the batch fail, the kernel retries the batch's messages one by one, so the whole batch's
rolled-back effects are stored again once, and a redelivery of everything stores nothing more.
"""

from __future__ import annotations

import asyncio
import json
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
CONSUMER = "isolation-test"


def message(i: int, text: str) -> dict:
    comment = Comment(source="forum", external_id=str(i), community_id=f"c{i % 3}", thread_id="t", text=text,
                      created_at=NOW, comment_id=comment_id_for("forum", str(i)))
    return CommentMessage(message_id=f"m-{i}", occurred_at=NOW, producer="test", comment=comment).model_dump(
        mode="json")


async def test_a_failing_message_leaves_the_rest_of_its_batch_stored_and_sent_once(
    settings_kwargs, topic_overrides, kafka_bootstrap, schema_url
):
    settings = TerrainSettings(**settings_kwargs, batch_max_records=1000, retry_attempts=1)
    rt = ServiceRuntime("isolationtest", settings, topic_overrides=topic_overrides)
    out_topic = topic_overrides[COMMENTS_SCORED.name]
    batches: list[int] = []

    async def process(batch: list[Decoded[CommentMessage]]) -> list[Rejection]:
        batches.append(len(batch))
        async with rt.pool.acquire() as conn, conn.transaction():
            fresh = await db.claim_new(conn, CONSUMER, [d.message.message_id for d in batch])
            todo = [d for d in batch if d.message.message_id in fresh]
            await conn.executemany("INSERT INTO effects (message_id) VALUES ($1)",
                                   [(d.message.message_id,) for d in todo])
            out = [OutMessage(out_topic, d.message.comment.community_id, json.dumps({"id": d.message.message_id})
                              .encode()) for d in todo]
            ids = await rt.outbox.enqueue(conn, out)
            if any(d.message.comment.text == "boom" for d in todo):
                raise ValueError("a bug this message triggers, after the batch's effects were written")
        await rt.outbox.flush(ids, out)
        return []

    conn = await asyncpg.connect(schema_url)
    await conn.execute("CREATE TABLE effects (message_id text NOT NULL)")  # no unique key: doubles would show
    await conn.close()
    await ensure_topics(kafka_bootstrap, topic_overrides.values(), partitions=2)
    items = [(f"c{i % 3}", message(i, "boom" if i == 7 else "fine")) for i in range(20)]
    # Produced before the consumer starts: the first batch holds all twenty, the failing one among them.
    await produce(kafka_bootstrap, topic_overrides[COMMENTS.name], items)
    rt.consumer(COMMENTS, process)
    await rt.start()
    try:
        dlq = await consume(kafka_bootstrap, topic_overrides[COMMENTS.dlq], expect=1, timeout_s=30)
        sent = await consume(kafka_bootstrap, out_topic, expect=19, timeout_s=30, settle_s=1.0)
        # The same messages again (a redelivery after a crash): nothing more is stored or sent.
        await produce(kafka_bootstrap, topic_overrides[COMMENTS.name], [items[i] for i in range(20) if i != 7])
        for _ in range(100):
            if sum(batches) >= 20 + 20 + 19:  # first batch, one by one, then the redelivered copies
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        sent_after = await consume(kafka_bootstrap, out_topic, expect=20, timeout_s=3)
    finally:
        await rt.stop()
    conn = await asyncpg.connect(schema_url)
    try:
        stored = [r["message_id"] for r in await conn.fetch("SELECT message_id FROM effects")]
        claimed = [r["message_id"] for r in await conn.fetch(
            "SELECT message_id FROM terrain_processed_messages WHERE consumer = $1", CONSUMER)]
        left = await conn.fetchval("SELECT count(*) FROM terrain_outbox")
    finally:
        await conn.close()
    good = sorted(f"m-{i}" for i in range(20) if i != 7)
    assert batches[0] == 20  # the failing message did come in a batch with the others
    assert sorted(stored) == good  # each once, though the first attempt wrote them all before it failed
    assert sorted(claimed) == good
    assert left == 0
    assert sorted(json.loads(r.value)["id"] for r in sent) == good
    assert len(sent_after) == 19
    assert len(dlq) == 1 and "ValueError" in headers_of(dlq[0])["terrain-dlq-reason"]
    assert headers_of(dlq[0])["terrain-dlq-origin-topic"] == topic_overrides[COMMENTS.name]
