"""One pipeline for the hostile-input tests: the four services as processes (as `terrain up` runs them), the
real broker and PostgreSQL, each service's output in a log file that the log test reads afterwards."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from terrain.devstack import free_port
from terrain.stack import SERVICES, Stack

TOKEN = "hostile-token"
META_SECRET = "meta-app-secret-for-tests"
META_VERIFY = "meta-verify-token"


@pytest.fixture(scope="package")
def pipeline() -> Iterator[Stack]:
    home = Path(tempfile.mkdtemp(prefix="terrain-hostile-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRAIN_")}
    env.update({f"TERRAIN_{s.name.upper()}_PORT": str(free_port()) for s in SERVICES})
    env.update({
        "TERRAIN_TANSU_PORT": "0", "TERRAIN_HOME": str(home), "TERRAIN_API_TOKEN": TOKEN,
        "TERRAIN_META_APP_SECRET": META_SECRET, "TERRAIN_META_VERIFY_TOKEN": META_VERIFY,
        "TERRAIN_LOG_FORMAT": "json", "TERRAIN_LOG_LEVEL": "INFO",
    })
    stack = Stack(home=home, env=env, say=lambda _: None, log_dir=home / "logs")
    stack.start(ready_timeout_s=120)
    try:
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(home, ignore_errors=True)


class Rows:
    """Counts rows of the pipeline's tables over one connection, from synchronous test code."""

    def __init__(self, url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._conn: asyncpg.Connection = self._loop.run_until_complete(asyncpg.connect(url))

    def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        return self._loop.run_until_complete(self._conn.fetch(sql, *args))

    def count(self, tables: tuple[str, ...]) -> dict[str, int]:
        if not tables:
            return {}
        """Rows of each table, or of `table WHERE condition`."""
        sql = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t}) AS c{i}" for i, t in enumerate(tables))
        row = self._loop.run_until_complete(self._conn.fetchrow(sql))
        return {t.split()[0]: int(row[f"c{i}"]) for i, t in enumerate(tables)}

    def close(self) -> None:
        self._loop.run_until_complete(self._conn.close())
        self._loop.close()


@pytest.fixture(scope="package")
def rows(pipeline: Stack) -> Iterator[Rows]:
    r = Rows(pipeline.database_url)
    try:
        yield r
    finally:
        r.close()
