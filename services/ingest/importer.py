"""Bulk import of exported comments: JSON lines or CSV in the inbound schema, or an archive of Meta webhook
deliveries (one delivery JSON per line), through the same screening and dedup as every other path.

- Streaming: the file is read record by record and handled in batches, so memory stays flat whatever its size.
- Resumable: after each batch, the byte offset of the next record is saved in the transaction that stores
  the batch's dedup records, so an interrupted import resumes where the last committed batch ended. The
  checkpoint is keyed by the file's content (sha256 of its first MiB), not its name.
- Nothing twice: a finished import leaves no checkpoint, and running it again reads the whole file and
  finds every comment a duplicate (the dedup records are the proof, not the checkpoint).
- Published before commit (see handlers.py): a crash between the two republishes the same message ids
  on resume, which consumers drop.
- Rejected records go to a JSON-lines file with their line number, reason, field and the record itself:
  a malformed JSON line with the column where it breaks, a record with every field it lacks.
- `terrain import` exits 0 only when every record was accepted (or was a duplicate), 3 when it finished
  with rejected records (cli.py).
"""

from __future__ import annotations

import asyncio
import csv
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import asyncpg
from pydantic import TypeAdapter, ValidationError

from services.ingest import domain, meta, metrics, repository
from services.ingest.domain import CommentDraft, Incoming, Reason, Refusal, Tally

log = logging.getLogger("terrain.ingest")

FORMATS = ("auto", "jsonl", "csv", "meta")
KEY_BYTES = 1 << 20
MAX_REJECT_RECORD_CHARS = 4000
_TRUE = {"1", "true", "yes", "y", "t"}
PARSE_CHUNK = 250  # records parsed between two looks at the batch being stored


@dataclass
class RawRecord:
    line: int  # first line of the record (1-based)
    end_offset: int  # byte offset just past the record
    end_line: int
    text: str | None = None  # a JSON line
    row: dict[str, str | None] | None = None  # a CSV row
    error: str | None = None  # a CSV record the csv module cannot read
    columns: int = 0  # of the CSV header, to say how short a row is


@dataclass
class Rejected:
    line: int
    refusal: Refusal
    record: str
    column: int | None = None  # where a malformed JSON line breaks (1-based, in characters)

    def as_json(self) -> str:
        out: dict[str, Any] = {"line": self.line, "reason": self.refusal.reason.value, "field": self.refusal.field,
                               "message": self.refusal.message}
        if self.column is not None:
            out["column"] = self.column
        out["record"] = self.record[:MAX_REJECT_RECORD_CHARS]
        return json.dumps(out, ensure_ascii=False)


@dataclass
class Progress:
    path: str
    total_bytes: int
    offset: int = 0
    line: int = 0
    resumed_from_line: int = 0
    tally: Tally = field(default_factory=Tally)  # this run only
    earlier: repository.Checkpoint | None = None  # what the interrupted run(s) had committed
    started: float = field(default_factory=time.perf_counter)
    rejects_path: str = ""
    finished: bool = False  # read to the end (not stopped after some batches)
    peak_rss_mb: float = 0.0  # of the process that ran it (the largest shard's, merged)


def _batches(records: Iterator[RawRecord], size: int) -> Iterator[list[RawRecord]]:
    batch: list[RawRecord] = []
    for rec in records:
        batch.append(rec)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def file_key(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.sha256(fh.read(KEY_BYTES)).hexdigest()


def detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    return "csv" if path.suffix.lower() in (".csv", ".tsv") else "jsonl"


def _lines(fh: Any, offset: int, line: int, pos: list[int]) -> Iterator[str]:
    """Decoded lines from a binary file, tracking the byte offset and line number in `pos`."""
    fh.seek(offset)
    pos[0], pos[1] = offset, line
    for raw in fh:
        pos[0] += len(raw)
        pos[1] += 1
        yield raw.decode("utf-8", errors="replace")


def read_records(path: Path, fmt: str, offset: int = 0, line: int = 0) -> Iterator[RawRecord]:
    """Records from `offset` on; for CSV the header is read first, wherever the import resumes."""
    with path.open("rb") as fh:
        pos = [offset, line]
        if fmt == "csv":
            header_pos = [0, 0]
            try:
                header = next(csv.reader(_lines(fh, 0, 0, header_pos)), None)
            except csv.Error as exc:  # without its header no row can be read: one reject says why
                if offset == 0:  # a resumed import rejected it already
                    yield RawRecord(1, header_pos[0], header_pos[1], error=f"header: {exc}")
                return
            if header is None:
                return
            if offset == 0:
                offset, line = header_pos[0], header_pos[1]
            names = [h.strip().lstrip("\ufeff") for h in header]
            reader = csv.reader(_lines(fh, offset, line, pos))
            start = line + 1
            while True:
                try:
                    values = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:  # a stray carriage return, a NUL…: that record is rejected, the rest read
                    yield RawRecord(start, pos[0], pos[1], error=str(exc))
                    start = pos[1] + 1
                    continue
                if values:
                    row = {k: (v if v != "" or k == "text" else None) for k, v in zip(names, values, strict=False)}
                    yield RawRecord(start, pos[0], pos[1], row=row, columns=len(names))
                start = pos[1] + 1
            return
        for text in _lines(fh, offset, line, pos):
            if text.strip():
                yield RawRecord(pos[1], pos[0], pos[1], text=text.lstrip("\ufeff"))


def _csv_to_comment(row: dict[str, str | None]) -> dict[str, Any]:
    """A CSV row in the inbound schema; metrics as `likes`/`replies`/`shares` or `metrics.likes`… columns."""
    out: dict[str, Any] = {}
    counts: dict[str, Any] = {}
    for key, value in row.items():
        name = key.removeprefix("metrics.")
        if name in ("likes", "replies", "shares"):
            if value is not None:
                counts[name] = value
        elif key == "removed":
            out[key] = (value or "").strip().lower() in _TRUE
        else:
            out[key] = value
    if counts:
        out["metrics"] = counts
    return out


def parse_record(
    rec: RawRecord, fmt: str, limits: domain.Limits, now: datetime | None = None
) -> tuple[list[Incoming], list[Rejected], dict[str, int]]:
    """Screened comments of one record, its refusals, and (for Meta deliveries) its engagement signals.
    `now` (the import's clock) refuses comments dated in the future; None skips that check."""
    raw_text = rec.text.rstrip("\r\n") if rec.text is not None else json.dumps(rec.row, ensure_ascii=False)
    if rec.error is not None:
        return [], [Rejected(rec.line, Refusal(Reason.invalid, None, f"unreadable CSV: {rec.error}"), raw_text)], {}
    if rec.row is not None:
        payload: Any = _csv_to_comment(rec.row)
    else:
        try:
            # Without its line ending: an error at the end of the line is placed there, not at the start of
            # a next line the file does not have.
            payload = json.loads(raw_text)
        except json.JSONDecodeError as exc:
            column = exc.pos + 1  # the line holds no newline, so the position is the column
            refusal = Refusal(Reason.malformed_json, None, f"line {rec.line}, column {column}: {exc.msg}")
            return [], [Rejected(rec.line, refusal, raw_text, column)], {}
        except RecursionError:
            refusal = Refusal(Reason.malformed_json, None, f"line {rec.line}: nested too deeply")
            return [], [Rejected(rec.line, refusal, raw_text)], {}
    if fmt == "meta" or (fmt != "csv" and meta.is_delivery(payload)):
        parsed = meta.parse_delivery(payload, limits, now)
        if isinstance(parsed, Refusal):
            return [], [Rejected(rec.line, parsed, raw_text)], {}
        rejected = [Rejected(rec.line, r.refusal, json.dumps(r.delivery, ensure_ascii=False)) for r in parsed.refused]
        return parsed.items, rejected, dict(parsed.signals)
    if not isinstance(payload, dict):
        return [], [Rejected(rec.line, Refusal(Reason.invalid, None, "expected a JSON object"), raw_text)], {}
    try:
        draft = CommentDraft.model_validate(payload)
    except ValidationError as exc:
        refusal = domain.one_refusal(domain.validation_refusals(exc))
        if rec.row is not None and len(rec.row) < rec.columns:
            # A short row: say so, a missing quote or separator is the usual cause.
            refusal = Refusal(refusal.reason, refusal.field,
                              f"{refusal.message} (the row has {len(rec.row)} of the header's {rec.columns} columns)")
        return [], [Rejected(rec.line, refusal, raw_text)], {}
    screened = domain.screen(draft, limits, now=now)
    if isinstance(screened, Refusal):
        return [], [Rejected(rec.line, screened, raw_text)], {}
    return [screened], [], {}


_DRAFTS = TypeAdapter(list[CommentDraft])


def parse_comment_lines(
    batch: list[RawRecord], limits: domain.Limits, now: datetime | None = None
) -> tuple[list[Incoming], list[Rejected]] | None:
    """A batch of JSON lines read as inbound comments in one pass (one JSON decode and one validation for the
    batch), or None when a line is anything else: unreadable, invalid, not one object, or a Meta delivery.
    The batch is then read line by line by `parse_record`, which says which line failed and why; both ways
    give the same comments."""
    if any(rec.text is None or '"entry"' in rec.text for rec in batch):
        return None
    try:
        drafts = _DRAFTS.validate_json("[" + ",".join(rec.text or "" for rec in batch) + "]")
    except ValidationError:
        return None
    if len(drafts) != len(batch):  # a line holding two values separated by a comma is not one record
        return None
    items: list[Incoming] = []
    rejected: list[Rejected] = []
    for rec, draft in zip(batch, drafts, strict=True):
        screened = domain.screen(draft, limits, now=now)
        if isinstance(screened, Refusal):
            rejected.append(Rejected(rec.line, screened, (rec.text or "").rstrip("\r\n")))
        else:
            items.append(screened)
    return items, rejected


@dataclass
class ImportOptions:
    fmt: str = "auto"
    batch_size: int = 2000
    rejects: Path | None = None
    resume: bool = True
    # Processes that detect the languages of each batch's new comments while the next batch is parsed (0: inline).
    workers: int = 0
    stop_after_batches: int | None = None  # for tests: simulate an interruption
    # Processes importing the file side by side, each the comments whose id falls in its shard (see shard_of).
    shards: int = 1
    shard: int = 0  # which one this process is, when shards > 1


def shard_of(item: Incoming, shards: int) -> int:
    """The shard a comment belongs to: every version of a comment lands in the same shard, so its edits and
    removal are still decided in file order (the same normalisation as its id: `comment_id_for`)."""
    c = item.comment
    return zlib.crc32(f"{c.source.strip().lower()}\x1f{c.external_id.strip()}".encode()) % shards


def detect_many(texts: list[str]) -> list[str]:
    """Language detection for a worker process."""
    from services.ingest.language import detect_languages

    return detect_languages(texts)


async def _detect_in(executor: ProcessPoolExecutor, workers: int, texts: list[str]) -> list[str]:
    """The languages of a batch's new comments, detected by the worker processes in equal shares."""
    loop = asyncio.get_running_loop()
    step = max(1, -(-len(texts) // workers))
    shares = [loop.run_in_executor(executor, detect_many, texts[k:k + step]) for k in range(0, len(texts), step)]
    return [lang for share in await asyncio.gather(*shares) for lang in share]


@dataclass
class Prepared:
    items: list[Incoming]
    rejected: list[Rejected]
    last: RawRecord
    started: float


class Importer:
    """Runs one file through an Ingestor; `on_progress` is called after each committed batch."""

    def __init__(self, ingestor: Any, on_progress: Callable[[Progress], None] | None = None) -> None:
        self.ingestor = ingestor
        self.on_progress = on_progress or (lambda _: None)

    async def run(self, path: Path, opts: ImportOptions) -> Progress:
        fmt = detect_format(path, opts.fmt)
        if fmt not in FORMATS[1:]:
            raise ValueError(f"unknown format {opts.fmt!r}; choose one of {', '.join(FORMATS)}")
        whole = file_key(path)
        # One checkpoint per shard: each resumes where its own last batch was committed.
        key = whole if opts.shards == 1 else f"{whole}#{opts.shard}/{opts.shards}"
        rejects_path = opts.rejects or path.with_name(path.name + ".rejects.jsonl")
        pool: asyncpg.Pool = self.ingestor.rt.pool
        cp = other = None
        if opts.resume:
            async with pool.acquire() as conn:
                cp = await repository.load_checkpoint(conn, key)
                # Left by a run with another number of shards: resume at the earliest of them.
                other = await repository.earliest_checkpoint(conn, whole) if cp is None else None
        prog = Progress(str(path), os.stat(path).st_size, rejects_path=str(rejects_path))
        if cp is not None:
            prog.offset, prog.line, prog.resumed_from_line, prog.earlier = cp.byte_offset, cp.line, cp.line, cp
        elif other is not None:
            prog.offset, prog.line, prog.resumed_from_line = other.byte_offset, other.line, other.line
        self.on_progress(prog)
        # Shard 0 reports the records that are not comments (malformed lines, refusals): one rejects file.
        writes_rejects = opts.shard == 0
        executor = (ProcessPoolExecutor(opts.workers, mp_context=multiprocessing.get_context("spawn"))
                    if opts.workers > 0 else None)
        own_detect = self.ingestor.detect
        if executor is not None:
            self.ingestor.detect = functools.partial(_detect_in, executor, opts.workers)
        try:
            reject_file = rejects_path if writes_rejects else Path(os.devnull)
            with reject_file.open("a" if cp or other else "w", encoding="utf-8") as rejects:
                committed = 0
                storing: asyncio.Future[None] | None = None
                try:
                    for batch in _batches(read_records(path, fmt, prog.offset, prog.line), opts.batch_size):
                        # Batch N+1 is parsed while batch N is stored and published (and, with workers, while
                        # its new comments' languages are detected there): parsing yields between chunks, so
                        # the round trips to the database, the broker and the workers overlap it.
                        ready = await self._prepare(batch, fmt, opts)
                        if storing is not None:
                            await asyncio.shield(storing)  # a cancel stops the import, not this batch's commit
                            committed += 1
                            if opts.stop_after_batches is not None and committed >= opts.stop_after_batches:
                                return prog
                        # Batches are committed one after the other: the checkpoint only moves forward.
                        storing = asyncio.ensure_future(self._commit(ready, key, prog, rejects))
                    if storing is not None:
                        await asyncio.shield(storing)
                finally:
                    if storing is not None and not storing.done():
                        # A batch being stored is finished, not cut short, whatever stopped the import.
                        await asyncio.wait([storing])
                        failure = None if storing.cancelled() else storing.exception()
                        if failure is not None:
                            log.warning("a batch failed to store while the import stopped",
                                        extra={"error": type(failure).__name__})
        finally:
            if executor is not None:
                self.ingestor.detect = own_detect
                # Joins the worker processes: nothing is left running after an import, even an interrupted one.
                executor.shutdown(wait=True, cancel_futures=True)
        if opts.shards == 1:
            async with pool.acquire() as conn:
                await repository.clear_checkpoints(conn, whole)
        # A shard leaves its checkpoint at the end of the file: the import is done when every shard is, and
        # what runs the shards clears them then (a shard that finished early is not read again on a resume).
        prog.offset = prog.total_bytes
        prog.finished = True
        prog.peak_rss_mb = _peak_rss_mb()
        self.on_progress(prog)
        return prog

    async def _prepare(self, batch: list[RawRecord], fmt: str, opts: ImportOptions) -> Prepared:
        started = time.perf_counter()
        items: list[Incoming] = []
        rejected: list[Rejected] = []
        now = self.ingestor.clock()
        for k in range(0, len(batch), PARSE_CHUNK):
            if k:
                await asyncio.sleep(0)  # let the batch being stored take its next step
            chunk = batch[k:k + PARSE_CHUNK]
            fast = parse_comment_lines(chunk, self.ingestor.limits, now) if fmt == "jsonl" else None
            if fast is not None:
                items += fast[0]
                rejected += fast[1]
                continue
            for rec in chunk:
                got, refused, signals = parse_record(rec, fmt, self.ingestor.limits, now)
                items += got
                rejected += refused
                if opts.shard == 0:  # counted once when shards read the same lines
                    for kind, n in signals.items():
                        metrics.META_SIGNALS.labels(kind=kind).inc(n)
        if opts.shards > 1:
            items = [i for i in items if shard_of(i, opts.shards) == opts.shard]
            rejected = rejected if opts.shard == 0 else []
        return Prepared(items, rejected, batch[-1], started)

    async def _commit(self, batch: Prepared, key: str, prog: Progress, rejects: TextIO) -> None:
        items, rejected = batch.items, batch.rejected
        metrics.RECEIVED.labels(channel="import").inc(len(items) + len(rejected))
        # Rejects are written before the commit: after a crash they may repeat, never go missing.
        if rejected:
            rejects.write("".join(r.as_json() + "\n" for r in rejected))
            rejects.flush()
            self.ingestor.refused("import", [r.refusal for r in rejected])
            for r in rejected:
                prog.tally.add_refusal(r.refusal.reason)
        last = batch.last
        path = prog.path
        e = prog.earlier or repository.Checkpoint(0, 0, 0, 0, 0)

        async def checkpoint(conn: repository.Conn, t: Tally) -> None:
            # A stale edit is counted with the duplicates there: read, and nothing to publish.
            totals = repository.Checkpoint(last.end_offset, last.end_line, e.accepted + t.accepted,
                                           e.duplicates + t.duplicates + t.stale, e.rejected + t.rejected_total)
            await repository.save_checkpoint(conn, key, path, totals, self.ingestor.clock())

        await self.ingestor.accept(items, "import", received_at=batch.started, direct=True,
                                   in_transaction=checkpoint, tally=prog.tally)
        prog.offset, prog.line = last.end_offset, last.end_line
        self.on_progress(prog)


def _peak_rss_mb() -> float:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux or macOS
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def summary_line(prog: Progress) -> str:
    t = prog.tally
    elapsed = time.perf_counter() - prog.started
    # A rate over less than a second is mostly start-up (a 3-line file read "5 lines/s"): say the time instead.
    pace = f"in {elapsed:.1f} s"
    if elapsed >= 1.0:
        pace += f", {(prog.line - prog.resumed_from_line) / elapsed:,.0f} lines/s"
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(t.rejected.items()))
    line = (f"{t.accepted} accepted ({t.created} new, {t.edited} edits, {t.removed} removals), "
            f"{t.duplicates} duplicates, " + (f"{t.stale} stale edits, " if t.stale else "")
            + f"{t.rejected_total} rejected" + (f" ({rejected})" if rejected else "")
            + f"; {prog.line} lines {pace}")
    if prog.earlier is not None:
        e = prog.earlier
        line += (f"; resumed at line {prog.resumed_from_line} (before: {e.accepted} accepted, "
                 f"{e.duplicates} duplicates, {e.rejected} rejected)")
    return line

