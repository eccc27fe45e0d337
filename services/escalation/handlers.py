"""Adapters: scored-comment batches, due timers and operator actions in; state stored, messages out.

Each path loads what the engine needs, calls it, and stores its effects in one transaction (with the
processed-message record, the outbox rows and the notification log rows), then publishes after commit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.escalation import domain, metrics, repository
from services.escalation.domain import Book, Effects, Engine, Incident, Refusal, Silence, Step, Unchanged
from services.escalation.notifiers import Notification, NotificationLog
from services.escalation.policy import PolicyFile
from terrain.access.model import EVERYTHING, Scope
from terrain.contracts import (
    IncidentEventType,
    IncidentLevel,
    IncidentSnapshot,
    IncidentState,
    ScoredCommentMessage,
)
from terrain.contracts.base import utc_text
from terrain.db import claim_new
from terrain.kafka import Decoded, OutMessage, Rejection
from terrain.runtime import ServiceRuntime
from terrain.topics import ESCALATIONS, INCIDENTS

log = logging.getLogger("terrain.escalation")

CONSUMER = "escalation"
DETAIL_EVIDENCE_LIMIT = 500
SILENCE_CACHE = timedelta(seconds=1)


class UnknownIncident(LookupError):
    pass


class UnknownSilence(LookupError):
    pass


class IllegalTransition(RuntimeError):
    """A command the incident's state forbids: why, and the state."""

    def __init__(self, reason: str, state: IncidentState) -> None:
        super().__init__(reason)
        self.state = state


class Escalator:
    """Turns scored comments into incidents, fires timers and applies operators' actions."""

    def __init__(self, rt: ServiceRuntime, policies: PolicyFile, clock: Callable[[], datetime],
                 notifications: NotificationLog | None = None) -> None:
        self.rt = rt
        self.engine = Engine(policies)
        self.clock = clock
        self.notifications = notifications
        self._tasks: list[asyncio.Task[None]] = []
        self._silence_cache: tuple[datetime, list[Silence]] | None = None

    @property
    def policies(self) -> PolicyFile:
        return self.engine.policies

    def use_policies(self, policies: PolicyFile) -> None:
        """Take a new policy file; incidents already open keep the policy frozen into them."""
        self.engine = Engine(policies)

    # -- storing effects

    def _out(self, fx: Effects) -> list[OutMessage]:
        incidents_topic = self.rt.topic(INCIDENTS)
        out = [
            OutMessage.of(incidents_topic, s.incident.community_id, domain.incident_message(s))
            for s in domain.coalesce(fx.steps)
        ]
        escalations_topic = self.rt.topic(ESCALATIONS)
        out += [OutMessage.of(escalations_topic, e.community_id, e) for e in fx.escalations]
        return out

    async def _store(self, conn: asyncpg.Connection, fx: Effects, now: datetime) -> tuple[list[int], list[OutMessage]]:
        sizes = {c: int(self.policies.community(c).spike.bucket.total_seconds()) for c, _ in fx.bucket_deltas}
        out = self._out(fx)
        # Every write of the batch and its outbox rows in one statement: one round trip instead of eight.
        rows = await repository.save_all(
            conn,
            [
                repository.incidents_part(fx.incidents.values()),
                repository.attachments_part(fx.attachments, now),
                repository.steps_part(fx.steps),
                repository.seen_part(list(fx.seen.values())),
                repository.buckets_part(fx.bucket_deltas, sizes),
                repository.first_seen_part(fx.first_seen),
                repository.timers_part(fx.timers),
            ],
            returning=self.rt.outbox.enqueue_statement(out) if out else None,
        )
        if fx.notices and self.notifications is not None:
            await self.notifications.enqueue(conn, [_notification(n) for n in fx.notices])
        return [r["id"] for r in rows], out

    async def _publish(self, ids: list[int], out: list[OutMessage], fx: Effects) -> None:
        await self.rt.outbox.flush(ids, out)
        if fx.notices and self.notifications is not None:
            self.notifications.wake()

    # -- scored comments

    async def _book(self, conn: asyncpg.Connection, fresh: Sequence[ScoredCommentMessage], now: datetime) -> Book:
        communities = sorted({m.comment.community_id for m in fresh})
        threads = sorted({(m.comment.community_id, m.comment.thread_id) for m in fresh})
        with_spikes = sorted({*threads, *(repository.spike_key(c) for c in communities)})
        await repository.lock_threads(conn, with_spikes)
        policy = self.policies.community
        bucket_since: dict[str, tuple[int, datetime]] = {}
        for m in fresh:
            p = policy(m.comment.community_id).spike
            at = domain.bucket_start(m.comment.created_at, p.bucket) - p.bucket * p.lookback_buckets
            prev = bucket_since.get(m.comment.community_id)
            bucket_since[m.comment.community_id] = (
                int(p.bucket.total_seconds()), min(at, prev[1]) if prev else at,
            )
        authors = sorted({(m.comment.community_id, k) for m in fresh if (k := domain.author_key(m))})
        oldest = min(m.comment.created_at for m in fresh)
        lookback = max(policy(c).respond.regular_lookback for c in communities)
        comments = sorted({(m.comment.community_id, m.comment.comment_id) for m in fresh})
        thread_set = set(threads)
        # After the locks, two round trips: the incidents (the open ones row-locked), then every other part.
        open_by_thread, resolved, others = await repository.load_incidents(
            conn, with_spikes, now, communities, self.policies.inhibit
        )
        # A thread's window is read only where a comment of the batch may complete a cascade: one that may be
        # a sure negative (labelled negative, confident enough for some rule of the policy), in a thread whose
        # incident may still cascade. A busy thread already escalated, or one flooded with negatives too
        # unsure to count, is not read again with every batch. The batch's own comments are read wherever
        # they fall (edits, redeliveries).
        thread_since: dict[domain.ThreadKey, datetime] = {}
        for m in fresh:
            k = (m.comment.community_id, m.comment.thread_id)
            rules = policy(k[0])
            if not domain.may_be_sure(m, rules) or not domain.may_cascade(open_by_thread.get(k)):
                continue
            at = m.comment.created_at - rules.cascade.window
            thread_since[k] = min(at, thread_since.get(k, at))
        attached, seen, negatives, buckets, first_seen = await repository.fetch_all(conn, [
            repository.attached_query(comments),
            repository.thread_comments_query(thread_since, comments),
            repository.author_negatives_query(authors, oldest - lookback),
            repository.buckets_query(bucket_since),
            repository.first_seen_query(communities),
        ])
        return Book(
            open_by_thread=open_by_thread,
            resolved_by_thread={k: i for k, i in resolved.items() if k in thread_set},
            attached=repository.attached_of(attached),
            thread_comments=repository.thread_comments_of(seen),
            author_negatives=repository.author_negatives_of(negatives),
            buckets=repository.buckets_of(buckets),
            first_seen=repository.first_seen_of(first_seen),
            silences=await self._silences(conn, now),
            others=others,
        )

    async def _silences(self, conn: asyncpg.Connection, now: datetime) -> list[Silence]:
        """Active silences, read at most once a second: they change by hand, batches come by the hundred."""
        if self._silence_cache is None or now - self._silence_cache[0] > SILENCE_CACHE or now < self._silence_cache[0]:
            self._silence_cache = (now, await repository.active_silences(conn, now))
        return [s for s in self._silence_cache[1] if s.active(now)]

    async def on_scored(self, batch: list[Decoded[ScoredCommentMessage]]) -> list[Rejection]:
        """One transaction per batch: claim the ids, load state, decide, store, enqueue; publish after commit."""
        now = self.clock()
        # A message repeated inside one batch is claimed once: keep its first occurrence.
        unique = list({d.message.message_id: d.message for d in reversed(batch)}.values())[::-1]
        async with self.rt.pool.acquire() as conn, conn.transaction():
            fresh_ids = await claim_new(conn, CONSUMER, [m.message_id for m in unique])
            fresh = [m for m in unique if m.message_id in fresh_ids]
            if not fresh:
                fx = Effects()
                ids: list[int] = []
                out: list[OutMessage] = []
            else:
                book = await self._book(conn, fresh, now)
                fx = self.engine.decide_batch(fresh, book, now)
                ids, out = await self._store(conn, fx, now)
        await self._publish(ids, out, fx)
        self._count(fx, redelivered=len(batch) - len(fresh))
        return []

    def _count(self, fx: Effects, redelivered: int = 0) -> None:
        for action, n in collections.Counter(d.action.value for d in fx.decisions).items():
            metrics.COMMENTS.labels(decision=action).inc(n)
        if redelivered:
            metrics.COMMENTS.labels(decision=domain.Action.duplicate.value).inc(redelivered)
        for s in fx.steps:
            metrics.TRANSITIONS.labels(event=s.event).inc()
            if s.event == "opened":
                metrics.INCIDENTS_OPENED.labels(level=s.incident.level.value).inc()
            if s.event in ("opened", "escalated", "muted", "reopened"):
                # Ids and levels only: comment text and authors stay out of logs.
                log.info(
                    "incident %s", s.event,
                    extra={"incident_id": s.incident.id, "community_id": s.incident.community_id,
                           "level": s.incident.level.value},
                )
        for e in fx.escalations:
            metrics.ESCALATIONS.labels(target=e.target.value, trigger=e.trigger or "other").inc()

    # -- timers

    async def fire_due_timers(self, limit: int = 100) -> int:
        """Fire what is due, once across replicas: claimed with SKIP LOCKED, marked fired in the same
        transaction as its effects. Returns how many timers were taken."""
        now = self.clock()
        async with self.rt.pool.acquire() as conn, conn.transaction():
            due = await repository.claim_due_timers(conn, now, limit)
            if not due:
                return 0
            incidents = await repository.lock_incidents(conn, sorted({t.incident_id for _, t in due}))
            communities = sorted({i.community_id for i in incidents.values()})
            others = await repository.load_inhibitors(conn, communities, self.policies.inhibit)
            book = Book(silences=await repository.active_silences(conn, now), others=others)
            total = Effects()
            fired: list[tuple[int, str]] = []
            for timer_id, timer in due:
                inc = incidents.get(timer.incident_id)
                if inc is None:
                    fired.append((timer_id, "stale: incident gone"))
                    continue
                community = [o for o in others.values() if o.community_id == inc.community_id and o.id != inc.id]
                fx, why = self.engine.on_timer(inc, timer, now, book, community)
                fired.append((timer_id, why[:300]))
                outcome = "stale" if why.startswith("stale") else "fired"
                metrics.TIMERS.labels(kind=timer.kind.value, outcome=outcome).inc()
                if fx.incidents:
                    incidents.update(fx.incidents)
                _merge(total, fx)
            ids, out = await self._store(conn, total, now)
            await repository.mark_fired(conn, fired, now)
        await self._publish(ids, out, total)
        self._count(total)
        return len(due)

    # -- people (every read and write within the caller's scope: a row outside it is as good as absent)

    async def transition(
        self, incident_id: str, event: IncidentEventType, actor: str, note: str | None, scope: Scope = EVERYTHING
    ) -> tuple[IncidentSnapshot, bool]:
        """Acknowledge or resolve: the incident as it stands after, and whether this changed it (a repeat does
        not). Raises UnknownIncident or IllegalTransition (with the reason and the state)."""
        now = self.clock()
        async with self.rt.pool.acquire() as conn, conn.transaction():
            incident = await repository.get_incident(conn, incident_id, for_update=True, scope=scope)
            if incident is None:
                raise UnknownIncident(incident_id)
            step = self.engine.transition(incident, event, actor, note, now)
            if isinstance(step, Refusal):
                raise IllegalTransition(step.reason, incident.state)
            if isinstance(step, Unchanged):
                return step.incident.snapshot(), False
            fx = Effects(incidents={step.incident.id: step.incident}, steps=[step])
            ids, out = await self._store(conn, fx, now)
        try:
            await self._publish(ids, out, fx)
        except Exception as exc:
            # The transition is committed and its message is in the outbox: the relay publishes it later,
            # so the person who acted gets their answer rather than an error for something that happened.
            log.warning("lifecycle message left to the outbox relay: %s", type(exc).__name__)
        metrics.TRANSITIONS.labels(event=event.value).inc()
        log.info("incident %s", event.value, extra={"incident_id": incident_id})
        return step.incident.snapshot(), True

    async def add_note(self, incident_id: str, actor: str, text: str, scope: Scope = EVERYTHING) -> dict[str, Any]:
        now = self.clock()
        async with self.rt.pool.acquire() as conn, conn.transaction():
            incident = await repository.get_incident(conn, incident_id, for_update=True, scope=scope)
            if incident is None:
                raise UnknownIncident(incident_id)
            step = domain.note_step(incident, actor, text, now)
            await repository.save_incidents(conn, [step.incident])
            await repository.save_steps(conn, [step])
        metrics.TRANSITIONS.labels(event="note").inc()
        return {"at": utc_text(now), "event": "note", "actor": actor, "detail": text}

    async def list_incidents(
        self, *, community_id: str | None, state: IncidentState | None, level: IncidentLevel | None,
        since: datetime | None, limit: int, offset: int = 0, scope: Scope = EVERYTHING,
        after: tuple[datetime, str] | None = None,
    ) -> tuple[list[IncidentSnapshot], int]:
        """A page of incidents (most recently updated first) and how many match over every page."""
        filters: dict[str, Any] = {
            "community_id": community_id, "state": state, "level": level, "since": since, "scope": scope}
        async with self.rt.pool.acquire() as conn:
            found = await repository.list_incidents(conn, **filters, limit=limit, offset=offset, after=after)
            total = await repository.count_incidents(conn, **filters)
        return [i.snapshot() for i in found], total

    async def detail(self, incident_id: str, scope: Scope = EVERYTHING) -> dict[str, Any]:
        """The snapshot with every piece of evidence (not only the recent ones), the audit timeline, the
        frozen policy and the notifications sent."""
        async with self.rt.pool.acquire() as conn:
            incident = await repository.get_incident(conn, incident_id, scope=scope)
            if incident is None:
                raise UnknownIncident(incident_id)
            evidence = await repository.evidence(conn, incident_id, DETAIL_EVIDENCE_LIMIT)
            timeline = await repository.timeline(conn, incident_id)
            sent = (
                await self.notifications.list_for_incident(conn, incident_id) if self.notifications else []
            )
        body = incident.snapshot().model_copy(update={"evidence": evidence}).model_dump(mode="json")
        body["step"] = incident.step
        body["field_requested_at"] = utc_text(incident.field_requested_at) if incident.field_requested_at else None
        body["policy"] = incident.policy.model_dump(mode="json")
        body["timeline"] = [{**t, "at": utc_text(t["at"])} for t in timeline]
        body["notifications"] = [
            {k: (utc_text(v) if isinstance(v, datetime) else v) for k, v in n.items()} for n in sent
        ]
        return body

    # -- silences

    async def create_silence(
        self, matchers: dict[str, str], starts_at: datetime | None, ends_at: datetime, created_by: str, comment: str
    ) -> Silence:
        """Store a silence; who may make which silence is the API's to check."""
        now = self.clock()
        s = Silence(
            id=str(uuid.uuid4()), matchers=matchers, starts_at=starts_at or now, ends_at=ends_at,
            created_by=created_by, comment=comment, created_at=now,
        )
        await repository.create_silence(self.rt.pool, s, now)
        self._silence_cache = None
        metrics.SILENCES.labels(action="created").inc()
        log.info("silence created", extra={"silence_id": s.id, "matchers": ",".join(sorted(matchers))})
        return s

    async def list_silences(
        self, *, active_only: bool, scope: Scope = EVERYTHING, after: tuple[datetime, str] | None = None,
        limit: int = 500,
    ) -> tuple[list[Silence], int]:
        """A page of silences (newest first) and how many match over every page."""
        active_at = self.clock() if active_only else None
        async with self.rt.pool.acquire() as conn:
            found = await repository.list_silences(conn, active_at=active_at, scope=scope, after=after, limit=limit)
            total = await repository.count_silences(conn, active_at=active_at, scope=scope)
        return found, total

    async def expire_silence(self, silence_id: str, by: str, scope: Scope = EVERYTHING) -> tuple[Silence, bool]:
        """End a silence now: the silence after, and whether this ended it (False: it had already ended or been
        expired, a repeat). Raises UnknownSilence."""
        now = self.clock()
        changed = await repository.expire_silence(self.rt.pool, silence_id, by, now, scope)
        found = await repository.get_silence(self.rt.pool, silence_id, scope)
        if found is None:
            raise UnknownSilence(silence_id)
        if changed:
            metrics.SILENCES.labels(action="expired").inc()
            self._silence_cache = None
        return found, changed

    # -- background loops

    async def refresh_gauge(self) -> None:
        async with self.rt.pool.acquire() as conn:
            counts = await repository.count_open_by_level(conn)
        for level in IncidentLevel:
            metrics.OPEN_INCIDENTS.labels(level=level.value).set(counts.get(level.value, 0))

    def _loop(self, name: str, interval_s: float, body: Callable[[], Any]) -> None:
        async def loop() -> None:
            while True:
                try:
                    await body()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a database blip must not kill the loop
                    log.warning("%s failed: %s", name, type(exc).__name__)
                await asyncio.sleep(interval_s)

        self._tasks.append(asyncio.create_task(loop(), name=f"escalation-{name}"))

    def start(self, *, gauge_s: float, timers_s: float, prune_s: float, retention: timedelta,
              reload: Callable[[], Any] | None = None, reload_s: float = 5.0) -> None:
        self._loop("open-incidents-gauge", gauge_s, self.refresh_gauge)

        async def fire_all() -> None:
            while await self.fire_due_timers() > 0:
                pass

        self._loop("timers", timers_s, fire_all)

        async def prune() -> None:
            before = self.clock() - retention
            while (n := await repository.prune(self.rt.pool, before, 5000)) > 0:
                metrics.PRUNED.inc(n)

        self._loop("prune", prune_s, prune)
        if reload is not None:
            async def check() -> None:
                reload()

            self._loop("policy-reload", reload_s, check)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []


def _merge(total: Effects, fx: Effects) -> None:
    total.incidents.update(fx.incidents)
    total.steps += fx.steps
    total.escalations += fx.escalations
    total.notices += fx.notices
    total.timers += fx.timers


def _notification(n: domain.Notice) -> Notification:
    return Notification(
        id=n.id, incident_id=n.incident_id, channel=n.channel, kind=n.kind, target=n.target, subject=n.subject,
        text=n.text, payload=n.payload,
    )


def step_incidents(steps: Sequence[Step]) -> dict[str, Incident]:
    return {s.incident.id: s.incident for s in steps}
