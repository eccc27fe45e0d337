"""The import's reader and parser without a database: byte offsets to resume from, CSV, Meta archives."""

from __future__ import annotations

import json
from pathlib import Path

from services.ingest.domain import CommentDraft, Limits, Reason
from services.ingest.importer import parse_comment_lines, parse_record, read_records
from tests.ingest_payloads import PAGE, delivery, feed_comment, feed_item

ROW = {"source": "forum", "community_id": "c", "thread_id": "t", "text": "Très bien 👍",
       "created_at": "2026-11-20T10:00:00Z"}


def test_jsonl_offsets_resume_exactly_after_a_record(tmp_path: Path):
    path = tmp_path / "a.jsonl"
    lines = [json.dumps({**ROW, "external_id": str(i)}, ensure_ascii=False) for i in range(5)]
    path.write_text(lines[0] + "\n\n" + "\n".join(lines[1:]) + "\n", encoding="utf-8")  # a blank line 2
    records = list(read_records(path, "jsonl"))
    assert [r.line for r in records] == [1, 3, 4, 5, 6]
    resumed = list(read_records(path, "jsonl", records[1].end_offset, records[1].end_line))
    assert [json.loads(r.text or "")["external_id"] for r in resumed] == ["2", "3", "4"]
    assert [r.line for r in resumed] == [4, 5, 6]
    assert records[-1].end_offset == path.stat().st_size


def test_csv_with_quoted_newlines_resumes_with_its_header(tmp_path: Path):
    path = tmp_path / "a.csv"
    path.write_text("\ufeffsource,external_id,community_id,thread_id,text,created_at,likes,removed\n"
                    'forum,1,c,t,"une\ndeux",2026-11-20T10:00:00Z,3,\n'
                    "forum,2,c,t,simple,2026-11-20T10:00:00Z,,yes\n"
                    "forum,3,c,t,,2026-11-20T10:00:00Z,,\n", encoding="utf-8")
    records = list(read_records(path, "csv"))
    assert [r.line for r in records] == [2, 4, 5]  # the first record spans lines 2-3
    assert records[0].row is not None and records[0].row["text"] == "une\ndeux"
    resumed = list(read_records(path, "csv", records[0].end_offset, records[0].end_line))
    assert [r.row["external_id"] for r in resumed if r.row] == ["2", "3"] and resumed[0].line == 4
    items, rejected, _ = parse_record(records[0], "csv", Limits())
    assert items[0].comment.metrics.likes == 3 and items[0].comment.text == "une\ndeux"
    items, _, _ = parse_record(records[1], "csv", Limits())
    assert items[0].comment.removed  # "yes"
    _, rejected, _ = parse_record(records[2], "csv", Limits())
    assert [(r.line, r.refusal.reason) for r in rejected] == [(5, Reason.empty_text)]


def test_parse_record_json_errors_and_meta_deliveries(tmp_path: Path):
    path = tmp_path / "mixed.jsonl"
    meta_line = json.dumps(delivery("page", (PAGE, [feed_comment("1", "1", "Bravo !"), feed_item("like", "1"),
                                                    feed_comment("1", "2", "")])))
    path.write_text('{"source": "forum",\n' + meta_line + "\n[1, 2]\n", encoding="utf-8")
    broken, meta, listed = read_records(path, "jsonl")
    _, rejected, _ = parse_record(broken, "jsonl", Limits())
    assert rejected[0].refusal.reason is Reason.malformed_json and "line 1, column" in rejected[0].refusal.message
    items, rejected, signals = parse_record(meta, "jsonl", Limits())
    assert [i.comment.external_id for i in items] == ["1_1"] and signals == {"like": 1}
    assert rejected[0].refusal.reason is Reason.empty_text and json.loads(rejected[0].record)["object"] == "page"
    _, rejected, _ = parse_record(listed, "jsonl", Limits())
    assert rejected[0].refusal.reason is Reason.invalid


def _one_by_one(records: list, limits: Limits) -> tuple[list, list]:
    items, rejected = [], []
    for rec in records:
        got, refused, _ = parse_record(rec, "jsonl", limits)
        items += got
        rejected += refused
    return items, rejected


def test_a_batch_read_in_one_pass_gives_what_reading_each_line_gives(tmp_path: Path):
    limits = Limits(max_text_chars=20)
    rows = [{**ROW, "external_id": str(i)} for i in range(6)]
    rows[1] |= {"source": "MySpace"}  # refused by screening: unknown source
    rows[2] |= {"text": "   "}  # refused: empty
    rows[3] |= {"text": "Très long commentaire 😡 " * 3, "metrics": {"likes": 2}, "removed": "true"}  # truncated
    rows[4] |= {"lang": "fr", "parent_id": "0", "author_name": "Camille", "extra": {"ignored": True}}
    path = tmp_path / "ok.jsonl"
    path.write_text("\ufeff" + "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n", encoding="utf-8")
    records = list(read_records(path, "jsonl"))
    fast = parse_comment_lines(records, limits)
    assert fast is not None
    slow = _one_by_one(records, limits)
    assert [i.comment for i in fast[0]] == [i.comment for i in slow[0]] and len(fast[0]) == 4
    assert [(i.kind, i.truncated) for i in fast[0]] == [(i.kind, i.truncated) for i in slow[0]]
    assert [(r.line, r.refusal, r.record) for r in fast[1]] == [(r.line, r.refusal, r.record) for r in slow[1]]
    assert [r.refusal.reason for r in fast[1]] == [Reason.unknown_source, Reason.empty_text]


def test_a_batch_with_any_other_line_is_left_to_the_line_by_line_reader(tmp_path: Path):
    good = json.dumps({**ROW, "external_id": "1"})
    meta_line = json.dumps(delivery("page", (PAGE, [feed_comment("1", "1", "Bravo !")])))
    for odd in ("{not json", "[1, 2]", json.dumps({**ROW}), meta_line, f"{good}, {good}", '"\\ud800"'):
        path = tmp_path / "odd.jsonl"
        path.write_text(good + "\n" + odd + "\n", encoding="utf-8")
        records = list(read_records(path, "jsonl"))
        assert parse_comment_lines(records, Limits()) is None, odd
        assert _one_by_one(records, Limits())[0]  # the good line still gets through, the odd one is judged alone


def test_every_version_of_a_comment_falls_in_the_same_shard():
    from services.ingest.domain import Incoming, Kind, screen
    from services.ingest.importer import shard_of

    def item(ext: str, text: str = "Bonjour", kind: Kind = Kind.upsert, source: str = "forum") -> Incoming:
        got = screen(CommentDraft(source=source, external_id=ext, community_id="c", thread_id="t", text=text,
                                  created_at="2026-11-20T10:00:00Z"), Limits(), kind)
        assert isinstance(got, Incoming)
        return got

    for shards in (2, 3, 8):
        for ext in ("1", "1048_77", "é😀"):
            versions = [item(ext), item(ext, "Bonjour (modifié)"), item(ext, "", Kind.removal),
                        item(f" {ext} ", source="FORUM")]
            assert len({shard_of(v, shards) for v in versions}) == 1
    counts = [0, 0]
    for i in range(2000):
        counts[shard_of(item(str(i)), 2)] += 1
    assert min(counts) > 900  # an even share each


def test_the_summary_gives_a_rate_only_for_an_import_that_lasted_a_second_or_more():
    import time

    from services.ingest.importer import Progress, summary_line

    short = Progress(path="small.jsonl", total_bytes=300, line=3, started=time.perf_counter() - 0.4)
    assert "3 lines in 0.4 s" in summary_line(short) and "lines/s" not in summary_line(short)
    long = Progress(path="big.jsonl", total_bytes=9_000_000, line=45_000, started=time.perf_counter() - 5.0)
    assert "45000 lines in 5.0 s, " in summary_line(long) and "lines/s" in summary_line(long)


def test_a_malformed_json_line_is_placed_at_its_own_line_and_column(tmp_path: Path):
    good = json.dumps({**ROW, "external_id": "1"}, ensure_ascii=False)
    unclosed = json.dumps({**ROW, "external_id": "4"}, ensure_ascii=False)[:-1]  # its `}` missing at the end
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join([good, good, good, unclosed, '{"source": "forum", "text": oops}', good]) + "\r\n",
                    encoding="utf-8")
    records = list(read_records(path, "jsonl"))
    assert parse_comment_lines(records, Limits()) is None  # left to the line-by-line reader, which says where
    rejected = [r for rec in records for r in parse_record(rec, "jsonl", Limits())[1]]
    # Before, the first read "line 4, column 1": the position of the line ending json saw as a second line.
    assert rejected[0].refusal.message == f"line 4, column {len(unclosed) + 1}: Expecting ',' delimiter"
    assert rejected[1].refusal.message.startswith("line 5, column 29: Expecting value")
    assert [(r.line, r.column) for r in rejected] == [(4, len(unclosed) + 1), (5, 29)]
    assert json.loads(rejected[0].as_json())["column"] == len(unclosed) + 1


def test_a_short_csv_row_names_every_field_it_lacks(tmp_path: Path):
    path = tmp_path / "short.csv"
    path.write_text("source,external_id,community_id,thread_id,text,created_at,likes\n"
                    "forum,1,c\n"  # thread_id, text and created_at missing (likes is optional)
                    "forum,2,c,t,bonjour,2026-11-20T10:00:00Z\n", encoding="utf-8")
    short, whole = read_records(path, "csv")
    _, rejected, _ = parse_record(short, "csv", Limits())
    [r] = rejected
    assert (r.line, r.refusal.reason, r.refusal.field) == (2, Reason.invalid, "thread_id, text, created_at")
    assert r.refusal.message == ("thread_id, text, created_at: Field required "
                                 "(the row has 3 of the header's 7 columns)")
    assert parse_record(whole, "csv", Limits())[0]  # a row lacking only an optional column is read


def test_a_line_dated_in_the_future_is_rejected_by_the_imports_clock(tmp_path: Path):
    from datetime import UTC, datetime

    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    rows = [{**ROW, "external_id": "1"}, {**ROW, "external_id": "2", "created_at": "2199-01-01T00:00:00Z"}]
    path = tmp_path / "future.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    records = list(read_records(path, "jsonl"))
    fast = parse_comment_lines(records, Limits(), now)
    assert fast is not None and [i.comment.external_id for i in fast[0]] == ["1"]
    assert [(r.line, r.refusal.reason, r.refusal.field) for r in fast[1]] == [
        (2, Reason.future_timestamp, "created_at")]
    assert [(r.line, r.refusal.reason) for r in parse_record(records[1], "jsonl", Limits(), now)[1]] == [
        (2, Reason.future_timestamp)]
