"""Demo comments for `terrain up --demo`: the seed article's real reader comments and a short negative cascade."""

from __future__ import annotations

from datetime import datetime, timedelta
from importlib import resources
from typing import Any

SEED_COMMUNITY = "blog-cm-terrain"
SEED_THREAD = "article-cm-vers-le-terrain"
CASCADE_COMMUNITY = "resto-lyon-croix-rousse"
CASCADE_THREAD = "post-menu-automne"

# A short cascade written for the demo: one angry comment, then replies that pile on.
CASCADE = [
    "Service déplorable ce midi : 45 minutes d'attente et un plat froid. Je suis vraiment déçue.",
    "Pareil pour nous samedi, serveur désagréable et addition salée. Inadmissible.",
    "C'est devenu nul, on ne reviendra plus. Honteux pour une adresse aussi connue.",
    "Franchement décevant, la qualité a chuté depuis le changement de chef.",
]


def seed_comments() -> list[str]:
    """The reader comments of the seed article, with a lone greeting line joined to what follows it."""
    text = resources.files(__package__).joinpath("seed_comments_fr.txt").read_text(encoding="utf-8")
    out: list[str] = []
    pending = ""
    for line in (ln.strip() for ln in text.splitlines()):
        if not line:
            continue
        if line.endswith(",") and len(line) < 40:
            pending = f"{pending} {line}".strip()
            continue
        out.append(f"{pending} {line}".strip())
        pending = ""
    return out


def demo_comments(now: datetime) -> list[dict[str, Any]]:
    """Comments as an HTTP client would post them to ingest, timed just before `now`."""
    items: list[dict[str, Any]] = []
    seed = seed_comments()
    for i, text in enumerate(seed):
        items.append({
            "source": "blog", "external_id": f"seed-{i:03d}", "community_id": SEED_COMMUNITY,
            "thread_id": SEED_THREAD, "author_id": f"reader-{i:03d}", "text": text, "lang": "fr",
            "created_at": (now - timedelta(minutes=len(seed) - i + 30)).isoformat(),
        })
    for i, text in enumerate(CASCADE):
        items.append({
            "source": "facebook", "external_id": f"cascade-{i}", "community_id": CASCADE_COMMUNITY,
            "thread_id": CASCADE_THREAD, "parent_id": "cascade-0" if i else None, "author_id": f"fan-{i}",
            "text": text, "place": "Lyon, Croix-Rousse",
            "created_at": (now - timedelta(minutes=len(CASCADE) - i)).isoformat(),
        })
    return items
