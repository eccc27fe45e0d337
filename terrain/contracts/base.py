"""The envelope every message carries: id (for idempotency), time, producer and schema version."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
)

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

def utc_text(at: datetime) -> str:
    """An instant as the APIs, the messages and the JSON logs write it: RFC 3339 in UTC, with `Z`. One rule, so a
    reader never meets `+01:00` beside `Z` (a comment keeps the instant its platform gave, not its offset)."""
    return at.astimezone(UTC).isoformat().removesuffix("+00:00") + "Z"


def _in_utc(value: datetime) -> datetime:
    # Given back as a datetime, so pydantic writes it (`Z` for UTC) and the schemas still say date-time.
    return value if value.utcoffset() == _ZERO and value.tzinfo is UTC else value.astimezone(UTC)


_ZERO = timedelta(0)

# Read with any offset (RFC 3339: all are valid), kept as given in memory, written to JSON in UTC with `Z`.
AwareDatetime = Annotated[
    datetime, AfterValidator(_require_tz), PlainSerializer(_in_utc, return_type=datetime, when_used="json"),
    Field(json_schema_extra={"pattern": YEAR_PATTERN}),
]

# The largest count or version a message may carry: what the services' integer columns hold. The schemas say it
# (`maximum`), so a number the consumers cannot store is refused by the schema as by the model, not
# dead-lettered after a producer checked it (JSON Schema also counts 1e21 as an integer).
MAX_COUNT = 2**31 - 1

# The characters no identifier or one-line name may hold, as the body of a regex character class: the controls
# (Unicode category Cc: NUL, tab, newline, ESC, DEL, the C1 range), the line and paragraph separators (Zl, Zp)
# and every format character (Cf) of the Basic Multilingual Plane: soft hyphen, zero-width space and joiners,
# the bidi marks, embeddings, overrides (U+202E) and isolates, the word joiner, the byte-order mark. Each breaks
# a line, a header or a chat message, or makes one id look like another. Format characters above U+FFFF (the
# tag characters U+E0001 and U+E0020-U+E007F, a few script-specific ones) are not listed: JSON Schema's regex
# dialect (ECMA-262) and Python's have no common way to write a character past U+FFFF, and a rule the
# published schema cannot state would let a producer's checked message be dead-lettered. Spelled with \u
# escapes (which both dialects read) so the schema files stay plain ASCII; a unit test holds the list to the
# categories of the running Python's Unicode tables.
HIDDEN_CHARACTERS = (
    "\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u0600-\\u0605\\u061c\\u06dd\\u070f\\u0890\\u0891\\u08e2\\u180e"
    "\\u200b-\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u206f\\ufeff\\ufff9-\\ufffb"
)
# The spaces left once those are out (category Zs): what stripping removes from an identifier's ends.
_SPACES = "\\u0020\\u00a0\\u1680\\u2000-\\u200a\\u202f\\u205f\\u3000"
_HIDDEN = re.compile(f"[{HIDDEN_CHARACTERS}]")
_HIDDEN_RUNS = re.compile(f"[{HIDDEN_CHARACTERS}{_SPACES}]+")

# What the schemas say of a one-line name: no hidden character anywhere. Not `^[^...]*$`: Python's `$` also
# matches before a final newline, so "id\n" would pass there. The lookahead reads the same in both dialects: `.`
# stops at a line break, which is itself hidden, so `.*[...]` finds the first hidden character or nothing.
ONE_LINE_PATTERN = f"^(?!.*[{HIDDEN_CHARACTERS}])"
# Of an identifier: that, and a character that is not a space (the model strips the ends, so a blank one is
# refused, not only an empty one).
IDENTIFIER_PATTERN = f"{ONE_LINE_PATTERN}[{_SPACES}]*[^{_SPACES}]"


def _visible(value: Any) -> Any:
    # Before stripping: a newline at an end is refused like one in the middle, as the schema refuses it. Printable
    # ASCII (most ids) holds none of the hidden characters and skips the search: it runs on every id of every
    # comment ingest reads.
    if not isinstance(value, str) or (value.isascii() and value.isprintable()):
        return value
    if (found := _HIDDEN.search(value)) is not None:
        raise ValueError(
            f"must not hold control or invisible format characters (found U+{ord(found.group()):04X}"
            f" at character {found.start() + 1})"
        )
    return value


def one_line(text: str) -> str:
    """`text` as one line for a header or a title: each run of hidden characters and spaces becomes one space."""
    return _HIDDEN_RUNS.sub(" ", text).strip(" ")


# An id in a message (source, community, thread, author...): 1 to 200 characters once its surrounding spaces
# are stripped, none of them hidden (see HIDDEN_CHARACTERS).
Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, strip_whitespace=True),
    BeforeValidator(_visible),
    Field(json_schema_extra={"pattern": IDENTIFIER_PATTERN}),
]
# A name people read on one line (a place): any text without hidden characters; give it its own length bound.
OneLine = Annotated[str, BeforeValidator(_visible), Field(json_schema_extra={"pattern": ONE_LINE_PATTERN})]


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
