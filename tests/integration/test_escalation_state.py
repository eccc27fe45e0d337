"""Detection state in PostgreSQL: pruned after the retention window in bounded batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.escalation import repository
from terrain.db import create_pool, migrate

pytestmark = pytest.mark.integration


async def test_prune_deletes_only_old_state_in_bounded_batches(schema_url: str) -> None:
    pool = await create_pool(schema_url)
    try:
        await migrate(pool, "kernel", "terrain")
        await migrate(pool, "escalation", "services.escalation")
        now = datetime(2026, 11, 26, tzinfo=UTC)
        times = [now - timedelta(days=d) for d in (40, 35, 31, 29, 1)]
        await pool.executemany(
            """INSERT INTO escalation_comments (community_id, comment_id, thread_id, created_at, sure_negative, score)
               VALUES ('c', $1, 't', $2, true, -0.5)""",
            [(f"id{i}", t) for i, t in enumerate(times)],
        )
        await pool.executemany(
            """INSERT INTO escalation_buckets (community_id, bucket_s, bucket_start, comments, negatives)
               VALUES ('c', 900, $1, 1, 1)""",
            [(t,) for t in times],
        )
        before = now - timedelta(days=30)
        first = await repository.prune(pool, before, limit=2)
        second = await repository.prune(pool, before, limit=2)
        third = await repository.prune(pool, before, limit=2)
        left = await pool.fetchval("SELECT count(*) FROM escalation_comments")
        left_buckets = await pool.fetchval("SELECT count(*) FROM escalation_buckets")
    finally:
        await pool.close()
    assert (first, second, third) == (4, 2, 0)  # at most 2 rows per table per call
    assert (left, left_buckets) == (2, 2)
