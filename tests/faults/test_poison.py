"""Poison on the real broker: each kind dead-lettered with its reason while the consumer goes on; a flood
of it trips the dead-letter bound, which stops the consumer loudly (not ready, a gauge, an error line)
and without spinning."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from terrain.contracts import CommentMessage, comment_id_for
from terrain.contracts.comments import Comment
from terrain.kafka import Decoded, Rejection
from terrain.runtime import ServiceRuntime
from terrain.settings import TerrainSettings
from terrain.topics import COMMENTS
from tests.kafka_helpers import consume, headers_of, produce

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def good(i: int) -> dict:
    comment = Comment(source="forum", external_id=str(i), community_id="c", thread_id="t", text="ok",
                      created_at=NOW, comment_id=comment_id_for("forum", str(i)))
    return CommentMessage(message_id=f"m-{i}", occurred_at=NOW, producer="test", comment=comment).model_dump(
        mode="json")


def with_version(i: int, version: object) -> dict:
    return {**good(i), "schema_version": version}


async def _wait(predicate, timeout_s: float) -> bool:
    for _ in range(int(timeout_s * 10)):
        if predicate():
            return True
        await asyncio.sleep(0.1)
    return bool(predicate())


async def test_each_kind_of_poison_is_dead_lettered_with_its_reason_and_the_rest_goes_on(
    settings_kwargs, topic_overrides, kafka_bootstrap
):
    rt = ServiceRuntime("poisontest", TerrainSettings(**settings_kwargs), use_database=False,
                        topic_overrides=topic_overrides)
    processed: list[str] = []

    async def process(batch: list[Decoded[CommentMessage]]) -> list[Rejection]:
        processed.extend(d.message.message_id for d in batch)
        return []

    rt.consumer(COMMENTS, process)
    await rt.start()
    huge = good(99)
    huge["comment"]["text"] = "x" * 900_000  # under the broker's 1 MB, far over the contract's limit
    poison = [
        ("c", b"\xff\xfe\x00 not utf-8 at all"),
        ("c", b'{"message_id": "half'),
        ("c", with_version(90, 0)),
        ("c", with_version(91, "v2")),
        ("c", json.dumps(huge).encode()),
    ]
    try:
        items: list[tuple[str, bytes | dict]] = []
        for i in range(40):  # poison scattered in a stream of good messages, well under the bound
            items.append(("c", good(i)))
            if i % 8 == 3:
                items.append(poison[i // 8])
        items.append(("c", with_version(100, 3)))  # a newer minor version: read, not refused
        await produce(kafka_bootstrap, topic_overrides[COMMENTS.name], items)
        dlq = await consume(kafka_bootstrap, topic_overrides[COMMENTS.dlq], expect=5, timeout_s=30, settle_s=1)
        assert await _wait(lambda: len(processed) >= 41, 20)
        assert rt.health.ready()
    finally:
        await rt.stop()
    assert sorted(processed) == sorted([f"m-{i}" for i in range(40)] + ["m-100"])
    reasons = [headers_of(r)["terrain-dlq-reason"] for r in sorted(dlq, key=lambda r: r.offset)]
    assert len(reasons) == 5
    assert reasons[0].startswith("undecodable message") or reasons[0].startswith("invalid message")
    assert reasons[1].startswith("invalid message")
    assert "schema_version" in reasons[2] and "schema_version" in reasons[3]
    assert "comment.text" in reasons[4] and "20000" in reasons[4]
    assert bytes(dlq[4].value) == json.dumps(huge).encode()  # the body travels whole, for people to look at
    for r in dlq:
        h = headers_of(r)
        assert h["terrain-dlq-origin-topic"] == topic_overrides[COMMENTS.name]
        assert {"terrain-dlq-origin-partition", "terrain-dlq-origin-offset", "terrain-dlq-failed-at"} <= set(h)


async def test_a_flood_of_poison_trips_the_bound_and_the_consumer_stops_loudly_without_spinning(
    settings_kwargs, topic_overrides, kafka_bootstrap, caplog
):
    settings = TerrainSettings(**{**settings_kwargs, "dlq_window": 50, "dlq_max_ratio": 0.5,
                                  "batch_max_records": 20, "health_probe_interval_s": 0.3})
    rt = ServiceRuntime("floodtest", settings, use_database=False, topic_overrides=topic_overrides)
    calls = {"batches": 0}
    processed: list[str] = []

    async def process(batch: list[Decoded[CommentMessage]]) -> list[Rejection]:
        calls["batches"] += 1
        processed.extend(d.message.message_id for d in batch)
        return []

    consumer = rt.consumer(COMMENTS, process)
    original = consumer.handle
    handled = {"n": 0}

    async def counting(records):  # every batch the consumer is handed, poison or not
        handled["n"] += 1
        await original(records)

    consumer.handle = counting  # type: ignore[method-assign]
    caplog.set_level(logging.ERROR, logger="terrain.kafka")
    await rt.start()
    gauge = {"service": "floodtest", "topic": COMMENTS.name}
    try:
        flood: list[tuple[str, bytes | dict]] = [("c", good(i)) for i in range(10)]
        flood += [("c", b"garbage %d" % i) for i in range(300)]
        flood += [("c", good(1000 + i)) for i in range(10)]
        await produce(kafka_bootstrap, topic_overrides[COMMENTS.name], flood)
        assert await _wait(lambda: consumer.tripped is not None, 120), "the bound never tripped"
        await asyncio.sleep(0.5)
        assert not rt.health.ready()
        report = rt.health.report()["checks"][f"consumer:{COMMENTS.name}"]
        assert not report["ok"] and "dead-letter bound" in report["detail"]
        assert REGISTRY.get_sample_value("terrain_consumer_dead_letter_bound_tripped", gauge) == 1
        assert any("dead-letter bound tripped" in r.getMessage() for r in caplog.records)
        seen = handled["n"]
        await asyncio.sleep(3)  # stopped means stopped: no batch handed over again and again
        assert handled["n"] - seen <= 1, f"{handled['n'] - seen} batches in 3 s after the bound tripped"
        assert not rt.health.ready()
    finally:
        await rt.stop()
    dlq = await consume(kafka_bootstrap, topic_overrides[COMMENTS.dlq], expect=300, timeout_s=3)
    assert len(dlq) < 300, "the bound should stop dead-lettering well before the whole flood"
    assert not any(m.startswith("m-10") and len(m) == 6 for m in processed), "it went on past the flood"
