"""Meta webhook deliveries in the shape Meta documents (Page `feed` and Instagram `comments`), built for tests."""

from __future__ import annotations

import json
from typing import Any

from services.ingest.meta import sign

PAGE = "104857392018473"
IG_ACCOUNT = "17841405309211844"
SENT_AT = 1763805600  # 2025-11-22T10:00:00Z, Unix seconds as Meta sends them


def post_id(post: str) -> str:
    return f"{PAGE}_{post}"


def feed_comment(
    post: str, comment: str, message: str | None = "Service déplorable, 1h d'attente !", *, verb: str = "add",
    parent: str | None = None, author: tuple[str, str] = ("6203311", "Camille R."),
    created_time: int | str = SENT_AT - 60,
) -> dict[str, Any]:
    """A Page feed change for a comment; `parent` is a comment id for a reply (Meta gives the post id otherwise)."""
    value: dict[str, Any] = {
        "from": {"id": author[0], "name": author[1]},
        "post": {"status_type": "added_photos", "is_published": True, "id": post_id(post)},
        "post_id": post_id(post),
        "comment_id": f"{post}_{comment}",
        "parent_id": parent or post_id(post),
        "created_time": created_time,
        "item": "comment",
        "verb": verb,
    }
    if message is not None:
        value["message"] = message
    return {"field": "feed", "value": value}


def feed_item(item: str, post: str, **extra: Any) -> dict[str, Any]:
    """A non-comment feed change: a reaction, a like, a share, a status post."""
    value = {"item": item, "verb": "add", "post_id": post_id(post), "from": {"id": "77", "name": "Léa"},
             "created_time": SENT_AT - 30, **extra}
    if item == "reaction":
        value["reaction_type"] = "angry"
    return {"field": "feed", "value": value}


def ig_comment(comment: str, media: str, text: str, *, parent: str | None = None,
               author: tuple[str, str] = ("17895695668004550", "lea.voyage")) -> dict[str, Any]:
    value: dict[str, Any] = {
        "from": {"id": author[0], "username": author[1]},
        "media": {"id": media, "media_product_type": "FEED"},
        "id": comment,
        "text": text,
    }
    if parent:
        value["parent_id"] = parent
    return {"field": "comments", "value": value}


def delivery(obj: str, *entries: tuple[str, list[dict[str, Any]]], time: int = SENT_AT) -> dict[str, Any]:
    return {"object": obj, "entry": [{"id": eid, "time": time, "changes": changes} for eid, changes in entries]}


def signed(payload: dict[str, Any] | bytes, secret: str) -> tuple[bytes, dict[str, str]]:
    """The body exactly as sent, and the headers Meta would send with it."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload, ensure_ascii=False).encode()
    return body, {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, secret)}
