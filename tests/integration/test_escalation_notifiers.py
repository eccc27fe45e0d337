"""Notifiers and the notification log against a real HTTP server, a real SMTP server and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import hashlib
import hmac
import json
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import asyncpg
import pytest
from aiosmtpd.controller import Controller
from prometheus_client import REGISTRY

from services.escalation.domain import Book, Engine, TimerKind, evolve
from services.escalation.handlers import _notification
from services.escalation.notifiers import (
    EmailNotifier,
    Notification,
    NotificationLog,
    WebhookNotifier,
)
from services.escalation.policy import parse_policy
from terrain.db import create_pool, migrate
from tests.servers import HookServer
from tests.unit.test_escalation_domain import at, run, scored

pytestmark = pytest.mark.integration

SECRET = "webhook-secret"


class Clock:
    """A clock the test moves by hand, so backoff and leases take no real time."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def hook() -> AsyncIterator[HookServer]:
    server = HookServer()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        await listener.wait_closed()


# --- a real SMTP server ----------------------------------------------------------------------------------


class Mailbox:
    """An aiosmtpd handler that records accepted messages and can refuse a recipient or the data."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.rcpt_replies: list[str] = []  # e.g. "550 5.1.1 ..." for the next RCPT TO
        self.data_replies: list[str] = []  # e.g. "451 4.3.0 ..." for the next DATA

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_replies:
            return self.data_replies.pop(0)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


# --- a real PostgreSQL ---------------------------------------------------------------------------------


@pytest.fixture
async def pool(schema_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(schema_url)
    try:
        await migrate(pool, "kernel", "terrain")
        await migrate(pool, "escalation", "services.escalation")
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookNotifier]:
    notifier = WebhookNotifier(timeout_s=2.0, secret=SECRET)
    try:
        yield notifier
    finally:
        await notifier.aclose()


def make_log(pool: asyncpg.Pool, clock: Clock, *notifiers: Any, **kwargs: Any) -> NotificationLog:
    kwargs = {"base_delay_s": 5.0, "max_delay_s": 600.0, "lease_s": 60.0} | kwargs
    return NotificationLog(pool, {n.kind: n for n in notifiers}, clock=clock, **kwargs)


def page(url: str, i: int = 0, *, kind: str = "webhook", text: str | None = None) -> Notification:
    return Notification(
        id=f"inc-1/step-1/oncall/{i}",
        incident_id="inc-1",
        channel="oncall-slack" if kind == "webhook" else "oncall-mail",
        kind=kind,
        target=url,
        subject="[Terrain] Cascade négative sur resto-lyon",
        text=text or "Une cascade de réponses négatives sous le post post-1.\nÀ traiter avant 18 h.",
        payload={"incident_id": "inc-1", "level": "human", "reason": "cascade", "actions": ["public_reply"]},
    )


async def enqueue(log: NotificationLog, notes: list[Notification]) -> int:
    async with log.pool.acquire() as conn, conn.transaction():
        return await log.enqueue(conn, notes)


async def row(pool: asyncpg.Pool, id_: str) -> asyncpg.Record:
    found = await pool.fetchrow("SELECT * FROM escalation_notifications WHERE id = $1", id_)
    assert found is not None
    return found


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- webhook -------------------------------------------------------------------------------------------


async def test_webhook_delivered_once_with_id_header_signature_and_slack_body(pool, hook, webhook) -> None:
    clock = Clock()
    log = make_log(pool, clock, webhook)
    n = page(hook.url())
    sent_before = sample("terrain_escalation_notifications_total", kind="webhook", outcome="sent")

    assert await enqueue(log, [n]) == 1
    assert await log.pending() == 1
    assert await log.deliver_due() == 1
    assert await log.deliver_due() == 0  # nothing left: no second send

    assert len(hook.requests) == 1
    req = hook.requests[0]
    assert req.path == "/hook"
    assert req.headers["x-terrain-notification-id"] == n.id
    assert req.headers["content-type"].startswith("application/json")
    expected_sig = hmac.new(SECRET.encode(), req.body, hashlib.sha256).hexdigest()
    assert req.headers["x-terrain-signature"] == f"sha256={expected_sig}"
    body = json.loads(req.body.decode("utf-8"))
    assert body["text"] == f"{n.subject}\n{n.text}"  # Slack and Mattermost show "text"
    assert body["terrain"] == n.payload

    r = await row(pool, n.id)
    assert (r["state"], r["attempts"], r["sent_at"], r["lease_until"]) == ("sent", 1, clock.now, None)
    assert await log.pending() == 0
    assert sample("terrain_escalation_notifications_total", kind="webhook", outcome="sent") == sent_before + 1

    listed = await log.list_for_incident(pool, "inc-1")
    assert [(x["id"], x["channel"], x["kind"], x["state"], x["attempts"]) for x in listed] == [
        (n.id, "oncall-slack", "webhook", "sent", 1)
    ]
    assert set(listed[0]) == {
        "id", "channel", "kind", "target", "state", "attempts", "last_error", "created_at", "sent_at"
    }

    # Retention: a sent row younger than the horizon stays, older goes.
    assert await log.purge(clock.now - timedelta(days=1)) == 0
    assert await log.purge(clock.now + timedelta(seconds=1)) == 1
    assert await log.list_for_incident(pool, "inc-1") == []


HOSTILE_COMMUNITY, HOSTILE_THREAD, HOSTILE_PLACE = "<!channel>", "<https://evil.example|click>", "@here [x](https://evil.example)"


async def test_an_incident_whose_ids_say_markup_arrives_at_the_webhook_escaped(pool, hook, webhook) -> None:
    """Ids and a place a chat would read as a channel mention, a disguised link and a Markdown link: the engine
    pages for them (two steps: the second page also asks for a field visit at the place) and the webhook gets
    them shown word for word, with nothing a chat acts on; the structured copy keeps them raw."""
    engine = Engine(parse_policy({
        "people": {"alice": {"name": "alice", "webhook": hook.url("/alice")}},
        "defaults": {"steps": [{"notify": ["person:alice"], "wait": "10m"}] * 2,
                     "field": {"on_place": True}},
    }))
    fx, _ = run(*[scored(f"c{i}", at=at(i), community=HOSTILE_COMMUNITY, thread=HOSTILE_THREAD, place=HOSTILE_PLACE)
                  for i in range(3)], engine=engine)
    (inc,) = fx.incidents.values()
    timer = next(t for t in fx.timers if t.kind is TimerKind.step)
    fx2, why = engine.on_timer(inc, timer, timer.due_at, Book(), [])
    notices = [_notification(n) for n in (*fx.notices, *fx2.notices)]
    assert len(notices) == 2, why
    clock = Clock()
    log = make_log(pool, clock, webhook)
    await enqueue(log, notices)
    assert await log.deliver_due() == 2

    # Sent concurrently: read them in the order they were paged.
    by_id = {r.headers["x-terrain-notification-id"]: json.loads(r.body) for r in hook.requests}
    bodies = [by_id[n.id] for n in notices]
    assert len(hook.requests) == 2 and all(r.status == 200 for r in hook.requests)
    for body in bodies:
        text = body["text"]
        assert "<" not in text and ">" not in text and "](" not in text, text
        assert not any(text[i + 1 : i + 2].isalnum() for i, c in enumerate(text) if c == "@"), text
        assert "&lt;!channel&gt;/&lt;https://evil.example|click&gt;" in text.splitlines()[0]
        assert "&lt;https://evil.example|click&gt;" in text.split("\n", 1)[1]  # in the reason too
        assert (body["terrain"]["community_id"], body["terrain"]["thread_id"]) == (HOSTILE_COMMUNITY, HOSTILE_THREAD)
    # The field visit the second page asks for names the place, shown as typed.
    assert "(@\u2060here [x]\u2060(https://evil.example))" in bodies[1]["text"]


async def test_webhook_500_then_200_is_retried_after_backoff_and_sent_once(pool, hook, webhook) -> None:
    clock = Clock()
    log = make_log(pool, clock, webhook)
    n = page(hook.url())
    hook.script = [(500, {})]
    await enqueue(log, [n])

    assert await log.deliver_due() == 1
    r = await row(pool, n.id)
    assert (r["state"], r["attempts"], r["last_error"]) == ("pending", 1, "HTTP 500")
    assert r["next_attempt_at"] == clock.now + timedelta(seconds=5)  # first retry waits exactly the base

    assert await log.deliver_due() == 0  # not due yet
    clock.advance(5)
    assert await log.deliver_due() == 1

    r = await row(pool, n.id)
    assert (r["state"], r["attempts"]) == ("sent", 2)
    assert [q.status for q in hook.requests] == [500, 200]
    assert {q.headers["x-terrain-notification-id"] for q in hook.requests} == {n.id}
    assert hook.delivered_ids() == {n.id: 1}


async def test_webhook_400_fails_without_retry(pool, hook, webhook) -> None:
    clock = Clock()
    log = make_log(pool, clock, webhook)
    n = page(hook.url())
    hook.script = [(400, {})]
    await enqueue(log, [n])

    assert await log.deliver_due() == 1
    clock.advance(3600)
    assert await log.deliver_due() == 0

    r = await row(pool, n.id)
    assert (r["state"], r["attempts"], r["last_error"], r["sent_at"]) == ("failed", 1, "HTTP 400", None)
    assert len(hook.requests) == 1


async def test_webhook_429_retry_after_sets_the_next_attempt(pool, hook, webhook) -> None:
    clock = Clock()
    log = make_log(pool, clock, webhook, base_delay_s=1.0)
    n = page(hook.url())
    hook.script = [(429, {"Retry-After": "120"})]
    await enqueue(log, [n])

    await log.deliver_due()
    r = await row(pool, n.id)
    assert (r["state"], r["last_error"]) == ("pending", "HTTP 429")
    assert r["next_attempt_at"] == clock.now + timedelta(seconds=120)


async def test_webhook_connection_refused_is_retried(pool, webhook) -> None:
    clock = Clock()
    log = make_log(pool, clock, webhook)
    n = page(f"http://127.0.0.1:{free_port()}/hook")  # nothing listens there
    await enqueue(log, [n])

    await log.deliver_due()
    r = await row(pool, n.id)
    assert (r["state"], r["attempts"], r["last_error"]) == ("pending", 1, "ConnectError")


async def test_attempts_exhausted_fails(pool, hook, webhook) -> None:
    clock = Clock()
    log = make_log(pool, clock, webhook, max_attempts=3)
    n = page(hook.url())
    hook.script = [(503, {})] * 10
    await enqueue(log, [n])

    for _ in range(6):
        await log.deliver_due()
        clock.advance(600)

    r = await row(pool, n.id)
    assert (r["state"], r["attempts"], r["last_error"]) == ("failed", 3, "HTTP 503")
    assert len(hook.requests) == 3


# --- idempotency, restarts and concurrent senders ---------------------------------------------------------


async def test_same_id_enqueued_twice_and_after_a_restart_is_sent_once(pool, hook, webhook) -> None:
    clock = Clock()
    log = make_log(pool, clock, webhook)
    n = page(hook.url())

    assert await enqueue(log, [n, n]) == 1  # a duplicate within one batch
    assert await enqueue(log, [n]) == 0  # the same escalation step replayed (a redelivered message)
    # A transaction that rolls back leaves nothing to send.
    with contextlib.suppress(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await log.enqueue(conn, [page(hook.url(), 99)])
            raise RuntimeError("the escalation step failed")
    assert await log.deliver_due() == 1

    # A restart: a new process, a new log, the same step replayed.
    restarted_notifier = WebhookNotifier(timeout_s=2.0)
    try:
        restarted = make_log(pool, clock, restarted_notifier)
        assert await enqueue(restarted, [n]) == 0
        clock.advance(3600)
        assert await restarted.deliver_due() == 0
    finally:
        await restarted_notifier.aclose()

    assert hook.delivered_ids() == {n.id: 1}
    assert len(hook.requests) == 1


async def test_two_logs_delivering_concurrently_send_each_notification_exactly_once(pool, hook) -> None:
    clock = Clock()
    hook.delay_s = 0.02  # sends overlap, so both senders claim while the other is sending
    notes = [page(hook.url(), i) for i in range(20)]
    first, second = WebhookNotifier(timeout_s=2.0), WebhookNotifier(timeout_s=2.0)
    try:
        a, b = make_log(pool, clock, first), make_log(pool, clock, second)
        assert await enqueue(a, notes) == 20

        async def drain(log: NotificationLog) -> int:
            total = 0
            while (claimed := await log.deliver_due(limit=3)) > 0:
                total += claimed
            return total

        counts = await asyncio.gather(drain(a), drain(b))
    finally:
        await first.aclose()
        await second.aclose()

    assert sum(counts) == 20 and all(c > 0 for c in counts)  # both took part
    assert hook.delivered_ids() == {n.id: 1 for n in notes}
    assert len(hook.requests) == 20
    states = await pool.fetch("SELECT state, attempts FROM escalation_notifications")
    assert {(s["state"], s["attempts"]) for s in states} == {("sent", 1)}


async def test_an_expired_lease_is_delivered_again_and_a_live_one_is_left_alone(pool, hook, webhook) -> None:
    clock = Clock()
    log = make_log(pool, clock, webhook)
    crashed, busy = page(hook.url(), 1), page(hook.url(), 2)
    await enqueue(log, [crashed, busy])
    # A sender claimed both, then died; one lease has run out, the other sender may still be working.
    await pool.execute(
        """UPDATE escalation_notifications SET state = 'sending', attempts = 1,
               lease_until = CASE WHEN id = $1 THEN $2::timestamptz ELSE $3::timestamptz END""",
        crashed.id, clock.now - timedelta(seconds=1), clock.now + timedelta(seconds=30),
    )

    assert await log.deliver_due() == 1
    assert hook.delivered_ids() == {crashed.id: 1}
    r = await row(pool, crashed.id)
    assert (r["state"], r["attempts"]) == ("sent", 2)
    r = await row(pool, busy.id)
    assert (r["state"], r["attempts"]) == ("sending", 1)


async def test_a_stale_sender_cannot_overwrite_a_newer_claim(pool, hook, webhook) -> None:
    clock = Clock()
    log = make_log(pool, clock, webhook, lease_s=10.0)
    n = page(hook.url())
    await enqueue(log, [n])
    # A slow receiver: the first sender's answer arrives after its lease expired and a second sender claimed.
    hook.delay_s = 0.3
    slow = asyncio.create_task(log.deliver_due())
    await asyncio.sleep(0.1)
    clock.advance(11)
    hook.delay_s = 0.0
    hook.script = [(500, {})]  # the second claim's send fails and is scheduled for a retry
    other = make_log(pool, clock, webhook, lease_s=10.0)
    assert await other.deliver_due() == 1
    await slow

    r = await row(pool, n.id)
    # The retry recorded by the newer claim stands; the stale "sent" did not overwrite it.
    assert (r["state"], r["attempts"], r["last_error"]) == ("pending", 2, "HTTP 500")


async def test_background_loop_delivers_after_wake_and_stops(pool, hook, webhook) -> None:
    clock = Clock()
    log = make_log(pool, clock, webhook)
    log.start(interval_s=30.0)  # long interval: only wake() can make this test quick
    try:
        await asyncio.sleep(0.05)
        n = page(hook.url())
        await enqueue(log, [n])
        log.wake()
        for _ in range(100):
            if hook.requests:
                break
            await asyncio.sleep(0.02)
    finally:
        await log.stop()
    assert hook.delivered_ids() == {n.id: 1}
    assert (await row(pool, n.id))["state"] == "sent"


# --- e-mail ----------------------------------------------------------------------------------------------


def email_notifier(port: int) -> EmailNotifier:
    return EmailNotifier(host="127.0.0.1", port=port, sender="Terrain <alertes@terrain.example>", timeout_s=5.0)


async def test_email_delivered_with_subject_french_text_and_message_id(pool, smtp) -> None:
    mailbox, port = smtp
    clock = Clock()
    notifier = email_notifier(port)
    log = make_log(pool, clock, notifier)
    text = "Bonjour Élodie,\nune cascade de réponses négatives attend une réponse publique.\nMerci, à bientôt."
    n = page("astreinte@resto.example", kind="email", text=text)
    await enqueue(log, [n])

    assert await log.deliver_due() == 1
    assert len(mailbox.messages) == 1
    mail_from, rcpt_tos, raw = mailbox.messages[0]
    assert (mail_from, rcpt_tos) == ("alertes@terrain.example", ["astreinte@resto.example"])
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg["Subject"] == n.subject  # accents survive the encoded-word round trip
    assert msg["To"] == "astreinte@resto.example"
    assert msg["Message-ID"] == notifier.message_id(n)
    assert msg["X-Terrain-Notification-Id"] == n.id
    assert msg.get_content_type() == "text/plain" and msg.get_content_charset() == "utf-8"
    assert msg.get_content().replace("\r\n", "\n").rstrip("\n") == text  # lines travel as CRLF
    assert (await row(pool, n.id))["state"] == "sent"


async def test_an_email_subject_built_from_a_stored_id_with_line_breaks_stays_one_header(pool, smtp) -> None:
    # Ids are refused with control characters now; a row stored before (or any subject) must still not add a
    # header, a recipient, or an invisible bidi override to the page. (PostgreSQL stores no NUL: the unit test
    # of the subject has one.)
    mailbox, port = smtp
    log = make_log(pool, Clock(), email_notifier(port))
    inc = evolve(next(iter(run(*[scored(f"c{i}", at=at(i)) for i in range(3)])[0].incidents.values())),
                 thread_id="post-1\r\nBcc: intrus@evil.example\u2028X-Evil: 1\x0b\u202eevil")
    engine = Engine(parse_policy({"channels": {"mail": {"kind": "email", "target": "astreinte@resto.example"}}}))
    (notice,), _ = engine.notices(inc, "esc-1", ["channel:mail"], "page", inc.opened_at)
    n = _notification(notice)
    await enqueue(log, [n])
    assert await log.deliver_due() == 1

    ((_, rcpt_tos, raw),) = mailbox.messages
    assert rcpt_tos == ["astreinte@resto.example"]  # no Bcc smuggled in
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Bcc"] is None and msg["X-Evil"] is None
    subject = str(msg["Subject"])
    assert "post-1 Bcc: intrus@evil.example X-Evil: 1 evil" in subject, subject
    assert not any(c in subject for c in "\r\n\x0b\u2028\u202e"), repr(subject)


async def test_email_451_then_ok_is_retried(pool, smtp) -> None:
    mailbox, port = smtp
    clock = Clock()
    log = make_log(pool, clock, email_notifier(port))
    n = page("astreinte@resto.example", kind="email")
    mailbox.data_replies = ["451 4.3.0 Try again later"]
    await enqueue(log, [n])

    await log.deliver_due()
    r = await row(pool, n.id)
    assert (r["state"], r["last_error"]) == ("pending", "SMTP 451")
    clock.advance(600)
    await log.deliver_due()
    r = await row(pool, n.id)
    assert (r["state"], r["attempts"]) == ("sent", 2)
    assert len(mailbox.messages) == 1


async def test_email_550_fails(pool, smtp) -> None:
    mailbox, port = smtp
    clock = Clock()
    log = make_log(pool, clock, email_notifier(port))
    n = page("personne@resto.example", kind="email")
    mailbox.rcpt_replies = ["550 5.1.1 No such user"]
    await enqueue(log, [n])

    await log.deliver_due()
    clock.advance(3600)
    assert await log.deliver_due() == 0
    r = await row(pool, n.id)
    assert (r["state"], r["attempts"], r["last_error"]) == ("failed", 1, "SMTP 550")
    assert mailbox.messages == []


async def test_background_loop_survives_a_database_error_and_logs_no_text(pool, hook, webhook, caplog) -> None:
    clock = Clock()
    log = make_log(pool, clock, webhook)
    n = page(hook.url())
    await pool.execute("ALTER TABLE escalation_notifications RENAME TO escalation_notifications_away")
    caplog.set_level("INFO", logger="terrain.escalation.notifiers")
    log.start(interval_s=0.02)
    try:
        for _ in range(100):  # the table is gone: rounds fail and the loop keeps going
            if any("round failed" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.02)
        await pool.execute("ALTER TABLE escalation_notifications_away RENAME TO escalation_notifications")
        await enqueue(log, [n])
        log.wake()
        for _ in range(100):
            if hook.requests:
                break
            await asyncio.sleep(0.02)
    finally:
        await log.stop()
    assert hook.delivered_ids() == {n.id: 1}
    failures = [r for r in caplog.records if "round failed" in r.getMessage()]
    assert failures and all(getattr(r, "error", None) == "UndefinedTableError" for r in failures)
    # Neither the text nor the recipient's URL reaches a log line above debug.
    for r in caplog.records:
        if r.levelname != "DEBUG":
            assert n.text not in str(r.__dict__) and n.target not in str(r.__dict__)
