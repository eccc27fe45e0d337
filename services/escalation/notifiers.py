"""Notifiers (JSON webhook, e-mail) and the PostgreSQL notification log that delivers each notification once.

Delivery guarantee. A notification is enqueued in the caller's transaction, so it exists exactly when the
escalation step that produced it committed, and its id (derived by the caller from step, channel and
recipient) makes a second enqueue a no-op. A sender claims due rows with `FOR UPDATE SKIP LOCKED`, marks
them `sending` with a lease and commits before sending, so two senders (two replicas, or a restarted
process) never send the same row at the same time. The outcome is then recorded with the claim's attempt
number as a fencing token.

So each id is sent at most once, with one exception: when the process dies (or loses the database) after
the receiver accepted a send but before the row was marked `sent`, the row is claimed again once its lease
expires and sent once more. That repeat carries the same `X-Terrain-Notification-Id` header (webhook) or
the same `Message-ID` (e-mail), so receivers that deduplicate on it drop it. A send is also bounded to
half the lease, so a slow receiver cannot outlive the lease and be sent to twice while alive. Leases are
compared with each sender's clock: replicas need clocks closer than `lease_s / 2`.

Retryable failures (timeouts, refused connections, HTTP 408/425/429/5xx, SMTP 4xx) are retried with
jittered exponential backoff, honouring an HTTP `Retry-After` (bounded by `max_delay_s`), up to
`max_attempts` sends; anything else is recorded as `failed` with a short reason (a status code or an
exception class, never the text). Logs name ids, channel, kind and outcome; addresses and URLs only at
debug level, text never.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any, Protocol

import aiosmtplib
import asyncpg
import httpx

from services.escalation import render
from services.escalation.metrics import NOTIFICATION_SEND_SECONDS, NOTIFICATIONS, NOTIFICATIONS_PENDING

log = logging.getLogger("terrain.escalation.notifiers")

_KNOWN_KINDS = frozenset({"webhook", "email"})


@dataclass(frozen=True)
class Notification:
    id: str  # stable idempotency key: the caller derives it from escalation step + channel + recipient
    incident_id: str
    channel: str  # the channel's name in the escalation policy, e.g. "oncall-slack"
    kind: str  # "webhook" or "email"
    target: str  # the webhook URL, or the e-mail address
    subject: str  # one line
    text: str  # rendered text for people (French or English), may be multi-line
    payload: Mapping[str, Any]  # JSON-able structured data (incident id, level, reason, actions...)


@dataclass(frozen=True)
class Delivery:
    ok: bool
    retryable: bool  # worth retrying later
    detail: str  # short, for the log and the database: a status code or an exception class, never the text
    retry_after_s: float | None = None  # the receiver asked to wait this long (HTTP Retry-After)


class Notifier(Protocol):
    kind: str

    async def send(self, n: Notification) -> Delivery: ...


# --- classification (pure) ---------------------------------------------------------------------------


def classify_http_status(status: int) -> tuple[bool, bool]:
    """(ok, retryable) for a webhook's HTTP status."""
    if 200 <= status < 300:
        return True, False
    if status in (408, 425, 429) or 500 <= status < 600:
        return False, True
    # Redirects and other client errors mean a wrong URL, token or body: retrying cannot help.
    return False, False


def classify_smtp_code(code: int) -> tuple[bool, bool]:
    """(ok, retryable) for an SMTP reply code: 4xx is a transient refusal, 5xx a permanent one."""
    if 200 <= code < 400:
        return True, False
    if 400 <= code < 500:
        return False, True
    return False, False


def parse_retry_after(value: str | None, *, date_header: str | None = None, now: float | None = None) -> float | None:
    """Seconds to wait from an HTTP `Retry-After` (delta-seconds or an HTTP-date), or None if absent or unreadable.

    An HTTP-date is measured against the response's own `Date` header when there is one, so the local clock
    does not matter; otherwise against `now` (Unix seconds).
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        until = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    reference: float | None = None
    if date_header:
        with contextlib.suppress(TypeError, ValueError, IndexError):
            reference = email.utils.parsedate_to_datetime(date_header).timestamp()
    if reference is None:
        reference = time.time() if now is None else now
    return max(0.0, until - reference)


def retry_delay(attempt: int, *, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after the `attempt`-th failed send (1-based): jittered exponential backoff.

    The ceiling doubles from `base_s` with each attempt and is bounded by `max_s`; the delay is drawn
    uniformly between `base_s` and that ceiling ("full jitter" with a floor, so a retry never comes
    immediately and many failing notifications spread out). Pass a seeded `random.Random` for a
    deterministic sequence.
    """
    floor = max(0.0, min(base_s, max_s))
    ceiling = min(max_s, base_s * 2.0 ** min(max(attempt, 1) - 1, 60))
    ceiling = max(ceiling, floor)
    if rng is None:
        return random.uniform(floor, ceiling)
    return rng.uniform(floor, ceiling)


def _kind_label(kind: str) -> str:
    # Label values come from a fixed set, whatever a policy names.
    return kind if kind in _KNOWN_KINDS else "other"


# --- notifiers ---------------------------------------------------------------------------------------


class WebhookNotifier:
    """A JSON webhook as Slack and Mattermost incoming webhooks accept it: `{"text": ..., "terrain": payload}`.

    `text` is escaped for their markup (`render.for_chat`: no link, mention or command can hide in an id);
    `terrain` carries the same facts as raw data, for programs, which must escape them if they show them.
    Headers: `X-Terrain-Notification-Id` (receivers deduplicate on it) and, with a secret,
    `X-Terrain-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>`.
    """

    kind = "webhook"

    def __init__(
        self, *, timeout_s: float = 5.0, secret: str | None = None, client: httpx.AsyncClient | None = None
    ) -> None:
        self.timeout_s = timeout_s
        self._secret = secret.encode("utf-8") if secret else None
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)

    def body(self, n: Notification) -> bytes:
        text = f"{render.subject(n.subject)}\n{n.text}" if n.text else render.subject(n.subject)
        doc = {"text": render.for_chat(text), "terrain": dict(n.payload)}
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")

    def headers(self, n: Notification, body: bytes) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "terrain-escalation",
            "X-Terrain-Notification-Id": n.id,
        }
        if self._secret is not None:
            digest = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            headers["X-Terrain-Signature"] = f"sha256={digest}"
        return headers

    async def send(self, n: Notification) -> Delivery:
        body = self.body(n)
        try:
            response = await self._client.post(
                n.target, content=body, headers=self.headers(n, body), timeout=self.timeout_s
            )
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            return Delivery(ok=False, retryable=False, detail=type(exc).__name__)
        except httpx.TransportError as exc:  # timeouts, refused or reset connections
            return Delivery(ok=False, retryable=True, detail=type(exc).__name__)
        ok, retryable = classify_http_status(response.status_code)
        retry_after = None
        if response.status_code in (429, 503):
            retry_after = parse_retry_after(
                response.headers.get("Retry-After"), date_header=response.headers.get("Date")
            )
        return Delivery(ok=ok, retryable=retryable, detail=f"HTTP {response.status_code}", retry_after_s=retry_after)

    async def aclose(self) -> None:
        """Close the HTTP client if this notifier created it."""
        if self._own_client:
            await self._client.aclose()


class EmailNotifier:
    """Plain-text UTF-8 e-mail over SMTP, with a `Message-ID` derived from the notification id."""

    kind = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        use_tls: bool = False,
        timeout_s: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self._password = password
        self.starttls = starttls
        self.use_tls = use_tls
        self.timeout_s = timeout_s
        domain = email.utils.parseaddr(sender)[1].rpartition("@")[2]
        self._domain = domain or "terrain.invalid"

    def message_id(self, n: Notification) -> str:
        # The id may hold characters a Message-ID cannot; its hash is stable and safe.
        return f"<{hashlib.sha256(n.id.encode('utf-8')).hexdigest()[:40]}@{self._domain}>"

    def message(self, n: Notification) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = n.target
        # A subject is one line: a line break in it would start a new header. Made one line here whatever the
        # subject holds (rows stored before ids refused line breaks, a caller that forgot).
        msg["Subject"] = render.subject(n.subject)
        msg["Date"] = email.utils.formatdate(usegmt=True)
        msg["Message-ID"] = self.message_id(n)
        msg["X-Terrain-Notification-Id"] = n.id
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to a page
        # quoted-printable keeps the accents intact through relays that do not take 8-bit bodies.
        msg.set_content(n.text, charset="utf-8", cte="quoted-printable")
        return msg

    async def send(self, n: Notification) -> Delivery:
        try:
            msg = self.message(n)
        except (ValueError, TypeError) as exc:  # an address or header the message cannot carry
            return Delivery(ok=False, retryable=False, detail=type(exc).__name__)
        try:
            await aiosmtplib.send(
                msg,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self._password,
                start_tls=self.starttls,
                use_tls=self.use_tls,
                timeout=self.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients] or [550]
            # One recipient per notification; should there be more, a transient refusal is worth a retry.
            retryable = any(classify_smtp_code(c)[1] for c in codes)
            return Delivery(ok=False, retryable=retryable, detail=f"SMTP {min(codes)}")
        except aiosmtplib.SMTPResponseException as exc:
            _, retryable = classify_smtp_code(exc.code)
            return Delivery(ok=False, retryable=retryable, detail=f"SMTP {exc.code}")
        except aiosmtplib.SMTPNotSupported as exc:  # e.g. STARTTLS required but not offered: configuration
            return Delivery(ok=False, retryable=False, detail=type(exc).__name__)
        except (aiosmtplib.SMTPException, OSError) as exc:  # timeouts, refused or dropped connections
            return Delivery(ok=False, retryable=True, detail=type(exc).__name__)
        return Delivery(ok=True, retryable=False, detail="SMTP 250")

    async def aclose(self) -> None:
        """Nothing to close: each send opens its own SMTP connection."""


# --- the notification log ------------------------------------------------------------------------------

_LIST_COLUMNS = "id, channel, kind, target, state, attempts, last_error, created_at, sent_at"


@dataclass(frozen=True)
class _Claimed:
    notification: Notification
    attempts: int  # after this claim: the fencing token for recording its outcome


class NotificationLog:
    """A notification log in PostgreSQL so a restart never sends the same notification twice."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        notifiers: Mapping[str, Notifier],
        *,
        clock: Callable[[], datetime],
        max_attempts: int = 8,
        base_delay_s: float = 5.0,
        max_delay_s: float = 600.0,
        lease_s: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if lease_s <= 0:
            raise ValueError("lease_s must be positive")
        self.pool = pool
        self.notifiers = dict(notifiers)
        self.clock = clock
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.lease_s = lease_s
        self._rng = rng
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    async def enqueue(self, conn: asyncpg.Connection, notifications: Sequence[Notification]) -> int:
        """Store notifications inside the caller's transaction, skipping ids already stored; returns how many were new.

        They become due when that transaction commits; call `wake()` after the commit to send them at once.
        """
        unique = list({n.id: n for n in notifications}.values())
        if not unique:
            return 0
        now = self.clock()
        rows = await conn.fetch(
            """INSERT INTO escalation_notifications
                   (id, incident_id, channel, kind, target, subject, text, payload, state, attempts,
                    next_attempt_at, created_at)
               SELECT id, incident_id, channel, kind, target, subject, text, payload::jsonb, 'pending', 0, $9, $9
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                           $8::text[]) AS u(id, incident_id, channel, kind, target, subject, text, payload)
               ON CONFLICT (id) DO NOTHING
               RETURNING id""",
            [n.id for n in unique],
            [n.incident_id for n in unique],
            [n.channel for n in unique],
            [n.kind for n in unique],
            [n.target for n in unique],
            [n.subject for n in unique],
            [n.text for n in unique],
            [json.dumps(dict(n.payload), ensure_ascii=False, default=str) for n in unique],
            now,
        )
        return len(rows)

    def wake(self) -> None:
        """Ask the background loop to look for due notifications now (call after the enqueuing transaction commits)."""
        self._wake.set()

    async def _claim(self, limit: int) -> list[_Claimed]:
        now = self.clock()
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """WITH due AS (
                       SELECT id FROM escalation_notifications
                       WHERE (state = 'pending' AND next_attempt_at <= $1)
                          OR (state = 'sending' AND lease_until <= $1)
                       ORDER BY next_attempt_at, id
                       LIMIT $2
                       FOR UPDATE SKIP LOCKED
                   )
                   UPDATE escalation_notifications n
                   SET state = 'sending', attempts = n.attempts + 1, lease_until = $3
                   FROM due WHERE n.id = due.id
                   RETURNING n.id, n.incident_id, n.channel, n.kind, n.target, n.subject, n.text, n.payload,
                             n.attempts""",
                now, limit, now + timedelta(seconds=self.lease_s),
            )
        return [
            _Claimed(
                Notification(
                    id=r["id"], incident_id=r["incident_id"], channel=r["channel"], kind=r["kind"],
                    target=r["target"], subject=r["subject"], text=r["text"], payload=json.loads(r["payload"]),
                ),
                r["attempts"],
            )
            for r in rows
        ]

    async def _send(self, c: _Claimed) -> Delivery:
        n = c.notification
        if c.attempts > self.max_attempts:
            # Claimed again after a sender died on its last attempt: the budget is spent.
            return Delivery(ok=False, retryable=False, detail="attempts exhausted (lease expired)")
        notifier = self.notifiers.get(n.kind)
        if notifier is None:
            return Delivery(ok=False, retryable=False, detail=f"no notifier for kind {n.kind!r}")
        started = time.perf_counter()
        try:
            # Bounded well inside the lease, so no other sender can claim this row while it is still being sent.
            async with asyncio.timeout(self.lease_s / 2):
                delivery = await notifier.send(n)
        except TimeoutError:
            delivery = Delivery(ok=False, retryable=True, detail="TimeoutError")
        except Exception as exc:  # a notifier bug must not stop the others
            delivery = Delivery(ok=False, retryable=True, detail=type(exc).__name__)
        NOTIFICATION_SEND_SECONDS.labels(kind=_kind_label(n.kind)).observe(time.perf_counter() - started)
        return delivery

    async def deliver_due(self, limit: int = 50) -> int:
        """Claim due notifications, send them concurrently outside any transaction, record each outcome.

        Returns how many were claimed (each sent once, or closed as failed without sending).
        """
        claimed = await self._claim(limit)
        if not claimed:
            return 0
        deliveries = await asyncio.gather(*(self._send(c) for c in claimed))
        now = self.clock()
        ids: list[str] = []
        tokens: list[int] = []
        states: list[str] = []
        next_at: list[datetime | None] = []
        errors: list[str | None] = []
        for c, d in zip(claimed, deliveries, strict=True):
            n = c.notification
            if d.ok:
                state, outcome, when, error = "sent", "sent", None, None
            elif d.retryable and c.attempts < self.max_attempts:
                delay = retry_delay(c.attempts, base_s=self.base_delay_s, max_s=self.max_delay_s, rng=self._rng)
                if d.retry_after_s is not None:
                    delay = max(delay, min(d.retry_after_s, self.max_delay_s))
                state, outcome, when, error = "pending", "retry", now + timedelta(seconds=delay), d.detail
            else:
                state, outcome, when, error = "failed", "failed", None, d.detail
            ids.append(n.id)
            tokens.append(c.attempts)
            states.append(state)
            next_at.append(when)
            errors.append(error)
            NOTIFICATIONS.labels(kind=_kind_label(n.kind), outcome=outcome).inc()
            log.log(
                logging.WARNING if outcome == "failed" else logging.INFO,
                "notification %s", outcome,
                extra={
                    "notification_id": n.id, "incident_id": n.incident_id, "channel": n.channel, "kind": n.kind,
                    "outcome": outcome, "attempt": c.attempts, "detail": d.detail,
                },
            )
            log.debug("notification target", extra={"notification_id": n.id, "target": n.target})
        # The attempt number is the fence: a sender whose lease expired and whose row was claimed again
        # records nothing over the newer claim.
        await self.pool.execute(
            """UPDATE escalation_notifications n
               SET state = u.state,
                   lease_until = NULL,
                   next_attempt_at = COALESCE(u.next_at, n.next_attempt_at),
                   last_error = COALESCE(u.error, n.last_error),
                   sent_at = CASE WHEN u.state = 'sent' THEN $6::timestamptz ELSE n.sent_at END
               FROM unnest($1::text[], $2::int[], $3::text[], $4::timestamptz[], $5::text[])
                    AS u(id, attempts, state, next_at, error)
               WHERE n.id = u.id AND n.attempts = u.attempts AND n.state = 'sending'""",
            ids, tokens, states, next_at, errors, now,
        )
        return len(claimed)

    async def pending(self) -> int:
        """Notifications not yet sent or failed (pending, or being sent)."""
        value = await self.pool.fetchval(
            "SELECT count(*) FROM escalation_notifications WHERE state IN ('pending', 'sending')"
        )
        return int(value or 0)

    async def list_for_incident(
        self, conn_or_pool: asyncpg.Connection | asyncpg.Pool, incident_id: str
    ) -> list[dict[str, Any]]:
        """An incident's notifications, oldest first, for the incident detail API (no text, no payload)."""
        rows = await conn_or_pool.fetch(
            f"""SELECT {_LIST_COLUMNS} FROM escalation_notifications
                WHERE incident_id = $1 ORDER BY created_at, id""",
            incident_id,
        )
        return [dict(r) for r in rows]

    async def purge(self, older_than: datetime) -> int:
        """Delete sent and failed notifications created before `older_than` (the log's retention)."""
        result = await self.pool.execute(
            "DELETE FROM escalation_notifications WHERE state IN ('sent', 'failed') AND created_at < $1",
            older_than,
        )
        return int(result.split()[-1])

    def start(self, interval_s: float = 1.0) -> None:
        """Deliver in the background every `interval_s` (sooner after `wake()`), until `stop()`."""
        if self._task is not None:
            return
        self._stopping = False

        async def loop() -> None:
            while not self._stopping:
                self._wake.clear()
                full = False
                try:
                    limit = 50
                    full = await self.deliver_due(limit) >= limit
                    NOTIFICATIONS_PENDING.set(await self.pending())
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the loop must outlive a database or network outage
                    log.warning("notification delivery round failed", extra={"error": type(exc).__name__})
                if full or self._stopping:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), interval_s)

        self._task = asyncio.create_task(loop(), name="escalation-notifications")

    async def stop(self, grace_s: float = 15.0) -> None:
        """Let the current round record its outcomes (up to `grace_s`), then stop the loop.

        A round cut short leaves rows `sending`; they are sent again once their lease expires.
        """
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), grace_s)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
