"""`terrain report event ID`: an event's impact report from the events API, printed, and its chart saved."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

report_app = typer.Typer(help="Reports on in-real-life events: their measured impact.", no_args_is_help=True)
console = Console(highlight=False)

DEFAULT_URL = "http://127.0.0.1:8084"


def fetch_report(client: httpx.Client, event_id: str, window_days: int) -> dict[str, Any]:
    r = client.get(f"/v1/events/{event_id}/impact", params={"window_days": window_days})
    if r.status_code == 404:
        raise LookupError(f"no event with id {event_id}")
    if r.status_code == 401:
        raise LookupError("the events API refused the token: set TERRAIN_API_TOKEN to the token `terrain up` printed")
    r.raise_for_status()
    data: dict[str, Any] = r.json()
    return data


def _num(v: float | None, fmt: str = "+.3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def summary(report: dict[str, Any]) -> list[str]:
    """The report in lines of text: the same facts as the endpoint, minus the daily series."""
    w = report["windows"]
    pct = int(report["confidence"] * 100)
    lines = [
        f"event {report['event_id']} ({report['kind']}, {report['status']}) in {report['community_id']}",
        f"windows: before {w['before']['from']} … {w['before']['to']}, after {w['after']['from']} … {w['after']['to']}"
        f" ({report['window_days']} days each; the event's own days left out)",
        f"verdict: {report['verdict']}",
    ]
    for outcome, ba in report["before_after"].items():
        change = ba["change"]
        ci = f" [{_num(change['ci_low'])}, {_num(change['ci_high'])}]" if change else ""
        lines.append(
            f"before/after {outcome}: {_num(ba['before'], '.3f')} → {_num(ba['after'], '.3f')}"
            f" ({ba['days_before']} / {ba['days_after']} days), change {_num(change and change['estimate'])}{ci}"
            " (not an effect: no comparison)"
        )
    did = report["difference_in_differences"]
    if did:
        lines.append(f"difference in differences vs {len(report['comparison_communities'])} comparison communities:")
        for outcome, e in did.items():
            lines.append(
                f"  {outcome}: {_num(e['estimate'])} [{_num(e['ci_low'])}, {_num(e['ci_high'])}] {pct} % CI,"
                f" p = {e['p_value']:.3g}, {e['days']} days (mean gap {_num(e['mean_before'])} before,"
                f" {_num(e['mean_after'])} after)"
            )
    else:
        lines.append("difference in differences: none")
    excluded = {k: v for k, v in report["excluded_communities"].items() if v}
    if excluded:
        lines.append("communities left out: " + ", ".join(f"{k} {v}" for k, v in excluded.items()))
    for limit in report["limitations"]:
        lines.append(f"cannot conclude ({limit['code']}): {limit['message']}")
    lines.append(f"method: {report['method']}")
    return lines


@report_app.command("event")
def event(
    event_id: Annotated[str, typer.Argument(help="The event's id.")],
    url: Annotated[str | None, typer.Option(
        help="The events service. Default: the running `terrain up` of this home (TERRAIN_HOME), with its API "
        f"token; else {DEFAULT_URL}.", envvar="TERRAIN_EVENTS_URL", show_default=False)] = None,
    window_days: Annotated[int, typer.Option(help="Days in each window, before and after.")] = 14,
    out: Annotated[Path | None, typer.Option(help="Where to save the chart (PNG).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the endpoint's JSON instead of text.")] = False,
) -> None:
    """Print an event's impact (after vs before, and against comparable communities) and save its chart."""
    from services.events.chart import render
    from terrain.stack import TOKEN_VAR, service_url_var, use_running_stack

    if url is None:  # as every command beside a live `terrain up`; said on stderr, so --json stays JSON
        use_running_stack(lambda line: Console(stderr=True, highlight=False).print(line, soft_wrap=True),
                          (service_url_var("events"), TOKEN_VAR))
        url = os.environ.get(service_url_var("events")) or DEFAULT_URL
    token = os.environ.get(TOKEN_VAR)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=30.0) as client:
            report = fetch_report(client, event_id, window_days)
    except LookupError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot read the impact from {url}:[/red] {exc}")
        raise typer.Exit(1) from None
    if as_json:
        console.print_json(json.dumps(report))
    else:
        for line in summary(report):
            console.print(line, soft_wrap=True)
    path = render(report, out or Path(f"event-{event_id}-impact.png"))
    console.print(f"chart: {path}")
