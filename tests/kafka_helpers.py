"""Test helpers that talk to the real broker with plain aiokafka (independent of the code under test)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord


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
    """Read a topic from the start until `expect` records arrived (then `settle_s` more) or time runs out."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"test-reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest", enable_auto_commit=False,
        session_timeout_ms=6000, heartbeat_interval_ms=500,
    )
    await consumer.start()
    out: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout_s
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
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return out


def headers_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {k: v.decode() for k, v in (record.headers or ())}
