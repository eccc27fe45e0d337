"""Message contracts for every Terrain topic (v1): pydantic models shared by producers and consumers."""

from terrain.contracts.base import Envelope, new_message_id
from terrain.contracts.comments import (
    CharterFlag,
    Comment,
    CommentAction,
    CommentIn,
    CommentMessage,
    CommentMetrics,
    InboundCommentMessage,
    ScoredCommentMessage,
    Sentiment,
    SentimentLabel,
    comment_id_for,
)
from terrain.contracts.escalations import EscalationMessage, EscalationTarget
from terrain.contracts.events import EventIn, EventOutcome, EventOutcomeMessage
from terrain.contracts.incidents import (
    Evidence,
    IncidentEventType,
    IncidentKind,
    IncidentLevel,
    IncidentMessage,
    IncidentSnapshot,
    IncidentState,
    RecommendedAction,
)

__all__ = [
    "CharterFlag",
    "Comment",
    "CommentAction",
    "CommentIn",
    "CommentMessage",
    "CommentMetrics",
    "Envelope",
    "EscalationMessage",
    "EscalationTarget",
    "EventIn",
    "EventOutcome",
    "EventOutcomeMessage",
    "Evidence",
    "InboundCommentMessage",
    "IncidentEventType",
    "IncidentKind",
    "IncidentLevel",
    "IncidentMessage",
    "IncidentSnapshot",
    "IncidentState",
    "RecommendedAction",
    "ScoredCommentMessage",
    "Sentiment",
    "SentimentLabel",
    "comment_id_for",
    "new_message_id",
]
