"""End-to-end throughput: start the stack as `terrain up` does, post N comments, time ingest and scoring.

Prints: stack start-up time, HTTP ingest rate (comments/s accepted), and pipeline rate (comments/s from
first post to the last scored message seen on terrain.comments.scored.v1). Usage:
    python bench/bench_pipeline.py [N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer

from terrain.devstack import free_port
from terrain.stack import SERVICES, Stack
from terrain.topics import COMMENTS_SCORED

TEXTS = [
    "Service déplorable, 45 minutes d'attente et un plat froid.",
    "Super soirée hier, merci à toute l'équipe !",
    "À quelle heure ouvre la boutique samedi ?",
    "Terrible customer service, never again.",
    "Love the new menu, great job!",
]


async def count_scored(bootstrap: str, run: str, expect: int, timeout_s: float) -> float:
    consumer = AIOKafkaConsumer(COMMENTS_SCORED.name, bootstrap_servers=bootstrap,
                                group_id=f"bench-{uuid.uuid4().hex[:6]}", auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    seen = 0
    last = time.perf_counter()
    try:
        deadline = time.monotonic() + timeout_s
        while seen < expect and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200, max_records=5000)).values():
                for r in records:
                    if json.loads(r.value)["comment"]["external_id"].startswith(run):
                        seen += 1
                        last = time.perf_counter()
    finally:
        await consumer.stop()
    if seen < expect:
        raise SystemExit(f"only {seen}/{expect} scored within {timeout_s}s")
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", nargs="?", type=int, default=5000, help="comments (default: 5,000)")
    n = parser.parse_args().n
    env = {f"TERRAIN_{s.name.upper()}_PORT": str(free_port()) for s in SERVICES}
    env.update({"TERRAIN_TANSU_PORT": "0", "PATH": "/usr/bin:/bin"})
    import os

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TERRAIN_")}, **env}
    stack = Stack(home=Path(tempfile.mkdtemp(prefix="terrain-bench-")), env=env, say=lambda _: None)
    t0 = time.perf_counter()
    stack.start()
    print(f"stack start-up: {time.perf_counter() - t0:.1f} s (broker, database, topics, 4 services ready)")
    try:
        run = uuid.uuid4().hex[:6]
        now = datetime.now(UTC).isoformat()
        comments = [
            {"source": "bench", "external_id": f"{run}-{i}", "community_id": f"community-{i % 20}",
             "thread_id": f"thread-{i % 200}", "text": TEXTS[i % len(TEXTS)] + f" #{i}", "created_at": now}
            for i in range(n)
        ]
        url = stack.urls()["ingest"] + "/v1/comments"
        headers = {"Authorization": f"Bearer {stack.token}"}
        loop = asyncio.new_event_loop()
        waiter = loop.create_task(count_scored(stack.bootstrap, run, n, timeout_s=300))
        start = time.perf_counter()

        async def post_all() -> None:
            async with httpx.AsyncClient(timeout=60, headers=headers) as client:
                for i in range(0, n, 500):
                    r = await client.post(url, json=comments[i:i + 500])
                    r.raise_for_status()

        loop.run_until_complete(post_all())
        posted = time.perf_counter()
        last_scored = loop.run_until_complete(waiter)
        print(f"ingest over HTTP (batches of 500): {n / (posted - start):,.0f} comments/s")
        print(f"pipeline, first post to last scored: {n / (last_scored - start):,.0f} comments/s ({n} comments)")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
