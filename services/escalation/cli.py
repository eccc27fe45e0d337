"""`terrain escalation replay` (scenarios on simulated time) and `terrain policy check` (validate a policy file)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

escalation_app = typer.Typer(help="Escalation: replay scenarios and measure precision, recall and delays.",
                             no_args_is_help=True)
policy_app = typer.Typer(help="Escalation policy files: validate before you deploy.", no_args_is_help=True)
console = Console(highlight=False)


@escalation_app.callback()
def _escalation() -> None:
    """Escalation tools."""


@policy_app.callback()
def _policy() -> None:
    """Policy tools."""


@escalation_app.command("replay")
def replay_command(
    scenarios: Annotated[list[Path] | None, typer.Argument(
        help="Scenario files (YAML); none: every scenario shipped with Terrain.", show_default=False)] = None,
    policy: Annotated[Path | None, typer.Option(
        "--policy", help="Replay against this policy file instead of each scenario's own policy.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also print each scenario's timeline.")] = False,
) -> None:
    """Replay scenarios through the escalation engine on simulated time; exit 1 when an expectation fails."""
    from services.escalation.policy import PolicyError, load_policy
    from services.escalation.replay import (
        ScenarioError,
        fmt_delta,
        fmt_ratio,
        load_scenario,
        replay,
        shipped_scenarios,
        totals,
    )

    if not console.is_terminal:
        console.width = max(console.width, 150)  # a log or a CI page: do not wrap the tables to 80 columns
    policies = None
    if policy is not None:
        try:
            policies = load_policy(policy)
        except PolicyError as exc:
            _print_errors(exc.source, exc.errors)
            raise typer.Exit(2) from None
    paths = list(scenarios or shipped_scenarios())
    reports = []
    for path in paths:
        try:
            scenario = load_scenario(path)
        except ScenarioError as exc:
            _print_errors(exc.source, exc.errors)
            raise typer.Exit(2) from None
        rep = replay(scenario, policies)
        reports.append(rep)
        table = Table(title=f"{rep.name}: {'[green]pass[/green]' if rep.passed else '[red]FAIL[/red]'}",
                      title_justify="left", caption=rep.description.strip(), caption_justify="left")
        for col in ("expected", "found", "level", "paged", "field", "delay", "problems"):
            table.add_column(col)
        for res in rep.results:
            table.add_row(
                res.label, "yes" if res.found else "[red]no[/red]", res.level.value if res.level else "–",
                "yes" if res.paged else "no", "yes" if res.field_requested else "no", fmt_delta(res.delay),
                "; ".join(res.problems),
            )
        for line in rep.unexpected_pages:
            table.add_row("[red]unexpected[/red]", "", "", "", "", "", line)
        console.print(table)
        console.print(
            f"  {rep.messages} messages ({rep.processed} processed) in {rep.batches} batches; "
            f"{rep.incidents} incidents ({rep.allowed} tolerated, {len(rep.unexpected_incidents)} unexpected), "
            f"{rep.pages} pages, {rep.field_requests} field requests; "
            f"incidents P {fmt_ratio(rep.incident_precision)} R {fmt_ratio(rep.incident_recall)}; "
            f"pages P {fmt_ratio(rep.page_precision)} R {fmt_ratio(rep.page_recall)}", soft_wrap=True,
        )
        for line in rep.unexpected_incidents:
            console.print(f"  [yellow]unexpected incident[/yellow] {line}")
        for line in rep.failures:
            console.print(f"  [red]failed:[/red] {line}")
        if verbose:
            for line in rep.log:
                console.print(f"  [dim]{line}[/dim]")
        console.print()
    t = totals(reports)
    table = Table(title="Total", title_justify="left")
    table.add_column("scenario", no_wrap=True)
    for col in ("found", "missed", "false pages", "incidents P", "incidents R", "pages P", "pages R", "delay",
                "result"):
        table.add_column(col)
    for rep in reports:
        table.add_row(
            rep.name, f"{rep.found}/{rep.expected}", str(rep.expected - rep.found), str(len(rep.unexpected_pages)),
            fmt_ratio(rep.incident_precision), fmt_ratio(rep.incident_recall), fmt_ratio(rep.page_precision),
            fmt_ratio(rep.page_recall), ", ".join(fmt_delta(d) for d in rep.delays) or "–",
            "[green]pass[/green]" if rep.passed else "[red]FAIL[/red]",
        )
    table.add_row(
        "[b]total[/b]", f"{t.found}/{t.expected}", str(t.expected - t.found), str(t.unexpected_pages),
        fmt_ratio(t.incident_precision), fmt_ratio(t.incident_recall), fmt_ratio(t.page_precision),
        fmt_ratio(t.page_recall), f"median {fmt_delta(t.median_delay)}, max {fmt_delta(max(t.delays, default=None))}",
        f"{t.passed}/{t.scenarios} pass",
    )
    console.print(table)
    if t.passed < t.scenarios:
        raise typer.Exit(1)


@policy_app.command("check")
def check_command(
    file: Annotated[Path, typer.Argument(help="A policy file, YAML or JSON.")],
    at: Annotated[str | None, typer.Option(
        help="Show who is on call at this time (ISO 8601, UTC unless it says); default: now.")] = None,
) -> None:
    """Validate a policy file: print every error with its path (exit 1), or a short summary of what it sets and
    a warning for each thing it does that is valid but likely unmeant (exit 0)."""
    from services.escalation.policy import PolicyError, load_policy, policy_warnings

    try:
        pf = load_policy(file)
    except PolicyError as exc:
        _print_errors(exc.source, exc.errors)
        raise typer.Exit(1) from None
    try:
        when = datetime.fromisoformat(at) if at else datetime.now(UTC)
    except ValueError:
        console.print(f"[red]--at {at!r} is not an ISO 8601 time[/red]")
        raise typer.Exit(2) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    warnings = policy_warnings(pf)
    console.print(f"[green]{file}: valid[/green]" + (f", with {len(warnings)} warning(s)" if warnings else ""))
    for line in warnings:
        console.print(f"  [yellow]warning:[/yellow] {escape(line)}", soft_wrap=True)
    console.print(f"communities with overrides: {len(pf.communities)}"
                  + (f" ({', '.join(sorted(pf.communities))})" if pf.communities else ""))
    for where, pol in [("defaults", pf.defaults), *((c, pf.community(c)) for c in sorted(pf.communities))]:
        steps = " → ".join(f"{', '.join(s.notify)} (wait {_fmt(s.wait.total_seconds())})" for s in pol.steps)
        field = "then field" if pol.field.enabled else "no field visits"
        console.print(f"  {where}: {len(pol.steps)} step(s): {steps}; {field}")
    console.print(f"people: {len(pf.people)}; channels: {len(pf.channels)}; inhibition rules: {len(pf.inhibit)}")
    if not pf.rotas:
        console.print("rotas: none")
    for name, rota in sorted(pf.rotas.items()):
        # Read by people: each time with its zone named, the rota's own beside UTC (hand-offs are local).
        local = when.astimezone(ZoneInfo(rota.timezone))
        console.print(f"rota {name}: on call at {when.astimezone(UTC):%Y-%m-%d %H:%M} UTC "
                      f"({local:%Y-%m-%d %H:%M %Z} {rota.timezone}): {rota.on_call(when)} "
                      f"({len(rota.people)} people, {rota.shift_days}-day shifts, hand-off "
                      f"{rota.handoff.strftime('%H:%M')} {rota.timezone})")


def _fmt(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _print_errors(source: str, errors: list[str]) -> None:
    console.print(f"[red]{escape(source)}: {len(errors)} error(s)[/red]")
    for e in errors:  # as written: a value quoted from the file, or a form like [rota:<name>], is not markup
        console.print(f"  {escape(e)}", soft_wrap=True)
