"""Killing the escalation service (SIGKILL) mid-stream and restarting it: no incident lost, none duplicated,
every page published under one escalation id, every comment attached once."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from terrain.contracts import EscalationMessage, SentimentLabel
from terrain.devstack import free_port, stop_process
from tests.integration.test_escalation import created, scored
from tests.kafka_helpers import consume, produce

pytestmark = pytest.mark.integration

THREADS = 120
COMMUNITIES = 6


def stream() -> tuple[list[tuple[str, dict[str, Any]]], set[tuple[str, str]], set[tuple[str, str]]]:
    """Comments for THREADS threads: every 3rd thread a cascade (3 negatives in a row), every 3rd+1 a lone
    complaint among positives, the rest positive only. Returns the messages, the threads that must open an
    incident and those that must page."""
    items: list[tuple[str, dict[str, Any]]] = []
    opened: set[tuple[str, str]] = set()
    paged: set[tuple[str, str]] = set()
    for t in range(THREADS):
        community = f"c{t % COMMUNITIES}"
        thread = f"post-{t}"
        kind = t % 3
        labels = {0: ["n", "n", "n", "p"], 1: ["p", "n", "p", "p"], 2: ["p", "p", "p", "p"]}[kind]
        for i, lab in enumerate(labels):
            label = SentimentLabel.negative if lab == "n" else SentimentLabel.positive
            items.append((community, scored(f"{thread}-{i}", label, thread=thread, community=community,
                                            at=created(20 - i))))
        if kind in (0, 1):
            opened.add((community, thread))
        if kind == 0:
            paged.add((community, thread))
    return items, opened, paged


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - closed by the process's end
    return subprocess.Popen([sys.executable, "-m", "tests.procs.serve_escalation"], env=env, stdout=out,
                            stderr=subprocess.STDOUT)


async def processed(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM terrain_processed_messages WHERE consumer = 'escalation'") or 0)
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


async def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(
    settings_kwargs, topic_overrides, kafka_bootstrap, tmp_path
):
    url = settings_kwargs["database_url"]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRAIN_")}
    env.update({
        "TERRAIN_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TERRAIN_DATABASE_URL": url,
        "TERRAIN_ESCALATION_PORT": str(port), "TERRAIN_KAFKA_GROUP_PREFIX": settings_kwargs["kafka_group_prefix"],
        "TERRAIN_KAFKA_SESSION_TIMEOUT_MS": "6000", "TERRAIN_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "TERRAIN_BATCH_MAX_RECORDS": "20", "TERRAIN_BATCH_TIMEOUT_MS": "20", "TERRAIN_OUTBOX_RELAY_MIN_AGE_S": "1",
        "TERRAIN_OUTBOX_RELAY_INTERVAL_S": "0.5", "TERRAIN_TEST_TOPIC_OVERRIDES": json.dumps(topic_overrides),
    })
    items, opened, paged = stream()
    await produce(kafka_bootstrap, topic_overrides["terrain.comments.scored.v1"], items)
    log = tmp_path / "escalation.log"
    proc = start(env, log)
    kills = 0
    try:
        deadline = time.monotonic() + 60
        while await processed(url) < len(items) // 3:
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            assert proc.poll() is None, log.read_text()[-2000:]
            await asyncio.sleep(0.05)
        proc.kill()  # SIGKILL: no shutdown, no commit of the batch in flight
        proc.wait(10)
        kills += 1
        done_before_restart = await processed(url)
        assert done_before_restart < len(items)
        proc = start(env, log)
        deadline = time.monotonic() + 90
        while await processed(url) < len(items):
            assert time.monotonic() < deadline, f"stuck at {await processed(url)}: " + log.read_text()[-2000:]
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # the relay's turn for anything left in the outbox
    finally:
        stop_process(proc)
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT community_id, thread_id, level, comment_count FROM escalation_incidents")
        attached = await conn.fetchval("SELECT count(*) FROM escalation_incident_comments")
        outbox_left = await conn.fetchval("SELECT count(*) FROM terrain_outbox")
    finally:
        await conn.close()
    assert kills == 1
    per_thread = Counter((r["community_id"], r["thread_id"]) for r in rows)
    assert set(per_thread) == opened and max(per_thread.values()) == 1  # none lost, none duplicated
    human = {(r["community_id"], r["thread_id"]) for r in rows if r["level"] in ("human", "field")}
    assert human == paged
    # Every comment of a thread with an incident is attached to it exactly once (the cascade's positive reply
    # and the lone complaint's positives are counted too).
    assert attached == 4 * len(opened) - sum(1 for t in range(THREADS) if t % 3 == 1)  # positives before it
    assert outbox_left == 0
    records = await consume(kafka_bootstrap, topic_overrides["terrain.escalations.v1"], expect=len(paged),
                            settle_s=2.0)
    pages = [EscalationMessage.model_validate_json(r.value) for r in records]
    by_id = Counter(p.escalation_id for p in pages)
    # A relayed duplicate carries the same id (consumers drop it); the distinct pages are exactly one per cascade.
    assert {(p.community_id, p.thread_id) for p in pages} == paged
    assert len(by_id) == len(paged)
