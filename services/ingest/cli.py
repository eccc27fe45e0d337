"""`terrain import FILE`: bulk-import exported comments (JSONL, CSV, or an archive of Meta webhook deliveries)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from services.ingest.app import IngestSettings
    from services.ingest.importer import ImportOptions, Progress

err = Console(stderr=True, highlight=False)

# What `terrain import` exits with (a script tells "done, some records refused" from "stopped"); the code and
# its meaning are printed when it is not 0, and the README and the operators' reference list them.
EXIT_REJECTED = 3
EXIT_CODES = {
    "terrain import": {
        0: "finished: every record was accepted or was a duplicate",
        1: "stopped on an error; the same command resumes after the last committed batch",
        2: "not started: a wrong option, or no database to import into",
        EXIT_REJECTED: "finished, but some records were rejected: their lines and reasons are in the rejects file",
        130: "interrupted; the same command resumes after the last committed batch",
    },
}


async def run_import(
    path: Path,
    opts: ImportOptions,
    settings: IngestSettings,
    *,
    topic_overrides: dict[str, str] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> Progress:
    """One import (or one shard of it) in this process against the configured PostgreSQL and Kafka."""
    from datetime import UTC, datetime

    from services.ingest.app import SERVICE
    from services.ingest.handlers import Ingestor
    from services.ingest.importer import Importer
    from terrain.runtime import ServiceRuntime

    rt = ServiceRuntime(SERVICE, settings, migrations_package="services.ingest", topic_overrides=topic_overrides)
    ingestor = Ingestor(rt, lambda: datetime.now(UTC), settings.limits())
    await rt.start()
    try:
        await ingestor.publisher.start()
        return await Importer(ingestor, on_progress).run(path, opts)
    finally:
        await ingestor.publisher.stop()
        await rt.stop()


async def import_file(
    path: Path,
    opts: ImportOptions,
    settings: IngestSettings,
    *,
    topic_overrides: dict[str, str] | None = None,
    console: Console | None = None,
) -> Progress:
    """Run an import with a progress bar: in this process, or in `opts.shards` processes side by side."""
    from rich.progress import BarColumn, TaskProgressColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as Bar

    from services.ingest.importer import summary_line

    console = console or err
    bar = Bar(TextColumn("[bold]{task.description}"), BarColumn(bar_width=24), TaskProgressColumn(),
              TimeRemainingColumn(compact=True), TextColumn("{task.fields[counts]}"), console=console, transient=False)
    task = bar.add_task(path.name, total=os.stat(path).st_size, counts="")

    def show(p: Progress) -> None:
        t = p.tally
        bar.update(task, completed=p.offset, counts=(
            f"{p.line:,} lines: {t.accepted:,} accepted, {t.duplicates:,} dup, {t.rejected_total:,} rejected"))

    if opts.shards > 1:
        result = await _import_in_shards(path, opts, settings, topic_overrides, show, bar)
    else:
        with bar:
            result = await run_import(path, opts, settings, topic_overrides=topic_overrides, on_progress=show)
    console.print(summary_line(result), soft_wrap=True)
    if result.tally.rejected_total:
        console.print(f"rejected records and their reasons: {result.rejects_path}", soft_wrap=True)
    return result


def _shard_process(path: Path, opts: ImportOptions, settings: IngestSettings,
                   topic_overrides: dict[str, str] | None, reports: Any) -> None:
    """A shard's process: runs its share of the import and reports its progress, its result or its failure."""
    import signal

    # A forked shard starts with its parent's interrupt handler and wake-up descriptor, which belong to the
    # parent's event loop: Ctrl-C must cancel this process's own import instead.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.set_wakeup_fd(-1)
    try:
        result = asyncio.run(run_import(path, opts, settings, topic_overrides=topic_overrides,
                                        on_progress=lambda p: reports.put(("progress", opts.shard, p))))
        reports.put(("done", opts.shard, result))
    except KeyboardInterrupt:
        reports.put(("failed", opts.shard, "interrupted"))
    except Exception as exc:  # the parent says which shard stopped and why
        reports.put(("failed", opts.shard, f"{type(exc).__name__}: {exc}"))


async def _import_in_shards(path: Path, opts: ImportOptions, settings: IngestSettings,
                            topic_overrides: dict[str, str] | None, show: Callable[[Progress], None],
                            bar: Any) -> Progress:
    """`opts.shards` processes each import the comments of their shard from the same file (every process reads
    every line; each stores and publishes a share)."""
    import multiprocessing
    import queue
    import signal
    import threading
    from dataclasses import replace

    import asyncpg

    from services.ingest import repository
    from services.ingest.importer import Progress, file_key
    from services.ingest.repository import Checkpoint

    # Forked from this process when it runs no other thread (the shards then skip the start-up imports, about
    # 0.6 s each); started afresh otherwise, since forking a process with threads can deadlock.
    forkable = threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork") if forkable else multiprocessing.get_context("spawn")
    reports = ctx.Queue()
    procs = [ctx.Process(target=_shard_process, name=f"terrain-import-{k}",
                         args=(path, replace(opts, shard=k), settings, topic_overrides, reports))
             for k in range(opts.shards)]
    started = time.perf_counter()
    latest: dict[int, Progress] = {}
    done: dict[int, Progress] = {}
    failed: dict[int, str] = {}

    def drain() -> None:
        while True:
            try:
                kind, k, payload = reports.get_nowait()
            except queue.Empty:
                return
            if kind == "failed":
                failed[k] = payload
            else:
                latest[k] = payload
                if kind == "done":
                    done[k] = payload

    def merged() -> Progress:
        parts = [latest[k] for k in sorted(latest)]
        out = Progress(str(path), os.stat(path).st_size, rejects_path=parts[0].rejects_path, started=started)
        # The bar shows how far every shard has got; the line count, how far any has read (each accepted
        # comment was read by then, so the counts beside it never run ahead of it).
        out.offset = min(p.offset for p in parts) if len(parts) == opts.shards else 0
        out.line = max(p.line for p in parts)
        out.resumed_from_line = min(p.resumed_from_line for p in parts)
        for p in parts:
            out.tally.add(p.tally)
        before = [p.earlier for p in parts if p.earlier is not None]
        if before:
            out.earlier = Checkpoint(0, 0, sum(e.accepted for e in before), sum(e.duplicates for e in before),
                                     sum(e.rejected for e in before))
        return out

    for p in procs:
        p.start()  # before the progress bar's thread starts
    try:
        with bar:
            while len(done) + len(failed) < len(procs):
                drain()
                for k, p in enumerate(procs):
                    if k not in done and k not in failed and not p.is_alive():
                        drain()  # what it put before exiting
                        if k not in done and k not in failed:
                            failed[k] = f"exited with code {p.exitcode}"
                if latest:
                    show(merged())
                await asyncio.sleep(0.1)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
            # Ctrl-C in a terminal reaches the shards too: a moment for them to stop on their own, since a
            # second interrupt would cut short the batch each is storing.
            deadline = time.monotonic() + SHARD_STOP_GRACE_S
            for p in procs:
                p.join(timeout=max(0.0, deadline - time.monotonic()))
        for p in procs:  # ask those still running to finish the batch they are storing, then stop
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGINT)
        raise
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
                p.join()
        reports.close()
    if failed:
        k, why = min(failed.items())
        raise RuntimeError(f"shard {k} of {opts.shards} stopped: {why}")
    result = merged()
    if all(p.finished for p in done.values()):
        conn = await asyncpg.connect(settings.database_url)
        try:
            await repository.clear_checkpoints(conn, file_key(path))
        finally:
            await conn.close()
        result.offset, result.line, result.finished = result.total_bytes, max(p.line for p in done.values()), True
    result.peak_rss_mb = max(p.peak_rss_mb for p in done.values())
    return result


SHARD_STOP_GRACE_S = 5.0
AUTO_SHARDS_FROM_BYTES = 8 << 20  # below this, starting processes costs more than they save
AUTO_SHARDS_MAX = 4


def auto_shards(path: Path) -> int:
    """Processes for an import left to choose: one per core this process may use, up to 4, for a big file."""
    if os.stat(path).st_size < AUTO_SHARDS_FROM_BYTES:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, AUTO_SHARDS_MAX))


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
    shards: Annotated[int, typer.Option(min=0, max=32, help="Processes importing side by side, each the comments "
                                                            "of its share of ids (1: this process only; 0: one "
                                                            "per core, up to 4, for files over 8 MiB).")] = 0,
) -> None:
    """Import comments from a file through ingest's screening and dedup; resumes after an interruption."""
    from services.ingest.app import IngestSettings
    from services.ingest.importer import FORMATS, ImportOptions

    if fmt not in FORMATS:
        err.print(f"[red]unknown format {fmt!r}[/red]; choose one of: {', '.join(FORMATS)}")
        raise typer.Exit(2)
    opts = ImportOptions(fmt=fmt, batch_size=batch_size, rejects=rejects, resume=not restart, workers=workers,
                         shards=shards or auto_shards(file))
    from terrain.stack import NO_DATABASE, database_for_command

    if not database_for_command(lambda line: err.print(line, soft_wrap=True)):
        err.print(f"[red]error:[/red] {NO_DATABASE}", soft_wrap=True)
        raise typer.Exit(2)
    try:
        result = asyncio.run(import_file(file, opts, IngestSettings()))
    except KeyboardInterrupt:
        err.print("interrupted: run the same command again to resume after the last committed batch")
        raise typer.Exit(130) from None
    except Exception as exc:
        err.print(f"[red]import stopped:[/red] {type(exc).__name__}: {exc}", soft_wrap=True)
        err.print("run the same command again to resume after the last committed batch")
        raise typer.Exit(1) from None
    # Counted over the whole file: records an interrupted run rejected before this one resumed count too.
    rejected = result.tally.rejected_total + (result.earlier.rejected if result.earlier is not None else 0)
    if rejected:
        err.print(f"exit code {EXIT_REJECTED}: {rejected:,} record(s) rejected; "
                  f"{EXIT_CODES['terrain import'][EXIT_REJECTED]}", soft_wrap=True)
        raise typer.Exit(EXIT_REJECTED)


