"""Adapters: HTTP writes, outcome messages and field escalations in, merged events stored in PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from services.events import domain, metrics, repository
from services.events.domain import Change, Merged, Origin, Refusal, StoredEvent
from terrain import db
from terrain.contracts import EscalationMessage, EventIn, EventOutcomeMessage
from terrain.kafka import Decoded, Rejection
from terrain.runtime import ServiceRuntime

# Consumer names for the processed-message record, one per input stream.
OUTCOMES_CONSUMER = "events"
ESCALATIONS_CONSUMER = "events.escalations"


def _count(channel: str, result: Merged | Refusal) -> None:
    if isinstance(result, Refusal):
        metrics.REFUSED.labels(channel=channel, reason=result.kind.value).inc()
    elif result.change is Change.unchanged:
        metrics.UNCHANGED.labels(channel=channel).inc()
    else:
        metrics.LOGGED.labels(kind=result.event.kind, channel=channel).inc()


class EventLog:
    """Stores events under their ids, merging each write into what is there."""

    def __init__(
        self,
        rt: ServiceRuntime,
        clock: Callable[[], datetime],
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.rt = rt
        self.clock = clock
        self.new_id = new_id

    async def log(self, event: EventIn) -> Merged | Refusal:
        """One write from HTTP."""
        event_id = domain.http_event_id(event.id, self.new_id())
        now = self.clock()
        async with self.rt.pool.acquire() as conn, conn.transaction():
            stored = await repository.lock_events(conn, [event_id])
            result = domain.merge(stored.get(event_id), event_id, event, Origin.http, now)
            if isinstance(result, Merged) and result.change is not Change.unchanged:
                await repository.save(conn, [result.event])
        _count("http", result)
        return result

    async def get(self, event_id: str) -> StoredEvent | None:
        return await repository.get(self.rt.pool, event_id)

    async def find(
        self, *, community_id: str | None, kind: str | None, incident_id: str | None, limit: int, offset: int
    ) -> list[StoredEvent]:
        return await repository.list_events(
            self.rt.pool,
            community_id=community_id,
            kind=kind,
            incident_id=incident_id,
            limit=limit,
            offset=offset,
        )

    async def on_outcomes(self, batch: list[Decoded[EventOutcomeMessage]]) -> list[Rejection]:
        """`terrain.events.outcomes.v1`: apply each message once, in order; refused writes are rejected."""
        # The same message twice in one batch is a redelivery too: keep its first copy.
        unique = list({d.message.message_id: d for d in batch}.values())
        now = self.clock()
        async with self.rt.pool.acquire() as conn, conn.transaction():
            fresh = await db.claim_new(conn, OUTCOMES_CONSUMER, [d.message.message_id for d in unique])
            writes = [
                (d, domain.outcome_event_id(d.message.event.id, d.message.message_id), d.message.event)
                for d in unique
                if d.message.message_id in fresh
            ]
            stored = await repository.lock_events(conn, [event_id for _, event_id, _ in writes])
            folded = domain.fold(stored, writes, Origin.topic, now)
            await repository.save(conn, list(folded.final.values()))
            refused = [a for a in folded.applied if isinstance(a.result, Refusal)]
            await db.release_claims(conn, OUTCOMES_CONSUMER, [a.item.message.message_id for a in refused])
        metrics.REDELIVERED.labels(stream="outcomes").inc(len(batch) - len(writes))
        for a in folded.applied:
            _count("topic", a.result)
        return [
            Rejection(a.item.record, f"refused ({a.result.kind.value}): {a.result.field}: {a.result.reason}")
            for a in refused
            if isinstance(a.result, Refusal)
        ]

    async def on_escalations(self, batch: list[Decoded[EscalationMessage]]) -> list[Rejection]:
        """`terrain.escalations.v1`: a field-target escalation plans a pending field visit, once."""
        unique = list({d.message.message_id: d.message for d in batch}.values())
        now = self.clock()
        async with self.rt.pool.acquire() as conn, conn.transaction():
            fresh = await db.claim_new(conn, ESCALATIONS_CONSUMER, [m.message_id for m in unique])
            todo = [m for m in unique if m.message_id in fresh]
            plans: dict[str, StoredEvent] = {}
            ignored: list[str] = []
            for m in todo:
                plan = domain.plan_field_visit(m, now)
                if plan is None:
                    ignored.append(m.target.value)
                else:
                    plans.setdefault(plan.id, plan)
            stored = await repository.lock_events(conn, list(plans))
            # A visit already logged under that id (planned before, or reported by the field team) stays.
            new = [p for event_id, p in plans.items() if event_id not in stored]
            await repository.save(conn, new)
        metrics.REDELIVERED.labels(stream="escalations").inc(len(batch) - len(todo))
        for target in ignored:
            metrics.ESCALATIONS.labels(target=target, outcome="ignored").inc()
        metrics.ESCALATIONS.labels(target="field", outcome="planned").inc(len(new))
        metrics.ESCALATIONS.labels(target="field", outcome="already_planned").inc(len(plans) - len(new))
        for p in new:
            metrics.LOGGED.labels(kind=p.kind, channel="escalation").inc()
        return []
