"""Detection state in PostgreSQL: pruned after the retention window in bounded batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.escalation import repository
from services.escalation.domain import Attachment, Bucket, Incident, Seen
from services.escalation.policy import CommunityPolicy, InhibitRule
from terrain.contracts import Evidence, IncidentLevel, IncidentState, RecommendedAction
from terrain.db import Outbox, create_pool, migrate
from terrain.kafka import OutMessage

pytestmark = pytest.mark.integration


async def test_prune_deletes_only_old_state_in_bounded_batches(schema_url: str) -> None:
    pool = await create_pool(schema_url)
    try:
        await migrate(pool, "kernel", "terrain")
        await migrate(pool, "escalation", "services.escalation")
        now = datetime(2026, 11, 26, tzinfo=UTC)
        times = [now - timedelta(days=d) for d in (40, 35, 31, 29, 1)]
        await pool.executemany(
            """INSERT INTO escalation_comments (community_id, comment_id, thread_id, created_at, sure_negative, score)
               VALUES ('c', $1, 't', $2, true, -0.5)""",
            [(f"id{i}", t) for i, t in enumerate(times)],
        )
        await pool.executemany(
            """INSERT INTO escalation_buckets (community_id, bucket_s, bucket_start, comments, negatives)
               VALUES ('c', 900, $1, 1, 1)""",
            [(t,) for t in times],
        )
        before = now - timedelta(days=30)
        first = await repository.prune(pool, before, limit=2)
        second = await repository.prune(pool, before, limit=2)
        third = await repository.prune(pool, before, limit=2)
        left = await pool.fetchval("SELECT count(*) FROM escalation_comments")
        left_buckets = await pool.fetchval("SELECT count(*) FROM escalation_buckets")
    finally:
        await pool.close()
    assert (first, second, third) == (4, 2, 0)  # at most 2 rows per table per call
    assert (left, left_buckets) == (2, 2)


@pytest.mark.parametrize("one_statement", [False, True], ids=["each-write", "one-statement"])
async def test_saved_state_is_read_back_as_a_batch_is_decided_against(schema_url: str, one_statement: bool) -> None:
    """Incidents saved in one set-based statement, then every part of a batch's book read back as stored; the
    same when every write (and outbox rows) goes in a single statement, as a batch's effects are stored."""
    now = datetime(2026, 11, 26, 12, tzinfo=UTC)
    policy = CommunityPolicy()
    ev = Evidence(comment_id="k1", external_id="x1", label="negative", score=-0.7, flags=["insult"], created_at=now)

    def incident(id_: str, thread: str, **kw: object) -> Incident:
        base: dict[str, object] = dict(
            id=id_, community_id="c", thread_id=thread, level=IncidentLevel.respond, reason="r",
            state=IncidentState.open, opened_at=now, updated_at=now, policy=policy, language="fr",
            source="facebook", evidence=(ev,), comment_count=1, negative_count=1, seq=1,
            actions=(RecommendedAction(code="reply_public", comment_id="k1", external_id="x1"),),
        )
        base.update(kw)
        return Incident(**base)  # type: ignore[arg-type]

    open_t1 = incident("i-open", "t1")
    resolved_t2 = incident("i-res", "t2", state=IncidentState.resolved, resolved_at=now - timedelta(hours=2))
    older_t2 = incident("i-old", "t2", state=IncidentState.resolved, resolved_at=now - timedelta(hours=5))
    stale_t3 = incident("i-stale", "t3", state=IncidentState.resolved, resolved_at=now - timedelta(days=9))
    field_c = incident("i-field", "t4", level=IncidentLevel.field)
    elsewhere = incident("i-else", "t1", community_id="d", level=IncidentLevel.field)
    pool = await create_pool(schema_url)
    try:
        await migrate(pool, "kernel", "terrain")
        await migrate(pool, "escalation", "services.escalation")
        # The same id twice in one call: the last version wins (one row, no conflict error).
        incidents = [incident("i-open", "t1", comment_count=0), open_t1, resolved_t2, older_t2, stale_t3, field_c,
                     elsewhere]
        seen_rows = [
            Seen("c", "k1", "t1", "a1", now - timedelta(minutes=5), True, -0.7),
            Seen("c", "k0", "t1", "a1", now - timedelta(hours=3), True, -0.6),  # before the window
            Seen("c", "k9", "t9", "a1", now - timedelta(days=2), True, -0.5),  # another thread, same author
            Seen("c", "k8", "t9", "a1", now - timedelta(days=40), True, -0.5),  # before the author lookback
            Seen("c", "k7", "t9", "a2", now - timedelta(days=1), True, -0.5, removed=True),
        ]
        attachments = [Attachment("i-open", "k1", "c", "t1", "x1", "negative", -0.7, ("insult",), True, now, "m1")]
        deltas = {
            ("c", now - timedelta(minutes=15)): Bucket(3, 2, -0.9), ("c", now - timedelta(days=3)): Bucket(1, 1, -1),
        }
        first_seen = {"c": now - timedelta(days=10)}
        outbox_ids: list[int] = []
        async with pool.acquire() as conn, conn.transaction():
            if one_statement:
                # The attachment's incident is written by a sibling part of the same statement.
                rows = await repository.save_all(
                    conn,
                    [repository.attachments_part(attachments, now), repository.incidents_part(incidents),
                     repository.seen_part(seen_rows), repository.buckets_part(deltas, {"c": 900}),
                     repository.first_seen_part(first_seen)],
                    returning=Outbox(pool, None, "state-test").enqueue_statement(  # type: ignore[arg-type]
                        [OutMessage("t", "c", b"1"), OutMessage("t", "c", b"2")]
                    ),
                )
                outbox_ids = [r["id"] for r in rows]
            else:
                await repository.save_incidents(conn, incidents)
                await repository.save_seen(conn, seen_rows)
                await repository.save_attachments(conn, attachments, now)
                await repository.add_buckets(conn, deltas, {"c": 900})
                await repository.save_first_seen(conn, first_seen)
        stored = await pool.fetch("SELECT id, value FROM terrain_outbox WHERE service = 'state-test' ORDER BY id")
        threads = [("c", "t1"), ("c", "t2"), ("c", "t3")]
        async with pool.acquire() as conn, conn.transaction():
            await repository.lock_threads(conn, threads)
            attached = await repository.attached(conn, [("c", "k0"), ("c", "k1"), ("c", "new")])
            seen = await repository.thread_comments(
                conn, {("c", "t1"): now - timedelta(minutes=30)}, [("c", "k0"), ("c", "new")]
            )
            negatives = await repository.author_negatives(conn, [("c", "a1"), ("c", "a2")], now - timedelta(days=30))
            buckets = await repository.buckets(conn, {"c": (900, now - timedelta(hours=1))})
            first = await repository.first_seen(conn, ["c"])
            rules = [InhibitRule(source={"level": "field"}, target={"level": "respond"})]
            # The incidents in one statement, as a batch reads them; the inhibitors alone, as the timers do.
            open_by_thread, resolved, others = await repository.load_incidents(conn, threads, now, ["c"], rules)
            inhibitors = await repository.load_inhibitors(conn, ["c"], rules)
            # The rest of a batch's reads in another statement.
            parts = await repository.fetch_all(conn, [
                repository.attached_query([("c", "k0"), ("c", "k1"), ("c", "new")]),
                repository.thread_comments_query(
                    {("c", "t1"): now - timedelta(minutes=30)}, [("c", "k0"), ("c", "new")]
                ),
                repository.author_negatives_query([("c", "a1"), ("c", "a2")], now - timedelta(days=30)),
                repository.buckets_query({"c": (900, now - timedelta(hours=1))}),
                None,
            ])
    finally:
        await pool.close()
    assert list(open_by_thread) == [("c", "t1")]
    assert open_by_thread[("c", "t1")] == open_t1  # every field, the evidence, the actions and the frozen policy
    # t2's latest resolution is inside the reopen lookback; t3's is too old.
    assert {k: i.id for k, i in resolved.items()} == {("c", "t2"): "i-res"}
    assert attached == {("c", "k1"): "i-open"}  # k0 and "new" are attached to nothing
    # The window from its `since`, plus the batch's own comments wherever they fall.
    assert sorted(seen[("c", "t1")]) == ["k0", "k1"]
    assert set(negatives) == {("c", "a1")}  # a2's only negative was removed
    assert sorted(negatives[("c", "a1")]) == ["k0", "k1", "k9"]
    assert buckets == {"c": {now - timedelta(minutes=15): Bucket(3, 2, -0.9)}}
    assert first == {"c": now - timedelta(days=10)}
    assert sorted(others) == ["i-field"]  # open, of this community, at the rule's source level
    assert inhibitors == others
    assert repository.attached_of(parts[0]) == attached
    assert repository.thread_comments_of(parts[1]) == seen
    assert repository.author_negatives_of(parts[2]) == negatives
    assert repository.buckets_of(parts[3]) == buckets
    assert parts[4] == []
    # The outbox rows' ids come back in the messages' order.
    expected = [b"1", b"2"] if one_statement else []
    assert [(r["id"], bytes(r["value"])) for r in stored] == list(zip(outbox_ids, expected, strict=True))
