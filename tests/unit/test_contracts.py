"""The committed contract docs match the models, and every hand-written example honours its contract."""

from __future__ import annotations

import json
import re
import shutil
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from terrain import contract_docs
from terrain.contracts import comment_id_for
from terrain.contracts.base import EARLIEST_YEAR, HIDDEN_CHARACTERS, IDENTIFIER_PATTERN, LATEST_YEAR, Envelope
from terrain.kafka import Record, Rejection, dead_letter, decode
from terrain.topics import ALL_TOPICS, COMMENTS, COMMENTS_INBOUND, EVENTS_OUTCOMES, TopicSpec

CONTRACTS = Path(__file__).resolve().parents[2] / "docs" / "contracts"
EXAMPLES = CONTRACTS / "examples"
TOPIC_IDS = [spec.name for spec in ALL_TOPICS]

# jsonschema checks "date-time" only when rfc3339-validator is installed, which Terrain does not need;
# this checker of our own (a copy, so other tests keep the library's) makes the timestamps really
# checked, offset required as the models say, rather than silently accepted.
FORMATS = jsonschema.FormatChecker()


# RFC 3339's date-time (what the schemas' "date-time" means): Python's fromisoformat alone also takes other
# ISO 8601 shapes ("0001-01-01000-0000") that no consumer reads.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


@FORMATS.checks("date-time", raises=ValueError)
def _is_aware_datetime(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if _RFC3339.fullmatch(value) is None:
        return False
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return False
    # The rule docs/contracts/README.md adds to the format (JSON Schema cannot say it): years 1900-2199 in UTC.
    try:
        return EARLIEST_YEAR <= parsed.astimezone(UTC).year <= LATEST_YEAR
    except OverflowError:
        return False


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def committed_schema(spec: TopicSpec) -> dict[str, Any]:
    schema: dict[str, Any] = load(CONTRACTS / contract_docs.schema_path(spec.name))
    return schema


def validator(spec: TopicSpec) -> jsonschema.Draft202012Validator:
    schema = committed_schema(spec)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=FORMATS)


def example(spec: TopicSpec) -> dict[str, Any]:
    data: dict[str, Any] = load(EXAMPLES / f"{spec.name}.json")
    return data


def at_path(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data[part]
    return data


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=TOPIC_IDS)
def test_every_topic_has_a_schema_and_an_example(spec: TopicSpec) -> None:
    assert (CONTRACTS / contract_docs.schema_path(spec.name)).is_file()
    assert (EXAMPLES / f"{spec.name}.json").is_file()


def test_no_example_for_an_unknown_topic() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.json")) == sorted(TOPIC_IDS)


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=TOPIC_IDS)
def test_example_validates_against_schema_and_model(spec: TopicSpec) -> None:
    data = example(spec)
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator(spec).iter_errors(data)]
    assert errors == []
    message = spec.model.model_validate(data)
    # The example spells out every field, so nothing is lost or defaulted on the way into the model.
    assert message.model_dump(mode="json").keys() == data.keys()
    # The record key is a real field of the message: the key path the AsyncAPI document names exists.
    key = at_path(data, contract_docs.key_path(spec.model, spec.key))
    assert isinstance(key, str) and key


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=TOPIC_IDS)
@pytest.mark.parametrize(
    ("change", "bad_field"),
    [
        # The message id makes redeliveries no-ops: a message without one is refused.
        (lambda d: d.pop("message_id"), "message_id"),
        # A timestamp without an offset is ambiguous: refused by the schema's format and by the model.
        (lambda d: d.update(occurred_at="2026-11-21T22:47:13"), "occurred_at"),
        # Versions start at 1; later minor versions are read (schema evolution), so only one below is broken.
        (lambda d: d.update(schema_version=0), "schema_version"),
    ],
    ids=["no-message-id", "naive-time", "wrong-version"],
)
def test_a_broken_example_fails_both_schema_and_model(spec: TopicSpec, change: Any, bad_field: str) -> None:
    data = example(spec)
    change(data)
    schema_errors = list(validator(spec).iter_errors(data))
    assert schema_errors, "the schema accepted a message the contract refuses"
    assert any(bad_field in e.path or bad_field in e.message for e in schema_errors), schema_errors
    with pytest.raises(ValidationError) as exc:
        spec.model.model_validate(data)
    assert bad_field in str(exc.value)


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=TOPIC_IDS)
def test_unknown_fields_are_accepted(spec: TopicSpec) -> None:
    # Forward compatibility: a newer producer may add fields that this consumer does not know.
    data = example(spec) | {"added_in_a_later_release": {"anything": True}}
    assert list(validator(spec).iter_errors(data)) == []
    assert not hasattr(spec.model.model_validate(data), "added_in_a_later_release")


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=TOPIC_IDS)
def test_envelope_fields_required_or_defaulted_as_the_model_says(spec: TopicSpec) -> None:
    schema = committed_schema(spec)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"urn:terrain:schema:{spec.name}"
    assert schema["title"] == spec.name
    for name, field in Envelope.model_fields.items():
        assert name in schema["properties"], name
        if field.is_required():
            assert name in schema["required"], name
        else:
            assert name not in schema["required"], name
            assert schema["properties"][name]["default"] == field.get_default(call_default_factory=True), name
    # The envelope as it stands today: three required fields and a version defaulting to 1.
    assert {"message_id", "occurred_at", "producer"} <= set(schema["required"])
    assert schema["properties"]["schema_version"]["default"] == 1


def test_committed_docs_are_in_step() -> None:
    assert contract_docs.check(CONTRACTS) == [], "run `terrain contracts generate` and commit the result"


def test_render_is_deterministic_and_json() -> None:
    first, second = contract_docs.render(), contract_docs.render()
    assert first == second
    for rel, text in first.items():
        assert text.endswith("}\n"), rel
        json.loads(text)


def test_drift_is_detected_and_write_repairs_it(tmp_path: Path) -> None:
    out = tmp_path / "contracts"
    shutil.copytree(CONTRACTS, out)
    assert contract_docs.check(out) == []

    altered = contract_docs.schema_path("terrain.comments.v1")
    schema = load(out / altered)
    schema["required"].remove("occurred_at")
    (out / altered).write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
    missing = contract_docs.schema_path("terrain.incidents.v1")
    (out / missing).unlink()
    stale = "schemas/terrain.comments.v0.json"
    (out / stale).write_text("{}\n", encoding="utf-8")

    drift = contract_docs.check(out)
    assert len(drift) == 3, drift
    assert drift[0].startswith(f"{altered} differs") and "occurred_at" in drift[0]
    assert drift[1] == f"{missing} is missing"
    assert drift[2].startswith(f"{stale} is not generated")

    assert sorted(contract_docs.write(out)) == sorted([altered, missing, stale])
    assert contract_docs.check(out) == []
    # Hand-written files are neither reported nor touched.
    assert (out / "README.md").read_bytes() == (CONTRACTS / "README.md").read_bytes()
    assert sorted(p.name for p in (out / "examples").iterdir()) == sorted(p.name for p in EXAMPLES.iterdir())
    assert contract_docs.write(out) == []


def test_crlf_checkout_is_not_drift(tmp_path: Path) -> None:
    out = tmp_path / "contracts"
    shutil.copytree(CONTRACTS, out)
    path = out / contract_docs.ASYNCAPI_FILE
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert contract_docs.check(out) == []


def test_an_empty_folder_reports_every_file_missing(tmp_path: Path) -> None:
    drift = contract_docs.check(tmp_path)
    assert sorted(drift) == sorted(f"{rel} is missing" for rel in contract_docs.render())


# AsyncAPI document


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    doc: dict[str, Any] = load(CONTRACTS / contract_docs.ASYNCAPI_FILE)
    return doc


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def all_refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in all_refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in all_refs(value)]
    return []


def channel_by_address(doc: dict[str, Any], address: str) -> tuple[str, dict[str, Any]]:
    found = [(cid, ch) for cid, ch in doc["channels"].items() if ch["address"] == address]
    assert len(found) == 1, f"{address}: {len(found)} channels"
    return found[0]


def operations_of(doc: dict[str, Any], channel_id: str) -> dict[str, dict[str, Any]]:
    """The channel's operations by action; a second operation with the same action fails the test."""
    ops = [op for op in doc["operations"].values() if op["channel"]["$ref"] == f"#/channels/{channel_id}"]
    by_action = {op["action"]: op for op in ops}
    assert len(by_action) == len(ops), f"{channel_id}: duplicate actions"
    return by_action


def test_asyncapi_header(asyncapi: dict[str, Any]) -> None:
    import terrain

    assert asyncapi["asyncapi"] == "3.0.0"
    assert asyncapi["info"]["title"] == "Terrain"
    assert asyncapi["info"]["version"] == terrain.__version__
    assert asyncapi["servers"]["kafka"]["host"] == "127.0.0.1:9092"
    assert asyncapi["servers"]["kafka"]["protocol"] == "kafka"


def test_asyncapi_lists_every_topic_and_dead_letter_twin(asyncapi: dict[str, Any]) -> None:
    addresses = sorted(ch["address"] for ch in asyncapi["channels"].values())
    assert addresses == sorted([s.name for s in ALL_TOPICS] + [s.dlq for s in ALL_TOPICS])


def test_every_asyncapi_reference_resolves(asyncapi: dict[str, Any]) -> None:
    refs = all_refs(asyncapi)
    assert len(refs) > 4 * len(ALL_TOPICS)
    for ref in refs:
        resolve(asyncapi, ref)


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=TOPIC_IDS)
def test_asyncapi_topic_channel(asyncapi: dict[str, Any], spec: TopicSpec) -> None:
    cid, channel = channel_by_address(asyncapi, spec.name)
    (message_ref,) = channel["messages"].values()
    message = resolve(asyncapi, message_ref["$ref"])
    assert message["contentType"] == "application/json"
    payload = resolve(asyncapi, message["payload"]["$ref"])
    # The payload is the same model as the standalone schema: same fields, same required ones.
    standalone = committed_schema(spec)
    assert list(payload["properties"]) == list(standalone["properties"])
    assert payload["required"] == standalone["required"]
    key = message["bindings"]["kafka"]["key"]
    assert key["type"] == "string"
    assert contract_docs.key_path(spec.model, spec.key) in key["description"]

    ops = operations_of(asyncapi, cid)
    assert set(ops) == {"send", "receive"}
    assert ops["send"]["x-terrain-parties"] == list(spec.producers)
    assert ops["receive"]["x-terrain-parties"] == list(spec.consumers)
    assert all(p in ops["send"]["summary"] for p in spec.producers)
    assert all(c in ops["receive"]["summary"] for c in spec.consumers)


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=TOPIC_IDS)
def test_asyncapi_dead_letter_channel_documents_what_dead_letter_sends(
    asyncapi: dict[str, Any], spec: TopicSpec
) -> None:
    cid, channel = channel_by_address(asyncapi, spec.dlq)
    (message_ref,) = channel["messages"].values()
    message = resolve(asyncapi, message_ref["$ref"])
    assert message["payload"]["type"] == "string" and message["payload"]["format"] == "binary"
    documented = set(message["headers"]["properties"])

    # Build a real dead letter the way a consumer does, and compare its headers with the document.
    body, headers = b'{"not": "a message"}', (("trace", b"t-1"),)
    record = Record(spec.name, 2, 41, b"bouchon-des-canuts-lyon", body, headers)
    rejection = decode(spec.model, record)
    assert isinstance(rejection, Rejection)
    sent = dead_letter(rejection, "ingest", datetime.fromisoformat("2026-11-21T22:47:13+01:00"))
    assert sent.topic == spec.dlq and sent.value == record.value
    assert set(sent.headers) - {"trace"} == documented
    assert set(message["headers"]["required"]) == documented

    ops = operations_of(asyncapi, cid)
    assert set(ops) == {"send", "receive"}
    assert ops["send"]["x-terrain-parties"] == list(spec.consumers)


# Stable comment ids


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        # The same comment seen twice (a webhook retry, then a bulk import) gets one id.
        (("facebook", "882640193374512_157023"), ("facebook", "882640193374512_157023"), True),
        # The source's case is not part of the identity: "Facebook" from a CSV export is facebook.
        (("Facebook", "c1"), ("facebook", "c1"), True),
        (("INSTAGRAM", "c1"), ("instagram", "c1"), True),
        # Stray whitespace from an export does not make a new comment.
        ((" facebook ", " c1 "), ("facebook", "c1"), True),
        # A different comment on the same source is a different comment.
        (("facebook", "c1"), ("facebook", "c2"), False),
        # The same external id on two sources names two different comments.
        (("facebook", "c1"), ("instagram", "c1"), False),
        # External ids are case-sensitive in their sources (base64-like ids): not folded.
        (("forum", "AbC"), ("forum", "abc"), False),
        # Parts are joined with a separator, so shifting characters between them changes the id.
        (("face", "bookc1"), ("facebook", "c1"), False),
    ],
)
def test_comment_id_for_is_stable(a: tuple[str, str], b: tuple[str, str], same: bool) -> None:
    assert (comment_id_for(*a) == comment_id_for(*b)) is same


def test_comment_id_for_is_stable_across_releases() -> None:
    # Pinned: changing the derivation would give every known comment a new id and duplicate it downstream.
    pinned = comment_id_for("facebook", "882640193374512_1570238841129304")
    assert pinned == "df41cbfd-85d2-500b-bffa-bfafd764a74d"
    # The examples carry ids ingest would really compute.
    assert example(COMMENTS)["comment"]["comment_id"] == pinned


@pytest.mark.parametrize(("when", "ok"), [
    ("1900-01-01T00:00:00Z", True), ("2199-12-31T23:59:59Z", True), ("2026-11-25T10:00:00+14:00", True),
    ("1899-12-31T23:59:59Z", False), ("1900-01-01T00:30:00+01:00", False),  # 1899 once in UTC
    ("2200-01-01T00:00:00Z", False), ("0001-01-01T00:00:00+14:00", False), ("9999-12-31T23:59:59-14:00", False),
])
def test_timestamps_hold_an_offset_and_a_year_from_1900_to_2199_in_utc(when: str, ok: bool) -> None:
    data = {"message_id": "m", "occurred_at": when, "producer": "p"}
    if ok:
        assert Envelope.model_validate(data).occurred_at == datetime.fromisoformat(when)
    else:
        with pytest.raises(ValidationError, match="years 1900 to 2199"):
            Envelope.model_validate(data)


def test_the_hidden_characters_are_the_controls_format_characters_and_separators_of_the_bmp() -> None:
    # The list is spelled out (the schemas must not change with the Python that generates them); this holds it to
    # the Unicode tables: categories Cc, Cf, Zl and Zp, every code point up to U+FFFF (surrogates aside).
    hidden = re.compile(f"[{HIDDEN_CHARACTERS}]")
    listed = {cp for cp in range(0x10000) if hidden.fullmatch(chr(cp))}
    expected = {cp for cp in range(0x10000) if unicodedata.category(chr(cp)) in ("Cc", "Cf", "Zl", "Zp")}
    assert listed == expected, sorted(listed ^ expected)


# (topic, dotted path) of identifiers and one-line places a producer writes
ID_FIELDS = [
    (COMMENTS_INBOUND, "community_id"), (COMMENTS_INBOUND, "thread_id"), (COMMENTS_INBOUND, "external_id"),
    (COMMENTS_INBOUND, "author_id"), (COMMENTS_INBOUND, "place"),
    (COMMENTS, "comment.community_id"), (COMMENTS, "comment.place"),
    (EVENTS_OUTCOMES, "event.community_id"), (EVENTS_OUTCOMES, "event.incident_id"),
    (EVENTS_OUTCOMES, "event.location"),
]
HIDDEN_IN_IDS = [
    "post-1\nBcc: x", "post-1\n", "\tpost-1", "a\x00b", "a\x1b[31mb", "a\x7fb", "a\x85b",  # controls, C1
    "a\u202eb", "a\u2066b", "a\u200fb",  # bidi override, isolate, mark
    "a\u2028b", "a\u2029b",  # line and paragraph separators
    "a\u200bb", "a\u2060b", "\ufeffa", "a\u00adb",  # zero-width space, word joiner, byte-order mark, soft hyphen
]
SHOWN_AS_TYPED = ["<!channel>", "<https://evil.example|click>", "@here", "resto lyon", "Café du Marché", "🍕 club"]


def with_value(data: dict[str, Any], dotted: str, value: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(data))
    *parents, last = dotted.split(".")
    (at_path(out, ".".join(parents)) if parents else out)[last] = value
    return out


@pytest.mark.parametrize(("spec", "dotted"), ID_FIELDS, ids=[f"{s.name}:{d}" for s, d in ID_FIELDS])
def test_an_id_or_a_place_with_a_hidden_character_is_refused_by_the_schema_and_by_the_model(
    spec: TopicSpec, dotted: str
) -> None:
    for value in HIDDEN_IN_IDS:
        data = with_value(example(spec), dotted, value)
        assert not validator(spec).is_valid(data), repr(value)
        out = decode(spec.model, Record("t", 0, 0, None, json.dumps(data).encode(), ()))
        assert isinstance(out, Rejection), repr(value)
        # The reason names the field and the character, so a producer can find it.
        assert dotted in out.reason and f"U+{ord(re.search(f'[{HIDDEN_CHARACTERS}]', value).group()):04X}" in out.reason
    for value in SHOWN_AS_TYPED:  # markup is escaped where it is shown, not refused
        data = with_value(example(spec), dotted, value)
        assert validator(spec).is_valid(data), value
        assert not isinstance(decode(spec.model, Record("t", 0, 0, None, json.dumps(data).encode(), ())), Rejection)


def test_the_schemas_state_the_identifier_rule_the_models_apply() -> None:
    schema = committed_schema(COMMENTS_INBOUND)
    assert schema["properties"]["community_id"]["pattern"] == IDENTIFIER_PATTERN
