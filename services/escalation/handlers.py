"""Adapters: scored-comment batches and operator actions in; incidents stored, lifecycle messages out."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from services.escalation import domain, metrics, repository
from services.escalation.domain import Book, Decision, Policy, Refusal, Step
from terrain.contracts import (
    IncidentEventType,
    IncidentLevel,
    IncidentSnapshot,
    IncidentState,
    ScoredCommentMessage,
)
from terrain.db import claim_new
from terrain.kafka import Decoded, OutMessage, Rejection
from terrain.runtime import ServiceRuntime
from terrain.topics import ESCALATIONS, INCIDENTS

log = logging.getLogger("terrain.escalation")

CONSUMER = "escalation"
DETAIL_EVIDENCE_LIMIT = 500


class UnknownIncident(LookupError):
    pass


class IllegalTransition(RuntimeError):
    pass


class Escalator:
    """Turns scored comments into incidents and applies operators' acknowledgements and resolutions."""

    def __init__(self, rt: ServiceRuntime, policy: Policy, clock: Callable[[], datetime]) -> None:
        self.rt = rt
        self.policy = policy
        self.clock = clock
        self._gauge_task: asyncio.Task[None] | None = None

    def _out(self, steps: Sequence[Step], decisions: Sequence[Decision] = ()) -> list[OutMessage]:
        incidents_topic = self.rt.topic(INCIDENTS)
        out = [
            OutMessage.of(incidents_topic, s.incident.community_id, domain.incident_message(s)) for s in steps
        ]
        escalations_topic = self.rt.topic(ESCALATIONS)
        out += [
            OutMessage.of(escalations_topic, d.escalation.community_id, d.escalation)
            for d in decisions
            if d.escalation is not None
        ]
        return out

    async def on_scored(self, batch: list[Decoded[ScoredCommentMessage]]) -> list[Rejection]:
        """One transaction per batch: claim the ids, decide, store, enqueue; publish after commit."""
        now = self.clock()
        # A message repeated inside one batch is claimed once: keep its first occurrence.
        unique = list({d.message.message_id: d.message for d in reversed(batch)}.values())[::-1]
        async with self.rt.pool.acquire() as conn, conn.transaction():
            fresh_ids = await claim_new(conn, CONSUMER, [m.message_id for m in unique])
            fresh = [m for m in unique if m.message_id in fresh_ids]
            threads = sorted({(m.comment.community_id, m.comment.thread_id) for m in fresh})
            await repository.lock_threads(conn, threads)
            book = Book(
                open_by_thread=await repository.load_open(conn, threads),
                attached=await repository.attached(
                    conn, sorted({(m.comment.community_id, m.comment.comment_id) for m in fresh})
                ),
            )
            decisions = domain.decide_batch(fresh, book, self.policy, now)
            latest = {d.incident.id: d.incident for d in decisions if d.incident is not None}
            steps = [s for d in decisions for s in d.steps]
            await repository.save_incidents(conn, latest.values())
            await repository.save_attachments(conn, [d.attachment for d in decisions if d.attachment], now)
            await repository.save_steps(conn, steps)
            out = self._out(steps, decisions)
            ids = await self.rt.outbox.enqueue(conn, out)
        await self.rt.outbox.flush(ids, out)
        self._count(decisions, steps, redelivered=len(batch) - len(fresh))
        return []

    def _count(self, decisions: Sequence[Decision], steps: Sequence[Step], redelivered: int) -> None:
        for action, n in collections.Counter(d.action.value for d in decisions).items():
            metrics.COMMENTS.labels(decision=action).inc(n)
        if redelivered:
            metrics.COMMENTS.labels(decision=domain.Action.duplicate.value).inc(redelivered)
        for s in steps:
            metrics.TRANSITIONS.labels(event=s.event.value).inc()
            if s.event is IncidentEventType.opened:
                metrics.INCIDENTS_OPENED.labels(level=s.incident.level.value).inc()
            if s.event in (IncidentEventType.opened, IncidentEventType.escalated):
                # Ids and levels only: comment text and authors stay out of logs.
                log.info(
                    "incident %s", s.event.value,
                    extra={"incident_id": s.incident.id, "community_id": s.incident.community_id,
                           "level": s.incident.level.value},
                )

    async def transition(
        self, incident_id: str, event: IncidentEventType, actor: str, note: str | None
    ) -> IncidentSnapshot:
        """Acknowledge or resolve; raises UnknownIncident or IllegalTransition (with the reason)."""
        now = self.clock()
        async with self.rt.pool.acquire() as conn, conn.transaction():
            incident = await repository.get_incident(conn, incident_id, for_update=True)
            if incident is None:
                raise UnknownIncident(incident_id)
            step = domain.transition(incident, event, actor, note, now)
            if isinstance(step, Refusal):
                raise IllegalTransition(step.reason)
            await repository.save_incidents(conn, [step.incident])
            await repository.save_steps(conn, [step])
            out = self._out([step])
            ids = await self.rt.outbox.enqueue(conn, out)
        try:
            await self.rt.outbox.flush(ids, out)
        except Exception as exc:
            # The transition is committed and its message is in the outbox: the relay publishes it later,
            # so the person who acted gets their answer rather than an error for something that happened.
            log.warning("lifecycle message left to the outbox relay: %s", type(exc).__name__)
        metrics.TRANSITIONS.labels(event=event.value).inc()
        log.info("incident %s", event.value, extra={"incident_id": incident_id})
        return step.incident.snapshot()

    async def list_incidents(
        self, *, community_id: str | None, state: IncidentState | None, level: IncidentLevel | None,
        limit: int, offset: int,
    ) -> list[IncidentSnapshot]:
        async with self.rt.pool.acquire() as conn:
            found = await repository.list_incidents(
                conn, community_id=community_id, state=state, level=level, limit=limit, offset=offset
            )
        return [i.snapshot() for i in found]

    async def detail(self, incident_id: str) -> dict[str, Any]:
        """The snapshot with every piece of evidence (not only the recent ones) and the audit timeline."""
        async with self.rt.pool.acquire() as conn:
            incident = await repository.get_incident(conn, incident_id)
            if incident is None:
                raise UnknownIncident(incident_id)
            evidence = await repository.evidence(conn, incident_id, DETAIL_EVIDENCE_LIMIT)
            timeline = await repository.timeline(conn, incident_id)
        body = incident.snapshot().model_copy(update={"evidence": evidence}).model_dump(mode="json")
        body["place"] = incident.place
        body["ack_deadline"] = incident.ack_deadline.isoformat() if incident.ack_deadline else None
        body["policy"] = {
            "cascade_threshold": incident.cascade_threshold, "ack_deadline_s": incident.ack_deadline_s,
        }
        body["timeline"] = [{**t, "at": t["at"].isoformat()} for t in timeline]
        return body

    async def refresh_gauge(self) -> None:
        async with self.rt.pool.acquire() as conn:
            counts = await repository.count_open_by_level(conn)
        for level in IncidentLevel:
            metrics.OPEN_INCIDENTS.labels(level=level.value).set(counts.get(level.value, 0))

    def start_gauge(self, interval_s: float) -> None:
        async def loop() -> None:
            while True:
                try:
                    await self.refresh_gauge()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a database blip must not kill the refresher
                    log.warning("open-incident gauge refresh failed: %s", type(exc).__name__)
                await asyncio.sleep(interval_s)

        self._gauge_task = asyncio.create_task(loop(), name="escalation-open-incidents-gauge")

    async def stop_gauge(self) -> None:
        if self._gauge_task is not None:
            self._gauge_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gauge_task
            self._gauge_task = None
