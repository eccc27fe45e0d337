"""The `terrain` command: run the whole pipeline (`up`), one service (`serve`), and the contract docs."""

from __future__ import annotations

import asyncio
import importlib
import signal
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from terrain.access.cli import access_app
from terrain.ops.cli import register as register_ops
from terrain.plugins import discover_services, register_commands
from terrain.stack import Stack, state_dir

app = typer.Typer(help="Terrain: from one angry comment to the right action.", no_args_is_help=True)
contracts_app = typer.Typer(help="Generated JSON Schemas and AsyncAPI document for the topics.")
app.add_typer(contracts_app, name="contracts")
register_commands(app)  # each installed service's own commands (import, sentiment, escalation, policy, report)
register_ops(app)  # migrate, topics, deploy
app.add_typer(access_app, name="access")
console = Console(highlight=False)

CONTRACTS_DIR = Path("docs/contracts")


class _Stop(Exception):
    pass


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    # The first signal stops the run; a second one (Ctrl-C pressed twice, a supervisor's TERM after the
    # terminal's INT) must not break off that stop: it left a traceback and exit code 1 behind it.
    _while_stopping()
    raise _Stop(signal.Signals(signum).name)


def _while_stopping() -> None:
    # A handler that does nothing rather than SIG_IGN: a signal already pending when the handler changes
    # would otherwise be reported by Python as "ignored due to race condition", with a traceback.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _signum, _frame: None)


def _up_epilog() -> str:
    """The settings a newcomer moves first, for `terrain up --help` (paragraphs: Typer joins single lines)."""
    from terrain.stack import LOCAL_RUN_VARIABLES

    parts = ["[b]Environment[/b] (every setting: docs/operators/reference.md):"]
    parts += [f"{name}: {text}" for name, text in LOCAL_RUN_VARIABLES.items()]
    parts += [f"{svc.port_env}: the {svc.name} service's HTTP port (default {svc.default_port})."
              for svc in discover_services()]
    parts += [
        "TERRAIN_KAFKA_BOOTSTRAP_SERVERS, TERRAIN_DATABASE_URL: your own Kafka, your own PostgreSQL; "
        "`terrain up` then starts only what is missing.",
        "TERRAIN_API_TOKEN: the services' bearer token; unset, the one kept in TERRAIN_HOME (made on the first "
        "start).",
    ]
    return "\n\n".join(parts)


@app.command(epilog=_up_epilog())
def up(
    demo: Annotated[bool, typer.Option(help="Feed demo comments and show them scored and escalated.")] = False,
    ready_timeout: Annotated[float, typer.Option(help="Seconds to wait for every service to be ready.")] = 90.0,
) -> None:
    """Run the whole pipeline: embedded broker and PostgreSQL (unless configured), and every installed service."""
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    stack = Stack(home=state_dir(), say=lambda line: console.print(line, soft_wrap=True))
    code = 0
    try:
        stack.start(ready_timeout_s=ready_timeout)
        _print_tour(stack)
        if demo:
            _run_demo(stack)
        console.print("[dim]Ctrl-C stops everything.[/dim]")
        while True:
            stack.supervise_once()
            time.sleep(0.5)
    except _Stop as why:
        console.print(f"\n{why}: stopping…")
    except Exception as exc:
        console.print(f"[red]error:[/red] {exc}")
        code = 1
    finally:
        _while_stopping()
        if stack.stop():
            console.print("stopped: services, broker and database")
    raise typer.Exit(code)


def _print_tour(stack: Stack) -> None:
    urls = stack.urls()
    table = Table(title="Terrain is up", show_header=True)
    table.add_column("service")
    table.add_column("URL")
    for name, url in urls.items():
        table.add_row(name, url)
    console.print(table)
    console.print(f"API token: [bold]{stack.token}[/bold]   (Authorization: Bearer …)", soft_wrap=True)
    console.print(f"Kafka bootstrap: {stack.bootstrap}")
    console.print(
        "Try:\n"
        f"  export TERRAIN_API_TOKEN={stack.token}\n"
        f"  curl -s -X POST {urls['ingest']}/v1/comments -H \"Authorization: Bearer $TERRAIN_API_TOKEN\" "
        "-H 'Content-Type: application/json' -d '{\"source\":\"facebook\",\"external_id\":\"42\","
        "\"community_id\":\"resto-lyon\",\"thread_id\":\"post-1\",\"text\":\"Service déplorable, je suis furieux\","
        "\"created_at\":\"'\"$(date -u +%FT%TZ)\"'\"}'\n"  # a comment of now: an old one pages nobody
        f"  curl -s {urls['escalation']}/v1/incidents -H \"Authorization: Bearer $TERRAIN_API_TOKEN\"",
        soft_wrap=True,
    )


def _run_demo(stack: Stack, timeout_s: float = 30.0) -> None:
    from terrain.demo import CASCADE_COMMUNITY, SEED_COMMUNITY, demo_comments

    urls = stack.urls()
    headers = {"Authorization": f"Bearer {stack.token}"}
    comments = demo_comments(datetime.now(UTC))
    with httpx.Client(timeout=10.0, headers=headers) as client:
        r = client.post(f"{urls['ingest']}/v1/comments", json=comments)
        r.raise_for_status()
        new = int(r.json()["accepted"])
        console.print(f"demo: posted {len(comments)} comments ({new} new)")
        if new:
            scored = asyncio.run(_read_scored(stack.bootstrap, len(comments), timeout_s))
            labels = Counter(s["sentiment"]["label"] for s in scored)
            console.print(
                f"demo: {len(scored)} comments scored: " + ", ".join(f"{k} {v}" for k, v in labels.items())
            )
            table = Table(title="Comments scored negative", show_lines=False)
            for col in ("community", "score", "confidence", "text"):
                table.add_column(col)
            for s in scored:
                if s["sentiment"]["label"] == "negative":
                    table.add_row(s["comment"]["community_id"], f"{s['sentiment']['score']:+.2f}",
                                  f"{s['sentiment']['confidence']:.2f}", s["comment"]["text"][:80])
            console.print(table)
        else:
            console.print("demo: these comments were already ingested in this home; showing what they opened",
                          soft_wrap=True)
        for community in (CASCADE_COMMUNITY, SEED_COMMUNITY):
            _show_incidents(client, urls["escalation"], community, wait_s=timeout_s if community == CASCADE_COMMUNITY
                            else 2.0)
        _show_field_visits(client, urls["events"], CASCADE_COMMUNITY)


def _show_incidents(client: httpx.Client, base: str, community: str, wait_s: float) -> None:
    """What the community manager and the on-call person see for one community."""
    deadline = time.monotonic() + wait_s
    items: list[dict[str, Any]] = []
    while True:
        got = client.get(f"{base}/v1/incidents", params={"community_id": community})
        items = got.json().get("items", []) if got.status_code == 200 else []
        paged = [i for i in items if i["level"] in ("human", "field")]
        if paged or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if not items:
        console.print(f"demo: {community}: no incident, nobody paged")
        return
    for inc in items:
        who = {
            "respond": "nobody paged: a reply to write", "moderate": "nobody paged: a comment to hide",
            "human": "on-call paged", "field": "on-call paged and a field visit requested",
        }[inc["level"]]
        console.print(
            f"demo: {community}/{inc['thread_id']}: incident [bold]{inc['level']}[/bold] {inc['state']}, {who}; "
            f"{inc['negative_count']} negative of {inc['comment_count']} comments. {inc['reason']}",
            soft_wrap=True,
        )
        if inc["level"] in ("human", "field"):
            sent = client.get(f"{base}/v1/incidents/{inc['id']}").json().get("notifications", [])
            if sent:
                console.print(f"      notified: {', '.join(sorted({n['channel'] for n in sent}))}", soft_wrap=True)
            else:
                console.print(
                    "      the page is on terrain.escalations.v1; nobody is notified directly until a policy file "
                    "names people, rotas or channels (TERRAIN_ESCALATION_POLICY_FILE, see "
                    "docs/escalation-policy.example.yaml)", soft_wrap=True,
                )
        for action in inc["recommended_actions"][:4]:
            console.print(f"      - {action}", soft_wrap=True)
        if len(inc["recommended_actions"]) > 4:
            console.print(f"      … {len(inc['recommended_actions']) - 4} more", soft_wrap=True)


def _show_field_visits(client: httpx.Client, base: str, community: str, wait_s: float = 10.0) -> None:
    deadline = time.monotonic() + wait_s
    visits: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        got = client.get(f"{base}/v1/events", params={"community_id": community})
        found = got.json().get("items", []) if got.status_code == 200 else []
        visits = [e for e in found if e.get("kind") == "field_visit"]
        if visits:
            break
        time.sleep(0.5)
    for v in visits:
        place = v.get("location") or v.get("place") or "?"
        console.print(f"demo: field visit planned for {community} at {place}: {v.get('title', '')}", soft_wrap=True)


async def _read_scored(bootstrap: str, expect: int, timeout_s: float) -> list[dict[str, Any]]:
    import json

    from aiokafka import AIOKafkaConsumer

    from terrain.topics import COMMENTS_SCORED

    consumer = AIOKafkaConsumer(
        COMMENTS_SCORED.name, bootstrap_servers=bootstrap, group_id=f"terrain-demo-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest", enable_auto_commit=False,
        session_timeout_ms=3000, heartbeat_interval_ms=500,
    )
    await consumer.start()
    seen: dict[str, dict[str, Any]] = {}
    try:
        deadline = time.monotonic() + timeout_s
        while len(seen) < expect and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for rec in records:
                    msg = json.loads(rec.value)
                    seen[msg["comment"]["comment_id"]] = msg
    finally:
        await consumer.stop()
    return list(seen.values())


@app.command()
def serve(service: Annotated[str, typer.Argument(help="An installed service: ingest, sentiment, escalation…")]) -> None:
    """Run one service alone (the form containers use); configured by TERRAIN_* environment variables."""
    names = {s.name: s for s in discover_services()}
    if service not in names:
        console.print(f"[red]unknown service {service!r}[/red]; choose one of: {', '.join(names)}")
        raise typer.Exit(2)
    import os

    if not os.environ.get("TERRAIN_DATABASE_URL"):
        # Never guess: a default would create tables in whatever PostgreSQL listens on 5432.
        console.print(
            "[red]TERRAIN_DATABASE_URL is not set[/red]: say which PostgreSQL this service stores its data in, "
            "e.g. TERRAIN_DATABASE_URL=postgresql://terrain@db.example:5432/terrain "
            "(`terrain up` runs an embedded one for local use)", soft_wrap=True,
        )
        raise typer.Exit(2)
    importlib.import_module(f"{names[service].module}.app").main()


@app.command()
def bench(
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Comments for the throughput phase.")] = 20_000,
    rate: Annotated[int, typer.Option(min=1, help="Comments/s offered in the latency phase.")] = 1_000,
    seconds: Annotated[float, typer.Option(min=0.0, help="Length of the latency phase (0: none).")] = 10.0,
    scorer: Annotated[str, typer.Option(help="The sentiment scorer the services use.")] = "fast",
    partitions: Annotated[int, typer.Option(min=1, help="Partitions per topic.")] = 4,
    setting: Annotated[
        list[str] | None, typer.Option("--set", help="A service setting, NAME=VALUE (TERRAIN_ prefix optional).")
    ] = None,
    profile: Annotated[
        Path | None, typer.Option(help="Folder for py-spy profiles of each service during the throughput phase.")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the numbers as JSON here.")] = None,
    replicas: Annotated[
        list[str] | None, typer.Option("--replicas", help="SERVICE=N: run N processes of a service in its group.")
    ] = None,
    hostile: Annotated[int, typer.Option(min=0, help="Hostile texts among the latency phase's comments.")] = 0,
    hostile_chars: Annotated[
        int, typer.Option(min=1, max=20_000, help="Length of each hostile text (the contract allows 20,000).")
    ] = 8_000,
) -> None:
    """Throughput and latency of the pipeline on the embedded stack, beside the broker's own ceiling."""
    import json

    from terrain.benchmark import BenchConfig, find_py_spy, render, run

    env: dict[str, str] = {}
    for item in setting or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint="--set")
        name = name.strip().upper()
        env[name if name.startswith("TERRAIN_") else f"TERRAIN_{name}"] = value
    extra: dict[str, int] = {}
    for item in replicas or []:
        name, sep, count = item.partition("=")
        if not sep or not count.isdigit() or int(count) < 1:
            raise typer.BadParameter(f"{item!r}: expected SERVICE=N with N >= 1", param_hint="--replicas")
        extra[name.strip()] = int(count) - 1
    if profile is not None and find_py_spy() is None:  # say so before starting anything
        raise typer.BadParameter("needs py-spy (pip install py-spy)", param_hint="--profile")
    cfg = BenchConfig(n=n, rate=rate, latency_seconds=seconds, scorer=scorer, partitions=partitions,
                      service_env=env, profile_dir=profile, extra_replicas=extra, hostile=hostile,
                      hostile_chars=hostile_chars)
    try:
        result = run(cfg, say=lambda line: console.print(line, soft_wrap=True))
    except RuntimeError as exc:  # a service that could not start has said why above
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    for part in render(result):
        console.print(part)
    if json_out is not None:
        json_out.write_text(json.dumps(result.as_dict(), indent=2))


@contracts_app.command("generate")
def contracts_generate(out: Path = CONTRACTS_DIR) -> None:
    """Write the JSON Schemas and the AsyncAPI document from the models."""
    from terrain.contract_docs import write

    changed = write(out)
    console.print(f"{len(changed)} file(s) written under {out}" if changed else f"{out} already in step")


@contracts_app.command("check")
def contracts_check(out: Path = CONTRACTS_DIR) -> None:
    """Exit non-zero when the committed contract docs differ from the models."""
    from terrain.contract_docs import check

    drift = check(out)
    for line in drift:
        console.print(f"[red]drift:[/red] {line}")
    if drift:
        console.print("run `terrain contracts generate` and commit the result")
        raise typer.Exit(1)
    console.print("contract docs in step with the models")


def main() -> None:
    app(prog_name="terrain")


if __name__ == "__main__":
    main()
