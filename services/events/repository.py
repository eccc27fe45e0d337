"""asyncpg queries on the events service's own tables: events, transitions, comment facts, rollups, estimates."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import asyncpg

from services.events.domain import StoredEvent
from services.events.engagement import CommentFact, DailyEngagement
from services.events.visits import Transition
from terrain.access.model import EVERYTHING, Scope

# Two-key advisory locks live apart from the one-key ones the kernel's migrations use; this class
# number keeps events' per-id locks apart from any other service's two-key locks.
_LOCK_CLASS = 0x4556  # "EV"

_COLUMNS = (
    "id, community_id, kind, title, starts_at, ends_at, location, incident_id, attendees, ambassadors_met,"
    " result, notes, origin, escalation_id, recorded_at, updated_at,"
    " status, organiser, follow_ups, assignee, reason, evidence, escalated_at"
)


def _to_event(row: asyncpg.Record) -> StoredEvent:
    data = dict(row)
    data["outcome"] = {k: data.pop(k) for k in ("attendees", "ambassadors_met", "result", "notes")}
    data["follow_ups"] = json.loads(data["follow_ups"]) if data["follow_ups"] is not None else None
    data["evidence"] = json.loads(data["evidence"])
    return StoredEvent.model_validate(data)


async def lock_events(
    conn: asyncpg.Connection, event_ids: Sequence[str], scope: Scope = EVERYTHING
) -> dict[str, StoredEvent]:
    """What is stored under these ids within `scope`, with each id locked until the transaction ends.

    The lock is per id, not per row, so it also serialises two writers creating the same new id.
    Ids are locked in sorted order so that two batches never wait on each other in a cycle. An event
    outside `scope` is left out as if it did not exist.
    """
    ids = sorted(set(event_ids))
    if not ids:
        return {}
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1::int, hashtext(i)) FROM unnest($2::text[]) AS i ORDER BY i",
        _LOCK_CLASS,
        ids,
    )
    in_scope, params = scope.sql("community_id", first_param=2)
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM events_log WHERE id = ANY($1::text[]) AND {in_scope}", ids, *params
    )
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
                $14::text[], $15::timestamptz[], $16::timestamptz[],
                $17::text[], $18::text[], $19::jsonb[], $20::text[], $21::text[], $22::jsonb[], $23::timestamptz[])
            ON CONFLICT (id) DO UPDATE SET
                community_id = EXCLUDED.community_id, kind = EXCLUDED.kind, title = EXCLUDED.title,
                starts_at = EXCLUDED.starts_at, ends_at = EXCLUDED.ends_at, location = EXCLUDED.location,
                incident_id = EXCLUDED.incident_id, attendees = EXCLUDED.attendees,
                ambassadors_met = EXCLUDED.ambassadors_met, result = EXCLUDED.result, notes = EXCLUDED.notes,
                origin = EXCLUDED.origin, escalation_id = EXCLUDED.escalation_id,
                recorded_at = EXCLUDED.recorded_at, updated_at = EXCLUDED.updated_at,
                status = EXCLUDED.status, organiser = EXCLUDED.organiser, follow_ups = EXCLUDED.follow_ups,
                assignee = EXCLUDED.assignee, reason = EXCLUDED.reason, evidence = EXCLUDED.evidence,
                escalated_at = EXCLUDED.escalated_at""",
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
        [e.status.value for e in events],
        [e.organiser for e in events],
        [json.dumps(e.follow_ups) if e.follow_ups is not None else None for e in events],
        [e.assignee for e in events],
        [e.reason for e in events],
        [json.dumps([ev.model_dump(mode="json") for ev in e.evidence]) for e in events],
        [e.escalated_at for e in events],
    )



async def get(
    conn: asyncpg.Connection | asyncpg.Pool, event_id: str, scope: Scope = EVERYTHING
) -> StoredEvent | None:
    """The event stored under this id, if its community is in `scope`."""
    in_scope, params = scope.sql("community_id", first_param=2)
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM events_log WHERE id = $1 AND {in_scope}", event_id, *params)
    return _to_event(row) if row is not None else None


def _filters(
    scope: Scope, community_id: str | None, kind: str | None, incident_id: str | None, status: str | None
) -> tuple[list[str], list[Any]]:
    """The conditions of a list (scope first, then each given filter) and their parameters."""
    in_scope, args = scope.sql("community_id", first_param=1)
    where = [in_scope]
    for column, value in (
        ("community_id", community_id), ("kind", kind), ("incident_id", incident_id), ("status", status)
    ):
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    return where, args


async def list_events(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    scope: Scope = EVERYTHING,
    community_id: str | None = None,
    kind: str | None = None,
    incident_id: str | None = None,
    status: str | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[StoredEvent]:
    """Events in `scope` matching every given filter, newest start first (then by id); `after` is the
    (starts_at, id) of the last event of the page before: the list goes on from there."""
    where, args = _filters(scope, community_id, kind, incident_id, status)
    if after is not None:
        args += [after[0], after[1]]
        a, b = len(args) - 1, len(args)
        where.append(f"(starts_at < ${a} OR (starts_at = ${a} AND id > ${b}))")
    args += [limit, offset]
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM events_log WHERE {' AND '.join(where)}
            ORDER BY starts_at DESC, id LIMIT ${len(args) - 1} OFFSET ${len(args)}""",
        *args,
    )
    return [_to_event(r) for r in rows]


async def count_events(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    scope: Scope = EVERYTHING,
    community_id: str | None = None,
    kind: str | None = None,
    incident_id: str | None = None,
    status: str | None = None,
) -> int:
    """How many events in `scope` match every given filter."""
    where, args = _filters(scope, community_id, kind, incident_id, status)
    return int(await conn.fetchval(f"SELECT count(*) FROM events_log WHERE {' AND '.join(where)}", *args))


# --- transitions --------------------------------------------------------------------------------------


async def add_transitions(conn: asyncpg.Connection, transitions: Sequence[Transition]) -> None:
    if not transitions:
        return
    await conn.execute(
        """INSERT INTO events_transitions
               (event_id, from_status, to_status, action, actor, at, note, assignee, scheduled_for)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                $6::timestamptz[], $7::text[], $8::text[], $9::timestamptz[])""",
        [t.event_id for t in transitions],
        [t.before.value if t.before is not None else None for t in transitions],
        [t.after.value for t in transitions],
        [t.action.value for t in transitions],
        [t.actor for t in transitions],
        [t.at for t in transitions],
        [t.note for t in transitions],
        [t.assignee for t in transitions],
        [t.scheduled_for for t in transitions],
    )


async def transitions_of(
    conn: asyncpg.Connection | asyncpg.Pool, event_id: str, scope: Scope = EVERYTHING
) -> list[dict[str, Any]]:
    """The kept steps of an event whose community is in `scope`, oldest first."""
    in_scope, params = scope.sql("e.community_id", first_param=2)
    rows = await conn.fetch(
        f"""SELECT t.from_status, t.to_status, t.action, t.actor, t.at, t.note, t.assignee, t.scheduled_for
            FROM events_transitions t JOIN events_log e ON e.id = t.event_id
            WHERE t.event_id = $1 AND {in_scope} ORDER BY t.seq""",
        event_id, *params,
    )
    return [dict(r) for r in rows]


# --- engagement -------------------------------------------------------------------------------------


async def upsert_facts(conn: asyncpg.Connection, facts: Sequence[CommentFact]) -> set[tuple[str, date]]:
    """Store each comment's latest fact (one per id, older versions lose); return every (community,
    day) whose rollup must be rebuilt: the new days and the days those comments were on before."""
    if not facts:
        return set()
    ids = [f.comment_id for f in facts]
    before = await conn.fetch(
        "SELECT community_id, day FROM events_comment_facts WHERE comment_id = ANY($1::text[])", ids
    )
    await conn.execute(
        """INSERT INTO events_comment_facts AS f (comment_id, community_id, day, created_at, author_key,
               is_reply, reactions, label, score, removed, revision, scored_at)
           SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::timestamptz[], $5::text[],
                                $6::boolean[], $7::int[], $8::text[], $9::float8[], $10::boolean[],
                                $11::int[], $12::timestamptz[])
           ON CONFLICT (comment_id) DO UPDATE SET
               community_id = EXCLUDED.community_id, day = EXCLUDED.day, created_at = EXCLUDED.created_at,
               author_key = EXCLUDED.author_key, is_reply = EXCLUDED.is_reply, reactions = EXCLUDED.reactions,
               label = EXCLUDED.label, score = EXCLUDED.score, removed = EXCLUDED.removed,
               revision = EXCLUDED.revision, scored_at = EXCLUDED.scored_at
           WHERE (EXCLUDED.revision, EXCLUDED.scored_at) > (f.revision, f.scored_at)""",
        ids,
        [f.community_id for f in facts],
        [f.day for f in facts],
        [f.created_at for f in facts],
        [f.author_key for f in facts],
        [f.is_reply for f in facts],
        [f.reactions for f in facts],
        [f.label for f in facts],
        [f.score for f in facts],
        [f.removed for f in facts],
        [f.revision for f in facts],
        [f.scored_at for f in facts],
    )
    return {(f.community_id, f.day) for f in facts} | {(r["community_id"], r["day"]) for r in before}


async def rebuild_daily(conn: asyncpg.Connection, keys: Sequence[tuple[str, date]], now: datetime) -> None:
    """Recompute the rollup of these (community, day) pairs from the facts, set-based."""
    if not keys:
        return
    communities = [k[0] for k in keys]
    days = [k[1] for k in keys]
    await conn.execute(
        """WITH k(community_id, day) AS (SELECT DISTINCT * FROM unnest($1::text[], $2::date[]))
           INSERT INTO events_engagement_daily (community_id, day, comments, unique_authors, replies,
               reactions, positive, negative, sentiment_sum, updated_at)
           SELECT f.community_id, f.day,
                  count(*) FILTER (WHERE NOT f.removed),
                  count(DISTINCT f.author_key) FILTER (WHERE NOT f.removed),
                  count(*) FILTER (WHERE NOT f.removed AND f.is_reply),
                  coalesce(sum(f.reactions) FILTER (WHERE NOT f.removed), 0),
                  count(*) FILTER (WHERE NOT f.removed AND f.label = 'positive'),
                  count(*) FILTER (WHERE NOT f.removed AND f.label = 'negative'),
                  coalesce(sum(f.score) FILTER (WHERE NOT f.removed), 0),
                  $3
           FROM events_comment_facts f JOIN k USING (community_id, day)
           GROUP BY f.community_id, f.day
           ON CONFLICT (community_id, day) DO UPDATE SET
               comments = EXCLUDED.comments, unique_authors = EXCLUDED.unique_authors,
               replies = EXCLUDED.replies, reactions = EXCLUDED.reactions, positive = EXCLUDED.positive,
               negative = EXCLUDED.negative, sentiment_sum = EXCLUDED.sentiment_sum,
               updated_at = EXCLUDED.updated_at""",
        communities, days, now,
    )
    # A day whose every comment moved away has no facts left: its rollup goes.
    await conn.execute(
        """WITH k(community_id, day) AS (SELECT * FROM unnest($1::text[], $2::date[]))
           DELETE FROM events_engagement_daily d USING k
           WHERE d.community_id = k.community_id AND d.day = k.day AND NOT EXISTS (
               SELECT 1 FROM events_comment_facts f WHERE f.community_id = k.community_id AND f.day = k.day)""",
        communities, days,
    )


def _daily(row: asyncpg.Record) -> DailyEngagement:
    return DailyEngagement(
        community_id=row["community_id"], day=row["day"], comments=row["comments"],
        unique_authors=row["unique_authors"], replies=row["replies"], reactions=row["reactions"],
        positive=row["positive"], negative=row["negative"], sentiment_sum=row["sentiment_sum"],
    )


_DAILY = "community_id, day, comments, unique_authors, replies, reactions, positive, negative, sentiment_sum"


async def daily_between(
    conn: asyncpg.Connection | asyncpg.Pool, first: date, last: date, community_id: str | None = None,
    scope: Scope = EVERYTHING,
) -> list[DailyEngagement]:
    """Daily rollups between two days: of one community, or of every community in `scope`."""
    if community_id is None:
        in_scope, params = scope.sql("community_id", first_param=3)
        rows = await conn.fetch(
            f"""SELECT {_DAILY} FROM events_engagement_daily WHERE day BETWEEN $1 AND $2 AND {in_scope}
                ORDER BY community_id, day""",
            first, last, *params,
        )
    else:
        rows = await conn.fetch(
            f"""SELECT {_DAILY} FROM events_engagement_daily
                WHERE community_id = $3 AND day BETWEEN $1 AND $2 ORDER BY day""",
            first, last, community_id,
        )
    return [_daily(r) for r in rows]


async def events_touching(
    conn: asyncpg.Connection | asyncpg.Pool, first: datetime, last: datetime, scope: Scope = EVERYTHING
) -> list[StoredEvent]:
    """Events (not cancelled) of communities in `scope` that overlap [first, last]."""
    in_scope, params = scope.sql("community_id", first_param=3)
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM events_log
            WHERE status <> 'cancelled' AND starts_at <= $2 AND coalesce(ends_at, starts_at) >= $1
              AND {in_scope}""",
        first, last, *params,
    )
    return [_to_event(r) for r in rows]


async def purge_facts(
    conn: asyncpg.Connection | asyncpg.Pool, before_day: date, consumer: str, before: datetime
) -> int:
    """Retention: drop comment facts older than the horizon, and this consumer's old processed-message
    records (a late redelivery is harmless: facts are keyed by comment id)."""
    status = await conn.execute("DELETE FROM events_comment_facts WHERE day < $1", before_day)
    await conn.execute(
        "DELETE FROM terrain_processed_messages WHERE consumer = $1 AND processed_at < $2", consumer, before
    )
    return int(status.split()[-1])


# --- impact estimates and gauges --------------------------------------------------------------------


async def save_estimate(
    conn: asyncpg.Connection | asyncpg.Pool, event_id: str, kind: str, verdict: str,
    estimate: float | None, ci_low: float | None, ci_high: float | None, at: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO events_impact_estimates (event_id, kind, verdict, estimate, ci_low, ci_high, computed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (event_id) DO UPDATE SET kind = EXCLUDED.kind, verdict = EXCLUDED.verdict,
               estimate = EXCLUDED.estimate, ci_low = EXCLUDED.ci_low, ci_high = EXCLUDED.ci_high,
               computed_at = EXCLUDED.computed_at""",
        event_id, kind, verdict, estimate, ci_low, ci_high, at,
    )


async def gauge_counts(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, list[asyncpg.Record]]:
    """What the gauges show: open field visits by status, events by kind and result, estimates by verdict,
    stored comment facts."""
    return {
        "open_visits": await conn.fetch(
            """SELECT status, count(*) AS n FROM events_log
               WHERE kind = 'field_visit' AND status IN ('requested', 'scheduled') GROUP BY status"""
        ),
        "by_result": await conn.fetch("SELECT kind, result, count(*) AS n FROM events_log GROUP BY kind, result"),
        "estimates": await conn.fetch(
            "SELECT kind, verdict, count(*) AS n FROM events_impact_estimates GROUP BY kind, verdict"
        ),
        "facts": await conn.fetch("SELECT count(*) AS n FROM events_comment_facts"),
    }
