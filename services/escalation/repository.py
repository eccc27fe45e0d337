"""asyncpg queries on escalation's own tables: incidents, their attached comments and their timeline."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from services.escalation.domain import Attachment, CommentKey, Incident, Step, ThreadKey
from terrain.contracts import Evidence, IncidentLevel, IncidentState

_INCIDENT_COLUMNS = """id, community_id, thread_id, level, reason, state, opened_at, updated_at,
    acknowledged_at, resolved_at, comment_count, negative_count, recommended_actions, recent_evidence, place,
    cascade_threshold, ack_deadline_s, escalated_at, ack_deadline, seq"""


def _incident(row: asyncpg.Record) -> Incident:
    return Incident(
        id=row["id"], community_id=row["community_id"], thread_id=row["thread_id"],
        level=IncidentLevel(row["level"]), reason=row["reason"], state=IncidentState(row["state"]),
        opened_at=row["opened_at"], updated_at=row["updated_at"],
        acknowledged_at=row["acknowledged_at"], resolved_at=row["resolved_at"],
        comment_count=row["comment_count"], negative_count=row["negative_count"],
        recommended_actions=tuple(json.loads(row["recommended_actions"])),
        evidence=tuple(Evidence.model_validate(e) for e in json.loads(row["recent_evidence"])),
        place=row["place"], cascade_threshold=row["cascade_threshold"], ack_deadline_s=row["ack_deadline_s"],
        escalated_at=row["escalated_at"], ack_deadline=row["ack_deadline"], seq=row["seq"],
    )


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
        [c for c, _ in threads], [t for _, t in threads],
    )


async def load_open(conn: asyncpg.Connection, threads: Sequence[ThreadKey]) -> dict[ThreadKey, Incident]:
    """The in-progress incident of each thread, row-locked until the transaction ends."""
    if not threads:
        return {}
    rows = await conn.fetch(
        f"""SELECT {_INCIDENT_COLUMNS} FROM escalation_incidents i
            JOIN unnest($1::text[], $2::text[]) AS u(c, t) ON i.community_id = u.c AND i.thread_id = u.t
            WHERE i.state <> 'resolved' ORDER BY i.id FOR UPDATE OF i""",
        [c for c, _ in threads], [t for _, t in threads],
    )
    return {(r["community_id"], r["thread_id"]): _incident(r) for r in rows}


async def attached(conn: asyncpg.Connection, comments: Sequence[CommentKey]) -> dict[CommentKey, str]:
    """Which of these comments are already attached to an incident (any state), and to which."""
    if not comments:
        return {}
    rows = await conn.fetch(
        """SELECT a.community_id, a.comment_id, a.incident_id FROM escalation_incident_comments a
           JOIN unnest($1::text[], $2::text[]) AS u(c, id) ON a.community_id = u.c AND a.comment_id = u.id""",
        [c for c, _ in comments], [i for _, i in comments],
    )
    return {(r["community_id"], r["comment_id"]): r["incident_id"] for r in rows}


async def save_incidents(conn: asyncpg.Connection, incidents: Iterable[Incident]) -> None:
    await conn.executemany(
        f"""INSERT INTO escalation_incidents ({_INCIDENT_COLUMNS})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb, $14::jsonb, $15, $16, $17,
                    $18, $19, $20)
            ON CONFLICT (id) DO UPDATE SET
                level = EXCLUDED.level, reason = EXCLUDED.reason, state = EXCLUDED.state,
                updated_at = EXCLUDED.updated_at, acknowledged_at = EXCLUDED.acknowledged_at,
                resolved_at = EXCLUDED.resolved_at, comment_count = EXCLUDED.comment_count,
                negative_count = EXCLUDED.negative_count, recommended_actions = EXCLUDED.recommended_actions,
                recent_evidence = EXCLUDED.recent_evidence, place = EXCLUDED.place,
                escalated_at = EXCLUDED.escalated_at, ack_deadline = EXCLUDED.ack_deadline,
                seq = EXCLUDED.seq""",
        [
            (
                i.id, i.community_id, i.thread_id, i.level.value, i.reason, i.state.value, i.opened_at,
                i.updated_at, i.acknowledged_at, i.resolved_at, i.comment_count, i.negative_count,
                json.dumps(list(i.recommended_actions), ensure_ascii=False),
                json.dumps([e.model_dump(mode="json") for e in i.evidence], ensure_ascii=False),
                i.place, i.cascade_threshold, i.ack_deadline_s, i.escalated_at, i.ack_deadline, i.seq,
            )
            for i in incidents
        ],
    )


async def save_attachments(
    conn: asyncpg.Connection, attachments: Iterable[Attachment], now: datetime
) -> None:
    await conn.executemany(
        """INSERT INTO escalation_incident_comments
               (incident_id, comment_id, community_id, thread_id, external_id, label, score, flags,
                is_evidence, comment_created_at, attached_at, message_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
           ON CONFLICT (incident_id, comment_id) DO NOTHING""",
        [
            (
                a.incident_id, a.comment_id, a.community_id, a.thread_id, a.external_id, a.label, a.score,
                list(a.flags), a.is_evidence, a.created_at, now, a.message_id,
            )
            for a in attachments
        ],
    )


async def save_steps(conn: asyncpg.Connection, steps: Iterable[Step]) -> None:
    await conn.executemany(
        """INSERT INTO escalation_incident_events (incident_id, seq, at, event, actor, detail)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        [(s.incident.id, s.seq, s.at, s.event.value, s.actor, s.detail) for s in steps],
    )


async def get_incident(
    conn: asyncpg.Connection, incident_id: str, *, for_update: bool = False
) -> Incident | None:
    row = await conn.fetchrow(
        f"SELECT {_INCIDENT_COLUMNS} FROM escalation_incidents WHERE id = $1"
        + (" FOR UPDATE" if for_update else ""),
        incident_id,
    )
    return _incident(row) if row else None


async def list_incidents(
    conn: asyncpg.Connection,
    *,
    community_id: str | None,
    state: IncidentState | None,
    level: IncidentLevel | None,
    limit: int,
    offset: int,
) -> list[Incident]:
    """Most recently updated first."""
    rows = await conn.fetch(
        f"""SELECT {_INCIDENT_COLUMNS} FROM escalation_incidents
            WHERE ($1::text IS NULL OR community_id = $1)
              AND ($2::text IS NULL OR state = $2)
              AND ($3::text IS NULL OR level = $3)
            ORDER BY updated_at DESC, id LIMIT $4 OFFSET $5""",
        community_id, state.value if state else None, level.value if level else None, limit, offset,
    )
    return [_incident(r) for r in rows]


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
            flags=list(r["flags"]), created_at=r["comment_created_at"],
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
