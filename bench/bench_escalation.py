"""Escalation latency and throughput on the real broker and PostgreSQL (embedded, started here).

Publishes scored comments on terrain.comments.scored.v1 at a fixed offered rate (default 1,000/s for
10 s) across many communities and threads, with the escalation service running in its own process
(`python -m services.escalation`, as in production), and reads terrain.incidents.v1 as it goes.
Prints comments/s decided, incidents opened, and the p50/p95/p99
latency from publishing a thread's opening comment to its `opened` lifecycle message (and to the
cascade's `escalated` one). Usage:
    python bench/bench_escalation.py [--rate 1000] [--seconds 10] [--batch-timeout-ms 20] [--burst]

`--burst`: a brand's worst evening instead: every comment on one community's 20 threads, each labelled
negative but too unsure to count (confidence 0.36, below every rule of the respond policy), so no incident
opens and no cascade can start: what it measures is the cost of deciding a flood that must page nobody.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from terrain.contracts import Comment, ScoredCommentMessage, Sentiment, SentimentLabel, comment_id_for
from terrain.devstack import EmbeddedPostgres, TansuBroker, free_port, stop_process
from terrain.kafka import ensure_topics
from terrain.topics import COMMENTS_SCORED, INCIDENTS, all_topic_names


def burst_message(run: str, i: int, now: datetime) -> tuple[str, bytes, str, str, bool]:
    """Comment i of a flood: one community, 20 threads, every comment an unsure negative."""
    community, thread, ext = "brand", f"t{i % 20}", f"{run}-{i}"
    msg = ScoredCommentMessage(
        message_id=f"{run}-m{i}", occurred_at=now, producer="bench",
        comment=Comment(source="facebook", external_id=ext, community_id=community, thread_id=thread, text="…",
                        created_at=now, comment_id=comment_id_for("facebook", ext), lang="fr",
                        author_id=f"a{i % 3000}"),
        sentiment=Sentiment(label=SentimentLabel.negative, score=-0.15, confidence=0.36, lang="fr",
                            model_version="bench"),
        scored_at=now,
    )
    return community, msg.model_dump_json().encode(), msg.comment.comment_id, f"{community}/{thread}", False


def message(run: str, i: int, now: datetime) -> tuple[str, bytes, str, str, bool]:
    """Comment i: 200 communities of 10 threads; in every fifth thread the first three comments are negative
    (a cascade), later comments are positive but for one in seven (lone complaints)."""
    community = f"c{i % 200}"
    thread = f"t{(i // 200) % 10}"
    position = i // 2000
    negative = (position < 3 and (i // 200) % 5 == 0) or (position >= 3 and i % 7 == 0)
    ext = f"{run}-{i}"
    label = SentimentLabel.negative if negative else SentimentLabel.positive
    msg = ScoredCommentMessage(
        message_id=f"{run}-m{i}", occurred_at=now, producer="bench",
        comment=Comment(source="facebook", external_id=ext, community_id=community, thread_id=thread, text="…",
                        created_at=now, comment_id=comment_id_for("facebook", ext), lang="fr"),
        sentiment=Sentiment(label=label, score=-0.8 if negative else 0.7, confidence=0.9, lang="fr",
                            model_version="bench"),
        scored_at=now,
    )
    return community, msg.model_dump_json().encode(), msg.comment.comment_id, f"{community}/{thread}", negative


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run(rate: int, seconds: float, batch_timeout_ms: int, burst: bool = False) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="terrain-bench-esc-"))
    broker = TansuBroker().start()
    pg = EmbeddedPostgres(tmp / "pg").start()
    service: subprocess.Popen[bytes] | None = None
    try:
        await ensure_topics(broker.bootstrap_servers, all_topic_names(), partitions=4)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TERRAIN_")}
        env.update({
            "TERRAIN_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers, "TERRAIN_DATABASE_URL": pg.url,
            "TERRAIN_ESCALATION_PORT": str(port), "TERRAIN_BATCH_TIMEOUT_MS": str(batch_timeout_ms),
            "TERRAIN_KAFKA_SESSION_TIMEOUT_MS": "6000", "TERRAIN_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
            "TERRAIN_LOG_LEVEL": "WARNING", "TERRAIN_KAFKA_FETCH_MAX_WAIT_MS": os.environ.get("FETCH_WAIT", "50"),
        })
        service = subprocess.Popen(  # noqa: ASYNC220 - once, before the measurement
            [sys.executable, "-m", "services.escalation"], env=env,
            stdout=subprocess.DEVNULL, stderr=(tmp / "service.log").open("wb"),
        )
        async with httpx.AsyncClient() as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or service.poll() is not None:
                    raise SystemExit("escalation did not become ready: " + (tmp / "service.log").read_text()[-2000:])
                await asyncio.sleep(0.2)
        sent_at: dict[str, float] = {}
        opened: dict[str, float] = {}
        escalated: dict[str, float] = {}
        negatives: dict[str, int] = {}
        third_negative_at: dict[str, float] = {}
        consumer = AIOKafkaConsumer(INCIDENTS.name, bootstrap_servers=broker.bootstrap_servers,
                                    auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=20)
        total = int(rate * seconds)
        await consumer.start()
        stop = asyncio.Event()

        async def read() -> None:
            while not stop.is_set():
                for records in (await consumer.getmany(timeout_ms=100)).values():
                    t = time.perf_counter()
                    for r in records:
                        m = json.loads(r.value)
                        inc = m["incident"]
                        first = inc["evidence"][0]["comment_id"] if inc["evidence"] else None
                        if m["event"] == "opened" and first:
                            opened.setdefault(first, t)
                        if m["event"] == "escalated":
                            escalated.setdefault(f"{inc['community_id']}/{inc['thread_id']}", t)

        reader = asyncio.create_task(read())
        await asyncio.sleep(3.0)  # the service's consumer joins its group
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=2)
        await producer.start()
        run_id = uuid.uuid4().hex[:6]
        now = datetime.now(UTC) - timedelta(minutes=1)
        started = time.perf_counter()
        per_tick = max(1, int(rate * 0.01))
        i = 0
        while i < total:
            delay = started + (i / rate) - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            futures = []
            for _ in range(min(per_tick, total - i)):
                key, value, cid, thread, negative = (burst_message if burst else message)(run_id, i, now)
                futures.append(await producer.send(COMMENTS_SCORED.name, value, key=key.encode()))
                sent_at[cid] = time.perf_counter()
                if negative:
                    negatives[thread] = negatives.get(thread, 0) + 1
                    if negatives[thread] == 3:
                        third_negative_at[thread] = sent_at[cid]
                i += 1
            await asyncio.gather(*futures)
        produced = time.perf_counter()
        await producer.stop()
        conn = await asyncpg.connect(pg.url)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                n = await conn.fetchval(
                    "SELECT count(*) FROM terrain_processed_messages WHERE consumer = 'escalation'")
                if n >= total:
                    break
                await asyncio.sleep(0.1)
            done = time.perf_counter()
            await asyncio.sleep(1.0)
            incidents = await conn.fetchval("SELECT count(*) FROM escalation_incidents")
        finally:
            await conn.close()
        stop.set()
        await reader
        await consumer.stop()
        rss = psutil.Process(service.pid).memory_info().rss / 2**20
        cpu = sum(psutil.Process(service.pid).cpu_times()[:2])
        open_lat = [(opened[c] - sent_at[c]) * 1000 for c in opened if c in sent_at]
        esc_lat = [(escalated[t] - third_negative_at[t]) * 1000 for t in escalated if t in third_negative_at]
        print(f"offered {rate}/s for {seconds:g} s: {total} scored comments{' (burst)' if burst else ''}; "
              f"batch timeout {batch_timeout_ms} ms")
        print(f"produced in {produced - started:.2f} s; all decided after {done - started:.2f} s "
              f"({total / (done - started):,.0f} comments/s end to end); escalation process: {cpu:.1f} CPU s, "
              f"{rss:.0f} MB resident")
        print(f"incidents opened: {incidents}; lifecycle 'opened' seen for {len(open_lat)}, 'escalated' for "
              f"{len(esc_lat)}")
        for name, lat in (("scored -> incident opened", open_lat), ("third negative -> escalated", esc_lat)):
            if lat:
                print(f"{name:28s} p50 {pct(lat, .5):7.1f} ms  p95 {pct(lat, .95):7.1f} ms  "
                      f"p99 {pct(lat, .99):7.1f} ms  max {max(lat):7.1f} ms  mean {statistics.mean(lat):.1f} ms")
    finally:
        if service is not None:
            stop_process(service)
        pg.stop()
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch-timeout-ms", type=int, default=20)
    ap.add_argument("--burst", action="store_true", help="a flood of unsure negatives on 20 threads (see above)")
    args = ap.parse_args()
    asyncio.run(run(args.rate, args.seconds, args.batch_timeout_ms, args.burst))


if __name__ == "__main__":
    main()
