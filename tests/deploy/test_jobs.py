"""`terrain migrate` and `terrain topics` on the real broker and PostgreSQL; the dashboards' SQL on the real tables."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from terrain.devstack import TansuBroker
from terrain.ops.dashboards import all_dashboards, sql_queries
from terrain.ops.jobs import ensure_planned_topics, migrate_all, migration_components
from terrain.ops.plan import topic_plans
from terrain.stack import SERVICES
from terrain.topics import all_topic_names

pytestmark = pytest.mark.integration


async def test_migrate_applies_every_component_once_and_check_sees_none_pending(schema_url: str) -> None:
    pending = await migrate_all(schema_url, check_only=True)
    components = {p.split("/")[0] for p in pending}
    assert components == {"kernel"} | {s.name for s in SERVICES}
    assert next(c for c, _ in migration_components()) == "kernel"  # services' migrations build on the kernel's
    applied = await migrate_all(schema_url)
    assert applied == pending
    assert await migrate_all(schema_url) == []
    assert await migrate_all(schema_url, check_only=True) == []


def _grafana_to_sql(query: str) -> str:
    """Grafana's macros and variables as Grafana expands them, with fixed values."""
    query = re.sub(r"\$__timeFilter\(([^)]+)\)", r"\1 BETWEEN now() - interval '7 days' AND now()", query)
    return query.replace("$community", "'resto-lyon', 'mairie-nantes'")


async def test_dashboard_sql_runs_against_the_services_tables(schema_url: str) -> None:
    await migrate_all(schema_url)
    conn = await asyncpg.connect(schema_url)
    try:
        queries = [q for board in all_dashboards().values() for q in sql_queries(board)]
        assert len(queries) >= 6
        for query in queries:
            assert "$" not in _grafana_to_sql(query), query
            await conn.fetch(_grafana_to_sql(query))  # empty tables: the query must parse, plan and run
    finally:
        await conn.close()


async def test_topics_are_created_with_partitions_and_retention_and_reported_after(
    kafka_bootstrap: str, topic_overrides: dict[str, str]
) -> None:
    plans = topic_plans(3)
    first = await ensure_planned_topics(kafka_bootstrap, plans, replication_factor=1, rename=topic_overrides)
    assert sorted(first.created) == sorted(topic_overrides.values()) and first.present == []
    again = await ensure_planned_topics(kafka_bootstrap, plans, replication_factor=1, rename=topic_overrides)
    assert again.created == [] and sorted(again.present) == sorted(topic_overrides.values())
    assert again.short == {}
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topic_overrides.values()))
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic_overrides[p.name]) for p in plans])
    finally:
        await admin.close()
    assert {t["topic"]: len(t["partitions"]) for t in described} == {n: 3 for n in topic_overrides.values()}
    retention = {r[3]: dict((e[0], e[1]) for e in r[4])["retention.ms"] for r in response.resources}
    assert retention == {topic_overrides[p.name]: str(p.retention_ms) for p in plans}
    check = await ensure_planned_topics(kafka_bootstrap, topic_plans(6), replication_factor=1,
                                        rename=topic_overrides, check_only=True)
    assert check.created == [] and set(check.short.values()) == {3}


def test_the_commands_exit_non_zero_while_work_is_pending(
    schema_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from terrain.cli import app

    monkeypatch.setenv("TERRAIN_DATABASE_URL", schema_url)
    runner = CliRunner()
    pending = runner.invoke(app, ["migrate", "--check"])
    assert pending.exit_code == 1 and "pending:" in pending.output
    applied = runner.invoke(app, ["migrate"])
    assert applied.exit_code == 0 and "migration(s) applied" in applied.output
    assert runner.invoke(app, ["migrate", "--check", "--wait", "1"]).exit_code == 0
    # A broker of its own, so what it holds is known (the session's broker holds whatever other tests made):
    # none of the registry's topics, then every one of them.
    broker = TansuBroker().start()
    try:
        monkeypatch.setenv("TERRAIN_KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
        monkeypatch.setenv("TERRAIN_TOPIC_PARTITIONS", "2")
        n = len(all_topic_names())
        missing = runner.invoke(app, ["topics", "--check"])
        assert missing.exit_code == 1 and f"topics: {n} missing, 0 present" in missing.output, missing.output
        created = runner.invoke(app, ["topics"])
        assert created.exit_code == 0 and f"topics: {n} created, 0 present" in created.output, created.output
        present = runner.invoke(app, ["topics", "--check"])
        assert present.exit_code == 0 and f"topics: 0 missing, {n} present" in present.output, present.output
    finally:
        broker.stop()


def test_migrate_and_import_never_guess_a_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without TERRAIN_DATABASE_URL and with no `terrain up` live on the home, both refused with exit code 2
    # and say what to set; before, they created Terrain's tables in whatever PostgreSQL listened on 5432.
    from typer.testing import CliRunner

    from terrain.cli import app

    monkeypatch.delenv("TERRAIN_DATABASE_URL", raising=False)
    monkeypatch.setenv("TERRAIN_HOME", str(tmp_path / "home"))
    comments = tmp_path / "comments.jsonl"
    comments.write_text('{"source": "facebook"}\n')
    runner = CliRunner()
    for args in (["migrate"], ["migrate", "--check"], ["import", str(comments)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "TERRAIN_DATABASE_URL is not set" in result.output, (args, result.output)
    assert not (tmp_path / "comments.jsonl.rejects.jsonl").exists()


def test_the_jobs_give_up_in_one_line_when_their_server_does_not_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before, `terrain topics` printed the client's "Unable connect" once a second for a minute and both
    # commands ended in a traceback; a Job's log should say in one line what was tried and what to check.
    import socket

    from typer.testing import CliRunner

    from terrain.cli import app

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setenv("TERRAIN_HOME", str(tmp_path / "home"))  # no `terrain up` lives there
    monkeypatch.setenv("TERRAIN_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{closed}")
    monkeypatch.setenv("TERRAIN_DATABASE_URL", f"postgresql://terrain@127.0.0.1:{closed}/terrain")
    runner = CliRunner()
    topics = runner.invoke(app, ["topics", "--timeout", "1"])
    assert topics.exit_code == 1 and isinstance(topics.exception, SystemExit), topics.output
    assert f"waiting for Kafka at 127.0.0.1:{closed}" in topics.output
    assert f"error: no Kafka broker answered at 127.0.0.1:{closed} within 1 s" in topics.output
    assert "Traceback" not in topics.output and "Unable connect" not in topics.output
    migrate = runner.invoke(app, ["migrate", "--timeout", "1"])
    assert migrate.exit_code == 1 and isinstance(migrate.exception, SystemExit), migrate.output
    assert f"PostgreSQL at postgresql://terrain@127.0.0.1:{closed}/terrain did not take a connection" in migrate.output
    assert "Traceback" not in migrate.output and len(migrate.output.strip().splitlines()) == 2
