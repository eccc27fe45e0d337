"""Pure kernel pieces: decoding, dead-letter headers, the dead-letter rate bound."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from terrain.contracts import InboundCommentMessage
from terrain.kafka import DeadLetterGuard, DeadLetterRateExceeded, Record, Rejection, dead_letter, decode

GOOD = (
    b'{"message_id":"m1","occurred_at":"2026-11-25T10:00:00Z","producer":"crm","source":"facebook",'
    b'"external_id":"1","community_id":"c","thread_id":"t","text":"hello","created_at":"2026-11-25T10:00:00Z",'
    b'"some_future_field":42}'
)


def rec(value: bytes, offset: int = 7) -> Record:
    return Record("terrain.comments.inbound.v1", 2, offset, b"c", value, (("trace", b"abc"),))


def test_decode_accepts_unknown_fields():
    out = decode(InboundCommentMessage, rec(GOOD))
    assert isinstance(out, InboundCommentMessage) and out.text == "hello"


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (b"{not json", "invalid message"),  # undecodable JSON
        (GOOD.replace(b'"text":"hello",', b""), "text: Field required"),  # a required field missing
        (GOOD.replace(b'"2026-11-25T10:00:00Z","producer"', b'"2026-11-25T10:00:00","producer"'),
         "occurred_at"),  # naive timestamp refused
        (b"\xff\xfe", "invalid message"),  # not UTF-8
    ],
)
def test_decode_rejects_with_a_reason_naming_the_problem(value: bytes, needle: str):
    out = decode(InboundCommentMessage, rec(value))
    assert isinstance(out, Rejection)
    assert needle in out.reason


def test_dead_letter_keeps_key_body_and_names_origin():
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    msg = dead_letter(Rejection(rec(b"{bad", offset=41), "invalid message: x"), "terrain-ingest", now)
    assert msg.topic == "terrain.comments.inbound.v1.dlq"
    assert msg.key == "c" and msg.value == b"{bad"
    assert msg.headers["terrain-dlq-origin-topic"] == "terrain.comments.inbound.v1"
    assert msg.headers["terrain-dlq-origin-partition"] == "2"
    assert msg.headers["terrain-dlq-origin-offset"] == "41"
    assert msg.headers["terrain-dlq-reason"] == "invalid message: x"
    assert msg.headers["terrain-dlq-consumer-group"] == "terrain-ingest"
    assert msg.headers["trace"] == "abc"  # the original headers travel along


def test_guard_allows_occasional_failures():
    guard = DeadLetterGuard(window=100, max_ratio=0.5)
    for _ in range(20):
        guard.check(ok=9, failed=1)  # 10% failing: dead-letter and go on


def test_guard_stops_when_most_messages_fail():
    guard = DeadLetterGuard(window=100, max_ratio=0.5)
    guard.check(ok=30, failed=0)
    with pytest.raises(DeadLetterRateExceeded):
        guard.check(ok=0, failed=40)  # 40 of 70 failed


def test_guard_needs_enough_samples():
    guard = DeadLetterGuard(window=100, max_ratio=0.5, min_samples=20)
    guard.check(ok=0, failed=3)  # three bad messages at start-up are not a broken pipeline
