"""asyncpg queries on ingest's own table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from services.ingest.domain import Decision, Outcome, Seen
from terrain.contracts import CommentIn


async def lock_seen(conn: asyncpg.Connection, comment_ids: Sequence[str]) -> dict[str, Seen]:
    """What is known of these comments, row-locked until the transaction ends."""
    rows = await conn.fetch(
        """SELECT comment_id, content_hash, revision, removed FROM ingest_comments
           WHERE comment_id = ANY($1::text[]) ORDER BY comment_id FOR UPDATE""",
        list(comment_ids),
    )
    return {r["comment_id"]: Seen(r["content_hash"], r["revision"], r["removed"]) for r in rows}


async def insert_new(
    conn: asyncpg.Connection, items: Sequence[tuple[Decision, CommentIn]], now: datetime
) -> set[str]:
    """Insert first sightings; returns the ids actually inserted (a concurrent writer may have won)."""
    if not items:
        return set()
    rows = await conn.fetch(
        """INSERT INTO ingest_comments
               (comment_id, source, external_id, community_id, content_hash, revision, removed,
                first_seen_at, last_seen_at)
           SELECT u.*, $8::timestamptz, $8::timestamptz
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::bool[]) AS u
           ON CONFLICT (comment_id) DO NOTHING RETURNING comment_id""",
        [d.comment_id for d, _ in items],
        [c.source for _, c in items],
        [c.external_id for _, c in items],
        [c.community_id for _, c in items],
        [d.content_hash for d, _ in items],
        [d.revision for d, _ in items],
        [d.outcome is Outcome.removed for d, _ in items],
        now,
    )
    return {r["comment_id"] for r in rows}


async def update_changed(conn: asyncpg.Connection, decisions: Sequence[Decision], now: datetime) -> None:
    if not decisions:
        return
    await conn.execute(
        """UPDATE ingest_comments AS t
           SET content_hash = u.h, revision = u.r, removed = u.rm, last_seen_at = $5
           FROM unnest($1::text[], $2::text[], $3::int[], $4::bool[]) AS u(id, h, r, rm)
           WHERE t.comment_id = u.id""",
        [d.comment_id for d in decisions],
        [d.content_hash for d in decisions],
        [d.revision for d in decisions],
        [d.outcome is Outcome.removed for d in decisions],
        now,
    )
