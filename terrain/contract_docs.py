"""Contract docs generated from the topic registry: one JSON Schema per topic and an AsyncAPI 3.0 document."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

import terrain
from terrain.kafka import DLQ_HEADER_PREFIX
from terrain.topics import ALL_TOPICS, TopicSpec

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# A URN rather than a URL: Terrain publishes no schema host; the files in the repo are the source of truth.
SCHEMA_ID_PREFIX = "urn:terrain:schema:"
SCHEMAS_DIR = "schemas"
ASYNCAPI_FILE = "asyncapi.json"
LOCAL_BOOTSTRAP = "127.0.0.1:9092"
KAFKA_BINDING_VERSION = "0.5.0"

# The headers dead_letter() in terrain/kafka.py adds, with what each one carries.
DLQ_HEADERS: dict[str, str] = {
    f"{DLQ_HEADER_PREFIX}origin-topic": "The topic the rejected record was read from.",
    f"{DLQ_HEADER_PREFIX}origin-partition": "Its partition, as a decimal string.",
    f"{DLQ_HEADER_PREFIX}origin-offset": "Its offset in that partition, as a decimal string.",
    f"{DLQ_HEADER_PREFIX}consumer-group": "The consumer group that rejected it.",
    f"{DLQ_HEADER_PREFIX}reason": "Why it can never succeed (invalid or undecodable), at most 1000 chars.",
    f"{DLQ_HEADER_PREFIX}failed-at": "When it was rejected (ISO 8601 with offset).",
}


def schema_path(topic: str) -> str:
    """Where a topic's JSON Schema lives, relative to the contract docs folder."""
    return f"{SCHEMAS_DIR}/{topic}.json"


def schema_id(topic: str) -> str:
    return SCHEMA_ID_PREFIX + topic


def key_path(model: type[BaseModel], key: str) -> str:
    """The dotted path of the field a topic is keyed by, searched breadth-first through nested models."""
    queue: list[tuple[str, type[BaseModel]]] = [("", model)]
    while queue:
        prefix, current = queue.pop(0)
        for name, field in current.model_fields.items():
            if name == key:
                return prefix + name
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                queue.append((f"{prefix}{name}.", annotation))
    # A topic keyed by a field its messages do not carry is a registry mistake: fail the generation loudly.
    raise ValueError(f"{model.__name__} has no field {key!r} to key by")


def topic_schema(spec: TopicSpec) -> dict[str, Any]:
    """The standalone JSON Schema (draft 2020-12) of one topic's messages."""
    generated = spec.model.model_json_schema(mode="validation")
    generated.pop("title", None)
    generated.pop("description", None)
    defs = generated.pop("$defs", None)
    # Identity first, then the message's own fields, then the nested definitions: the reading order.
    schema: dict[str, Any] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": schema_id(spec.name),
        "title": spec.name,
        "description": f"{spec.description} Model: {spec.model.__module__}.{spec.model.__name__}.",
        **generated,
    }
    if defs:
        schema["$defs"] = defs
    return schema


def _channel_id(topic: str) -> str:
    # Ids without dots read better in generated code and in JSON pointers ("#/channels/...").
    return topic.replace(".", "_")


def _message_id(topic: str) -> str:
    return _channel_id(topic) + "_message"


def _operation(
    action: str, channel_id: str, message_id: str, parties: tuple[str, ...], verb: str
) -> dict[str, Any]:
    who = ", ".join(parties)
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel_id}"},
        "messages": [{"$ref": f"#/channels/{channel_id}/messages/{message_id}"}],
        "summary": f"{verb} by {who}.",
        "x-terrain-parties": list(parties),
    }


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document: every topic and its dead-letter twin, who publishes and who reads."""
    keys, top = models_json_schema(
        [(spec.model, "validation") for spec in ALL_TOPICS], ref_template="#/components/schemas/{model}"
    )
    component_schemas: dict[str, Any] = dict(sorted(top.get("$defs", {}).items()))
    # Channels, operations and messages follow the registry (the flow), each dead-letter twin after its topic.
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}

    for spec in ALL_TOPICS:
        cid, mid = _channel_id(spec.name), _message_id(spec.name)
        field = key_path(spec.model, spec.key)
        messages[mid] = {
            "name": spec.model.__name__,
            "title": spec.name,
            "summary": spec.description,
            "contentType": "application/json",
            "payload": keys[(spec.model, "validation")],
            "bindings": {
                "kafka": {
                    "key": {
                        "type": "string",
                        "description": f"The {spec.key} of the message (payload field `{field}`): one "
                        "community's messages stay ordered on one partition.",
                    },
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
            "x-terrain-key-field": field,
        }
        channels[cid] = {
            "address": spec.name,
            "title": spec.name,
            "description": spec.description,
            "messages": {mid: {"$ref": f"#/components/messages/{mid}"}},
            "x-terrain-dead-letter-topic": spec.dlq,
        }
        operations[f"{cid}_send"] = _operation("send", cid, mid, spec.producers, "Published")
        operations[f"{cid}_receive"] = _operation("receive", cid, mid, spec.consumers, "Consumed")

        dcid, dmid = _channel_id(spec.dlq), _message_id(spec.dlq)
        messages[dmid] = {
            "name": "DeadLetter",
            "title": spec.dlq,
            "summary": f"A record of {spec.name} that its consumer could never process, byte for byte.",
            "contentType": "application/octet-stream",
            "headers": {
                "type": "object",
                "description": "The original record's headers are carried over; these name its origin and "
                "the reason it was rejected.",
                "properties": {
                    name: {"type": "string", "description": text} for name, text in DLQ_HEADERS.items()
                },
                "required": list(DLQ_HEADERS),
            },
            "payload": {
                "type": "string",
                "format": "binary",
                "description": f"The original value as it was on {spec.name}, unchanged: usually JSON that "
                "failed validation, possibly not JSON or not UTF-8 at all.",
            },
            "bindings": {
                "kafka": {
                    "key": {
                        "type": "string",
                        "description": f"The original record's key, unchanged (the {spec.key}).",
                    },
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
        }
        channels[dcid] = {
            "address": spec.dlq,
            "title": spec.dlq,
            "description": f"Dead-letter twin of {spec.name}: what its consumers rejected, with the reason. "
            "Read it, fix the cause, then replay or discard.",
            "messages": {dmid: {"$ref": f"#/components/messages/{dmid}"}},
        }
        operations[f"{dcid}_send"] = _operation("send", dcid, dmid, spec.consumers, "Dead-lettered")
        operations[f"{dcid}_receive"] = _operation("receive", dcid, dmid, ("operators",), "Read")

    return {
        "asyncapi": "3.0.0",
        "id": "urn:terrain",
        "info": {
            "title": "Terrain",
            "version": terrain.__version__,
            "description": "Topics are Terrain's public interface: other systems publish comments and event "
            "outcomes to it and read incidents and escalations from it. Messages are UTF-8 JSON; consumers "
            "ignore fields they do not know. Generated from terrain/topics.py by "
            "`terrain contracts generate`.",
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": LOCAL_BOOTSTRAP,
                "protocol": "kafka",
                "description": "Local default: the embedded broker `terrain up` starts. Any Kafka-compatible "
                "cluster works through TERRAIN_KAFKA_BOOTSTRAP_SERVERS.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": component_schemas,
            "messages": messages,
        },
    }


def _dump(document: dict[str, Any]) -> str:
    # Key order is chosen where the documents are built (pydantic sorts schema keywords but keeps field
    # order), so no sort_keys here: it would scramble fields away from the models' reading order.
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def render() -> dict[str, str]:
    """Every generated file, relative path → text."""
    files = {schema_path(spec.name): _dump(topic_schema(spec)) for spec in ALL_TOPICS}
    files[ASYNCAPI_FILE] = _dump(asyncapi_document())
    return files


def _generated_on_disk(out_dir: Path) -> set[str]:
    """Generated files already in out_dir; only schemas/ and asyncapi.json, never hand-written files."""
    found = {p.relative_to(out_dir).as_posix() for p in (out_dir / SCHEMAS_DIR).glob("*.json")}
    if (out_dir / ASYNCAPI_FILE).exists():
        found.add(ASYNCAPI_FILE)
    return found


def _read(path: Path) -> str:
    # A checkout with CRLF line endings holds the same document; compare content, not line endings.
    return path.read_bytes().decode("utf-8").replace("\r\n", "\n")


def write(out_dir: Path) -> list[str]:
    """Write the generated files into out_dir and delete stale ones; returns the relative paths changed."""
    files = render()
    changed: list[str] = []
    for rel, text in files.items():
        path = out_dir / rel
        if path.exists() and _read(path) == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
        changed.append(rel)
    for rel in sorted(_generated_on_disk(out_dir) - files.keys()):
        (out_dir / rel).unlink()
        changed.append(rel)
    return changed


def _first_difference(expected: str, found: str, limit: int = 6) -> str:
    diff = difflib.unified_diff(
        found.splitlines(), expected.splitlines(), "committed", "generated", n=0, lineterm=""
    )
    lines = [line for line in diff if not line.startswith(("---", "+++", "@@"))]
    shown = "; ".join(line[0] + line[1:].strip() for line in lines[:limit])
    return shown + (" …" if len(lines) > limit else "")


def check(out_dir: Path) -> list[str]:
    """How the files in out_dir differ from what the models generate; empty when they are in step."""
    files = render()
    drift: list[str] = []
    for rel, text in files.items():
        path = out_dir / rel
        if not path.exists():
            drift.append(f"{rel} is missing")
            continue
        found = _read(path)
        if found != text:
            drift.append(
                f"{rel} differs from the models (- committed, + generated): {_first_difference(text, found)}"
            )
    for rel in sorted(_generated_on_disk(out_dir) - files.keys()):
        drift.append(f"{rel} is not generated by any topic (stale or hand-made); remove it")
    return drift
