"""asyncpg queries on the sentiment service's own table: label corrections."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg

from services.sentiment.corrections import Correction, CorrectionIn
from terrain.access.model import Scope

_COLUMNS = (
    "id, comment_id, community_id, text, lang, label, previous_label, previous_model_version, corrected_by, note, "
    "created_at"
)
EXPORT_BATCH = 500


async def save(conn: asyncpg.Connection | asyncpg.Pool, c: CorrectionIn, now: datetime, *,
               corrected_by: str | None) -> tuple[Correction, bool]:
    """Store a correction; with a comment id it replaces that comment's earlier one in the same community (never
    one of another community: the key is both). True when a row was created.

    `xmax = 0` tells an inserted row from one the ON CONFLICT branch updated, in the same statement. The conflict
    target is migration 002's unique index, whose first column reads a missing community as ''.
    """
    row = await conn.fetchrow(
        f"""INSERT INTO sentiment_corrections
                (comment_id, community_id, text, lang, label, previous_label, previous_model_version, corrected_by,
                 note, created_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT ((coalesce(community_id, '')), comment_id) DO UPDATE SET
                text = EXCLUDED.text, lang = EXCLUDED.lang, label = EXCLUDED.label,
                previous_label = EXCLUDED.previous_label, previous_model_version = EXCLUDED.previous_model_version,
                corrected_by = EXCLUDED.corrected_by, note = EXCLUDED.note, created_at = EXCLUDED.created_at
            RETURNING {_COLUMNS}, (xmax = 0) AS inserted""",
        c.comment_id, c.community_id, c.text, c.lang, c.label.value,
        c.previous_label.value if c.previous_label else None, c.model_version, corrected_by, c.note, now,
    )
    assert row is not None
    data = dict(row)
    inserted = bool(data.pop("inserted"))
    return Correction.model_validate(data), inserted


async def list_corrections(
    conn: asyncpg.Connection | asyncpg.Pool,
    scope: Scope,
    *,
    since: datetime | None = None,
    label: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Correction]:
    """Corrections of the scope's communities made at or after `since`, with this label, newest first."""
    cond, args = scope.sql("community_id", first_param=1)
    where = [cond]
    if since is not None:
        args.append(since)
        where.append(f"created_at >= ${len(args)}")
    if label is not None:
        args.append(label)
        where.append(f"label = ${len(args)}")
    args += [limit, offset]
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM sentiment_corrections WHERE {' AND '.join(where)}
            ORDER BY created_at DESC, id DESC LIMIT ${len(args) - 1} OFFSET ${len(args)}""",
        *args,
    )
    return [Correction.model_validate(dict(r)) for r in rows]


# The latest correction of each distinct text among the scope's, oldest first: what
# `corrections_to_training_rows` keeps too.
_LATEST_PER_TEXT = """
    SELECT text, label, lang FROM (
        SELECT DISTINCT ON (text) text, label, lang, created_at, id
        FROM sentiment_corrections WHERE {scope} ORDER BY text, created_at DESC, id DESC
    ) latest ORDER BY created_at, id"""


async def stream_training_rows(pool: asyncpg.Pool, scope: Scope) -> AsyncIterator[dict[str, Any]]:
    """The scope's corrections as training rows, read with a server-side cursor so the export's memory stays
    flat."""
    cond, args = scope.sql("community_id", first_param=1)
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        async for row in conn.cursor(_LATEST_PER_TEXT.format(scope=cond), *args, prefetch=EXPORT_BATCH):
            yield dict(row)


async def fetch_all(conn: asyncpg.Connection | asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM sentiment_corrections ORDER BY created_at, id")
    return [dict(r) for r in rows]


async def load_corrections(database_url: str) -> list[dict[str, Any]]:
    """Every stored correction (dicts with the table's columns), oldest first, for the trainer to read straight
    from TERRAIN_DATABASE_URL: `corrections_to_training_rows(await load_corrections(url))`.

    Returns nothing when the sentiment service never ran there (no table yet) rather than failing.
    """
    conn = await asyncpg.connect(database_url)
    try:
        exists = await conn.fetchval("SELECT to_regclass('sentiment_corrections') IS NOT NULL")
        return await fetch_all(conn) if exists else []
    finally:
        await conn.close()
