"""Comment contracts: inbound (other systems), normalised (ingest output) and scored (sentiment output)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from terrain.contracts.base import MAX_COUNT, AwareDatetime, Contract, Envelope, Identifier, OneLine, derived_id

Lang = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}$")]


def comment_id_for(source: str, external_id: str) -> str:
    """The stable Terrain id of a comment: the same source and external id always give the same id."""
    return derived_id("comment", source.strip().lower(), external_id.strip())


class CommentMetrics(Contract):
    likes: int = Field(default=0, ge=0, le=MAX_COUNT)
    replies: int = Field(default=0, ge=0, le=MAX_COUNT)
    shares: int = Field(default=0, ge=0, le=MAX_COUNT)


class CommentAction(StrEnum):
    created = "created"
    edited = "edited"
    removed = "removed"


class CommentIn(Contract):
    """A comment as another system hands it to Terrain (HTTP body, or the inbound topic's payload)."""

    source: Identifier = Field(description="Where the comment lives: facebook, instagram, forum, import…")
    external_id: Identifier = Field(description="The comment's id in its source.")
    community_id: Identifier = Field(description="The community (page, account, forum) it belongs to.")
    thread_id: Identifier = Field(description="The post or thread it was written under.")
    parent_id: Identifier | None = Field(default=None, description="External id of the comment it replies to.")
    author_id: Identifier | None = None
    author_name: Annotated[str, StringConstraints(max_length=300)] | None = None
    text: Annotated[str, StringConstraints(max_length=20_000)] = Field(description="The comment's text.")
    created_at: AwareDatetime
    lang: Lang | None = Field(default=None, description="ISO 639-1 language code when the source knows it.")
    metrics: CommentMetrics = Field(default_factory=CommentMetrics)
    place: Annotated[OneLine, StringConstraints(max_length=300)] | None = Field(
        default=None, description="A place the comment is about (restaurant, venue, town), if known."
    )
    removed: bool = Field(default=False, description="True when the source reports the comment was removed.")


class InboundCommentMessage(Envelope, CommentIn):
    """`terrain.comments.inbound.v1`: a comment published by another system, keyed by community id."""


class Comment(CommentIn):
    """A normalised comment with its stable Terrain id."""

    comment_id: str = Field(description="Stable id derived from source + external id.")
    revision: int = Field(default=1, ge=1, le=MAX_COUNT, description="1 for the first version; each edit adds one.")
    action: CommentAction = CommentAction.created
    text_truncated: bool = Field(
        default=False, description="True when the source's text was longer than ingest's limit and was cut to it."
    )


class CommentMessage(Envelope):
    """`terrain.comments.v1`: a normalised, deduplicated comment, keyed by community id."""

    comment: Comment


class SentimentLabel(StrEnum):
    negative = "negative"
    neutral = "neutral"
    positive = "positive"


class Sentiment(Contract):
    label: SentimentLabel
    score: float = Field(ge=-1.0, le=1.0, description="-1 most negative … +1 most positive.")
    confidence: float = Field(ge=0.0, le=1.0)
    lang: str = Field(description="Language the scorer used (detected or given).")
    model_version: str
    drivers: list[str] = Field(default_factory=list, description="Words or features that drove the label.")


class CharterFlag(Contract):
    kind: Annotated[str, StringConstraints(pattern=r"^(insult|threat|spam|personal_data)$")]
    confidence: float = Field(ge=0.0, le=1.0)
    evidence: str | None = Field(default=None, description="What triggered the flag (masked for personal data).")
    category: str | None = Field(
        default=None, max_length=50,
        description="A finer class within the kind, for readers that want it: `identity_hate` on an insult flag "
                    "marks hostility aimed at a group (origin, religion, gender, sexual orientation, disability). "
                    "Added in v1 as an optional field; a reader that does not know a category treats the flag "
                    "as its kind.",
    )


class ScoredCommentMessage(Envelope):
    """`terrain.comments.scored.v1`: a comment with its sentiment and charter flags, keyed by community id."""

    comment: Comment
    sentiment: Sentiment
    flags: list[CharterFlag] = Field(default_factory=list)
    scored_at: AwareDatetime
