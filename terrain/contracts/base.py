"""The envelope every message carries: id (for idempotency), time, producer and schema version."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

# The schema version Terrain's producers write. Readers accept any later one on the same topic: see
# `Envelope.schema_version` and docs/contracts/README.md (schema evolution).
SCHEMA_VERSION = 1

# One namespace for every id Terrain derives, so ids are stable across processes and releases.
TERRAIN_NAMESPACE = uuid.UUID("6f1c2a4e-2b7d-5c1e-9a0f-7e3d2c1b0a99")


def new_message_id() -> str:
    """A fresh random message id, for messages that have no natural identity."""
    return str(uuid.uuid4())


_NAMESPACE_BYTES = TERRAIN_NAMESPACE.bytes


def derived_id(*parts: str) -> str:
    """A deterministic id from its parts: the same parts always give the same id.

    It is `str(uuid.uuid5(TERRAIN_NAMESPACE, "\\x1f".join(parts)))` (RFC 4122 name-based, SHA-1), written out
    because ingest derives two per comment and the `UUID` object costs twice the hash; a unit test holds
    both to the same answers.
    """
    name = "\x1f".join(parts).encode()
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# A comment, an incident or an event is of our time: an instant outside these years (UTC) is a mistake, and
# near the ends of Python's calendar an offset or a window's arithmetic overflows (year 1 at +14:00 is in
# year 0 in UTC, which PostgreSQL stores and no reader can load back).
EARLIEST_YEAR, LATEST_YEAR = 1900, 2199


def _require_tz(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must carry a timezone offset, e.g. 2026-11-25T10:00:00Z")
    if EARLIEST_YEAR < value.year < LATEST_YEAR:  # an offset (under a day) moves the year by one at most
        return value
    try:
        year = value.astimezone(UTC).year
    except OverflowError:
        year = 0
    if not EARLIEST_YEAR <= year <= LATEST_YEAR:
        raise ValueError(f"timestamp out of range: years {EARLIEST_YEAR} to {LATEST_YEAR} (UTC) are accepted")
    return value


# The years in the published schemas, as a pattern on the text (JSON Schema has no date ranges): it catches all
# but the few hours at either end where only the offset decides (1900-01-01T00:30+01:00 is 1899 in UTC).
YEAR_PATTERN = "^(19|20|21)[0-9]{2}-"

AwareDatetime = Annotated[datetime, AfterValidator(_require_tz), Field(json_schema_extra={"pattern": YEAR_PATTERN})]

# The largest count or version a message may carry: what the services' integer columns hold. The schemas say it
# (`maximum`), so a number the consumers cannot store is refused by the schema as by the model, not
# dead-lettered after a producer checked it (JSON Schema also counts 1e21 as an integer).
MAX_COUNT = 2**31 - 1

# An id in a message (source, community, thread, author...). Surrounding spaces are stripped; the pattern (a
# character that is not a space) puts in the published schema what the stripping implies: a blank identifier
# is refused, not only an empty one.
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True, pattern=r"\S")]


def error_message(err: Any) -> str:
    """One pydantic error's message for people: without the "Value error, " that pydantic puts before the
    text of our own validators ("timestamp out of range: ..." reads better alone)."""
    return str(err.get("msg", "invalid")).removeprefix("Value error, ")


def located_error(err: Any, *, prefix: str | None = None, whole: str = "(file)") -> str:
    """One pydantic error as "dotted.path: message" (`prefix` before the path; `whole` when the error is about
    the whole input): the form of policy, scenario and dead-letter reasons."""
    parts = [str(p) for p in err["loc"]]
    return f"{'.'.join([prefix, *parts] if prefix else parts) or whole}: {error_message(err)}"


class Contract(BaseModel):
    """Base for every message model: consumers ignore fields they do not know (forward compatible)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False, populate_by_name=True)


class Envelope(Contract):
    """Fields every message on every topic carries."""

    message_id: str = Field(
        min_length=1,
        max_length=200,
        description="Unique id of this message; consumers use it to make redeliveries no-ops.",
    )
    occurred_at: AwareDatetime = Field(description="When the fact this message reports happened (ISO 8601).")
    producer: str = Field(min_length=1, max_length=200, description="The system or service that produced it.")
    schema_version: int = Field(
        default=SCHEMA_VERSION,
        ge=1,
        le=MAX_COUNT,
        description=(
            "Minor version of this topic's schema. Within a topic (whose name carries the major, `.v1`) "
            "versions only add optional fields, so consumers read any version >= 1 and ignore what they "
            "do not know; a change old readers cannot read gets a new topic."
        ),
    )
