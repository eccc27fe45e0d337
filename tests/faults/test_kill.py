"""kill -9 on every service mid-stream, on the whole pipeline as `terrain up` runs it (four processes, the
real broker and PostgreSQL): every comment's effects land exactly once, no incident is lost or doubled,
no row is written twice. The run is compared with the same comments through a pipeline nobody killed.

The short variant (10k comments, one kill per service) runs by default; the long one (100k comments,
repeated kills) is marked `soak`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from terrain.devstack import free_port
from terrain.stack import SERVICES, Stack
from terrain.topics import COMMENTS_INBOUND
from tests.conftest import run_seed

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

TEXTS = [
    "Service déplorable, 45 minutes d'attente et un plat froid, je suis furieux.",
    "Super soirée hier, merci à toute l'équipe !",
    "À quelle heure ouvre la boutique samedi ?",
    "Terrible customer service, rude staff, never again.",
    "Love the new menu, great job!",
    "Honteux, une arnaque, personne ne répond au téléphone.",
    "Bof, c'était correct sans plus.",
]


def comments(n: int, run: str, base: datetime) -> list[dict[str, Any]]:
    """Deterministic comments over two hours from `base`: 40 communities, 400 threads, a third negative."""
    out = []
    for i in range(n):
        community = f"community-{i % 40}"
        out.append({
            "message_id": f"{run}-{i}", "occurred_at": base.isoformat(), "producer": "fault-test",
            "source": "forum", "external_id": f"{run}-{i}", "community_id": community,
            "thread_id": f"thread-{i % 400}", "author_id": f"author-{i % 997}",
            "text": f"{TEXTS[i % len(TEXTS)]} #{i}",
            "created_at": (base + timedelta(seconds=i * 7200 // max(n, 1))).isoformat(),
        })
    return out


async def feed(bootstrap: str, items: list[dict[str, Any]], over_s: float) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        chunk = max(1, len(items) // 50)
        for start in range(0, len(items), chunk):
            futures = [
                await producer.send(COMMENTS_INBOUND.name, json.dumps(c).encode(), key=c["community_id"].encode())
                for c in items[start:start + chunk]
            ]
            await asyncio.gather(*futures)
            await asyncio.sleep(over_s / 50)
    finally:
        await producer.stop()


async def counts(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        out = {}
        for table in ("ingest_comments", "escalation_comments", "events_comment_facts", "terrain_outbox"):
            out[table] = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
        return out
    finally:
        await conn.close()


async def fingerprint(url: str) -> dict[str, Any]:
    """What the run left, in a form two runs of the same comments can be compared by."""
    conn = await asyncpg.connect(url)
    try:
        incidents = {
            r["id"]: (r["community_id"], r["thread_id"], r["comment_count"], r["negative_count"])
            for r in await conn.fetch("SELECT * FROM escalation_incidents")
        }
        attached = Counter(
            r["incident_id"] for r in await conn.fetch("SELECT incident_id FROM escalation_incident_comments")
        )
        events = Counter(
            (r["incident_id"], r["event"])
            for r in await conn.fetch("SELECT incident_id, event FROM escalation_incident_events")
        )
        buckets = {
            (r["community_id"], r["bucket_s"], r["bucket_start"]): (r["comments"], r["negatives"])
            for r in await conn.fetch("SELECT * FROM escalation_buckets")
        }
        engagement = {
            (r["community_id"], r["day"]): (r["comments"], r["positive"], r["negative"], r["unique_authors"])
            for r in await conn.fetch("SELECT * FROM events_engagement_daily")
        }
        return {"incidents": incidents, "attached": attached, "incident_events": events, "buckets": buckets,
                "engagement": engagement, "counts": await counts(url)}
    finally:
        await conn.close()


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRAIN_")}
    env.update({f"TERRAIN_{s.name.upper()}_PORT": str(free_port()) for s in SERVICES})
    env.update({"TERRAIN_TANSU_PORT": "0", "TERRAIN_HOME": str(home), "TERRAIN_API_TOKEN": "fault-token",
                "TERRAIN_LOG_FORMAT": "json", "TERRAIN_LOG_LEVEL": "INFO"})
    return env


def run_pipeline(
    home: Path, n: int, kills: int, seed: int, feed_s: float, timeout_s: float, base: datetime
) -> dict[str, Any]:
    """Feed `n` comments while killing each service `kills` times at random moments; wait for every effect."""
    rng = random.Random(seed)
    lines: list[str] = []
    # Each service's output goes to a file in its home: thousands of lines would drown the test's report.
    stack = Stack(home=home, env=_env(home), say=lines.append, log_dir=home / "logs")
    figures: dict[str, Any] = {"n": n, "kills": Counter(), "seed": seed}
    stack.start(ready_timeout_s=120)
    try:
        t0 = time.monotonic()
        # Kills land while comments flow and while the backlog drains: spread over twice the feeding time.
        schedule = sorted(
            (rng.uniform(0.5, feed_s * 2 + 2), svc.name) for svc in SERVICES for _ in range(kills)
        )
        loop = asyncio.new_event_loop()
        feeding = loop.create_task(feed(stack.bootstrap, comments(n, f"run{seed}", base), feed_s))
        deadline = t0 + timeout_s
        done_since: float | None = None
        last: dict[str, int] = {}
        while time.monotonic() < deadline:
            loop.run_until_complete(asyncio.sleep(0.25))
            now = time.monotonic() - t0
            while schedule and schedule[0][0] <= now:
                _, name = schedule.pop(0)
                proc = stack.procs[name]
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(10)
                    figures["kills"][name] += 1
                stack.restarts.pop(name, None)  # deliberate kills do not count toward the give-up limit
            stack.supervise_once()
            if not feeding.done() or schedule:
                continue
            last = loop.run_until_complete(counts(stack.database_url))
            complete = all(last[t] >= n for t in ("ingest_comments", "escalation_comments", "events_comment_facts"))
            if complete and last["terrain_outbox"] == 0:
                done_since = done_since or time.monotonic()
                if time.monotonic() - done_since > 3:  # a late duplicate, if any, has landed by now
                    break
            else:
                done_since = None
        else:
            raise AssertionError(f"not every effect landed within {timeout_s:.0f}s: {last}")
        loop.run_until_complete(feeding)
        figures["seconds"] = round(time.monotonic() - t0, 1)
        figures["fingerprint"] = loop.run_until_complete(fingerprint(stack.database_url))
        loop.close()
    finally:
        stack.stop()
    figures["restarts_said"] = [line for line in lines if "restarting" in line]
    return figures


def compare(clean: dict[str, Any], killed: dict[str, Any]) -> list[str]:
    problems = []
    for key in ("incidents", "attached", "incident_events", "buckets", "engagement"):
        a, b = clean["fingerprint"][key], killed["fingerprint"][key]
        if a != b:
            only_a = {k: a[k] for k in list(set(a) - set(b))[:3]}
            only_b = {k: b[k] for k in list(set(b) - set(a))[:3]}
            differ = [(k, a[k], b[k]) for k in set(a) & set(b) if a[k] != b[k]][:3]
            problems.append(f"{key}: clean-only {only_a}, killed-only {only_b}, different {differ}")
    return problems


def _check(n: int, kills: int, feed_s: float, timeout_s: float) -> None:
    seed = run_seed("TERRAIN_FAULT_SEED")
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)  # the same comments in both runs
    # Not pytest's tmp_path, which keeps the last runs: two PostgreSQL folders of about 50 MB each.
    tmp = Path(tempfile.mkdtemp(prefix="terrain-kill-"))
    try:
        clean = run_pipeline(tmp / "clean", n, 0, seed, feed_s, timeout_s, base)
        killed = run_pipeline(tmp / "killed", n, kills, seed, feed_s, timeout_s, base)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    got = killed["fingerprint"]["counts"]
    engaged = sum(c for c, *_ in killed["fingerprint"]["engagement"].values())
    summary = {
        "comments": n, "seed": seed, "kills": dict(killed["kills"]),
        "clean_s": clean["seconds"], "killed_s": killed["seconds"],
        "incidents": len(killed["fingerprint"]["incidents"]), "counts": got,
        "lost": n - min(got["ingest_comments"], got["escalation_comments"], got["events_comment_facts"]),
        "counted_twice": max(0, engaged - n),
        "differences_from_the_clean_run": len(compare(clean, killed)),
    }
    print(f"kill -9 figures: {summary}")
    assert sum(killed["kills"].values()) == kills * len(SERVICES), killed["kills"]
    for fp in (clean["fingerprint"], killed["fingerprint"]):
        assert fp["counts"]["ingest_comments"] == n
        assert fp["counts"]["escalation_comments"] == n
        assert fp["counts"]["events_comment_facts"] == n
        assert sum(c for c, *_ in fp["engagement"].values()) == n  # each comment counted once
    assert clean["fingerprint"]["incidents"], "the comments should open incidents"
    assert compare(clean, killed) == [], f"seed {seed}"


def test_kill_each_service_once_mid_stream_10k_comments():
    _check(n=int(os.environ.get("TERRAIN_FAULT_COMMENTS", "10000")), kills=1, feed_s=8.0, timeout_s=300)


@pytest.mark.soak
@pytest.mark.timeout(4 * 3600)
def test_kill_services_repeatedly_100k_comments():
    _check(n=100_000, kills=4, feed_s=60.0, timeout_s=1800)
