"""Properties of every topic contract, on generated messages: what a consumer does with any bytes, any
mutation of a valid message, any unknown field; and that a message the published JSON Schema accepts is
never dead-lettered by the model (another system's producer follows the schema, not our code)."""

from __future__ import annotations

import copy
import functools
import json
from datetime import datetime
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from terrain.contracts import comment_id_for
from terrain.contracts.base import EARLIEST_YEAR, LATEST_YEAR, MAX_COUNT
from terrain.kafka import Record, Rejection, dead_letter, decode
from terrain.topics import ALL_TOPICS, COMMENTS_INBOUND, EVENTS_OUTCOMES, TopicSpec
from tests.unit import test_contracts
from tests.unit.test_contracts import TOPIC_IDS, committed_schema

FAST = settings(max_examples=50)
validator = functools.cache(test_contracts.validator)
_example = functools.cache(lambda spec: json.dumps(test_contracts.example(spec)))


def example(spec: TopicSpec) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_example(spec))
    return data


def as_bytes(msg: Any) -> bytes | None:
    """The UTF-8 JSON of a generated message, or None when it holds a lone surrogate (no UTF-8 text can)."""
    try:
        return json.dumps(msg, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return None

HOSTILE_TEXT = ["", " ", "\x00", "'; DROP TABLE x; --", "../../etc/passwd", "\u202e", "\ud800", "é" * 500,
                "2026-11-25T10:00:00", "2026-11-25T10:00:00Z", "9999-12-31T23:59:59+14:00", "NaN", "null"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30), st.sampled_from(HOSTILE_TEXT),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=12)


def leaf_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document a mutation can hit: the containers themselves and their leaves."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += leaf_paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += leaf_paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """A valid message with one to three of its parts replaced, removed, or given an unknown sibling."""
    msg = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = leaf_paths(msg)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = msg
        for p in path[:-1]:
            parent = parent[p]
        how = draw(st.sampled_from(["replace", "replace", "drop", "sibling"]))
        if how == "replace":
            parent[path[-1]] = draw(json_values)
        elif how == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
    return msg


def record(value: bytes, key: bytes | None = b"c-1", headers: tuple[tuple[str, bytes], ...] = ()) -> Record:
    return Record("terrain.test.v1", 0, 7, key, value, headers)


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=TOPIC_IDS)
@FAST
@given(data=st.data())
def test_a_mutated_message_is_read_or_dead_lettered_with_a_reason_never_a_crash(spec: TopicSpec, data: Any) -> None:
    msg = data.draw(mutated(example(spec)))
    raw = json.dumps(msg, ensure_ascii=False).encode("utf-8", "surrogatepass")
    out = decode(spec.model, record(raw))
    if isinstance(out, Rejection):
        assert out.reason and len(out.reason) <= 1000
        # what the dead-letter topic gets: same bytes, a reason, never an exception
        dlq = dead_letter(out, "group", datetime(2026, 1, 1))
        assert dlq.value == raw and dlq.headers["terrain-dlq-reason"] == out.reason
        return
    assert isinstance(out, spec.model)
    # what a consumer read, it can write again and read back the same
    assert spec.model.model_validate_json(out.model_dump_json()) == out


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=TOPIC_IDS)
@FAST
@given(data=st.data())
def test_what_the_published_schema_accepts_the_consumer_reads(spec: TopicSpec, data: Any) -> None:
    msg = data.draw(mutated(example(spec)))
    raw = as_bytes(msg)
    if raw is None or not validator(spec).is_valid(msg):
        return
    out = decode(spec.model, record(raw))
    assert not isinstance(out, Rejection), f"the schema accepts it, the model refuses: {out.reason}\n{msg}"


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=TOPIC_IDS)
@FAST
@given(extra=st.dictionaries(st.text(min_size=1, max_size=20), json_values, min_size=1, max_size=5))
def test_unknown_fields_anywhere_at_the_top_change_nothing(spec: TopicSpec, extra: dict[str, Any]) -> None:
    base = example(spec)
    extra = {k: v for k, v in extra.items() if k not in base and k not in spec.model.model_fields}
    raw = as_bytes({**base, **extra})
    if raw is None:
        return
    plain = decode(spec.model, record(json.dumps(base).encode()))
    widened = decode(spec.model, record(raw))
    assert not isinstance(plain, Rejection) and not isinstance(widened, Rejection)
    assert widened == plain


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=TOPIC_IDS)
@FAST
@given(version=st.integers(min_value=1, max_value=MAX_COUNT))
def test_any_later_schema_version_is_read(spec: TopicSpec, version: int) -> None:
    out = decode(spec.model, record(json.dumps({**example(spec), "schema_version": version}).encode()))
    assert not isinstance(out, Rejection), out.reason


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=TOPIC_IDS)
def test_a_number_past_what_consumers_store_is_refused_by_the_schema_as_by_the_model(spec: TopicSpec) -> None:
    # Found by the schema/model property test: JSON Schema calls 9.2e18 an integer, the model could not read it
    # (nor could a service store 3e9 attendees in its integer column), so a checked message was dead-lettered.
    for value in (MAX_COUNT + 1, 9.223372036854776e18, 1e21):
        msg = {**example(spec), "schema_version": value}
        assert not validator(spec).is_valid(msg), value
        assert isinstance(decode(spec.model, record(json.dumps(msg).encode())), Rejection), value
    msg = {**example(spec), "schema_version": float(MAX_COUNT)}  # an integral float within range: both read it
    assert validator(spec).is_valid(msg)
    assert not isinstance(decode(spec.model, record(json.dumps(msg).encode())), Rejection)


@settings(max_examples=150)
@given(value=st.binary(max_size=300), key=st.one_of(st.none(), st.binary(max_size=20)),
       headers=st.lists(st.tuples(st.text(max_size=10), st.binary(max_size=20)), max_size=3))
def test_any_bytes_are_read_or_dead_lettered_never_a_crash(
    value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    for spec in ALL_TOPICS:
        out = decode(spec.model, record(value, key, tuple(headers)))
        if isinstance(out, Rejection):
            dlq = dead_letter(out, "group", datetime(2026, 1, 1))
            assert dlq.value == value and dlq.headers["terrain-dlq-origin-offset"] == "7"


@settings(max_examples=150)
@given(a=st.text(max_size=40), b=st.text(max_size=40), source=st.sampled_from(
    ["facebook", "instagram", "forum", "review", "import"]), other=st.sampled_from(["facebook", "instagram"]))
def test_comment_ids_are_stable_and_two_comments_never_share_one(a: str, b: str, source: str, other: str) -> None:
    assert comment_id_for(source, a) == comment_id_for(source, a)
    # An external id is read without its surrounding blanks (as Identifier reads it in a message).
    assert comment_id_for(source, f" {a}\t") == comment_id_for(source, a.strip())
    if a.strip() != b.strip():
        assert comment_id_for(source, a) != comment_id_for(source, b)
    if source != other:
        assert comment_id_for(source, a) != comment_id_for(other, a)


@FAST
@given(st.lists(st.text(), min_size=1, max_size=5))
def test_derived_ids_are_the_name_based_uuids_they_always_were(parts: list[str]) -> None:
    """Ids already stored and published elsewhere must not change: `derived_id` is uuid5 written out."""
    import uuid

    from terrain.contracts.base import TERRAIN_NAMESPACE, derived_id

    try:
        expected = str(uuid.uuid5(TERRAIN_NAMESPACE, "\x1f".join(parts)))
    except UnicodeEncodeError:  # a lone surrogate: neither can hash it
        with pytest.raises(UnicodeEncodeError):
            derived_id(*parts)
        return
    assert derived_id(*parts) == expected
    assert derived_id("comment", "facebook", "123_456") == str(
        uuid.uuid5(TERRAIN_NAMESPACE, "comment\x1ffacebook\x1f123_456"))


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=TOPIC_IDS)
def test_a_blank_identifier_gets_the_same_verdict_from_the_schema_and_the_model(spec: TopicSpec) -> None:
    # Found by the property test above with another seed: the schema took " " as a source (minLength 1) and the
    # model, which strips identifiers, refused it, so a producer that checked its messages still lost them.
    base = example(spec)
    refused = []
    for field in ("source", "external_id", "community_id", "thread_id", "author_id"):
        if isinstance(base.get(field), str):
            msg = {**base, field: " \t "}
            read = not isinstance(decode(spec.model, record(json.dumps(msg).encode())), Rejection)
            assert validator(spec).is_valid(msg) == read, field
            refused += [] if read else [field]
    if spec.model.model_fields.get("source") is not None:  # the comment topics: every id there is stripped
        assert "source" in refused and "external_id" in refused


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=TOPIC_IDS)
def test_a_timestamp_outside_the_years_is_refused_by_the_schema_as_by_the_model(spec: TopicSpec) -> None:
    assert (EARLIEST_YEAR, LATEST_YEAR) == (1900, 2199), "YEAR_PATTERN in contracts.base spells these years"
    bare = jsonschema.Draft202012Validator(committed_schema(spec))  # the pattern alone, no format checker
    for when, readable in (("1899-12-31T23:59:59Z", False), ("2200-01-01T00:00:00Z", False),
                           ("0001-01-01T00:00:00+00:00", False), ("1900-01-01T00:00:00Z", True),
                           ("2199-12-31T23:59:59Z", True)):
        msg = {**example(spec), "occurred_at": when}
        assert bare.is_valid(msg) is readable, when
        assert validator(spec).is_valid(msg) is readable, when
        assert isinstance(decode(spec.model, record(json.dumps(msg).encode())), Rejection) is not readable, when


# Characters near the identifier rule's edges: the hidden ones (controls, format characters, separators), the
# spaces stripping removes, markup, and anything else UTF-8 can carry (no lone surrogate: no JSON text holds one).
EDGE_CHARACTERS = ["\n", "\r", "\t", "\x00", "\x1f", "\x7f", "\x85", "\x9f", "\u00ad", "\u061c", "\u180e",
                   "\u200b", "\u200d", "\u202e", "\u2028", "\u2029", "\u2066", "\ufeff", "\ufffb", " ", "\u00a0",
                   "\u1680", "\u2000", "\u3000", "\u202f", "\U000e0001", "<", ">", "@", "&", "a", "é"]
id_texts = st.text(st.one_of(st.sampled_from(EDGE_CHARACTERS), st.characters(codec="utf-8")), max_size=12)


@pytest.mark.parametrize(("spec", "field"), [
    (COMMENTS_INBOUND, "community_id"), (COMMENTS_INBOUND, "thread_id"), (COMMENTS_INBOUND, "place"),
    (EVENTS_OUTCOMES, "community_id"), (EVENTS_OUTCOMES, "location"),
], ids=lambda v: getattr(v, "name", v))
@settings(max_examples=300)
@given(value=id_texts)
def test_an_identifier_or_a_place_gets_the_same_verdict_from_the_schema_and_the_model(
    spec: TopicSpec, field: str, value: str
) -> None:
    # Both ways: a producer that checks its messages against the schema loses none, and the schema refuses
    # nothing a consumer would read (so a producer's own check refuses the same ids as the consumers).
    msg = example(spec)
    msg = {**msg, "event": {**msg["event"], field: value}} if spec is EVENTS_OUTCOMES else {**msg, field: value}
    out = decode(spec.model, record(json.dumps(msg).encode()))
    assert validator(spec).is_valid(msg) is not isinstance(out, Rejection), (repr(value), out)
