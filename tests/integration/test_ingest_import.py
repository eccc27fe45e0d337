"""`terrain import` against the real broker and PostgreSQL: progress, counts, rejects with reasons, resuming
after an interruption without duplicating, and a second run adding nothing."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from services.ingest.app import IngestSettings
from services.ingest.cli import auto_shards, import_file
from services.ingest.importer import ImportOptions
from tests.ingest_payloads import PAGE, delivery, feed_comment, feed_item
from tests.kafka_helpers import consume

pytestmark = pytest.mark.integration

TEXTS = ["Service déplorable, 45 minutes d'attente 😡", "Super soirée, merci à toute l'équipe ! 🎉",
         "À quelle heure ouvre la boutique samedi ?", "Terrible customer service, never again."]


def jsonl_file(path: Path, n: int) -> dict[str, int]:
    """n lines: valid comments, reposts of earlier lines, and a few broken lines of each kind."""
    expected = Counter[str]()
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            if i % 500 == 7:
                fh.write('{"source": "facebook", "external_id": \n')  # malformed JSON
                expected["rejected"] += 1
                continue
            if i % 500 == 11:
                fh.write(json.dumps({"source": "myspace", "external_id": f"x{i}", "community_id": "c",
                                     "thread_id": "t", "text": "hi", "created_at": "2026-11-20T10:00:00Z"}) + "\n")
                expected["rejected"] += 1
                continue
            ext = i - 1 if i % 100 == 50 else i  # every hundredth line reposts the previous one
            fh.write(json.dumps({
                "source": "forum", "external_id": f"imp-{ext}", "community_id": f"community-{ext % 17}",
                "thread_id": f"thread-{ext % 250}", "author_id": f"u{ext}", "text": f"{TEXTS[ext % 4]} #{ext}",
                "created_at": "2026-11-20T10:00:00+01:00",
            }, ensure_ascii=False) + "\n")
            expected["duplicates" if ext != i else "accepted"] += 1
    return dict(expected)


def read_rejects(path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def recorder() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, width=200, highlight=False), buf


async def test_import_resumes_and_never_duplicates(settings_kwargs, topic_overrides, kafka_bootstrap,
                                                   tmp_path: Path):
    path = tmp_path / "export.jsonl"
    expected = jsonl_file(path, 3000)
    settings = IngestSettings(**settings_kwargs)
    console, shown = recorder()
    # Interrupted after two batches of 500 lines…
    first = await import_file(path, ImportOptions(batch_size=500, stop_after_batches=2), settings,
                              topic_overrides=topic_overrides, console=console)
    assert first.line == 1000
    # …resumed from the checkpoint (with a language worker process, as `terrain import --workers 1` runs)…
    second = await import_file(path, ImportOptions(batch_size=500, workers=1), settings,
                               topic_overrides=topic_overrides, console=console)
    assert second.resumed_from_line == 1000 and second.line == 3000
    total = {"accepted": first.tally.accepted + second.tally.accepted,
             "duplicates": first.tally.duplicates + second.tally.duplicates,
             "rejected": first.tally.rejected_total + second.tally.rejected_total}
    assert total == expected
    # …and run again once finished: everything is a duplicate.
    third = await import_file(path, ImportOptions(batch_size=500), settings,
                              topic_overrides=topic_overrides, console=console)
    assert third.resumed_from_line == 0 and third.tally.accepted == 0
    assert third.tally.duplicates == expected["accepted"] + expected["duplicates"]

    out = await consume(kafka_bootstrap, topic_overrides["terrain.comments.v1"], expect=expected["accepted"],
                        settle_s=1.0)
    comments = [json.loads(r.value)["comment"] for r in out]
    ids = Counter(c["external_id"] for c in comments)
    assert len(out) == expected["accepted"] and max(ids.values()) == 1  # each comment published once
    assert Counter(c["lang"] for c in comments)["fr"] > len(comments) / 2  # detected inline and by the worker
    rejects = read_rejects(third.rejects_path)
    assert Counter(r["reason"] for r in rejects) == {"malformed_json": 6, "unknown_source": 6}
    assert rejects[0]["line"] == 8 and "line 8, column" in rejects[0]["message"]
    assert "resumed at line 1000" in shown.getvalue() and "export.jsonl" in shown.getvalue()
    assert "accepted" in shown.getvalue() and "━" in shown.getvalue()  # the progress bar was drawn


async def test_import_csv_and_meta_archive(settings_kwargs, topic_overrides, kafka_bootstrap, tmp_path: Path):
    csv_path = tmp_path / "export.csv"
    csv_path.write_text(
        "source,external_id,community_id,thread_id,author_name,text,created_at,likes,removed\n"
        'facebook,c1,resto,p1,Jeanne,"Plat froid, service lent",2026-11-20T10:00:00Z,3,\n'
        'facebook,c2,resto,p1,,"Deux lignes\ndans un champ 🎉",2026-11-20T10:01:00Z,,false\n'
        "facebook,c3,resto,p1,,,2026-11-20T10:02:00Z,,\n"  # empty text: refused
        "facebook,c1,resto,p1,,,2026-11-20T10:03:00Z,,true\n",  # removal of c1
        encoding="utf-8",
    )
    archive = tmp_path / "deliveries.jsonl"
    archive.write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in [
        delivery("page", (PAGE, [feed_comment("9", "1", "Bravo pour l'apéro !"), feed_item("reaction", "9")])),
        delivery("page", (PAGE, [feed_comment("9", "1", "Bravo pour l'apéro ! (edit)", verb="edited"),
                                 feed_comment("9", "2", None)])),  # no message: refused
    ]) + "\n", encoding="utf-8")
    settings = IngestSettings(**settings_kwargs)
    console, _ = recorder()
    csv_run = await import_file(csv_path, ImportOptions(), settings, topic_overrides=topic_overrides, console=console)
    meta_run = await import_file(archive, ImportOptions(), settings, topic_overrides=topic_overrides, console=console)
    assert (csv_run.tally.created, csv_run.tally.removed, csv_run.tally.rejected) == (2, 1, {"empty_text": 1})
    assert (meta_run.tally.created, meta_run.tally.edited, meta_run.tally.rejected) == (1, 1, {"empty_text": 1})
    out = await consume(kafka_bootstrap, topic_overrides["terrain.comments.v1"], expect=5, settle_s=1.0)
    comments: list[dict[str, Any]] = [json.loads(r.value)["comment"] for r in out]
    by_ext = {(c["external_id"], c["revision"]): c for c in comments}
    assert by_ext[("c2", 1)]["text"] == "Deux lignes\ndans un champ 🎉"
    assert by_ext[("c1", 1)]["metrics"]["likes"] == 3 and by_ext[("c1", 2)]["removed"]
    # An add and its edit in one batch: both published, in order.
    assert by_ext[("9_1", 1)]["text"] == "Bravo pour l'apéro !" and by_ext[("9_1", 2)]["action"] == "edited"
    assert by_ext[("c1", 1)]["text"] == "Plat froid, service lent"  # created, then removed: history kept
    rejects = read_rejects(csv_run.rejects_path)
    assert [(r["line"], r["reason"], r["field"]) for r in rejects] == [(5, "empty_text", "text")]


@pytest.mark.soak
async def test_import_100k_lines(settings_kwargs, topic_overrides, tmp_path: Path):
    path = tmp_path / "export-100k.jsonl"
    expected = jsonl_file(path, 100_000)
    settings = IngestSettings(**settings_kwargs)
    console, shown = recorder()
    started = time.perf_counter()
    shards = auto_shards(path)  # as `terrain import` chooses: one per core for a file this size
    opts = ImportOptions(shards=shards)
    first = await import_file(path, opts, settings, topic_overrides=topic_overrides, console=console)
    took = time.perf_counter() - started
    again = await import_file(path, opts, settings, topic_overrides=topic_overrides, console=console)
    print(f"\n100k-line import in {shards} shard(s): {took:.1f} s, {first.tally.accepted / took:,.0f} comments/s "
          "accepted; "
          f"second run: {again.tally.accepted} accepted, {again.tally.duplicates} duplicates")
    assert first.tally.accepted == expected["accepted"] and first.tally.rejected_total == expected["rejected"]
    assert again.tally.accepted == 0 and again.tally.duplicates == expected["accepted"] + expected["duplicates"]
    assert "━" in shown.getvalue()


async def test_import_in_shards_resumes_under_any_layout_and_never_duplicates(
        settings_kwargs, topic_overrides, kafka_bootstrap, tmp_path: Path):
    path = tmp_path / "sharded.jsonl"
    expected = jsonl_file(path, 3000)
    settings = IngestSettings(**settings_kwargs)
    console, shown = recorder()
    # Two processes, each interrupted after one batch of its share…
    first = await import_file(path, ImportOptions(batch_size=500, shards=2, stop_after_batches=1), settings,
                              topic_overrides=topic_overrides, console=console)
    assert not first.finished and first.line == 500 and first.tally.accepted > 0
    # …resumed by a single process: it starts at the earliest shard checkpoint (line 500) and finds what the
    # shards had stored beyond it already there…
    second = await import_file(path, ImportOptions(batch_size=500), settings, topic_overrides=topic_overrides,
                               console=console)
    assert second.finished and second.resumed_from_line == 500 and second.line == 3000
    assert first.tally.accepted + second.tally.accepted == expected["accepted"]
    assert first.tally.rejected_total + second.tally.rejected_total == expected["rejected"]
    # …and a finished import left no checkpoint: three shards read it all again and find only duplicates.
    third = await import_file(path, ImportOptions(batch_size=500, shards=3), settings,
                              topic_overrides=topic_overrides, console=console)
    assert third.finished and third.resumed_from_line == 0 and third.tally.accepted == 0
    assert third.tally.duplicates == expected["accepted"] + expected["duplicates"]
    assert third.tally.rejected_total == expected["rejected"]  # counted once, by one shard
    rejects = read_rejects(third.rejects_path)
    assert Counter(r["reason"] for r in rejects) == {"malformed_json": 6, "unknown_source": 6}

    out = await consume(kafka_bootstrap, topic_overrides["terrain.comments.v1"], expect=expected["accepted"],
                        settle_s=1.0)
    ids = Counter(json.loads(r.value)["comment"]["external_id"] for r in out)
    assert len(out) == expected["accepted"] and max(ids.values()) == 1  # each comment published once
    assert "accepted" in shown.getvalue() and "━" in shown.getvalue()


def test_the_command_exits_3_when_records_were_rejected_and_0_only_when_all_were_accepted(
        schema_url: str, kafka_bootstrap: str, topic_overrides: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch):
    import asyncio
    from functools import partial

    from typer.testing import CliRunner

    from services.ingest import cli
    from terrain.cli import app

    monkeypatch.setenv("TERRAIN_DATABASE_URL", schema_url)
    monkeypatch.setenv("TERRAIN_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("TERRAIN_HOME", str(tmp_path / "home"))  # no `terrain up` lives there
    # The command as typed, on this test's own topics.
    monkeypatch.setattr(cli, "import_file", partial(cli.import_file, topic_overrides=topic_overrides))

    def line(ext: str, **kw: Any) -> str:
        return json.dumps({"source": "forum", "external_id": ext, "community_id": "c", "thread_id": "t",
                           "text": "Service déplorable", "created_at": "2026-11-20T10:00:00Z", **kw},
                          ensure_ascii=False)

    clean, mixed = tmp_path / "clean.jsonl", tmp_path / "mixed.jsonl"
    clean.write_text("\n".join(line(f"ok{i}") for i in range(3)) + "\n", encoding="utf-8")
    unclosed = line("broken")[:-1]  # its `}` missing at the end of line 2
    mixed.write_text("\n".join([line("m1"), unclosed, line("m3", created_at="2199-01-01T00:00:00Z"), line("m4")])
                     + "\n", encoding="utf-8")
    runner = CliRunner()
    ok = runner.invoke(app, ["import", str(clean)])
    bad = runner.invoke(app, ["import", str(mixed)])
    again = runner.invoke(app, ["import", str(clean)])  # all duplicates: nothing refused, still 0

    assert ok.exit_code == 0, ok.output
    assert bad.exit_code == 3, bad.output
    assert "exit code 3: 2 record(s) rejected; finished, but some records were rejected" in bad.output
    assert again.exit_code == 0 and "3 duplicates" in again.output, again.output
    rejects = read_rejects(str(mixed) + ".rejects.jsonl")
    assert [(r["line"], r["reason"], r["field"]) for r in rejects] == [
        (2, "malformed_json", None), (3, "future_timestamp", "created_at")]
    assert rejects[0]["column"] == len(unclosed) + 1
    assert rejects[0]["message"].startswith(f"line 2, column {len(unclosed) + 1}: ")
    out = asyncio.run(consume(kafka_bootstrap, topic_overrides["terrain.comments.v1"], expect=5, settle_s=1.0))
    assert sorted(json.loads(r.value)["comment"]["external_id"] for r in out) == ["m1", "m4", "ok0", "ok1", "ok2"]
