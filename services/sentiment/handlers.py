"""Adapters: comment batches in, one scored message per comment out; ad-hoc texts in, assessments out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from services.sentiment import domain, metrics
from services.sentiment.domain import Assessment, Flagger
from services.sentiment.scorers.base import ScoreInput, SentimentScorer
from terrain.contracts import CommentAction, CommentMessage
from terrain.kafka import Decoded, OutMessage, Rejection
from terrain.runtime import ServiceRuntime
from terrain.topics import COMMENTS_SCORED

log = logging.getLogger("terrain.sentiment")


def _count(channel: str, assessments: Sequence[Assessment]) -> None:
    for a in assessments:
        if a.sentiment.model_version == domain.UNSCORED_MODEL_VERSION:
            continue
        metrics.SCORED.labels(
            channel=channel, lang=metrics.lang_bucket(a.sentiment.lang), label=a.sentiment.label.value
        ).inc()
        for f in a.found:
            metrics.FLAGS.labels(channel=channel, kind=f.kind).inc()


class Scoring:
    """Scores comments from the topic and texts from HTTP with one scorer.

    No database: the scored message's id is derived from the comment message's id, so a redelivered
    batch republishes the same ids and consumers drop the copies. Publishing before `on_comments`
    returns is what makes the batch's commit safe.
    """

    def __init__(self, rt: ServiceRuntime, scorer: SentimentScorer, clock: Callable[[], datetime],
                 flagger: Flagger) -> None:
        self.rt = rt
        self.scorer = scorer
        self.clock = clock
        self.flagger = flagger

    async def assess(self, items: list[ScoreInput]) -> list[Assessment]:
        # Scoring is CPU work (a few ms per comment): off the event loop, so HTTP and heartbeats go on.
        assessments = await asyncio.to_thread(domain.assess, self.scorer, items, self.flagger)
        _count("http", assessments)
        return assessments

    async def on_comments(self, batch: list[Decoded[CommentMessage]]) -> list[Rejection]:
        started = time.perf_counter()
        messages = domain.first_of_each([d.message for d in batch])
        comments = [m.comment for m in messages]
        assessments = await asyncio.to_thread(domain.assess_comments, self.scorer, comments, self.flagger)
        now = self.clock()
        topic = self.rt.topic(COMMENTS_SCORED)
        await self.rt.publisher.publish([
            OutMessage.of(topic, m.comment.community_id, domain.scored_message(m, a, now))
            for m, a in zip(messages, assessments, strict=True)
        ])
        _count("topic", assessments)
        removals = sum(c.action is CommentAction.removed for c in comments)
        if removals:
            metrics.REMOVALS.inc(removals)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        log.debug("batch scored", extra={"comments": len(messages), "removals": removals})
        return []
