"""Adapters: HTTP bodies and inbound-topic batches in, normalised comments out (through the outbox)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from services.ingest import domain, metrics, repository
from services.ingest.domain import Decision, Outcome
from terrain.contracts import CommentIn, InboundCommentMessage
from terrain.kafka import Decoded, OutMessage, Rejection
from terrain.runtime import ServiceRuntime
from terrain.topics import COMMENTS


@dataclass(frozen=True)
class Accepted:
    comment_id: str
    outcome: Outcome
    revision: int


class Ingestor:
    """Stores what is new and publishes it; the same comment twice yields one message downstream."""

    def __init__(self, rt: ServiceRuntime, clock: Callable[[], datetime]) -> None:
        self.rt = rt
        self.clock = clock

    async def accept(self, comments: list[CommentIn], channel: str) -> list[Accepted]:
        now = self.clock()
        latest = domain.latest_per_id(comments)
        topic = self.rt.topic(COMMENTS)
        async with self.rt.pool.acquire() as conn, conn.transaction():
            seen = await repository.lock_seen(conn, list(latest))
            decisions = {cid: domain.decide(cid, c, seen.get(cid)) for cid, c in latest.items()}
            fresh = [(d, latest[cid]) for cid, d in decisions.items() if cid not in seen]
            inserted = await repository.insert_new(conn, fresh, now)
            # A concurrent request inserted it first: treat ours as the repost it is.
            for d, _ in fresh:
                if d.comment_id not in inserted:
                    decisions[d.comment_id] = Decision(d.comment_id, Outcome.duplicate, 1, d.content_hash)
            changed = [d for cid, d in decisions.items() if cid in seen and d.outcome is not Outcome.duplicate]
            await repository.update_changed(conn, changed, now)
            out = [
                OutMessage.of(topic, latest[d.comment_id].community_id, domain.to_message(latest[d.comment_id], d, now))
                for d in decisions.values()
                if d.outcome is not Outcome.duplicate
            ]
            ids = await self.rt.outbox.enqueue(conn, out)
        await self.rt.outbox.flush(ids, out)
        for d in decisions.values():
            metrics.COMMENTS.labels(channel=channel, outcome=d.outcome.value).inc()
        # Comments collapsed within the batch are reposts of the version we kept.
        extra = len(comments) - len(latest)
        if extra:
            metrics.COMMENTS.labels(channel=channel, outcome=Outcome.duplicate.value).inc(extra)
        return [Accepted(d.comment_id, d.outcome, d.revision) for d in decisions.values()]

    async def on_inbound(self, batch: list[Decoded[InboundCommentMessage]]) -> list[Rejection]:
        """The inbound topic: every decoded message is a valid comment; invalid ones never reach here."""
        await self.accept([CommentIn.model_validate(d.message.model_dump()) for d in batch], "topic")
        return []
