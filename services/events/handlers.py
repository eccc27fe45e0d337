"""Adapters: HTTP writes, outcome messages, field escalations and scored comments in; PostgreSQL out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from services.events import domain, engagement, impact, metrics, repository
from services.events.domain import Change, Merged, Origin, Refusal, StoredEvent
from services.events.visits import Action, Transition
from terrain import db
from terrain.access.model import EVERYTHING, Scope
from terrain.contracts import EscalationMessage, EventIn, EventOutcomeMessage, ScoredCommentMessage
from terrain.kafka import Decoded, Rejection
from terrain.runtime import ServiceRuntime

log = logging.getLogger("terrain.events")

# Consumer names for the processed-message record, one per input stream.
OUTCOMES_CONSUMER = "events"
ESCALATIONS_CONSUMER = "events.escalations"
ENGAGEMENT_CONSUMER = "events.engagement"


def _count(channel: str, result: Merged | Refusal) -> None:
    if isinstance(result, Refusal):
        metrics.REFUSED.labels(channel=channel, reason=result.kind.value).inc()
    elif result.change is Change.unchanged:
        metrics.UNCHANGED.labels(channel=channel).inc()
    else:
        metrics.LOGGED.labels(kind=result.event.kind, channel=channel).inc()


def _observe(events: dict[str, StoredEvent], transitions: Sequence[Transition]) -> None:
    """Metrics of the lifecycle steps a committed transaction kept."""
    for t in transitions:
        event = events.get(t.event_id)
        if event is None:
            continue
        metrics.TRANSITIONS.labels(kind=event.kind, status=t.after.value, action=t.action.value).inc()
        if t.after.value == "done" and t.before != t.after:
            metrics.CLOSED.labels(kind=event.kind, result=event.outcome.result).inc()
        timing = domain.escalation_to_visit(event, t)
        if timing is not None:
            metrics.ESCALATION_TO_VISIT.labels(step=timing[0]).observe(timing[1])


class EventLog:
    """Stores events under their ids, merging each write into what is there, and measures engagement."""

    def __init__(
        self,
        rt: ServiceRuntime,
        clock: Callable[[], datetime],
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        *,
        retention_days: int = 120,
        schedule_grace: timedelta = domain.SCHEDULE_GRACE,
    ) -> None:
        self.rt = rt
        self.clock = clock
        self.new_id = new_id
        self.retention_days = retention_days
        self.schedule_grace = schedule_grace
        self._maintenance: asyncio.Task[None] | None = None

    # --- HTTP ----------------------------------------------------------------------------------------

    async def log(self, event: EventIn, actor: str) -> Merged | Refusal:
        """One write from HTTP by `actor` (the caller's identity: a name in the body is not taken)."""
        event_id = domain.http_event_id(event.id, self.new_id())
        now = self.clock()
        event = event.model_copy(update={"actor": None})
        async with self.rt.pool.acquire() as conn, conn.transaction():
            # Unscoped on purpose: ids are global, so an id taken by a community out of the caller's scope must
            # still refuse the write (409) rather than overwrite that event.
            stored = await repository.lock_events(conn, [event_id])
            result = domain.merge(stored.get(event_id), event_id, event, Origin.http, now, actor,
                                  self.schedule_grace)
            if isinstance(result, Merged) and result.change is not Change.unchanged:
                await repository.save(conn, [result.event])
                await repository.add_transitions(conn, result.transitions)
        _count("http", result)
        if isinstance(result, Merged):
            _observe({event_id: result.event}, result.transitions)
        return result

    async def act(
        self, event_id: str, action: Action, changes: dict[str, Any], actor: str, note: str | None,
        scope: Scope = EVERYTHING,
    ) -> Merged | Refusal:
        """An operator's schedule, assign, close or cancel; an event outside `scope` is missing."""
        now = self.clock()
        async with self.rt.pool.acquire() as conn, conn.transaction():
            stored = await repository.lock_events(conn, [event_id], scope)
            result = domain.act(stored.get(event_id), event_id, action, changes, actor, now, note,
                                self.schedule_grace)
            if isinstance(result, Merged) and result.change is not Change.unchanged:
                await repository.save(conn, [result.event])
                await repository.add_transitions(conn, result.transitions)
        _count("http", result)
        if isinstance(result, Merged):
            _observe({event_id: result.event}, result.transitions)
        return result

    async def get(self, event_id: str, scope: Scope = EVERYTHING) -> StoredEvent | None:
        return await repository.get(self.rt.pool, event_id, scope)

    async def history(self, event_id: str, scope: Scope = EVERYTHING) -> list[dict[str, Any]]:
        return await repository.transitions_of(self.rt.pool, event_id, scope)

    async def find(
        self,
        *,
        scope: Scope = EVERYTHING,
        community_id: str | None,
        kind: str | None,
        incident_id: str | None,
        status: str | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int,
        offset: int = 0,
    ) -> tuple[list[StoredEvent], int, bool]:
        """A page of events in `scope` (newest start first), how many match in all, and whether more follow."""
        filters: dict[str, Any] = {"scope": scope, "community_id": community_id, "kind": kind,
                                   "incident_id": incident_id, "status": status}
        # One more row than asked says whether a next page exists.
        rows = await repository.list_events(self.rt.pool, **filters, after=after, limit=limit + 1, offset=offset)
        total = await repository.count_events(self.rt.pool, **filters)
        return rows[:limit], total, len(rows) > limit

    async def impact(
        self, event_id: str, window_days: int, scope: Scope = EVERYTHING
    ) -> impact.ImpactReport | None:
        """The impact report of one event in `scope`, from the rollups; its verdict is kept for the metrics.

        Comparison communities come from `scope` only: a report never holds numbers of a community its reader
        may not see (the price: a reader scoped to one community gets the before/after change alone).
        """
        event = await repository.get(self.rt.pool, event_id, scope)
        if event is None:
            return None
        span = _span(event)
        w = impact.windows_of(span, window_days)
        first = datetime.combine(w.before_from, datetime.min.time(), tzinfo=UTC)
        last = datetime.combine(w.after_to, datetime.max.time(), tzinfo=UTC)
        others = await repository.events_touching(
            self.rt.pool, first - timedelta(days=1), last + timedelta(days=1), scope)
        daily = await repository.daily_between(self.rt.pool, w.before_from, w.after_to, scope=scope)
        now = self.clock()
        # statsmodels fits take milliseconds each; off the event loop all the same.
        report = await asyncio.to_thread(
            impact.assess, span, [_span(o) for o in others if o.id != event_id], daily, now, window_days=window_days
        )
        headline = report.did.get(impact.VERDICT_OUTCOME) if report.did else None
        await repository.save_estimate(
            self.rt.pool, event_id, event.kind, report.verdict.value,
            headline.estimate if headline else None, headline.ci_low if headline else None,
            headline.ci_high if headline else None, now,
        )
        metrics.IMPACT_REPORTS.labels(verdict=report.verdict.value).inc()
        for code, _ in report.limitations:
            metrics.IMPACT_LIMITATIONS.labels(limitation=code.value).inc()
        return report

    # --- topics --------------------------------------------------------------------------------------

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
            folded = domain.fold(stored, writes, Origin.topic, now, actor_of=lambda d: d.message.producer)
            await repository.save(conn, list(folded.final.values()))
            await repository.add_transitions(conn, folded.transitions)
            refused = [a for a in folded.applied if isinstance(a.result, Refusal)]
            await db.release_claims(conn, OUTCOMES_CONSUMER, [a.item.message.message_id for a in refused])
        metrics.REDELIVERED.labels(stream="outcomes").inc(len(batch) - len(writes))
        for a in folded.applied:
            _count("topic", a.result)
        _observe(folded.final, folded.transitions)
        return [
            Rejection(a.item.record, f"refused ({a.result.kind.value}): {a.result.field}: {a.result.reason}")
            for a in refused
            if isinstance(a.result, Refusal)
        ]

    async def on_escalations(self, batch: list[Decoded[EscalationMessage]]) -> list[Rejection]:
        """`terrain.escalations.v1`: a field-target escalation plans a requested field visit, once."""
        unique = list({d.message.message_id: d.message for d in batch}.values())
        now = self.clock()
        async with self.rt.pool.acquire() as conn, conn.transaction():
            fresh = await db.claim_new(conn, ESCALATIONS_CONSUMER, [m.message_id for m in unique])
            todo = [m for m in unique if m.message_id in fresh]
            plans: dict[str, tuple[StoredEvent, str]] = {}
            ignored: list[str] = []
            for m in todo:
                plan = domain.plan_field_visit(m, now)
                if plan is None:
                    ignored.append(m.target.value)
                else:
                    plans.setdefault(plan.id, (plan, m.producer))
            stored = await repository.lock_events(conn, list(plans))
            # A visit already logged under that id (planned before, or reported by the field team) stays.
            new = [(p, producer) for event_id, (p, producer) in plans.items() if event_id not in stored]
            await repository.save(conn, [p for p, _ in new])
            transitions = [domain.planned_transition(p, producer, now) for p, producer in new]
            await repository.add_transitions(conn, transitions)
        metrics.REDELIVERED.labels(stream="escalations").inc(len(batch) - len(todo))
        for target in ignored:
            metrics.ESCALATIONS.labels(target=target, outcome="ignored").inc()
        metrics.ESCALATIONS.labels(target="field", outcome="planned").inc(len(new))
        metrics.ESCALATIONS.labels(target="field", outcome="already_planned").inc(len(plans) - len(new))
        for p, _ in new:
            metrics.LOGGED.labels(kind=p.kind, channel="escalation").inc()
        _observe({p.id: p for p, _ in new}, transitions)
        return []

    async def on_scored(self, batch: list[Decoded[ScoredCommentMessage]]) -> list[Rejection]:
        """`terrain.comments.scored.v1`: keep each comment's latest fact, rebuild the days it touches."""
        unique = list({d.message.message_id: d.message for d in batch}.values())
        now = self.clock()
        first_day = engagement.horizon(now, self.retention_days)
        async with self.rt.pool.acquire() as conn, conn.transaction():
            fresh = await db.claim_new(conn, ENGAGEMENT_CONSUMER, [m.message_id for m in unique])
            facts = engagement.latest(engagement.fact_of(m) for m in unique if m.message_id in fresh)
            counted, too_old = engagement.split_by_horizon(facts, first_day)
            # In id order, so two overlapping batches (during a rebalance) lock rows in the same order.
            touched = await repository.upsert_facts(conn, sorted(counted, key=lambda f: f.comment_id))
            await repository.rebuild_daily(conn, sorted(k for k in touched if k[1] >= first_day), now)
        metrics.ENGAGEMENT_COMMENTS.labels(outcome="redelivered").inc(len(batch) - len(fresh))
        metrics.ENGAGEMENT_COMMENTS.labels(outcome="counted").inc(len(counted))
        metrics.ENGAGEMENT_COMMENTS.labels(outcome="too_old").inc(too_old)
        return []

    # --- upkeep ---------------------------------------------------------------------------------------

    async def maintain_once(self) -> None:
        """Retention for the per-comment facts, then the gauges from the database."""
        now = self.clock()
        purged = await repository.purge_facts(
            self.rt.pool, engagement.horizon(now, self.retention_days), ENGAGEMENT_CONSUMER,
            now - timedelta(days=self.retention_days),
        )
        metrics.ENGAGEMENT_PURGED.inc(purged)
        counts = await repository.gauge_counts(self.rt.pool)
        for status in ("requested", "scheduled"):
            metrics.OPEN_VISITS.labels(status=status).set(0)
        for r in counts["open_visits"]:
            metrics.OPEN_VISITS.labels(status=r["status"]).set(r["n"])
        metrics.BY_RESULT.clear()
        for r in counts["by_result"]:
            metrics.BY_RESULT.labels(kind=r["kind"], result=r["result"]).set(r["n"])
        metrics.IMPACT_ESTIMATES.clear()
        for r in counts["estimates"]:
            metrics.IMPACT_ESTIMATES.labels(kind=r["kind"], verdict=r["verdict"]).set(r["n"])
        metrics.ENGAGEMENT_FACTS.set(counts["facts"][0]["n"])

    def start_maintenance(self, interval_s: float) -> None:
        async def loop() -> None:
            while True:
                try:
                    await self.maintain_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # upkeep must outlive a database outage
                    log.warning("events upkeep failed: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(interval_s)

        self._maintenance = asyncio.create_task(loop(), name="events-upkeep")

    async def stop_maintenance(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
            self._maintenance = None


def _span(event: StoredEvent) -> impact.EventSpan:
    return impact.EventSpan(event.id, event.community_id, event.kind, event.status, event.starts_at, event.ends_at)
