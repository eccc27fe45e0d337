"""asyncpg queries on ingest's own tables: dedup records (their content hashes pruned) and import checkpoints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from services.ingest.domain import Decision, Incoming, Outcome, Seen

if TYPE_CHECKING:
    from typing import TypeAlias

    from asyncpg.pool import PoolConnectionProxy

    # A connection, or the pool's proxy for one (what `pool.acquire()` yields): both run the same queries.
    Conn: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]


async def lock_seen(conn: Conn, comment_ids: Sequence[str]) -> dict[str, Seen]:
    """What is known of these comments, row-locked until the transaction ends."""
    rows = await conn.fetch(
        """SELECT comment_id, content_hash, revision, removed, version_at FROM ingest_comments
           WHERE comment_id = ANY($1::text[]) ORDER BY comment_id FOR UPDATE""",
        list(comment_ids),
    )
    return {r["comment_id"]: Seen(r["content_hash"], r["revision"], r["removed"], r["version_at"]) for r in rows}


async def insert_new(
    conn: Conn, items: Sequence[tuple[Decision, Incoming]], now: datetime
) -> set[str]:
    """Insert first sightings; returns the ids actually inserted (a concurrent writer may have won)."""
    if not items:
        return set()
    rows = await conn.fetch(
        """INSERT INTO ingest_comments
               (comment_id, source, external_id, community_id, content_hash, revision, removed, version_at,
                first_seen_at, last_seen_at)
           SELECT u.*, $9::timestamptz, $9::timestamptz
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::bool[],
                       $8::timestamptz[]) AS u
           ON CONFLICT (comment_id) DO NOTHING RETURNING comment_id""",
        [d.comment_id for d, _ in items],
        [c.comment.source for _, c in items],
        [c.comment.external_id for _, c in items],
        [c.comment.community_id for _, c in items],
        [d.content_hash for d, _ in items],
        [d.revision for d, _ in items],
        [d.outcome is Outcome.removed for d, _ in items],
        [d.version_at for d, _ in items],
        now,
    )
    return {r["comment_id"] for r in rows}


async def update_changed(conn: Conn, decisions: Sequence[Decision], now: datetime) -> None:
    if not decisions:
        return
    await conn.execute(
        """UPDATE ingest_comments AS t
           SET content_hash = u.h, revision = u.r, removed = u.rm, version_at = u.v, last_seen_at = $6
           FROM unnest($1::text[], $2::text[], $3::int[], $4::bool[], $5::timestamptz[]) AS u(id, h, r, rm, v)
           WHERE t.comment_id = u.id""",
        [d.comment_id for d in decisions],
        [d.content_hash for d in decisions],
        [d.revision for d in decisions],
        [d.outcome is Outcome.removed for d in decisions],
        [d.version_at for d in decisions],
        now,
    )


async def prune(conn: Conn, cutoff: datetime, limit: int) -> int:
    """Forget the content hash of at most `limit` comments last changed before `cutoff`, keeping their row (id,
    revision, version time), so they are never new again; rows another writer holds are skipped."""
    result = await conn.execute(
        """UPDATE ingest_comments SET content_hash = NULL WHERE comment_id IN (
               SELECT comment_id FROM ingest_comments WHERE content_hash IS NOT NULL AND last_seen_at < $1
               ORDER BY last_seen_at LIMIT $2 FOR UPDATE SKIP LOCKED)""",
        cutoff, limit,
    )
    return int(result.split()[-1])


async def oldest_seen(conn: Conn) -> datetime | None:
    """When the oldest content hash still kept was last changed."""
    value: datetime | None = await conn.fetchval(
        "SELECT min(last_seen_at) FROM ingest_comments WHERE content_hash IS NOT NULL")
    return value


async def known_comments(conn: Conn) -> int:
    """About how many comments ingest remembers (the planner's estimate: counting them would read them all)."""
    value = await conn.fetchval("SELECT reltuples::bigint FROM pg_class WHERE oid = 'ingest_comments'::regclass")
    return max(0, int(value or 0))


@dataclass(frozen=True)
class Checkpoint:
    byte_offset: int
    line: int
    accepted: int
    duplicates: int
    rejected: int


async def load_checkpoint(conn: Conn, key: str) -> Checkpoint | None:
    row = await conn.fetchrow(
        "SELECT byte_offset, line, accepted, duplicates, rejected FROM ingest_imports WHERE import_key = $1", key
    )
    return Checkpoint(**dict(row)) if row else None


async def save_checkpoint(conn: Conn, key: str, path: str, cp: Checkpoint, now: datetime) -> None:
    """Written in the transaction that stores the batch, so the checkpoint never runs ahead of the effects."""
    await conn.execute(
        """INSERT INTO ingest_imports (import_key, path, byte_offset, line, accepted, duplicates, rejected, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (import_key) DO UPDATE SET path = $2, byte_offset = $3, line = $4, accepted = $5,
               duplicates = $6, rejected = $7, updated_at = $8""",
        key, path, cp.byte_offset, cp.line, cp.accepted, cp.duplicates, cp.rejected, now,
    )


async def earliest_checkpoint(conn: Conn, file_key: str) -> Checkpoint | None:
    """The checkpoint furthest back among a file's, whatever the number of shards that left it: resuming there
    re-reads what a faster shard had stored already, which the dedup records turn into duplicates."""
    row = await conn.fetchrow(
        """SELECT byte_offset, line, 0 AS accepted, 0 AS duplicates, 0 AS rejected FROM ingest_imports
           WHERE import_key = $1 OR import_key LIKE $1 || '#%' ORDER BY byte_offset LIMIT 1""", file_key
    )
    return Checkpoint(**dict(row)) if row else None


async def clear_checkpoints(conn: Conn, file_key: str) -> None:
    """Forget a finished import: its own checkpoint and any its shards left."""
    await conn.execute("DELETE FROM ingest_imports WHERE import_key = $1 OR import_key LIKE $1 || '#%'", file_key)


async def delete_sent(pool: asyncpg.Pool, outbox_ids: Sequence[int]) -> None:
    """Remove outbox rows once their messages are acknowledged (what the kernel's Outbox.flush does after sending)."""
    await pool.execute("DELETE FROM terrain_outbox WHERE id = ANY($1::bigint[])", list(outbox_ids))
