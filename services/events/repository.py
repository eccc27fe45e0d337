"""asyncpg queries on the events service's own table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from services.events.domain import StoredEvent

# Two-key advisory locks live apart from the one-key ones the kernel's migrations use; this class
# number keeps events' per-id locks apart from any other service's two-key locks.
_LOCK_CLASS = 0x4556  # "EV"

_COLUMNS = (
    "id, community_id, kind, title, starts_at, ends_at, location, incident_id, attendees, ambassadors_met,"
    " result, notes, origin, escalation_id, recorded_at, updated_at"
)


def _to_event(row: asyncpg.Record) -> StoredEvent:
    data = dict(row)
    data["outcome"] = {k: data.pop(k) for k in ("attendees", "ambassadors_met", "result", "notes")}
    return StoredEvent.model_validate(data)


async def lock_events(conn: asyncpg.Connection, event_ids: Sequence[str]) -> dict[str, StoredEvent]:
    """What is stored under these ids, with each id locked until the transaction ends.

    The lock is per id, not per row, so it also serialises two writers creating the same new id.
    Ids are locked in sorted order so that two batches never wait on each other in a cycle.
    """
    ids = sorted(set(event_ids))
    if not ids:
        return {}
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1::int, hashtext(i)) FROM unnest($2::text[]) AS i ORDER BY i",
        _LOCK_CLASS,
        ids,
    )
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM events_log WHERE id = ANY($1::text[])", ids)
    return {r["id"]: _to_event(r) for r in rows}


async def save(conn: asyncpg.Connection, events: Sequence[StoredEvent]) -> None:
    """Insert or overwrite these events with their merged state (the caller holds their locks)."""
    if not events:
        return
    await conn.execute(
        f"""INSERT INTO events_log ({_COLUMNS})
            SELECT * FROM unnest(
                $1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[],
                $7::text[], $8::text[], $9::int[], $10::int[], $11::text[], $12::text[], $13::text[],
                $14::text[], $15::timestamptz[], $16::timestamptz[])
            ON CONFLICT (id) DO UPDATE SET
                community_id = EXCLUDED.community_id, kind = EXCLUDED.kind, title = EXCLUDED.title,
                starts_at = EXCLUDED.starts_at, ends_at = EXCLUDED.ends_at, location = EXCLUDED.location,
                incident_id = EXCLUDED.incident_id, attendees = EXCLUDED.attendees,
                ambassadors_met = EXCLUDED.ambassadors_met, result = EXCLUDED.result, notes = EXCLUDED.notes,
                origin = EXCLUDED.origin, escalation_id = EXCLUDED.escalation_id,
                recorded_at = EXCLUDED.recorded_at, updated_at = EXCLUDED.updated_at""",
        [e.id for e in events],
        [e.community_id for e in events],
        [e.kind for e in events],
        [e.title for e in events],
        [e.starts_at for e in events],
        [e.ends_at for e in events],
        [e.location for e in events],
        [e.incident_id for e in events],
        [e.outcome.attendees for e in events],
        [e.outcome.ambassadors_met for e in events],
        [e.outcome.result for e in events],
        [e.outcome.notes for e in events],
        [e.origin.value for e in events],
        [e.escalation_id for e in events],
        [e.recorded_at for e in events],
        [e.updated_at for e in events],
    )



async def get(conn: asyncpg.Connection | asyncpg.Pool, event_id: str) -> StoredEvent | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM events_log WHERE id = $1", event_id)
    return _to_event(row) if row is not None else None


async def list_events(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    community_id: str | None = None,
    kind: str | None = None,
    incident_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[StoredEvent]:
    """Events matching every given filter, newest start first."""
    where: list[str] = []
    args: list[Any] = []
    for column, value in (("community_id", community_id), ("kind", kind), ("incident_id", incident_id)):
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    args += [limit, offset]
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM events_log {clause}
            ORDER BY starts_at DESC, id LIMIT ${len(args) - 1} OFFSET ${len(args)}""",
        *args,
    )
    return [_to_event(r) for r in rows]
