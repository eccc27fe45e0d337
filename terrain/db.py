"""PostgreSQL plumbing: asyncpg pool, versioned migrations under an advisory lock, idempotency and the outbox.

Exactly-once effects on an at-least-once bus: a consumer records each message id it processed in the
same transaction as the effects (`claim_new`), so a redelivery is a no-op; messages to publish are
written to the outbox in that transaction too and sent after commit (`Outbox`), so a crash between
commit and publish loses nothing (the relay sends what is left; consumers drop the duplicate ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import asyncpg

from terrain import telemetry
from terrain.kafka import OutMessage, Publisher

log = logging.getLogger("terrain.db")

_MIGRATION_LOCK = 0x7465_7272_6169_6E  # "terrain": one advisory lock for every service's migrations
_OUTBOX_LOCK = 0x6F75_7462  # "outb": with hashtext(service), one outbox sender per service at a time
_MIGRATION_NAME = re.compile(r"^(\d{3,})_[a-z0-9_]+\.sql$")


class DatabaseUnreachable(RuntimeError):
    """PostgreSQL took no connection in time, or refused it; the message names the server (no password) and
    the reason in one line, for a log or a terminal."""


def reason(exc: BaseException) -> str:
    """An exception as 'Type: message', once (some messages already start with their type)."""
    name, text = type(exc).__name__, str(exc).strip()
    return text if text.startswith(name) else f"{name}: {text}" if text else name


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 5, timeout_s: float = 30.0) -> asyncpg.Pool:
    """Connect, retrying while the server starts up (bounded by `timeout_s`). Raises DatabaseUnreachable."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, command_timeout=30)
            assert pool is not None
            return pool
        except (OSError, TimeoutError, asyncpg.exceptions.CannotConnectNowError,
                asyncpg.exceptions.PostgresConnectionError, asyncpg.exceptions.InterfaceError) as exc:
            if time.monotonic() > deadline:
                raise DatabaseUnreachable(f"PostgreSQL at {describe_url(url)} did not take a connection within "
                                          f"{timeout_s:g} s ({reason(exc)})") from None
            await asyncio.sleep(0.5)
        except asyncpg.exceptions.PostgresError as exc:  # refused at once: unknown role or database, password
            raise DatabaseUnreachable(f"PostgreSQL at {describe_url(url)} refused the connection "
                                      f"({reason(exc)})") from None


def describe_url(url: str) -> str:
    """The database a URL points at, without its password: for the log line that says where data goes."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "(unix socket)"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"postgresql://{user}{host}{port}{parts.path}"


def migration_files(package: str) -> list[tuple[int, str, Traversable]]:
    """The `NNN_name.sql` files of a package's `migrations` folder, in version order."""
    folder = resources.files(package).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry))
    found.sort(key=lambda t: t[0])
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {package}.migrations: {versions}")
    return found


async def migrate(pool: asyncpg.Pool, component: str, package: str) -> list[str]:
    """Apply the package's pending migrations, each in its own transaction, under an advisory lock."""
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS terrain_schema_migrations (
                       component text NOT NULL, version int NOT NULL, name text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (component, version))"""
            )
            done = {
                r["version"]
                for r in await conn.fetch(
                    "SELECT version FROM terrain_schema_migrations WHERE component = $1", component
                )
            }
            for version, name, entry in migration_files(package):
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(entry.read_text(encoding="utf-8"))
                    await conn.execute(
                        "INSERT INTO terrain_schema_migrations (component, version, name) VALUES ($1, $2, $3)",
                        component, version, name,
                    )
                applied_now.append(name)
                log.info("migration applied", extra={"component": component, "migration": name})
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now


async def claim_new(conn: asyncpg.Connection, consumer: str, message_ids: Sequence[str]) -> set[str]:
    """Record these message ids as processed by `consumer`; return the ones not processed before.

    Call inside the transaction that stores the effects: if it rolls back, the claim does too.
    """
    if not message_ids:
        return set()
    rows = await conn.fetch(
        """INSERT INTO terrain_processed_messages (consumer, message_id)
           SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING RETURNING message_id""",
        consumer, list(dict.fromkeys(message_ids)),
    )
    return {r["message_id"] for r in rows}


async def release_claims(conn: asyncpg.Connection, consumer: str, message_ids: Sequence[str]) -> None:
    """Undo `claim_new` for messages this transaction refuses (they go to the dead-letter topic).

    A refused message is dead-lettered after commit; if that publish fails the batch is read again, and the
    message must be refused (and dead-lettered) again rather than skipped as already processed.
    """
    if message_ids:
        await conn.execute(
            "DELETE FROM terrain_processed_messages WHERE consumer = $1 AND message_id = ANY($2::text[])",
            consumer, list(message_ids),
        )


async def prune_processed(pool: asyncpg.Pool, service: str, retention_s: float, batch: int) -> int:
    """Delete processed-message records older than the retention window, `batch` rows per statement.

    The window must be longer than any redelivery can come (a consumer group's lag at worst), after which
    a record no longer protects anything. Bounded statements keep locks and WAL per statement small.
    """
    total = 0
    while True:
        n = int(
            await pool.fetchval(
                """WITH old AS (
                       SELECT ctid FROM terrain_processed_messages
                       WHERE processed_at < now() - make_interval(secs => $1)
                       LIMIT $2 FOR UPDATE SKIP LOCKED)
                   , gone AS (DELETE FROM terrain_processed_messages p USING old WHERE p.ctid = old.ctid
                              RETURNING 1)
                   SELECT count(*) FROM gone""",
                retention_s, batch,
            )
        )
        total += n
        if n:
            telemetry.PROCESSED_PRUNED.labels(service=service).inc(n)
        if n < batch:
            break
    if total:
        log.info("processed-message records pruned", extra={"count": total})
    return total


def _stored_message(row: asyncpg.Record) -> OutMessage:
    """An outbox row as the message it holds."""
    return OutMessage(row["topic"], row["key"], bytes(row["value"]), json.loads(row["headers"]))


class Outbox:
    """Messages written in a business transaction, published after it commits, relayed if a crash intervened."""

    def __init__(self, pool: asyncpg.Pool, publisher: Publisher, service: str) -> None:
        self.pool = pool
        self.publisher = publisher
        self.service = service
        self._relay_task: asyncio.Task[None] | None = None

    async def enqueue(self, conn: asyncpg.Connection, messages: Sequence[OutMessage]) -> list[int]:
        """Store messages in the outbox, inside the caller's transaction. Returns their outbox ids."""
        if not messages:
            return []
        sql, args = self.enqueue_statement(messages)
        return [r["id"] for r in await conn.fetch(sql, *args)]

    def enqueue_statement(self, messages: Sequence[OutMessage]) -> tuple[str, list[Any]]:
        """The INSERT ... RETURNING id that `enqueue` runs, for a caller that folds it into a statement of its own
        (the rows it returns are the outbox ids, in the messages' order)."""
        return (
            """INSERT INTO terrain_outbox (service, topic, key, value, headers)
               SELECT $1, t, k, v, h::jsonb
               FROM unnest($2::text[], $3::text[], $4::bytea[], $5::text[]) WITH ORDINALITY AS u(t, k, v, h, n)
               ORDER BY n
               RETURNING id""",
            [
                self.service,
                [m.topic for m in messages],
                [m.key for m in messages],
                [m.value for m in messages],
                [json.dumps(m.headers) for m in messages],
            ],
        )

    async def flush(self, ids: Sequence[int], messages: Sequence[OutMessage] = ()) -> None:
        """Send messages this transaction committed to the outbox (with any older ones still pending, first).

        With `messages` (those `ids` were enqueued for, in the same order) the rows are claimed by deleting them
        and the messages sent from memory; without, they are read back from the claimed rows. Either way a row
        is sent by whoever claims it, never by two senders, and one sender per service works at a time.
        """
        if not ids:
            return
        if len(messages) != len(ids):
            await self._send_pending(upto=max(ids), wait=True)
            return
        async with self.pool.acquire() as conn, conn.transaction():
            # Losing this commit in a crash only leaves the rows for the relay: a duplicate at worst, which
            # consumers drop by message id. So it need not wait for the disk.
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2)), set_config('synchronous_commit', 'off', true)",
                _OUTBOX_LOCK, self.service,
            )
            # Claim this transaction's rows by deleting them, and see whether older rows wait (a failed send, a
            # crashed replica): those go first, so each key keeps its order.
            row = await conn.fetchrow(
                """WITH mine AS (DELETE FROM terrain_outbox WHERE id = ANY($1::bigint[]) RETURNING id)
                   SELECT ARRAY(SELECT id FROM mine) AS claimed,
                          EXISTS (SELECT 1 FROM terrain_outbox WHERE service = $2 AND id < $3) AS older""",
                list(ids), self.service, min(ids),
            )
            assert row is not None
            claimed = set(row["claimed"])
            ours = [m for i, m in sorted(zip(ids, messages, strict=True), key=lambda p: p[0]) if i in claimed]
            if row["older"]:
                rows = await conn.fetch(
                    """SELECT id, topic, key, value, headers FROM terrain_outbox
                       WHERE service = $1 AND id < $2 ORDER BY id FOR UPDATE SKIP LOCKED""",
                    self.service, min(ids),
                )
                older = [_stored_message(r) for r in rows]
                await self.publisher.publish(older + ours)
                await conn.execute("DELETE FROM terrain_outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows])
            elif ours:
                await self.publisher.publish(ours)

    async def relay_once(self, min_age_s: float, limit: int = 1000) -> int:
        """Send leftovers older than `min_age_s` (a crash or a broker outage came between commit and send)."""
        return await self._send_pending(min_age_s=min_age_s, limit=limit, wait=False)

    async def _send_pending(
        self, *, upto: int | None = None, min_age_s: float = 0.0, limit: int = 1000, wait: bool
    ) -> int:
        """Claim pending rows in id order, publish them, delete them, in one transaction.

        One sender per service at a time (a transaction-scoped advisory lock), sending in id order, keeps
        the order of each key; the claimed rows are also locked (`FOR UPDATE SKIP LOCKED`), so a row is
        never sent by two senders. A failure after the publish leaves the rows for the next sender: a
        duplicate at worst, which consumers drop by message id.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            if wait:
                await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _OUTBOX_LOCK, self.service)
            elif not await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock($1, hashtext($2))", _OUTBOX_LOCK, self.service
            ):
                return 0  # another sender is at work; what it leaves is picked up next time
            rows = await conn.fetch(
                """SELECT id, topic, key, value, headers FROM terrain_outbox
                   WHERE service = $1 AND ($2::bigint IS NULL OR id <= $2)
                     AND ($2::bigint IS NOT NULL OR created_at < now() - make_interval(secs => $3))
                   ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED""",
                self.service, upto, min_age_s, limit,
            )
            if not rows:
                return 0
            await self.publisher.publish(
                [_stored_message(r) for r in rows]
            )
            await conn.execute("DELETE FROM terrain_outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows])
        if upto is None:
            log.info("outbox relayed", extra={"count": len(rows)})
        return len(rows)

    async def depth(self) -> int:
        """Rows of this service not sent yet; exported as `terrain_outbox_depth`."""
        n = int(await self.pool.fetchval("SELECT count(*) FROM terrain_outbox WHERE service = $1", self.service))
        telemetry.OUTBOX_DEPTH.labels(service=self.service).set(n)
        return n

    def start_relay(self, interval_s: float, min_age_s: float) -> None:
        async def loop() -> None:
            while True:
                try:
                    while await self.relay_once(min_age_s) > 0:
                        pass
                    await self.depth()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the relay must outlive a database or broker outage
                    log.warning("outbox relay failed: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(interval_s)

        self._relay_task = asyncio.create_task(loop(), name=f"outbox-relay-{self.service}")

    async def stop_relay(self) -> None:
        if self._relay_task:
            self._relay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relay_task
            self._relay_task = None
