"""asyncpg queries on escalation's own tables: incidents, attachments, timeline, state, timers and silences."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from pydantic import TypeAdapter

from services.escalation import render
from services.escalation.domain import (
    SPIKE_THREAD,
    Attachment,
    Bucket,
    CommentKey,
    Incident,
    Seen,
    Silence,
    Step,
    ThreadKey,
    Timer,
    TimerKind,
)
from services.escalation.policy import CommunityPolicy, InhibitRule
from terrain.access.model import EVERYTHING, Scope
from terrain.contracts import Evidence, IncidentKind, IncidentLevel, IncidentState, RecommendedAction

# A resolved incident can flare up again at most this long after it was resolved (the policy's
# reopen_window is capped to it).
REOPEN_LOOKBACK = timedelta(days=7)

_INCIDENT_COLUMNS = """id, community_id, thread_id, level, reason, state, opened_at, updated_at,
    acknowledged_at, resolved_at, comment_count, negative_count, recommended_actions, recent_evidence, place,
    escalated_at, ack_deadline, seq, kind, policy, language, source, negatives_since_ack, actions, step,
    step_fence, field_requested_at, reopened, paged_step"""


# Stored JSON columns are read and written by pydantic in one call each (a model per item cost more than the
# rest of the row).
_EVIDENCE: TypeAdapter[tuple[Evidence, ...]] = TypeAdapter(tuple[Evidence, ...])
_ACTIONS: TypeAdapter[tuple[RecommendedAction, ...]] = TypeAdapter(tuple[RecommendedAction, ...])


@functools.lru_cache(maxsize=256)
def _policy(stored: str | None) -> CommunityPolicy:
    """Frozen policies repeat across incidents: parse each distinct one once."""
    return CommunityPolicy.model_validate_json(stored) if stored else CommunityPolicy()


def _incident(row: asyncpg.Record) -> Incident:
    policy = _policy(row["policy"])
    return Incident(
        id=row["id"], community_id=row["community_id"], thread_id=row["thread_id"],
        level=IncidentLevel(row["level"]), reason=row["reason"], state=IncidentState(row["state"]),
        opened_at=row["opened_at"], updated_at=row["updated_at"], policy=policy, language=row["language"],
        kind=IncidentKind(row["kind"]), source=row["source"],
        acknowledged_at=row["acknowledged_at"], resolved_at=row["resolved_at"],
        comment_count=row["comment_count"], negative_count=row["negative_count"],
        negatives_since_ack=row["negatives_since_ack"],
        actions=_ACTIONS.validate_json(row["actions"]),
        evidence=_EVIDENCE.validate_json(row["recent_evidence"]),
        place=row["place"], escalated_at=row["escalated_at"], ack_deadline=row["ack_deadline"],
        step=row["step"], step_fence=row["step_fence"], field_requested_at=row["field_requested_at"],
        reopened=row["reopened"], seq=row["seq"], paged_step=row["paged_step"],
    )


def _pairs(keys: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
    return [a for a, _ in keys], [b for _, b in keys]


async def lock_threads(conn: asyncpg.Connection, threads: Sequence[ThreadKey]) -> None:
    """Serialise writers per thread until the transaction ends (two consumers overlap during a rebalance).

    Locks are taken in key order so two batches touching the same threads cannot deadlock.
    """
    if not threads:
        return
    await conn.execute(
        """SELECT count(pg_advisory_xact_lock(k)) FROM (
               SELECT DISTINCT hashtextextended('escalation' || chr(31) || c || chr(31) || t, 0) AS k
               FROM unnest($1::text[], $2::text[]) AS u(c, t) ORDER BY k
           ) AS keys""",
        *_pairs(threads),
    )


# A read as one SQL query and its arguments, numbered from $1, whose rows a decoder turns into what the engine
# takes: `fetch_all` runs several in one round trip, each query's rows coming back as an array of records.
Query = tuple[str, list[Any]]


async def _fetch(conn: asyncpg.Connection, query: Query | None) -> list[Any]:
    return list(await conn.fetch(query[0], *query[1])) if query is not None else []


async def fetch_all(conn: asyncpg.Connection, queries: Sequence[Query | None]) -> list[list[tuple[Any, ...]]]:
    """The rows of each query (positional tuples), all read by one statement; an absent query reads nothing."""
    present = [(n, q) for n, q in enumerate(queries) if q is not None]
    out: list[list[tuple[Any, ...]]] = [[] for _ in queries]
    if not present:
        return out
    columns: list[str] = []
    args: list[Any] = []
    for n, (sql, values) in present:
        columns.append(f"ARRAY(SELECT ROW(q.*) FROM ({_renumbered(sql, len(args))}) AS q) AS r{n}")
        args += values
    row = await conn.fetchrow("SELECT " + ", ".join(columns), *args)
    assert row is not None
    for n, _ in present:
        out[n] = list(row[f"r{n}"])
    return out


# Open incidents of some communities matching the source side of some inhibition rules ($1-$4 as below).
_INHIBITORS = """community_id = ANY($1::text[]) AND state <> 'resolved'
    AND ($2 OR level = ANY($3::text[]) OR kind = ANY($4::text[]))"""


def _inhibitor_args(communities: Sequence[str], rules: Sequence[InhibitRule]) -> list[Any]:
    levels = {r.source["level"] for r in rules if "level" in r.source}
    kinds = {r.source["kind"] for r in rules if "kind" in r.source}
    unfiltered = any("level" not in r.source and "kind" not in r.source for r in rules)
    return [list(communities), unfiltered, sorted(levels), sorted(kinds)]


def incidents_query(threads: Sequence[ThreadKey], now: datetime, communities: Sequence[str],
                    rules: Sequence[InhibitRule]) -> Query:
    """In one statement: the in-progress incident of each thread, row-locked until the transaction ends (part 0);
    each thread's latest incident resolved within the reopen lookback (part 1); and the open incidents of these
    communities that match the source side of an inhibition rule (part 2)."""
    return (
        f"""WITH o AS (
                SELECT {_INCIDENT_COLUMNS} FROM escalation_incidents i
                JOIN unnest($1::text[], $2::text[]) AS u(c, t) ON i.community_id = u.c AND i.thread_id = u.t
                WHERE i.state <> 'resolved' ORDER BY i.id FOR UPDATE OF i
            )
            SELECT 0 AS part, * FROM o
            UNION ALL
            SELECT 1, * FROM (
                SELECT DISTINCT ON (i.community_id, i.thread_id) {_INCIDENT_COLUMNS} FROM escalation_incidents i
                JOIN unnest($1::text[], $2::text[]) AS u(c, t) ON i.community_id = u.c AND i.thread_id = u.t
                WHERE i.state = 'resolved' AND i.resolved_at >= $3
                ORDER BY i.community_id, i.thread_id, i.resolved_at DESC
            ) AS resolved
            UNION ALL
            SELECT 2, {_INCIDENT_COLUMNS} FROM escalation_incidents
            WHERE $8 AND {_renumbered(_INHIBITORS, 3)}
            ORDER BY part, id""",
        [*_pairs(threads), now - REOPEN_LOOKBACK, *_inhibitor_args(communities, rules), bool(communities and rules)],
    )


async def load_incidents(
    conn: asyncpg.Connection, threads: Sequence[ThreadKey], now: datetime, communities: Sequence[str],
    rules: Sequence[InhibitRule],
) -> tuple[dict[ThreadKey, Incident], dict[ThreadKey, Incident], dict[str, Incident]]:
    """Open incidents by thread (locked), recently resolved ones of the threads with none open, and inhibitors."""
    opened: dict[ThreadKey, Incident] = {}
    resolved: dict[ThreadKey, Incident] = {}
    others: dict[str, Incident] = {}
    for r in await _fetch(conn, incidents_query(threads, now, communities, rules)):
        inc = _incident(r)
        if r["part"] == 0:
            opened[(inc.community_id, inc.thread_id)] = inc
        elif r["part"] == 1:
            resolved[(inc.community_id, inc.thread_id)] = inc
        else:
            others[inc.id] = inc
    return opened, {k: i for k, i in resolved.items() if k not in opened}, others


async def load_inhibitors(
    conn: asyncpg.Connection, communities: Sequence[str], rules: Sequence[InhibitRule]
) -> dict[str, Incident]:
    """Open incidents of these communities that match the source side of an inhibition rule."""
    if not communities or not rules:
        return {}
    rows = await conn.fetch(
        f"SELECT {_INCIDENT_COLUMNS} FROM escalation_incidents WHERE {_INHIBITORS}",
        *_inhibitor_args(communities, rules),
    )
    return {r["id"]: _incident(r) for r in rows}


def attached_query(comments: Sequence[CommentKey]) -> Query | None:
    if not comments:
        return None
    return (
        """SELECT a.community_id, a.comment_id, a.incident_id FROM escalation_incident_comments a
           JOIN unnest($1::text[], $2::text[]) AS u(c, id) ON a.community_id = u.c AND a.comment_id = u.id""",
        [*_pairs(comments)],
    )


def attached_of(rows: Iterable[Sequence[Any]]) -> dict[CommentKey, str]:
    return {(r[0], r[1]): r[2] for r in rows}


async def attached(conn: asyncpg.Connection, comments: Sequence[CommentKey]) -> dict[CommentKey, str]:
    """Which of these comments are already attached to an incident (any state), and to which."""
    return attached_of(await _fetch(conn, attached_query(comments)))


# In the order of Seen's fields, so a row builds one positionally.
_SEEN_COLUMNS = "community_id, comment_id, thread_id, author_key, created_at, sure_negative, score, removed"


def thread_comments_query(since: Mapping[ThreadKey, datetime], comments: Sequence[CommentKey]) -> Query | None:
    if not since and not comments:
        return None
    keys = list(since)
    return (
        f"""SELECT {_SEEN_COLUMNS} FROM escalation_comments e
            JOIN unnest($1::text[], $2::text[], $3::timestamptz[]) AS u(c, t, s)
              ON e.community_id = u.c AND e.thread_id = u.t AND e.created_at >= u.s
            UNION
            SELECT {_SEEN_COLUMNS} FROM escalation_comments e
            JOIN unnest($4::text[], $5::text[]) AS v(c, id) ON e.community_id = v.c AND e.comment_id = v.id""",
        [[c for c, _ in keys], [t for _, t in keys], [since[k] for k in keys], *_pairs(comments)],
    )


def thread_comments_of(rows: Iterable[Sequence[Any]]) -> dict[ThreadKey, dict[str, Seen]]:
    out: dict[ThreadKey, dict[str, Seen]] = {}
    for r in rows:
        seen = Seen(*r)
        out.setdefault((seen.community_id, seen.thread_id), {})[seen.comment_id] = seen
    return out


async def thread_comments(
    conn: asyncpg.Connection, since: Mapping[ThreadKey, datetime], comments: Sequence[CommentKey]
) -> dict[ThreadKey, dict[str, Seen]]:
    """Each thread's comments from `since` on, plus these comments wherever they fall (edits, redeliveries)."""
    return thread_comments_of(await _fetch(conn, thread_comments_query(since, comments)))


def author_negatives_query(authors: Sequence[tuple[str, str]], since: datetime) -> Query | None:
    if not authors:
        return None
    return (
        """SELECT e.community_id, e.author_key, e.comment_id, e.created_at FROM escalation_comments e
           JOIN unnest($1::text[], $2::text[]) AS u(c, a) ON e.community_id = u.c AND e.author_key = u.a
           WHERE e.sure_negative AND NOT e.removed AND e.created_at >= $3""",
        [*_pairs(authors), since],
    )


def author_negatives_of(rows: Iterable[Sequence[Any]]) -> dict[tuple[str, str], dict[str, datetime]]:
    out: dict[tuple[str, str], dict[str, datetime]] = {}
    for r in rows:
        out.setdefault((r[0], r[1]), {})[r[2]] = r[3]
    return out


async def author_negatives(
    conn: asyncpg.Connection, authors: Sequence[tuple[str, str]], since: datetime
) -> dict[tuple[str, str], dict[str, datetime]]:
    return author_negatives_of(await _fetch(conn, author_negatives_query(authors, since)))


def buckets_query(since: Mapping[str, tuple[int, datetime]]) -> Query | None:
    if not since:
        return None
    keys = list(since)
    return (
        """SELECT b.community_id, b.bucket_start, b.comments, b.negatives, b.score_sum FROM escalation_buckets b
           JOIN unnest($1::text[], $2::int[], $3::timestamptz[]) AS u(c, s, f)
             ON b.community_id = u.c AND b.bucket_s = u.s AND b.bucket_start >= u.f""",
        [keys, [since[k][0] for k in keys], [since[k][1] for k in keys]],
    )


def buckets_of(rows: Iterable[Sequence[Any]]) -> dict[str, dict[datetime, Bucket]]:
    out: dict[str, dict[datetime, Bucket]] = {}
    for r in rows:
        out.setdefault(r[0], {})[r[1]] = Bucket(r[2], r[3], r[4])
    return out


async def buckets(
    conn: asyncpg.Connection, since: Mapping[str, tuple[int, datetime]]
) -> dict[str, dict[datetime, Bucket]]:
    """Per community, its buckets of the given size from the given start on."""
    return buckets_of(await _fetch(conn, buckets_query(since)))


def first_seen_query(communities: Sequence[str]) -> Query | None:
    if not communities:
        return None
    return (
        "SELECT community_id, first_seen FROM escalation_communities WHERE community_id = ANY($1::text[])",
        [list(communities)],
    )


def first_seen_of(rows: Iterable[Sequence[Any]]) -> dict[str, datetime]:
    return {r[0]: r[1] for r in rows}


async def first_seen(conn: asyncpg.Connection, communities: Sequence[str]) -> dict[str, datetime]:
    return first_seen_of(await _fetch(conn, first_seen_query(communities)))


async def active_silences(conn: asyncpg.Connection | asyncpg.Pool, now: datetime) -> list[Silence]:
    rows = await conn.fetch(
        """SELECT * FROM escalation_silences WHERE expired_at IS NULL AND starts_at <= $1 AND ends_at > $1""",
        now,
    )
    return [_silence(r) for r in rows]


def _silence(r: asyncpg.Record) -> Silence:
    return Silence(
        id=r["id"], matchers=json.loads(r["matchers"]), starts_at=r["starts_at"], ends_at=r["ends_at"],
        created_by=r["created_by"], comment=r["comment"], expired_at=r["expired_at"], created_at=r["created_at"],
    )


_POLICY_JSON: dict[int, tuple[Any, str]] = {}


def _policy_json(policy: Any) -> str:
    """The frozen policy's JSON, dumped once per policy object: every incident of a community shares one, and
    an incident is saved again with each batch that touches it."""
    hit = _POLICY_JSON.get(id(policy))
    if hit is not None and hit[0] is policy:
        return hit[1]
    if len(_POLICY_JSON) > 4096:
        _POLICY_JSON.clear()
    dumped: str = policy.model_dump_json()
    _POLICY_JSON[id(policy)] = (policy, dumped)
    return dumped


_INCIDENT_TYPES = (
    "text", "text", "text", "text", "text", "text", "timestamptz", "timestamptz", "timestamptz", "timestamptz",
    "int", "int", "text", "text", "text", "timestamptz", "timestamptz", "int", "text", "text", "text", "text",
    "int", "text", "int", "int", "timestamptz", "int", "int",
)
# JSON columns travel as text arrays and are cast row by row.
_INCIDENT_JSON = {13, 14, 20, 24}
_SAVE_INCIDENTS = (
    f"INSERT INTO escalation_incidents ({_INCIDENT_COLUMNS}) SELECT "
    + ", ".join(f"c{n}::jsonb" if n in _INCIDENT_JSON else f"c{n}" for n in range(1, 30))
    + " FROM unnest("
    + ", ".join(f"${n}::{t}[]" for n, t in enumerate(_INCIDENT_TYPES, 1))
    + ") AS u("
    + ", ".join(f"c{n}" for n in range(1, 30))
    + """)
    ON CONFLICT (id) DO UPDATE SET
        level = EXCLUDED.level, reason = EXCLUDED.reason, state = EXCLUDED.state,
        updated_at = EXCLUDED.updated_at, acknowledged_at = EXCLUDED.acknowledged_at,
        resolved_at = EXCLUDED.resolved_at, comment_count = EXCLUDED.comment_count,
        negative_count = EXCLUDED.negative_count, recommended_actions = EXCLUDED.recommended_actions,
        recent_evidence = EXCLUDED.recent_evidence, place = EXCLUDED.place,
        escalated_at = EXCLUDED.escalated_at, ack_deadline = EXCLUDED.ack_deadline, seq = EXCLUDED.seq,
        negatives_since_ack = EXCLUDED.negatives_since_ack, actions = EXCLUDED.actions,
        step = EXCLUDED.step, step_fence = EXCLUDED.step_fence,
        field_requested_at = EXCLUDED.field_requested_at, reopened = EXCLUDED.reopened,
        paged_step = EXCLUDED.paged_step"""
)


# A write as one SQL statement and its arguments, numbered from $1: `save_all` runs several as one.
Part = tuple[str, list[Any]]


async def _run(conn: asyncpg.Connection, part: Part | None) -> None:
    if part is not None:
        await conn.execute(part[0], *part[1])


def _renumbered(sql: str, offset: int) -> str:
    return re.sub(r"\$(\d+)", lambda m: f"${int(m.group(1)) + offset}", sql)


async def save_all(conn: asyncpg.Connection, parts: Sequence[Part | None], returning: Part | None = None
                   ) -> list[asyncpg.Record]:
    """Run the writes as one statement (one round trip), each a data-modifying WITH query; `returning`, a
    write with a RETURNING clause, gives the rows returned. The writes touch different tables, so none
    needs to see another's rows (foreign keys are checked at the end of the statement)."""
    present = [p for p in parts if p is not None]
    if returning is None and not present:
        return []
    if returning is None and len(present) == 1:
        await _run(conn, present[0])
        return []
    ctes: list[str] = []
    args: list[Any] = []
    for n, (sql, values) in enumerate(present):
        ctes.append(f"w{n} AS ({_renumbered(sql, len(args))})")
        args += values
    if returning is not None:
        ctes.append(f"r AS ({_renumbered(returning[0], len(args))})")
        args += returning[1]
    if returning is None:
        await conn.execute(f"WITH {', '.join(ctes)} SELECT 1", *args)
        return []
    return list(await conn.fetch(f"WITH {', '.join(ctes)} SELECT * FROM r", *args))


async def save_incidents(conn: asyncpg.Connection, incidents: Iterable[Incident]) -> None:
    """Insert or update the incidents in one set-based statement (the last version of an id wins)."""
    await _run(conn, incidents_part(incidents))


def incidents_part(incidents: Iterable[Incident]) -> Part | None:
    latest = {i.id: i for i in incidents}
    if not latest:
        return None
    rows = [
        (
            i.id, i.community_id, i.thread_id, i.level.value, i.reason, i.state.value, i.opened_at,
            i.updated_at, i.acknowledged_at, i.resolved_at, i.comment_count, i.negative_count,
            # The rendered actions only: a whole snapshot (a validated model) per incident cost more than the
            # rest of the row.
            json.dumps(render.actions(list(i.actions), i.language), ensure_ascii=False),
            _EVIDENCE.dump_json(i.evidence).decode(),
            i.place, i.escalated_at, i.ack_deadline, i.seq, i.kind.value, _policy_json(i.policy),
            i.language, i.source, i.negatives_since_ack,
            _ACTIONS.dump_json(i.actions).decode(),
            i.step, i.step_fence, i.field_requested_at, i.reopened, i.paged_step,
        )
        for i in latest.values()
    ]
    return _SAVE_INCIDENTS, [list(column) for column in zip(*rows, strict=True)]


async def save_attachments(conn: asyncpg.Connection, attachments: Sequence[Attachment], now: datetime) -> None:
    await _run(conn, attachments_part(attachments, now))


def attachments_part(attachments: Sequence[Attachment], now: datetime) -> Part | None:
    if not attachments:
        return None
    return (
        """INSERT INTO escalation_incident_comments
               (incident_id, comment_id, community_id, thread_id, external_id, label, score, flags,
                is_evidence, comment_created_at, attached_at, message_id)
           SELECT i, c, cm, t, e, l, s, coalesce(string_to_array(f, chr(31)), '{}'), ev, ca, $11, m
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::float8[], $8::text[], $9::bool[], $10::timestamptz[], $12::text[])
                AS u(i, c, cm, t, e, l, s, f, ev, ca, m)
           ON CONFLICT (incident_id, comment_id) DO NOTHING""",
        [[a.incident_id for a in attachments], [a.comment_id for a in attachments],
         [a.community_id for a in attachments], [a.thread_id for a in attachments],
         [a.external_id for a in attachments], [a.label for a in attachments], [a.score for a in attachments],
         [chr(31).join(a.flags) if a.flags else None for a in attachments], [a.is_evidence for a in attachments],
         [a.created_at for a in attachments], now, [a.message_id for a in attachments]],
    )


async def save_steps(conn: asyncpg.Connection, steps: Sequence[Step]) -> None:
    await _run(conn, steps_part(steps))


def steps_part(steps: Sequence[Step]) -> Part | None:
    if not steps:
        return None
    return (
        """INSERT INTO escalation_incident_events (incident_id, seq, at, event, actor, detail)
           SELECT * FROM unnest($1::text[], $2::int[], $3::timestamptz[], $4::text[], $5::text[], $6::text[])""",
        [[s.incident.id for s in steps], [s.seq for s in steps], [s.at for s in steps], [s.event for s in steps],
         [s.actor for s in steps], [s.detail for s in steps]],
    )


async def save_seen(conn: asyncpg.Connection, seen: Sequence[Seen]) -> None:
    await _run(conn, seen_part(seen))


def seen_part(seen: Sequence[Seen]) -> Part | None:
    if not seen:
        return None
    return (
        """INSERT INTO escalation_comments
               (community_id, comment_id, thread_id, author_key, created_at, sure_negative, score, removed)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::bool[],
                                $7::float8[], $8::bool[])
           ON CONFLICT (community_id, comment_id) DO UPDATE SET
               sure_negative = EXCLUDED.sure_negative, score = EXCLUDED.score, removed = EXCLUDED.removed""",
        [[s.community_id for s in seen], [s.comment_id for s in seen], [s.thread_id for s in seen],
         [s.author_key for s in seen], [s.created_at for s in seen], [s.sure_negative for s in seen],
         [s.score for s in seen], [s.removed for s in seen]],
    )


async def add_buckets(
    conn: asyncpg.Connection, deltas: Mapping[tuple[str, datetime], Bucket], sizes: Mapping[str, int]
) -> None:
    await _run(conn, buckets_part(deltas, sizes))


def buckets_part(deltas: Mapping[tuple[str, datetime], Bucket], sizes: Mapping[str, int]) -> Part | None:
    if not deltas:
        return None
    keys = sorted(deltas)
    return (
        """INSERT INTO escalation_buckets (community_id, bucket_s, bucket_start, comments, negatives, score_sum)
           SELECT * FROM unnest($1::text[], $2::int[], $3::timestamptz[], $4::int[], $5::int[], $6::float8[])
           ON CONFLICT (community_id, bucket_s, bucket_start) DO UPDATE SET
               comments = escalation_buckets.comments + EXCLUDED.comments,
               negatives = escalation_buckets.negatives + EXCLUDED.negatives,
               score_sum = escalation_buckets.score_sum + EXCLUDED.score_sum""",
        [[c for c, _ in keys], [sizes[c] for c, _ in keys], [b for _, b in keys],
         [deltas[k].comments for k in keys], [deltas[k].negatives for k in keys],
         [deltas[k].score_sum for k in keys]],
    )


async def save_first_seen(conn: asyncpg.Connection, first: Mapping[str, datetime]) -> None:
    await _run(conn, first_seen_part(first))


def first_seen_part(first: Mapping[str, datetime]) -> Part | None:
    if not first:
        return None
    keys = sorted(first)
    return (
        """INSERT INTO escalation_communities (community_id, first_seen)
           SELECT * FROM unnest($1::text[], $2::timestamptz[])
           ON CONFLICT (community_id) DO UPDATE
               SET first_seen = LEAST(escalation_communities.first_seen, EXCLUDED.first_seen)""",
        [keys, [first[k] for k in keys]],
    )


async def save_timers(conn: asyncpg.Connection, timers: Sequence[Timer]) -> None:
    await _run(conn, timers_part(timers))


def timers_part(timers: Sequence[Timer]) -> Part | None:
    if not timers:
        return None
    return (
        """INSERT INTO escalation_timers (incident_id, kind, due_at, fence)
           SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::int[])
           ON CONFLICT (incident_id, kind, fence) DO NOTHING""",
        [[t.incident_id for t in timers], [t.kind.value for t in timers], [t.due_at for t in timers],
         [t.fence for t in timers]],
    )


async def claim_due_timers(conn: asyncpg.Connection, now: datetime, limit: int) -> list[tuple[int, Timer]]:
    """Due, unfired timers, row-locked; another replica skips them until this transaction ends."""
    rows = await conn.fetch(
        """SELECT id, incident_id, kind, due_at, fence FROM escalation_timers
           WHERE fired_at IS NULL AND due_at <= $1 ORDER BY due_at, id LIMIT $2 FOR UPDATE SKIP LOCKED""",
        now, limit,
    )
    return [(r["id"], Timer(r["incident_id"], TimerKind(r["kind"]), r["due_at"], r["fence"])) for r in rows]


async def mark_fired(conn: asyncpg.Connection, fired: Sequence[tuple[int, str]], now: datetime) -> None:
    if fired:
        await conn.execute(
            """UPDATE escalation_timers t SET fired_at = $3, outcome = u.o
               FROM unnest($1::bigint[], $2::text[]) AS u(id, o) WHERE t.id = u.id""",
            [i for i, _ in fired], [o for _, o in fired], now,
        )


async def lock_incidents(conn: asyncpg.Connection, ids: Sequence[str]) -> dict[str, Incident]:
    rows = await conn.fetch(
        f"SELECT {_INCIDENT_COLUMNS} FROM escalation_incidents WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
        list(ids),
    )
    return {r["id"]: _incident(r) for r in rows}


async def get_incident(
    conn: asyncpg.Connection, incident_id: str, *, for_update: bool = False, scope: Scope = EVERYTHING
) -> Incident | None:
    """The incident, when it is within `scope` (else None, as for an id that does not exist)."""
    in_scope, params = scope.sql("community_id", first_param=2)
    row = await conn.fetchrow(
        f"SELECT {_INCIDENT_COLUMNS} FROM escalation_incidents WHERE id = $1 AND {in_scope}"
        + (" FOR UPDATE" if for_update else ""),
        incident_id, *params,
    )
    return _incident(row) if row else None


def _incidents_where(
    *, community_id: str | None, state: IncidentState | None, level: IncidentLevel | None,
    since: datetime | None, scope: Scope,
) -> tuple[str, list[Any]]:
    in_scope, params = scope.sql("community_id", first_param=5)
    return (
        f"""($1::text IS NULL OR community_id = $1)
            AND ($2::text IS NULL OR state = $2)
            AND ($3::text IS NULL OR level = $3)
            AND ($4::timestamptz IS NULL OR updated_at >= $4)
            AND {in_scope}""",
        [community_id, state.value if state else None, level.value if level else None, since, *params],
    )


async def list_incidents(
    conn: asyncpg.Connection,
    *,
    community_id: str | None,
    state: IncidentState | None,
    level: IncidentLevel | None,
    since: datetime | None,
    limit: int,
    offset: int = 0,
    scope: Scope = EVERYTHING,
    after: tuple[datetime, str] | None = None,
) -> list[Incident]:
    """Most recently updated first (ties by id), within `scope`; `after` is the (updated_at, id) of the row
    the previous page ended on."""
    where, args = _incidents_where(community_id=community_id, state=state, level=level, since=since, scope=scope)
    if after is not None:
        where += f" AND (updated_at, id) < (${len(args) + 1}::timestamptz, ${len(args) + 2}::text)"
        args += list(after)
    rows = await conn.fetch(
        f"""SELECT {_INCIDENT_COLUMNS} FROM escalation_incidents WHERE {where}
            ORDER BY updated_at DESC, id DESC LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}""",
        *args, limit, offset,
    )
    return [_incident(r) for r in rows]


async def count_incidents(
    conn: asyncpg.Connection, *, community_id: str | None, state: IncidentState | None,
    level: IncidentLevel | None, since: datetime | None, scope: Scope = EVERYTHING,
) -> int:
    """How many incidents `list_incidents` pages through: the same filters and scope, every page."""
    where, args = _incidents_where(community_id=community_id, state=state, level=level, since=since, scope=scope)
    return int(await conn.fetchval(f"SELECT count(*) FROM escalation_incidents WHERE {where}", *args))


async def evidence(conn: asyncpg.Connection, incident_id: str, limit: int) -> list[Evidence]:
    """Every comment that is evidence of the incident's problem, oldest first (up to `limit`, the newest)."""
    rows = await conn.fetch(
        """SELECT * FROM (
               SELECT comment_id, external_id, label, score, flags, comment_created_at, attached_at
               FROM escalation_incident_comments WHERE incident_id = $1 AND is_evidence
               ORDER BY comment_created_at DESC, attached_at DESC LIMIT $2
           ) AS recent ORDER BY comment_created_at, attached_at""",
        incident_id, limit,
    )
    return [
        Evidence(
            comment_id=r["comment_id"], external_id=r["external_id"], label=r["label"], score=r["score"],
            flags=list(r["flags"] or []), created_at=r["comment_created_at"],
        )
        for r in rows
    ]


async def timeline(conn: asyncpg.Connection, incident_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT at, event, actor, detail FROM escalation_incident_events WHERE incident_id = $1 ORDER BY seq",
        incident_id,
    )
    return [{"at": r["at"], "event": r["event"], "actor": r["actor"], "detail": r["detail"]} for r in rows]


async def count_open_by_level(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT level, count(*) AS n FROM escalation_incidents WHERE state <> 'resolved' GROUP BY level"
    )
    return {r["level"]: r["n"] for r in rows}


async def create_silence(conn: asyncpg.Connection | asyncpg.Pool, s: Silence, now: datetime) -> None:
    await conn.execute(
        """INSERT INTO escalation_silences (id, matchers, starts_at, ends_at, created_by, comment, created_at)
           VALUES ($1, $2::jsonb, $3, $4, $5, $6, $7)""",
        s.id, json.dumps(dict(s.matchers)), s.starts_at, s.ends_at, s.created_by, s.comment, now,
    )


# A silence's community, for scopes: a silence without a community matcher (NULL here) matches every
# community, so only an identity whose scope is everything sees it (`Scope.sql` is TRUE only then).
SILENCE_COMMUNITY = "(matchers->>'community_id')"


def _silences_where(active_at: datetime | None, scope: Scope) -> tuple[str, list[Any]]:
    in_scope, params = scope.sql(SILENCE_COMMUNITY, first_param=2)
    return (f"($1::timestamptz IS NULL OR (expired_at IS NULL AND ends_at > $1)) AND {in_scope}",
            [active_at, *params])


async def list_silences(
    conn: asyncpg.Connection | asyncpg.Pool, *, active_at: datetime | None, scope: Scope = EVERYTHING,
    after: tuple[datetime, str] | None = None, limit: int = 500,
) -> list[Silence]:
    """Newest first (ties by id), within `scope`; `after` is the (created_at, id) the previous page ended on."""
    where, args = _silences_where(active_at, scope)
    if after is not None:
        where += f" AND (created_at, id) < (${len(args) + 1}::timestamptz, ${len(args) + 2}::text)"
        args += list(after)
    rows = await conn.fetch(
        f"""SELECT * FROM escalation_silences WHERE {where}
            ORDER BY created_at DESC, id DESC LIMIT ${len(args) + 1}""",
        *args, limit,
    )
    return [_silence(r) for r in rows]


async def count_silences(
    conn: asyncpg.Connection | asyncpg.Pool, *, active_at: datetime | None, scope: Scope = EVERYTHING
) -> int:
    where, args = _silences_where(active_at, scope)
    return int(await conn.fetchval(f"SELECT count(*) FROM escalation_silences WHERE {where}", *args))


async def get_silence(
    conn: asyncpg.Connection | asyncpg.Pool, silence_id: str, scope: Scope = EVERYTHING
) -> Silence | None:
    in_scope, params = scope.sql(SILENCE_COMMUNITY, first_param=2)
    row = await conn.fetchrow(f"SELECT * FROM escalation_silences WHERE id = $1 AND {in_scope}",
                              silence_id, *params)
    return _silence(row) if row else None


async def expire_silence(
    conn: asyncpg.Connection | asyncpg.Pool, silence_id: str, by: str, now: datetime, scope: Scope = EVERYTHING
) -> bool:
    """Expire a silence still running or still to come, within `scope`; False when there is none such."""
    in_scope, params = scope.sql(SILENCE_COMMUNITY, first_param=4)
    done = await conn.fetchval(
        f"""UPDATE escalation_silences SET expired_at = $2, expired_by = $3
            WHERE id = $1 AND expired_at IS NULL AND ends_at > $2 AND {in_scope} RETURNING id""",
        silence_id, now, by, *params,
    )
    return done is not None


async def prune(conn: asyncpg.Connection | asyncpg.Pool, before: datetime, limit: int) -> int:
    """Delete state older than `before`, at most `limit` rows per table per call (bounded work)."""
    n = 0
    for table, column in (("escalation_comments", "created_at"), ("escalation_buckets", "bucket_start")):
        status = await conn.execute(
            f"""DELETE FROM {table} WHERE ctid = ANY(ARRAY(
                    SELECT ctid FROM {table} WHERE {column} < $1 LIMIT $2))""",
            before, limit,
        )
        n += int(status.split()[-1])
    return n


def spike_key(community_id: str) -> ThreadKey:
    return (community_id, SPIKE_THREAD)
