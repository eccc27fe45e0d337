"""Properties of the parsers that read what outsiders send, on generated input: ingest's Meta webhook parser and
signature check, the import reader (JSONL, CSV, archives of deliveries) and the escalation policy parser.
Whatever comes in, the answer is a result or a refusal with a reason, never an exception."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from services.escalation.policy import PolicyError, PolicyFile, parse_policy
from services.ingest.domain import Incoming, Limits, Refusal
from services.ingest.importer import RawRecord, parse_record, read_records
from services.ingest.meta import (
    Parsed,
    SignatureCheck,
    count_changes,
    handshake,
    parse_delivery,
    sign,
    verify_signature,
)
from tests.ingest_payloads import IG_ACCOUNT, PAGE, delivery, feed_comment, feed_item, ig_comment

FAST = settings(max_examples=80)
POLICY = Path(__file__).resolve().parents[2] / "docs" / "escalation-policy.example.yaml"

HOSTILE = ["", " ", "\x00", "'; DROP TABLE x; --", "../../etc/passwd", "\u202e", "NaN", "-1", "1e400",
           "99999999999999999999", "2026-13-45T99:99:99", "2026-11-25T10:00:00", "0", "_", "__", "true",
           "5000000000d", "99999999999999w"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), st.sampled_from(HOSTILE),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(
        ["object", "entry", "changes", "field", "value", "id", "time", "item", "verb", "message", "comment_id",
         "post_id", "from", "created_time", "media", "text", "parent_id", "name", "username"]) | st.text(max_size=8),
        inner, max_size=5)), max_leaves=20)


def places(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += places(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += places(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> Any:
    """A valid document with one to three of its parts replaced by anything, or removed."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        found = places(doc)
        if not found:
            break
        path = draw(st.sampled_from(found))
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return doc


DELIVERIES = [
    delivery("page", (PAGE, [feed_comment("1", "11"), feed_comment("1", "12", verb="edited"),
                             feed_comment("2", "21", verb="remove", message=None), feed_item("reaction", "1")])),
    delivery("instagram", (IG_ACCOUNT, [ig_comment("c1", "m1", "Trop bien !"),
                                        ig_comment("c2", "m1", "Bof", parent="c1")])),
]


def check_parsed(payload: Any) -> Parsed | Refusal:
    out = parse_delivery(payload, Limits())
    assert isinstance(out, Parsed | Refusal)
    if isinstance(out, Refusal):
        assert out.message
    else:
        assert out.changes == count_changes(payload)
        assert len(out.items) + len(out.refused) + sum(out.signals.values()) == out.changes
        for item in out.items:
            assert isinstance(item, Incoming)
            assert item.comment.created_at.tzinfo is not None
        for refused in out.refused:
            assert refused.refusal.message
            json.dumps(refused.delivery)  # the refused change is kept replayable
    return out


@FAST
@given(payload=json_values)
def test_any_json_is_a_delivery_or_a_refusal_never_a_crash(payload: Any) -> None:
    check_parsed(payload)


@FAST
@given(data=st.data())
def test_a_mutated_delivery_is_read_change_by_change_never_a_crash(data: Any) -> None:
    base = data.draw(st.sampled_from(DELIVERIES))
    check_parsed(data.draw(mutated(base)))


# Beyond what the plain strategies draw: integers too large for a float, digit strings past int()'s limit.
huge = st.one_of(st.integers(10**300, 10**400), st.integers(4200, 4400).map(lambda n: "7" * n))


@FAST
@given(created=st.one_of(scalars, st.integers(), st.floats(), huge,
                         st.text(alphabet="0123456789²³¹٣ .-:TZ+", max_size=25)),
       sent=st.one_of(scalars, st.integers(), huge))
def test_any_timestamp_in_a_delivery_is_read_or_refused_never_a_crash(created: Any, sent: Any) -> None:
    payload = delivery("page", (PAGE, [feed_comment("1", "11", created_time=created)]), time=sent)
    out = check_parsed(payload)
    assert isinstance(out, Parsed) and len(out.items) + len(out.refused) == 1


@FAST
@given(body=st.binary(max_size=200), header=st.one_of(st.none(), st.text(max_size=80)),
       secret=st.text(min_size=1, max_size=20))
def test_only_the_right_signature_passes(body: bytes, header: str | None, secret: str) -> None:
    assert verify_signature(body, sign(body, secret), secret) is SignatureCheck.ok
    assert verify_signature(body, sign(body, secret).upper().replace("SHA256=", "sha256="), secret) is SignatureCheck.ok
    got = verify_signature(body, header, secret)
    if header is None or header.strip().lower() != sign(body, secret):
        assert got is not SignatureCheck.ok
    assert verify_signature(body + b"x", sign(body, secret), secret) is SignatureCheck.mismatch


@FAST
@given(params=st.dictionaries(st.sampled_from(["hub.mode", "hub.verify_token", "hub.challenge", "x"]),
                              st.text(max_size=12)), token=st.one_of(st.none(), st.text(max_size=12)))
def test_the_handshake_echoes_the_challenge_only_for_our_token(params: dict[str, str], token: str | None) -> None:
    got = handshake(params, token)
    ours = bool(token) and params.get("hub.mode") == "subscribe" and params.get("hub.verify_token") == token
    assert got == (params.get("hub.challenge") if ours else None)


# --- the import reader ---------------------------------------------------------------------------------------

ROW = {"source": "forum", "external_id": "1", "community_id": "c", "thread_id": "t", "text": "Très bien",
       "created_at": "2026-11-20T10:00:00Z"}
lines = st.one_of(
    st.text(max_size=60),
    json_values.map(lambda v: json.dumps(v, allow_nan=True)),
    mutated(ROW).map(lambda v: json.dumps(v, allow_nan=True)),
    mutated(DELIVERIES[0]).map(lambda v: json.dumps(v, allow_nan=True)),
    st.sampled_from(["[" * 50_000, '{"a": ' * 50_000, "\ufeff{}", "\x00\x00", "{" + '"k":1,' * 10 + "}"]),
)


@FAST
@given(line=lines, fmt=st.sampled_from(["jsonl", "meta", "auto"]))
def test_any_jsonl_line_is_read_or_rejected_with_a_reason(line: str, fmt: str) -> None:
    items, rejected, signals = parse_record(RawRecord(1, len(line), 1, text=line), fmt, Limits())
    assert all(r.refusal.message and r.line == 1 for r in rejected)
    assert all(isinstance(i, Incoming) for i in items)
    assert all(isinstance(v, int) for v in signals.values())
    json.loads(rejected[0].as_json()) if rejected else None  # the rejects file stays JSON lines


@FAST
@given(row=st.dictionaries(st.sampled_from(["source", "external_id", "community_id", "thread_id", "text",
                                            "created_at", "likes", "metrics.replies", "removed", "lang", "x"]),
                           st.one_of(st.none(), st.text(max_size=30), st.sampled_from(HOSTILE))))
def test_any_csv_row_is_read_or_rejected_with_a_reason(row: dict[str, str | None]) -> None:
    items, rejected, _ = parse_record(RawRecord(2, 10, 2, row=row), "csv", Limits())
    assert len(items) + len(rejected) == 1
    assert all(r.refusal.message for r in rejected)


@settings(max_examples=60)
@given(content=st.lists(st.one_of(st.text(max_size=40), st.binary(max_size=40).map(
    lambda b: b.decode("latin-1"))), max_size=8), fmt=st.sampled_from(["jsonl", "csv"]), cut=st.integers(0, 8))
def test_reading_resumes_exactly_after_any_record_of_any_file(content: list[str], fmt: str, cut: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"f.{fmt}"
        path.write_bytes("\n".join(content).encode("utf-8", "surrogateescape"))
        records = list(read_records(path, fmt))
        for r in records:
            if r.text is not None:
                parse_record(r, fmt, Limits())
            elif r.row is not None:
                parse_record(r, "csv", Limits())
        if not records:
            return
        k = min(cut, len(records) - 1)
        resumed = list(read_records(path, fmt, records[k].end_offset, records[k].end_line))
        assert [(r.line, r.text, r.row) for r in resumed] == [(r.line, r.text, r.row) for r in records[k + 1:]]


# --- the escalation policy parser ----------------------------------------------------------------------------

EXAMPLE_POLICY = yaml.safe_load(POLICY.read_text(encoding="utf-8"))


def check_policy(data: Any) -> None:
    try:
        out = parse_policy(data, "generated")
    except PolicyError as exc:
        assert str(exc) and exc.args
        return
    assert isinstance(out, PolicyFile)
    for cid in out.communities:
        out.community(cid)  # every community's merged policy is usable once the file passed


@FAST
@given(data=json_values)
def test_any_document_is_a_policy_or_a_list_of_errors(data: Any) -> None:
    check_policy(data)


@FAST
@given(data=st.data())
def test_a_mutated_example_policy_is_a_policy_or_a_list_of_errors(data: Any) -> None:
    check_policy(data.draw(mutated(EXAMPLE_POLICY)))
