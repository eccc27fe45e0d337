"""The logs of a full run keep people out: after everything the other hostile tests sent, and comments with
recognisable texts and authors through every way in (the HTTP API, a signed Meta delivery, the inbound topic,
refused ones too) carried by all four services, no log line above debug holds a comment's text or its
author's identity. And every line is one JSON object with a real level, so a level filter can be trusted."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from terrain.demo import demo_comments
from terrain.stack import Stack
from terrain.topics import COMMENTS_INBOUND
from tests.hostile.conftest import META_SECRET, TOKEN, Rows
from tests.kafka_helpers import produce

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

LEVELS = {"debug", "info", "warning", "error", "critical"}


def people(tag: str) -> list[dict[str, str]]:
    """Comments whose text and author can be told apart from anything else in a log."""
    texts = [
        f"Témoin {tag} : service honteux, une arnaque, je suis furieux contre toute l'équipe",
        f"Témoin {tag} : appelez-moi au 06 12 34 56 78 ou écrivez à zephyrine.{tag}@example.org, c'est nul",
        f"Witness {tag}: terrible, rude staff, never again, you idiots",
        f"Témoin {tag} : merci pour la belle soirée d'hier",
    ]
    return [{"text": t, "author_id": f"auteur-{tag}-{i}", "author_name": f"Zéphyrine Marchand-{tag}-{i}"}
            for i, t in enumerate(texts)]


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(META_SECRET.encode(), body, hashlib.sha256).hexdigest()


def send_everywhere(stack: Stack, tag: str) -> list[str]:
    """The same kind of comments through each way in; returns the external ids that must be carried through."""
    urls, now = stack.urls(), datetime.now(UTC)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    carried = []
    api = []
    for i, p in enumerate(people(tag)):
        ext = f"logs-{tag}-api-{i}"
        api.append({"source": "forum", "external_id": ext, "community_id": f"c-logs-{tag}", "thread_id": "t-logs",
                    "created_at": (now - timedelta(minutes=5 - i)).isoformat(), **p})
        carried.append(ext)
    r = httpx.post(f"{urls['ingest']}/v1/comments", json=api, headers=auth, timeout=30)
    assert r.status_code == 202, r.text
    # refused ones: a bad timestamp, an unknown source; their text and author must not be logged either
    bad = [{**api[0], "external_id": f"logs-{tag}-bad-{i}", **change}
           for i, change in enumerate([{"created_at": "yesterday"}, {"source": "carrier-pigeon"}])]
    r = httpx.post(f"{urls['ingest']}/v1/comments", json=bad, headers=auth, timeout=30)
    assert r.status_code in (202, 400, 422), r.text
    p = people(tag)[2]
    delivery = {"object": "page", "entry": [{"id": f"page-{tag}", "time": int(now.timestamp()), "changes": [{
        "field": "feed", "value": {"item": "comment", "verb": "add", "comment_id": f"logs-{tag}-meta",
                                   "post_id": f"page-{tag}_1", "message": p["text"],
                                   "created_time": int(now.timestamp()),
                                   "from": {"id": p["author_id"], "name": p["author_name"]}}}]}]}
    body = json.dumps(delivery).encode()
    r = httpx.post(f"{urls['ingest']}/webhooks/meta", content=body,
                   headers={"X-Hub-Signature-256": sign(body), "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 200, r.text
    carried.append(f"logs-{tag}-meta")
    inbound = []
    for i, p in enumerate(people(tag)[:2]):
        ext = f"logs-{tag}-topic-{i}"
        inbound.append((f"c-logs-{tag}", {
            "message_id": ext, "occurred_at": now.isoformat(), "producer": "log-test", "source": "forum",
            "external_id": ext, "community_id": f"c-logs-{tag}", "thread_id": "t-logs",
            "created_at": now.isoformat(), **p}))
        carried.append(ext)
    # and one the inbound consumer dead-letters (no timestamp), text and author included
    inbound.append((f"c-logs-{tag}", {"message_id": f"logs-{tag}-poison", "occurred_at": now.isoformat(),
                                      "producer": "log-test", "source": "forum", "external_id": "p",
                                      "community_id": f"c-logs-{tag}", **people(tag)[0]}))
    asyncio.run(produce(stack.bootstrap, COMMENTS_INBOUND.name, inbound))
    return carried


def wait_carried(rows: Rows, carried: list[str], timeout_s: float = 90) -> None:
    """Until every service has the comments: ingest stored them, escalation and events counted them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = rows.fetch(
            """SELECT (SELECT count(*) FROM ingest_comments WHERE external_id = ANY($1::text[])) AS ingest,
                      (SELECT count(*) FROM escalation_comments e JOIN ingest_comments i USING (comment_id)
                        WHERE i.external_id = ANY($1::text[])) AS escalation,
                      (SELECT count(*) FROM events_comment_facts f JOIN ingest_comments i USING (comment_id)
                        WHERE i.external_id = ANY($1::text[])) AS events""", carried)[0]
        if all(got[k] == len(carried) for k in ("ingest", "escalation", "events")):
            time.sleep(2)  # the lines logged after the last write
            return
        time.sleep(0.5)
    raise AssertionError(f"not carried through within {timeout_s:.0f}s: {dict(got)}")


def test_no_comment_text_or_author_in_the_logs_above_debug(pipeline: Stack, rows: Rows):
    tag = uuid.uuid4().hex[:8]
    carried = send_everywhere(pipeline, tag)
    wait_carried(rows, carried)
    secrets = {s for p in people(tag) for s in p.values()}
    secrets |= {f"zephyrine.{tag}@example.org", "06 12 34 56 78"}
    # and the texts and authors the other tests of this package sent (a replayed delivery, the demo)
    secrets |= {"Replayed delivery", "Someone"}
    for c in demo_comments(datetime.now(UTC)):
        secrets |= {v[:60] for k in ("text", "author_id", "author_name") if len(v := c.get(k) or "") >= 10}
    assert pipeline.log_dir is not None
    files = sorted(Path(pipeline.log_dir).glob("*.log"))
    assert {f.stem for f in files} == {"ingest", "sentiment", "escalation", "events"}
    leaks, not_json, bad_levels, lines = [], [], [], 0
    for f in files:
        for n, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            lines += 1
            try:
                record = json.loads(line)
                level = record.get("level") if isinstance(record, dict) else None
            except ValueError:
                not_json.append(f"{f.name}:{n}: {line[:160]}")
                level = None
            if level not in LEVELS:
                bad_levels.append(f"{f.name}:{n}: {line[:160]}")
            if level == "debug":
                continue
            found = [s for s in secrets if s in line or json.dumps(s)[1:-1] in line]
            if found:
                leaks.append(f"{f.name}:{n} ({level}) holds {found[0]!r}: {line[:300]}")
    print(f"log lines read: {lines} in {len(files)} files")
    assert lines > 100
    assert leaks == [], "\n".join(leaks[:20])
    assert not_json == [], "lines that are not one JSON object:\n" + "\n".join(not_json[:20])
    assert bad_levels == [], "lines without a real level:\n" + "\n".join(bad_levels[:20])
