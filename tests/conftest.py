"""Shared fixtures: a real Tansu broker and a real PostgreSQL for the whole test session, stopped by pid."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, settings

from terrain.devstack import EmbeddedPostgres, TansuBroker
from terrain.topics import all_topic_names

# Property tests: no per-example deadline (a shared machine is slow at times). HYPOTHESIS_PROFILE=ci
# (set by .ci/run) draws the same examples on every run, so CI's verdict depends on the code alone;
# a developer's run keeps drawing new ones.
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", settings.get_profile("dev"), derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def run_seed(variable: str) -> int:
    """The seed of a randomised run: `variable` replays one; else a new one on a developer's machine, and the
    same one under HYPOTHESIS_PROFILE=ci (.ci/run), as the property tests' examples, so that a CI verdict
    depends on the code alone. Print it where a failure is reported."""
    given = os.environ.get(variable)
    if given:
        return int(given)
    return 0 if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else random.randrange(1_000_000)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A Tansu broker of our own (or TERRAIN_TEST_KAFKA_BOOTSTRAP_SERVERS when set)."""
    external = os.environ.get("TERRAIN_TEST_KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    broker = TansuBroker().start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """An embedded PostgreSQL in a temporary folder (or TERRAIN_TEST_DATABASE_URL when set)."""
    external = os.environ.get("TERRAIN_TEST_DATABASE_URL")
    if external:
        yield external
        return
    tmp = Path(tempfile.mkdtemp(prefix="terrain-test-pg-"))
    try:
        pg = EmbeddedPostgres(tmp / "data").start()
        try:
            yield pg.url
        finally:
            pg.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # about 50 MB per run otherwise


@pytest.fixture
def unique() -> str:
    """A short unique suffix: each test gets its own topics, consumer groups and database schema."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def topic_overrides(unique: str) -> dict[str, str]:
    """Every contract topic (and its dead-letter twin) mapped to a name no other test uses."""
    return {name: f"{name}.t{unique}" for name in all_topic_names()}


@pytest.fixture
async def schema_url(database_url: str, unique: str) -> AsyncIterator[str]:
    """A fresh PostgreSQL schema per test, first on the search path, dropped afterwards."""
    schema = f"t_{unique}"
    conn = await asyncpg.connect(database_url)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()
    sep = "&" if "?" in database_url else "?"
    # asyncpg passes unknown DSN query parameters to the server as settings.
    yield f"{database_url}{sep}search_path={schema}"
    conn = await asyncpg.connect(database_url)
    await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    await conn.close()


@pytest.fixture
def settings_kwargs(kafka_bootstrap: str, schema_url: str, unique: str) -> dict[str, Any]:
    """Settings for a service under test: fast group rejoin, small batches, a token."""
    return {
        "kafka_bootstrap_servers": kafka_bootstrap,
        "database_url": schema_url,
        "api_token": "test-token",
        "kafka_session_timeout_ms": 6000,
        "kafka_heartbeat_interval_ms": 500,
        "batch_timeout_ms": 50,
        "kafka_client_id": f"terrain-test-{unique}",
        "kafka_group_prefix": f"terrain-test-{unique}",
        "outbox_relay_min_age_s": 1.0,
        "outbox_relay_interval_s": 0.5,
    }


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Run an app's lifespan (broker, database) and give an HTTP client bound to it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers={"Authorization": "Bearer test-token"}
        ) as client:
            yield client
