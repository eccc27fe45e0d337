"""Label corrections by community managers, as stored and as training rows for `terrain sentiment train`.

Pure: the request and stored models, the metric, and the conversion to the labelled-JSONL rows the
trainer reads (`{"text", "label", "lang"}` per line). A text corrected more than once (for one comment or,
without a comment id, as the same words) trains with its latest label only.

A correction belongs to its comment's community, which the caller names (sentiment keeps no comments to look it
up) and which must be in the caller's scope: it is what scopes the list and the export. A comment's correction
is keyed by community and comment, so a caller can only ever replace corrections of its own communities.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Annotated, Any

from prometheus_client import Counter
from pydantic import Field, StringConstraints

from terrain.contracts import SentimentLabel
from terrain.contracts.base import AwareDatetime, Contract, Identifier
from terrain.contracts.comments import Lang

# Kept beside the corrections rather than in metrics.py so that this feature stays in the files it owns.
CORRECTIONS = Counter(
    "terrain_sentiment_corrections_total",
    "Label corrections recorded, by corrected label and the label the model had given (none when unknown).",
    ["label", "previous_label"],
)

ShortText = Annotated[str, StringConstraints(max_length=200, strip_whitespace=True)]


class CorrectionIn(Contract):
    """A community manager's label for a text, optionally the comment it came from and what the model said."""

    comment_id: Identifier | None = Field(
        default=None, description="The comment's Terrain id; a later correction of the same comment (in the same "
        "community) replaces this one."
    )
    community_id: Identifier | None = Field(
        default=None, description="The comment's community, in the caller's scope. Required unless the caller's "
        "scope is every community; a correction without one is seen only by such callers."
    )
    text: Annotated[str, StringConstraints(min_length=1, max_length=20_000)] = Field(
        description="The text as scored: this is what the next training run learns from."
    )
    lang: Lang | None = Field(default=None, description="ISO 639-1 language code, when known.")
    label: SentimentLabel = Field(description="The right label: negative, neutral or positive.")
    previous_label: SentimentLabel | None = Field(default=None, description="The label the model had given.")
    model_version: ShortText | None = Field(default=None, description="The model version that gave it.")
    corrected_by: ShortText | None = Field(
        default=None, description="Accepted for compatibility and ignored: a correction is recorded under the "
        "caller's identity (a person's name, or key:<name> for an API key)."
    )
    note: Annotated[str, StringConstraints(max_length=2_000)] | None = None


class Correction(Contract):
    """A stored correction."""

    id: int
    comment_id: str | None
    community_id: str | None
    text: str
    lang: str | None
    label: SentimentLabel
    previous_label: SentimentLabel | None
    previous_model_version: str | None
    corrected_by: str | None
    note: str | None
    created_at: AwareDatetime


def count(correction: CorrectionIn) -> None:
    previous = correction.previous_label.value if correction.previous_label else "none"
    CORRECTIONS.labels(label=correction.label.value, previous_label=previous).inc()


def training_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One line of the trainer's labelled JSONL; `lang` is null when the correction did not say."""
    label = row["label"]
    return {"text": row["text"], "label": label.value if isinstance(label, SentimentLabel) else str(label),
            "lang": row.get("lang")}


def corrections_to_training_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Training rows from stored corrections (dicts or `Correction.model_dump()`), oldest first.

    The same text corrected twice keeps only its latest label, at the place of that latest correction:
    two contradicting rows would teach the model nothing but noise.
    """
    def when(row: Mapping[str, Any]) -> tuple[datetime | str, int]:
        return row["created_at"], int(row.get("id") or 0)

    latest: dict[str, Mapping[str, Any]] = {}
    for row in sorted(rows, key=when):
        latest.pop(row["text"], None)  # re-insert: dict order then follows each text's latest correction
        latest[row["text"]] = row
    return [training_row(r) for r in latest.values()]
