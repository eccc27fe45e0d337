"""Adapters: HTTP bodies, Meta deliveries, inbound-topic batches and import batches in; normalised comments out.

Every path ends in `Ingestor.accept`: one transaction per batch that locks the known comments, decides
with set-based SQL, and writes what to publish. Two ways to publish, chosen per path:
- **Write-ahead (outbox)** for the webhook and `POST /v1/comments`: the messages are written to the outbox in
  the same transaction as the dedup records, the caller is answered once that transaction commits, and the
  messages are published right after. A broker outage then costs latency, not an error: Meta keeps getting
  its 200 (it retries slow or failing endpoints and disables those that keep failing), and the outbox relay
  sends what was left.
- **Publish before commit** for the inbound topic and `terrain import`: the batch is published (acks from all
  in-sync replicas) inside the transaction, then the dedup records (and an import's checkpoint) commit. A
  crash in between republishes the same message ids on redelivery or resume, which consumers drop. It
  saves the outbox's write and its delete per batch: at 1,000 comments/s an inbound batch took 11 ms
  instead of 14.5 (bench/README). A broker that is down stops the inbound topic's consumer anyway, so the
  outbox would buy that path nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from pydantic import TypeAdapter, ValidationError

from services.ingest import domain, meta, metrics, repository
from services.ingest.domain import (
    CommentDraft,
    Decision,
    InboundDraft,
    Incoming,
    Limits,
    Outcome,
    Reason,
    Refusal,
    Tally,
)
from terrain import telemetry
from terrain.kafka import Decoded, OutMessage, Record, Rejection, client_options, dead_letter, send_record_batches
from terrain.runtime import ServiceRuntime
from terrain.settings import TerrainSettings
from terrain.topics import COMMENTS, COMMENTS_INBOUND

log = logging.getLogger("terrain.ingest")

_drafts: TypeAdapter[list[CommentDraft]] = TypeAdapter(list[CommentDraft])
WEBHOOK_ORIGIN = "meta-webhook"


@dataclass(frozen=True)
class Accepted:
    comment_id: str
    outcome: Outcome
    revision: int


InTransaction = Callable[["repository.Conn", Tally], Awaitable[None]]


class BulkPublisher:
    """Ingest's producer for batches: every send issued, then every acknowledgement awaited (acks=all).

    FastStream's per-message publish path (middlewares, scopes) cost about 55 µs a message here and
    aiokafka's send() about 24; appending to one batch per partition costs about 11. A 100-comment
    delivery or a 2,000-line import batch feels it. The records are built and sent by the kernel's
    `send_record_batches`, as the kernel publisher's are; this producer is ingest's own so that `terrain
    import` can publish without a running service.
    """

    def __init__(self, settings: TerrainSettings, service: str) -> None:
        self.settings = settings
        self.service = service
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}

    async def start(self) -> None:
        async with self._starting:
            if self._producer is not None:
                return
            producer = AIOKafkaProducer(
                bootstrap_servers=self.settings.kafka_bootstrap_servers,
                client_id=f"{self.settings.kafka_client_id}-{self.service}-bulk", acks="all", linger_ms=2,
                partitioner=self._partitioner, **client_options(self.settings),
            )
            await producer.start()
            self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        if not messages:
            return
        if self._producer is None:
            # The inbound consumer may deliver before the service's start hooks ran.
            await self.start()
        producer = self._producer
        assert producer is not None
        await send_record_batches(producer, self._partitioner, self._partitions, messages)
        for topic, n in Counter(m.topic for m in messages).items():
            telemetry.PUBLISHED.labels(service=self.service, topic=topic).inc(n)


async def detect_inline(texts: list[str]) -> list[str]:
    """Languages detected in this process, the batch at once."""
    from services.ingest.language import detect_languages

    return detect_languages(texts)


class Ingestor:
    """Stores what is new and publishes it; the same comment twice yields one message downstream."""

    def __init__(
        self,
        rt: ServiceRuntime,
        clock: Callable[[], datetime],
        limits: Limits | None = None,
        publish_wait_s: float = 2.0,
    ) -> None:
        self.rt = rt
        self.publisher = BulkPublisher(rt.settings, rt.service)
        self.clock = clock
        self.limits = limits or Limits()
        # How languages are detected: inline here; a bulk import with worker processes swaps in its own, so
        # detection runs there while this process parses ahead.
        self.detect: Callable[[list[str]], Awaitable[list[str]]] = detect_inline
        self.publish_wait_s = publish_wait_s
        self._flushes: set[asyncio.Task[None]] = set()

    # --- the one way in ---------------------------------------------------------------------------

    async def accept(
        self,
        items: Sequence[Incoming],
        channel: str,
        *,
        received_at: float | None = None,
        dead_letters: Sequence[OutMessage] = (),
        direct: bool = False,
        in_transaction: InTransaction | None = None,
        tally: Tally | None = None,
    ) -> list[Accepted]:
        """Decide and publish one batch. `direct` publishes before commit instead of through the outbox."""
        received_at = time.perf_counter() if received_at is None else received_at
        tally = tally if tally is not None else Tally()
        now = self.clock()
        groups = domain.group_by_id(items)
        topic = self.rt.topic(COMMENTS)
        async with self.rt.pool.acquire() as conn, conn.transaction():
            seen = await repository.lock_seen(conn, list(groups))
            decided = {cid: domain.decide_versions(cid, versions, seen.get(cid)) for cid, versions in groups.items()}
            finals = {cid: f for cid, ds in decided.items() if (f := domain.final_state(ds)) is not None}
            fresh = [(f, groups[cid][-1]) for cid, f in finals.items() if cid not in seen]
            inserted = await repository.insert_new(conn, fresh, now)
            # A concurrent writer inserted it first: ours are reposts of what it published.
            for f, _ in fresh:
                if f.comment_id not in inserted:
                    decided[f.comment_id] = [Decision(d.comment_id, Outcome.duplicate, d.revision, d.content_hash)
                                             for d in decided[f.comment_id]]
            await repository.update_changed(conn, [f for cid, f in finals.items() if cid in seen], now)
            publish = [(item, d) for cid, ds in decided.items() for item, d in zip(groups[cid], ds, strict=True)
                       if d.outcome in domain.CHANGES]
            # Languages only for what is published, detected together (reposts cost nothing).
            langs = iter(await self.detect([i.comment.text for i, _ in publish if domain.needs_language(i)]))
            out = [
                OutMessage.of(topic, item.comment.community_id,
                              domain.to_message(item, d, now, next(langs) if domain.needs_language(item) else None))
                for item, d in publish
            ]
            out += dead_letters
            every = [d for ds in decided.values() for d in ds]
            tally.add_decisions(every)
            ids: list[int] = []
            if direct:
                await self.publisher.publish(out)
            else:
                # The pool's proxy forwards every Connection method the kernel's outbox uses.
                ids = await self.rt.outbox.enqueue(cast(asyncpg.Connection, conn), out)
            if in_transaction is not None:
                await in_transaction(conn, tally)
        if direct:
            if out:
                metrics.PUBLISH_LATENCY.labels(channel=channel).observe(time.perf_counter() - received_at)
        else:
            await self._flush(ids, out, channel, received_at)
        self._count(channel, every)
        metrics.TRUNCATED.labels(channel=channel).inc(sum(i.truncated for i in items))
        return [Accepted(d.comment_id, d.outcome, d.revision) for d in every]

    def _count(self, channel: str, decisions: Sequence[Decision]) -> None:
        by_outcome = {o: 0 for o in Outcome}
        for d in decisions:
            by_outcome[d.outcome] += 1
        for outcome, n in by_outcome.items():
            if n:
                metrics.COMMENTS.labels(channel=channel, outcome=outcome.value).inc(n)
        metrics.DUPLICATES.labels(channel=channel).inc(by_outcome[Outcome.duplicate])
        metrics.ACCEPTED.labels(channel=channel).inc(sum(by_outcome[o] for o in domain.CHANGES))

    def refused(self, channel: str, refusals: Sequence[Refusal]) -> None:
        """Count refusals; the reason (never the text or the author) is logged."""
        for r in refusals:
            metrics.REJECTED.labels(channel=channel, reason=r.reason.value).inc()
        if refusals:
            log.info("refused", extra={"channel": channel, "count": len(refusals),
                                       "first_reason": refusals[0].describe()[:200]})

    async def _flush(self, ids: list[int], out: list[OutMessage], channel: str, received_at: float) -> None:
        """Publish committed outbox rows; past `publish_wait_s` answer anyway and let the send finish alone."""
        if not ids:
            return

        async def send() -> None:
            try:
                # The kernel outbox's flush, through ingest's producer.
                await self.publisher.publish(out)
                await repository.delete_sent(self.rt.pool, ids)
                metrics.PUBLISH_LATENCY.labels(channel=channel).observe(time.perf_counter() - received_at)
            except Exception as exc:  # committed rows stay in the outbox; the relay sends them
                log.warning("publish failed; the outbox relay will send", extra={"error": type(exc).__name__})

        task = asyncio.ensure_future(send())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)
        try:
            await asyncio.wait_for(asyncio.shield(task), self.publish_wait_s)
        except TimeoutError:
            log.warning("publish slower than %.1fs; answering, the send goes on", self.publish_wait_s)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait for sends still in flight (at shutdown)."""
        if self._flushes:
            await asyncio.wait(list(self._flushes), timeout=timeout_s)

    # --- HTTP ----------------------------------------------------------------------------------------

    def screen_body(self, body: Any) -> list[Incoming] | list[Refusal]:
        """`POST /v1/comments`: one object or a list; all-or-nothing, every bad field named."""
        if isinstance(body, dict):
            try:
                drafts = [CommentDraft.model_validate(body)]
            except ValidationError as exc:
                return domain.validation_refusals(exc)
            prefix = ""
        elif isinstance(body, list):
            try:
                drafts = _drafts.validate_python(body)
            except ValidationError as exc:
                return domain.validation_refusals(exc)
            prefix = "[{}]."
        else:
            return [Refusal(Reason.invalid, None, "expected a comment object or a list of them")]
        items: list[Incoming] = []
        refusals: list[Refusal] = []
        now = self.clock()
        for i, draft in enumerate(drafts):
            r = domain.screen(draft, self.limits, now=now)
            if isinstance(r, Refusal):
                where = prefix.format(i) + (r.field or "")
                refusals.append(Refusal(r.reason, where.rstrip(".") or None, r.message))
            else:
                items.append(r)
        return refusals or items

    # --- Meta webhook ----------------------------------------------------------------------------------

    async def on_meta_delivery(self, payload: Any, received_at: float) -> dict[str, Any] | Refusal:
        """A verified delivery: its comments accepted, its unreadable changes dead-lettered with the reason."""
        parsed = meta.parse_delivery(payload, self.limits, self.clock())
        if isinstance(parsed, Refusal):
            return parsed
        metrics.RECEIVED.labels(channel="webhook").inc(parsed.changes)
        for kind, n in parsed.signals.items():
            metrics.META_SIGNALS.labels(kind=kind).inc(n)
        refusals = [r.refusal for r in parsed.refused]
        self.refused("webhook", refusals)
        now = self.clock()
        dlq = self.rt.topic(COMMENTS_INBOUND.dlq)
        letters = [
            dead_letter(
                Rejection(Record(WEBHOOK_ORIGIN, -1, -1, r.community_id.encode(), json.dumps(r.delivery).encode()),
                          r.refusal.describe()[:1000]),
                self.rt.group("webhook"), now, dlq,
            )
            for r in parsed.refused
        ]
        tally = Tally()
        if parsed.items or letters:
            await self.accept(parsed.items, "webhook", received_at=received_at, dead_letters=letters, tally=tally)
        return {
            "changes": parsed.changes, "comments": len(parsed.items), "accepted": tally.accepted,
            "duplicates": tally.duplicates, "stale": tally.stale, "rejected": len(refusals),
            "signals": sum(parsed.signals.values()),
        }

    # --- inbound topic ---------------------------------------------------------------------------------

    async def on_inbound(self, batch: list[Decoded[InboundDraft]]) -> list[Rejection]:
        """The inbound topic: invalid messages never reach here (the kernel dead-letters them); refusals do."""
        started = time.perf_counter()
        metrics.RECEIVED.labels(channel="topic").inc(len(batch))
        items: list[Incoming] = []
        rejections: list[Rejection] = []
        refusals: list[Refusal] = []
        now = self.clock()
        for d in batch:
            r = domain.screen(d.message, self.limits, now=now)
            if isinstance(r, Refusal):
                refusals.append(r)
                rejections.append(Rejection(d.record, f"refused: {r.describe()}"[:1000]))
            else:
                items.append(r)
        self.refused("topic", refusals)
        if items:
            await self.accept(items, "topic", received_at=started, direct=True)
        return rejections


class Pruner:
    """Retention of ingest's dedup records: forgets old content hashes in bounded batches, on a timer."""

    def __init__(self, rt: ServiceRuntime, clock: Callable[[], datetime], retention_days: float,
                 batch: int, interval_s: float) -> None:
        from datetime import timedelta

        self.rt = rt
        self.clock = clock
        self.retention = timedelta(days=retention_days)
        self.batch = batch
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def prune_once(self, max_batches: int = 1000) -> int:
        """Prune expired hashes batch by batch (each its own short transaction). Returns how many went."""
        cutoff = domain.prune_cutoff(self.clock(), self.retention)
        total = 0
        for _ in range(max_batches):
            async with self.rt.pool.acquire() as conn:
                n = await repository.prune(conn, cutoff, self.batch)
            total += n
            metrics.DEDUP_PRUNED.inc(n)
            if n < self.batch:
                break
            await asyncio.sleep(0)  # let requests in between batches
        async with self.rt.pool.acquire() as conn:
            oldest = await repository.oldest_seen(conn)
            known = await repository.known_comments(conn)
        metrics.DEDUP_OLDEST_AGE.set((self.clock() - oldest).total_seconds() if oldest else 0)
        metrics.KNOWN_COMMENTS.set(known)
        if total:
            log.info("dedup hashes pruned", extra={"count": total})
        return total

    def start(self) -> None:
        async def loop() -> None:
            while True:
                try:
                    await self.prune_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # retention must outlive a database blip
                    log.warning("dedup pruning failed: %s", type(exc).__name__)
                await asyncio.sleep(self.interval_s)

        self._task = asyncio.create_task(loop(), name="ingest-dedup-pruner")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
