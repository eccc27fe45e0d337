"""Engagement rollups and impact: how fast the events service folds scored comments into PostgreSQL.

Feeds N scored comments (30 communities, 60 days) through the engagement handler in batches, as the
consumer does (one transaction per batch: claim, per-comment upsert, daily rollup), then the same
comments again (a replay: all redelivered), then a re-score of all of them (new message ids, same
comment ids), and times one impact report. Uses TERRAIN_DATABASE_URL in a throwaway schema, else an
embedded PostgreSQL in a temporary folder. Usage:
    python bench/bench_events_engagement.py [N] [BATCH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from services.events import impact, repository
from services.events.handlers import EventLog
from terrain import db
from terrain.contracts import ScoredCommentMessage
from terrain.contracts.events import EventStatus
from terrain.kafka import Decoded, Record

START = datetime(2026, 9, 1, tzinfo=UTC)
NOW = START + timedelta(days=70)


def comments(n: int, version: str) -> list[ScoredCommentMessage]:
    rng = random.Random(1)
    out = []
    for i in range(n):
        at = START + timedelta(minutes=rng.randint(0, 60 * 24 * 60 - 1))
        score = rng.uniform(-1, 1)
        out.append(ScoredCommentMessage.model_validate({
            "message_id": f"m-{i}-{version}", "occurred_at": at, "producer": "bench",
            "comment": {"comment_id": f"c-{i}", "source": "forum", "external_id": str(i),
                        "community_id": f"community-{i % 30}", "thread_id": "t", "author_id": f"a{rng.randint(0, 500)}",
                        "text": "…", "created_at": at, "parent_id": "p" if i % 4 == 0 else None},
            "sentiment": {"label": "positive" if score > 0.05 else "negative" if score < -0.05 else "neutral",
                          "score": score, "confidence": 0.9, "lang": "fr", "model_version": version},
            "scored_at": at + timedelta(seconds=1 if version == "v1" else 3600),
        }))
    return out


class _Runtime:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool


async def feed(log: EventLog, messages: list[ScoredCommentMessage], batch: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(messages), batch):
        items = [Decoded(Record("bench", 0, j, None, b""), m) for j, m in enumerate(messages[i : i + batch])]
        await log.on_scored(items)
    return time.perf_counter() - started


async def run(url: str, n: int, batch: int) -> None:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(url)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in url else "?"
    pool = await db.create_pool(f"{url}{sep}search_path={schema}", max_size=2)
    try:
        await db.migrate(pool, "kernel", "terrain")
        await db.migrate(pool, "events", "services.events")
        log = EventLog(_Runtime(pool), lambda: NOW)  # type: ignore[arg-type]
        first = comments(n, "v1")
        t_first = await feed(log, first, batch)
        t_replay = await feed(log, first, batch)
        t_rescore = await feed(log, comments(n, "v2"), batch)
        days = await repository.daily_between(pool, START.date(), NOW.date())
        event = impact.EventSpan("e", "community-0", "apero", EventStatus.done, START + timedelta(days=30, hours=18))
        impact.assess(event, [], days, NOW)  # the first call also imports statsmodels
        started = time.perf_counter()
        report = impact.assess(event, [], days, NOW)
        t_impact = time.perf_counter() - started
        total = await pool.fetchval("SELECT sum(comments) FROM events_engagement_daily")
    finally:
        await pool.close()
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()
    print(f"{n} comments, batches of {batch}, {len(days)} community-days")
    print(f"first pass:   {n / t_first:8.0f} comments/s")
    print(f"replay:       {n / t_replay:8.0f} comments/s (all redelivered, nothing counted)")
    print(f"re-score:     {n / t_rescore:8.0f} comments/s (every comment replaced, none added)")
    print(f"rollup total: {total} comments (expected {n})")
    print(f"impact report: {t_impact * 1000:.0f} ms (statsmodels loaded), {len(report.comparison)} comparison"
          " communities")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", nargs="?", type=int, default=20_000, help="rows (default: 20,000)")
    parser.add_argument("batch", nargs="?", type=int, default=500, help="rows per batch (default: 500)")
    args = parser.parse_args()
    n, batch = args.n, args.batch
    url = os.environ.get("TERRAIN_DATABASE_URL")
    if url:
        asyncio.run(run(url, n, batch))
        return
    from terrain.devstack import EmbeddedPostgres

    pg: Any = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="terrain-bench-pg-")) / "data").start()
    try:
        asyncio.run(run(pg.url, n, batch))
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
