"""Notifier decisions without I/O: backoff bounds, and which replies are delivered, retried or failed."""

from __future__ import annotations

import dataclasses
import json
import random
import re

import pytest

from services.escalation import render
from services.escalation.domain import Engine, Incident, evolve
from services.escalation.notifiers import (
    EmailNotifier,
    Notification,
    WebhookNotifier,
    classify_http_status,
    classify_smtp_code,
    parse_retry_after,
    retry_delay,
)
from services.escalation.policy import parse_policy
from terrain.contracts import RecommendedAction
from tests.unit.test_escalation_domain import escalated_incident

# status, (ok, retryable)
HTTP_CASES = [
    (200, (True, False)),  # Slack and Mattermost answer 200 "ok"
    (202, (True, False)),  # accepted for later processing still counts as delivered
    (204, (True, False)),  # no content: delivered
    (301, (False, False)),  # a moved webhook is a configuration error; redirects are not followed
    (304, (False, False)),  # nothing a retry would change
    (400, (False, False)),  # the receiver rejects the body: the same body fails again
    (401, (False, False)),  # wrong signature or token: configuration
    (403, (False, False)),  # Slack's "invalid_token" / revoked webhook
    (404, (False, False)),  # Slack's "no_service" / deleted channel
    (408, (False, True)),  # request timeout: the receiver was slow, try again
    (410, (False, False)),  # Slack's "channel_is_archived"
    (413, (False, False)),  # too large: the same payload stays too large
    (422, (False, False)),  # semantically invalid body
    (425, (False, True)),  # too early: explicitly asks for a retry
    (429, (False, True)),  # rate limited: retry, honouring Retry-After
    (500, (False, True)),  # server error: transient by assumption
    (502, (False, True)),  # bad gateway (a proxy in front of the receiver)
    (503, (False, True)),  # unavailable, possibly with Retry-After
    (504, (False, True)),  # gateway timeout
]


@pytest.mark.parametrize(("status", "expected"), HTTP_CASES)
def test_http_status_decides_delivered_retry_or_failed(status: int, expected: tuple[bool, bool]) -> None:
    assert classify_http_status(status) == expected


# code, (ok, retryable)
SMTP_CASES = [
    (250, (True, False)),  # accepted
    (251, (True, False)),  # user not local, will forward: accepted
    (354, (True, False)),  # intermediate "start mail input": not a failure
    (421, (False, True)),  # service closing: transient
    (450, (False, True)),  # mailbox busy / greylisted
    (451, (False, True)),  # local error in processing: transient
    (452, (False, True)),  # insufficient storage
    (500, (False, False)),  # syntax error: the same command fails again
    (535, (False, False)),  # authentication failed: configuration
    (550, (False, False)),  # mailbox unavailable / rejected
    (552, (False, False)),  # message too large
    (554, (False, False)),  # transaction failed (e.g. rejected as spam)
]


@pytest.mark.parametrize(("code", "expected"), SMTP_CASES)
def test_smtp_code_decides_delivered_retry_or_failed(code: int, expected: tuple[bool, bool]) -> None:
    assert classify_smtp_code(code) == expected


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8, 20, 200])
def test_retry_delay_stays_between_base_and_the_doubling_ceiling_bounded_by_max(attempt: int) -> None:
    rng = random.Random(attempt)
    for _ in range(200):
        d = retry_delay(attempt, base_s=5.0, max_s=600.0, rng=rng)
        # Never sooner than the base, never later than the doubled base nor the maximum.
        assert 5.0 <= d <= min(600.0, 5.0 * 2 ** (attempt - 1))


def test_retry_delay_first_attempt_is_exactly_the_base() -> None:
    # Ceiling and floor coincide on the first retry: nothing to jitter.
    assert retry_delay(1, base_s=2.0, max_s=60.0, rng=random.Random(0)) == 2.0


def test_retry_delay_is_bounded_by_max_even_when_base_exceeds_it() -> None:
    # A misconfiguration (base above max) still never waits longer than max.
    assert retry_delay(3, base_s=100.0, max_s=10.0, rng=random.Random(0)) == 10.0


def test_retry_delay_is_deterministic_with_a_seeded_random() -> None:
    first = [retry_delay(a, base_s=1.0, max_s=300.0, rng=random.Random(42)) for a in range(1, 10)]
    again = [retry_delay(a, base_s=1.0, max_s=300.0, rng=random.Random(42)) for a in range(1, 10)]
    assert first == again


def test_retry_delay_spreads_retries_out() -> None:
    # Jitter: many notifications failing together do not all come back at the same instant.
    rng = random.Random(7)
    delays = {round(retry_delay(6, base_s=1.0, max_s=600.0, rng=rng), 3) for _ in range(50)}
    assert len(delays) > 40


# header value, response Date, expected seconds
RETRY_AFTER_CASES = [
    (None, None, None),  # absent
    ("", None, None),  # empty
    ("120", None, 120.0),  # delta-seconds
    (" 7 ", None, 7.0),  # surrounding spaces tolerated
    ("soon", None, None),  # unreadable: ignored, normal backoff applies
    ("-5", None, None),  # negative is not valid delta-seconds
    # An HTTP-date is measured against the response's own Date, whatever the local clock says.
    ("Wed, 21 Oct 2026 07:28:30 GMT", "Wed, 21 Oct 2026 07:28:00 GMT", 30.0),
    # A date already past means "now".
    ("Wed, 21 Oct 2026 07:27:00 GMT", "Wed, 21 Oct 2026 07:28:00 GMT", 0.0),
]


@pytest.mark.parametrize(("value", "date", "expected"), RETRY_AFTER_CASES)
def test_retry_after_parsing(value: str | None, date: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, date_header=date) == expected


def note(text: str = "Bonjour,\nun commentaire négatif attend une réponse.") -> Notification:
    return Notification(
        id="inc-1/step-0/oncall-slack/u1", incident_id="inc-1", channel="oncall-slack", kind="webhook",
        target="http://127.0.0.1:9/hook", subject="Incident\r\nBcc: x@example.org", text=text,
        payload={"incident_id": "inc-1", "level": "human"},
    )


async def test_webhook_body_and_signature_are_over_the_same_bytes() -> None:
    import hashlib
    import hmac
    import json

    notifier = WebhookNotifier(secret="s3cret")
    try:
        n = note()
        body = notifier.body(n)
        headers = notifier.headers(n, body)
        doc = json.loads(body)
        # The subject is the first line, made one line and written for chat (see the tests below).
        assert doc["text"].startswith("Incident Bcc: x@\u2060example.org\n") and doc["terrain"] == dict(n.payload)
        assert headers["X-Terrain-Notification-Id"] == n.id
        expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert headers["X-Terrain-Signature"] == f"sha256={expected}"
    finally:
        await notifier.aclose()


def test_email_subject_cannot_inject_headers_and_message_id_is_stable() -> None:
    notifier = EmailNotifier(host="127.0.0.1", port=25, sender="Terrain <alertes@terrain.example>")
    n = note()
    msg = notifier.message(n)
    # The line break in the subject is folded into a space, so no Bcc header appears.
    assert msg["Subject"] == "Incident Bcc: x@example.org" and msg["Bcc"] is None
    assert msg["Message-ID"] == notifier.message_id(n) and msg["Message-ID"].endswith("@terrain.example>")
    assert notifier.message(n)["Message-ID"] == msg["Message-ID"]


# text from outside, what a Slack or Mattermost message must carry instead
CHAT_CASES = [
    ("<!channel>", "&lt;!channel&gt;"),  # Slack: would notify the whole channel
    ("<!here|here>", "&lt;!here|here&gt;"),  # Slack: the same, with a label
    ("<@U024BE7LH>", "&lt;@\u2060U024BE7LH&gt;"),  # Slack: a user mention
    ("<https://evil.example|click>", "&lt;https://evil.example|click&gt;"),  # Slack: a link under a false name
    ("[click](https://evil.example)", "[click]\u2060(https://evil.example)"),  # Markdown (Mattermost): the same
    ("![x](https://evil.example/p.png)", "![x]\u2060(https://evil.example/p.png)"),  # Markdown: an image fetched
    ("@here @channel @all @alice", "@\u2060here @\u2060channel @\u2060all @\u2060alice"),  # Mattermost mentions
    ("Fish & Chips", "Fish &amp; Chips"),  # Slack asks for & escaped too; both show the entity as "&"
    ("&lt;!channel&gt;", "&amp;lt;!channel&amp;gt;"),  # already an entity: shown as typed, not decoded into a mention
    ("Répondre publiquement au commentaire c1", "Répondre publiquement au commentaire c1"),  # words unchanged
]


@pytest.mark.parametrize(("text", "expected"), CHAT_CASES)
def test_text_for_chat_hides_no_link_mention_or_command(text: str, expected: str) -> None:
    assert render.for_chat(text) == expected


PLACE = "@here [click](https://evil.example)"


def hostile_incident() -> Incident:
    """An incident whose ids and place say what a chat reads as markup, and a line break from a stored row."""
    inc, _ = escalated_incident()
    return evolve(inc, community_id="<!channel>", thread_id="<https://evil.example|click>\r\nBcc: x@example.org",
                  place=PLACE, actions=(*inc.actions, RecommendedAction(code="field_visit", params={"place": PLACE})))


def test_a_webhook_body_built_from_hostile_ids_carries_them_escaped_and_the_raw_data_apart() -> None:
    engine = Engine(parse_policy({"channels": {"oncall": {"kind": "webhook", "target": "http://127.0.0.1:9/h"}}}))
    inc = hostile_incident()
    notices, _ = engine.notices(inc, "esc-1", ["channel:oncall"], "3 negative comments", inc.opened_at)
    (n,) = notices
    doc = json.loads(WebhookNotifier().body(Notification(**dataclasses.asdict(n))))
    text = doc["text"]
    assert "<" not in text and ">" not in text and "](" not in text
    assert re.search(r"@\w", text) is None  # every @ is followed by the word joiner
    assert "&lt;!channel&gt;/&lt;https://evil.example|click&gt; Bcc: x@\u2060example.org" in text
    assert "(@\u2060here [click]\u2060(https://evil.example))" in text  # the place, in the field visit action
    # The structured copy stays raw: programs read ids as they are.
    assert doc["terrain"]["community_id"] == "<!channel>"


def test_an_email_subject_is_one_visible_line_whatever_the_ids_hold() -> None:
    notifier = EmailNotifier(host="127.0.0.1", port=25, sender="Terrain <alertes@terrain.example>")
    engine = Engine(parse_policy({"channels": {"mail": {"kind": "email", "target": "oncall@terrain.example"}}}))
    inc = evolve(hostile_incident(), thread_id="post-1\u2028Bcc: x@example.org\x00\u202eevil\u0085x")
    notices, _ = engine.notices(inc, "esc-1", ["channel:mail"], "page", inc.opened_at)
    (n,) = notices
    for subject in (n.subject, n.subject + "\r\nBcc: y@example.org\x00\u202e"):  # built, then whatever is stored
        msg = notifier.message(Notification(**{**dataclasses.asdict(n), "subject": subject}))
        raw = msg.as_bytes()
        assert raw.count(b"\nSubject:") == 1 and msg["Bcc"] is None and b"\nBcc:" not in raw
        assert not any(c in msg["Subject"] for c in "\r\n\x00\u2028\u202e\u0085"), msg["Subject"]
        assert msg["Subject"].startswith("[Terrain] ") and "post-1 Bcc: x@example.org" in msg["Subject"]
