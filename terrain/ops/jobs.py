"""The start-up jobs a cluster runs before the services: database migrations and topic creation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from terrain import db
from terrain.kafka import KafkaRefused, check_tls
from terrain.ops.plan import TopicPlan
from terrain.stack import SERVICES

log = logging.getLogger("terrain.ops")


class Unreachable(RuntimeError):
    """A start-up job's server did not take its connection in time, or refused it: one line says which and why."""


def migration_components() -> list[tuple[str, str]]:
    """(component, package) for the kernel and every service that ships migrations, in the order services use."""
    found = [("kernel", "terrain")]
    for svc in SERVICES:
        if resources.files(svc.module).joinpath("migrations").is_dir():
            found.append((svc.name, svc.module))
    return found


async def pending_migrations(pool: asyncpg.Pool) -> list[str]:
    """`component/file` of every migration not applied yet (the table may not exist: then all are pending)."""
    async with pool.acquire() as conn:
        exists = await conn.fetchval("SELECT to_regclass('terrain_schema_migrations') IS NOT NULL")
        rows = await conn.fetch("SELECT component, version FROM terrain_schema_migrations") if exists else []
    done = {(r["component"], r["version"]) for r in rows}
    return [
        f"{component}/{name}"
        for component, package in migration_components()
        for version, name, _ in db.migration_files(package)
        if (component, version) not in done
    ]


async def migrate_all(database_url: str, *, check_only: bool = False, connect_timeout_s: float = 60.0) -> list[str]:
    """Apply (or, with `check_only`, list) every pending migration; each component under the kernel's lock.
    Raises Unreachable when the database takes no connection within `connect_timeout_s` or refuses it."""
    try:
        pool = await db.create_pool(database_url, min_size=1, max_size=2, timeout_s=connect_timeout_s)
    except db.DatabaseUnreachable as exc:
        raise Unreachable(str(exc)) from None
    try:
        if check_only:
            return await pending_migrations(pool)
        applied: list[str] = []
        for component, package in migration_components():
            applied += [f"{component}/{name}" for name in await db.migrate(pool, component, package)]
        return applied
    finally:
        await pool.close()


@dataclass
class TopicsReport:
    created: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    # Topics that exist with fewer partitions than planned: consumers above that count would sit idle.
    short: dict[str, int] = field(default_factory=dict)


async def ensure_planned_topics(
    bootstrap_servers: str,
    plans: list[TopicPlan],
    *,
    replication_factor: int,
    min_insync_replicas: int | None = None,
    check_only: bool = False,
    timeout_s: float = 60.0,
    rename: dict[str, str] | None = None,
    on_wait: Callable[[str], None] | None = None,
    security: Mapping[str, Any] | None = None,
) -> TopicsReport:
    """Create the planned topics that are missing, with partitions and retention; report the ones present.

    Existing topics are never altered: changing partitions reshuffles keys, so it is an operator's decision.
    `rename` maps a planned name to the one to create (tests use unique names). While the broker does not
    answer, tries again every second for up to `timeout_s` (`on_wait` hears of it once), then raises
    Unreachable. `security`: the connection arguments of `terrain.kafka.client_options`; a broker that answers
    other than they say (no TLS where TLS is asked) raises Unreachable at once.
    """
    rename = rename or {}
    options = dict(security or {})
    deadline = time.monotonic() + timeout_s
    waiting = False
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000, **options)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            report = TopicsReport()
            missing: list[NewTopic] = []
            for plan in plans:
                name = rename.get(plan.name, plan.name)
                if name in existing:
                    report.present.append(name)
                    continue
                report.created.append(name)
                missing.append(NewTopic(
                    name, plan.partitions, replication_factor,
                    topic_configs=plan.config(min_insync_replicas=min_insync_replicas),
                ))
            if missing and not check_only:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(missing)
            if report.present:
                described = await admin.describe_topics(report.present)
                wanted = {rename.get(p.name, p.name): p.partitions for p in plans}
                for topic in described:
                    count = len(topic.get("partitions") or [])
                    if count < wanted[topic["topic"]]:
                        report.short[topic["topic"]] = count
            return report
        except (KafkaConnectionError, OSError) as exc:
            try:
                await check_tls(bootstrap_servers, options)
            except KafkaRefused as refused:
                raise Unreachable(str(refused)) from None
            if time.monotonic() > deadline:
                raise Unreachable(f"no Kafka broker answered at {bootstrap_servers} within {timeout_s:g} s "
                                  f"({db.reason(exc)})") from exc
            log.info("waiting for Kafka", extra={"bootstrap": bootstrap_servers})
            if on_wait is not None and not waiting:
                on_wait(f"waiting for Kafka at {bootstrap_servers} (up to {timeout_s:g} s)")
            waiting = True
            await asyncio.sleep(1.0)
        finally:
            await admin.close()
