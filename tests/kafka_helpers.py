"""Test helpers that talk to the real broker with plain aiokafka (independent of the code under test)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition


async def produce(bootstrap: str, topic: str, items: list[tuple[str, bytes | dict[str, Any]]]) -> None:
    """Send (key, value) pairs; dict values are JSON-encoded."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, value in items:
            raw = json.dumps(value).encode() if isinstance(value, dict) else value
            await producer.send_and_wait(topic, raw, key=key.encode())
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, *, expect: int, timeout_s: float = 20.0,
                  settle_s: float = 0.0) -> list[ConsumerRecord[bytes, bytes]]:
    """Read a topic from the start until `expect` records arrived (then `settle_s` more) or time runs out.

    Partitions are assigned directly (no consumer group), so reading costs no group join.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    out: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout_s
        partitions: set[int] | None = None
        while partitions is None and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic)
                if partitions is None:
                    await asyncio.sleep(0.2)
        if not partitions:
            return out
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend(records)
            if len(out) >= expect:
                if settle_until is None:
                    settle_until = time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
    finally:
        await consumer.stop()
    out.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
    return out


def headers_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {k: v.decode() for k, v in (record.headers or ())}
