"""`terrain migrate`, `terrain topics` (the start-up jobs) and `terrain deploy` (generated deployment files)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from terrain.ops import dashboards, manifests, reference
from terrain.ops.jobs import Unreachable, ensure_planned_topics, migrate_all
from terrain.ops.plan import topic_plans
from terrain.settings import TerrainSettings

console = Console(highlight=False)
deploy_app = typer.Typer(help="Generated deployment files: Kubernetes base, Grafana dashboards, operators' reference.")

REPO = Path(__file__).resolve().parents[2]


def migrate(
    check: Annotated[bool, typer.Option(help="Apply nothing: exit 1 when a migration is pending.")] = False,
    wait: Annotated[float, typer.Option(help="With --check: wait up to this many seconds for none pending.")] = 0.0,
    timeout: Annotated[float, typer.Option(
        help="Seconds to wait for the database to take a connection (it may still be starting).")] = 60.0,
) -> None:
    """Apply every service's database migrations under the kernel's lock (the Job before a rollout)."""
    from terrain.stack import NO_DATABASE, database_for_command

    if not database_for_command(lambda line: console.print(line, soft_wrap=True)):
        console.print(f"[red]error:[/red] {NO_DATABASE}", soft_wrap=True)
        raise typer.Exit(2)
    settings = TerrainSettings()
    deadline = time.monotonic() + wait
    while True:
        try:
            done = asyncio.run(migrate_all(settings.database_url, check_only=check, connect_timeout_s=timeout))
        except Unreachable as exc:
            console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
            console.print("check TERRAIN_DATABASE_URL (server, port, user, password, database)", soft_wrap=True)
            raise typer.Exit(1) from None
        if not check:
            console.print(f"{len(done)} migration(s) applied" + (f": {', '.join(done)}" if done else ""))
            return
        if not done:
            console.print("database schema up to date")
            return
        if time.monotonic() >= deadline:
            console.print(f"[red]pending:[/red] {', '.join(done)}")
            raise typer.Exit(1)
        console.print(f"waiting for {len(done)} pending migration(s)")
        time.sleep(5.0)


def topics(
    check: Annotated[bool, typer.Option(help="Create nothing: exit 1 when a topic is missing.")] = False,
    timeout: Annotated[float, typer.Option(
        help="Seconds to wait for the broker to answer (it may still be starting).")] = 60.0,
) -> None:
    """Create the registry's topics and dead-letter twins with partitions and retention (a Job or init step).

    The broker is TERRAIN_KAFKA_BOOTSTRAP_SERVERS; unset, a live `terrain up` of the same home is used (and
    said), else the default address."""
    from terrain.stack import BROKER_VAR, use_running_stack

    def say(line: str) -> None:
        console.print(line, soft_wrap=True)

    use_running_stack(say, (BROKER_VAR,))
    s = TerrainSettings()
    from terrain.kafka import KafkaSettingsError, client_options

    try:
        security = client_options(s)
    except KafkaSettingsError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    plans = topic_plans(s.topic_partitions)
    min_isr = max(1, s.topic_replication_factor - 1) if s.topic_replication_factor > 1 else None
    # The client logs every failed connection attempt; while the broker starts, one "waiting" line says it.
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        report = asyncio.run(ensure_planned_topics(
            s.kafka_bootstrap_servers, plans, replication_factor=s.topic_replication_factor,
            min_insync_replicas=min_isr, check_only=check, timeout_s=timeout, on_wait=say, security=security,
        ))
    except Unreachable as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        say("set TERRAIN_KAFKA_BOOTSTRAP_SERVERS to your broker's host:port (beside a live `terrain up` of the "
            "same home, its broker is found by itself)")
        raise typer.Exit(1) from None
    finally:
        quiet.setLevel(level)
    verb = "missing" if check else "created"
    console.print(f"topics: {len(report.created)} {verb}, {len(report.present)} present")
    for name in report.created:
        console.print(f"  {verb}: {name}")
    for name, count in report.short.items():
        console.print(f"  [yellow]fewer partitions than planned:[/yellow] {name} has {count}")
    if check and report.created:
        raise typer.Exit(1)


def generated(root: Path) -> dict[Path, str]:
    """Every generated deployment file (path relative to the repository) and its content."""
    out: dict[Path, str] = {}
    for name, text in manifests.generated_files().items():
        out[Path("deploy/k8s/base") / name] = text
    for name, board in dashboards.all_dashboards().items():
        out[Path("deploy/grafana/dashboards") / f"{name}.json"] = json.dumps(board, indent=2) + "\n"
    out[Path("docs/operators/reference.md")] = reference.render(root)
    return out


def drift(root: Path) -> list[str]:
    problems = []
    for rel, text in generated(root).items():
        path = root / rel
        if not path.exists():
            problems.append(f"{rel}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{rel}: differs from what the code generates")
    return problems


@deploy_app.command("generate")
def deploy_generate(root: Annotated[Path, typer.Option(help="Repository root.")] = REPO) -> None:
    """Write the Kubernetes base, the Grafana dashboards and the operators' reference from the code."""
    changed = []
    for rel, text in generated(root).items():
        path = root / rel
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(str(rel))
    console.print(f"{len(changed)} file(s) written" if changed else "deployment files already in step")


@deploy_app.command("check")
def deploy_check(root: Annotated[Path, typer.Option(help="Repository root.")] = REPO) -> None:
    """Exit 1 when a committed deployment file differs from what the code generates."""
    problems = drift(root)
    for line in problems:
        console.print(f"[red]drift:[/red] {line}")
    if problems:
        console.print("run `terrain deploy generate` and commit the result")
        raise typer.Exit(1)
    console.print("deployment files in step with the code")


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate)
    app.command("topics")(topics)
    app.add_typer(deploy_app, name="deploy")
