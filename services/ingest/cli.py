"""`terrain import FILE`: bulk-import exported comments (JSONL, CSV, or an archive of Meta webhook deliveries)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from services.ingest.app import IngestSettings
    from services.ingest.importer import ImportOptions, Progress

err = Console(stderr=True, highlight=False)


async def import_file(
    path: Path,
    opts: ImportOptions,
    settings: IngestSettings,
    *,
    topic_overrides: dict[str, str] | None = None,
    console: Console | None = None,
) -> Progress:
    """Run an import in this process against the configured PostgreSQL and Kafka, with a progress bar."""
    from datetime import UTC, datetime

    from rich.progress import BarColumn, TaskProgressColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as Bar

    from services.ingest.app import SERVICE
    from services.ingest.handlers import Ingestor
    from services.ingest.importer import Importer, summary_line
    from terrain.runtime import ServiceRuntime

    console = console or err
    rt = ServiceRuntime(SERVICE, settings, migrations_package="services.ingest", topic_overrides=topic_overrides)
    ingestor = Ingestor(rt, lambda: datetime.now(UTC), settings.limits())
    bar = Bar(TextColumn("[bold]{task.description}"), BarColumn(bar_width=24), TaskProgressColumn(),
              TimeRemainingColumn(compact=True), TextColumn("{task.fields[counts]}"), console=console, transient=False)
    task = bar.add_task(path.name, total=os.stat(path).st_size, counts="")

    def show(p: Progress) -> None:
        t = p.tally
        bar.update(task, completed=p.offset, counts=(
            f"{p.line:,} lines: {t.accepted:,} accepted, {t.duplicates:,} dup, {t.rejected_total:,} rejected"))

    await rt.start()
    try:
        await ingestor.publisher.start()
        with bar:
            result = await Importer(ingestor, show).run(path, opts)
    finally:
        await ingestor.publisher.stop()
        await rt.stop()
    console.print(summary_line(result), soft_wrap=True)
    if result.tally.rejected_total:
        console.print(f"rejected records and their reasons: {result.rejects_path}", soft_wrap=True)
    return result


def import_command(
    file: Annotated[Path, typer.Argument(help="JSONL or CSV in the inbound schema, or Meta deliveries one per line.",
                                         exists=True, dir_okay=False, readable=True)],
    fmt: Annotated[str, typer.Option("--format", help="auto (by extension and per line), jsonl, csv or meta.")]
    = "auto",
    rejects: Annotated[Path | None, typer.Option(help="Where rejected records go (default: FILE.rejects.jsonl).")]
    = None,
    batch_size: Annotated[int, typer.Option(min=1, max=50_000, help="Records per transaction.")] = 2000,
    restart: Annotated[bool, typer.Option(help="Ignore a checkpoint left by an interrupted import.")] = False,
    # Inline by default: batched detection is a small share of an import's CPU, and handing it to a worker
    # (start-up, model load, texts there and back) did not pay on 2 cores (bench/bench_ingest.py).
    workers: Annotated[int, typer.Option(min=0, max=32, help="Processes detecting new comments' languages "
                                                             "(0: inline).")] = 0,
) -> None:
    """Import comments from a file through ingest's screening and dedup; resumes after an interruption."""
    from services.ingest.app import IngestSettings
    from services.ingest.importer import FORMATS, ImportOptions

    if fmt not in FORMATS:
        err.print(f"[red]unknown format {fmt!r}[/red]; choose one of: {', '.join(FORMATS)}")
        raise typer.Exit(2)
    opts = ImportOptions(fmt=fmt, batch_size=batch_size, rejects=rejects, resume=not restart, workers=workers)
    try:
        asyncio.run(import_file(file, opts, IngestSettings()))
    except KeyboardInterrupt:
        err.print("interrupted: run the same command again to resume after the last committed batch")
        raise typer.Exit(130) from None
    except Exception as exc:
        err.print(f"[red]import stopped:[/red] {type(exc).__name__}: {exc}", soft_wrap=True)
        err.print("run the same command again to resume after the last committed batch")
        raise typer.Exit(1) from None


