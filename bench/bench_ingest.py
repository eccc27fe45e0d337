"""Ingest throughput: Meta webhook (signed 100-comment deliveries) and `terrain import`, and language detection.

Starts its own Tansu broker and embedded PostgreSQL (in a temporary folder), then:
- webhook: runs the ingest service as its own process pinned to one core (`taskset`, when available), posts
  signed Meta deliveries of 100 comments each from this process with a few requests in flight, and prints
  requests/s and comments/s, then checks that every comment reached terrain.comments.v1 exactly once;
- import: writes a JSON-lines file and imports it in this process as `terrain import` does; prints comments/s;
- lang (`--lang`): how often the language detector names French on short French comments (the project's
  labelled French sets when /work/shared/data/sentiment is there, the seed article's comments, the brand
  smoke set) and English on short English ones, and its speed.

Usage: python bench/bench_ingest.py [--deliveries 300] [--import-lines 100000] [--import-workers 0] [--import-shards 0]
       [--concurrency 8] [--lang] [--only webhook|import|lang]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.ingest.meta import sign  # noqa: E402
from terrain.devstack import EmbeddedPostgres, TansuBroker, free_port, stop_process, wait_for_port  # noqa: E402

SECRET = "bench-secret"
TEXTS = ["Service déplorable, 45 minutes d'attente et un plat froid 😡", "Super soirée hier, merci à toute l'équipe !",
         "À quelle heure ouvre la boutique samedi ?", "Terrible customer service, never again.",
         "Le nouveau menu est top, bravo au chef 👏", "Toujours pas de réponse à mon mail, c'est inadmissible"]


def meta_delivery(run: str, n: int, per: int = 100) -> dict[str, Any]:
    """One Page delivery with `per` comment changes across 4 posts, as Meta batches them."""
    changes = []
    for i in range(per):
        k = n * per + i
        changes.append({"field": "feed", "value": {
            "from": {"id": f"{k % 997}", "name": "Camille R."}, "post_id": f"1048_{run}{k % 4}",
            "comment_id": f"{run}{k % 4}_{k}", "parent_id": f"1048_{run}{k % 4}", "created_time": 1763805600 + k,
            "item": "comment", "verb": "add", "message": f"{TEXTS[k % len(TEXTS)]} #{k}"}})
    return {"object": "page", "entry": [{"id": f"page-{n % 16}", "time": 1763805600, "changes": changes}]}


def start_service(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, cwd=ROOT)


async def distinct_comments(bootstrap: str, topic: str, expect: int) -> tuple[int, int]:
    """(records, distinct comment ids) on a topic, read from the start."""
    from tests.kafka_helpers import consume

    records = await consume(bootstrap, topic, expect=expect, timeout_s=30, settle_s=1.0)
    return len(records), len({json.loads(r.value)["comment"]["comment_id"] for r in records})


async def bench_webhook(bootstrap: str, db_url: str, deliveries: int, concurrency: int) -> None:
    port = free_port()
    run = uuid.uuid4().hex[:6]
    env = {**os.environ, "TERRAIN_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TERRAIN_DATABASE_URL": db_url,
           "TERRAIN_INGEST_PORT": str(port), "TERRAIN_META_APP_SECRET": SECRET, "TERRAIN_LOG_LEVEL": "WARNING",
           "TERRAIN_KAFKA_GROUP_PREFIX": f"bench-{run}", "TERRAIN_DB_POOL_MAX_SIZE": "8"}
    # The service publishes to the contract topic name: each bench run has a broker of its own.
    cmd = [sys.executable, "-m", "services.ingest"]
    pinned = shutil.which("taskset") is not None
    if pinned:
        cmd = ["taskset", "-c", "0", *cmd]
    proc = start_service(cmd, env)
    try:
        wait_for_port("127.0.0.1", port, 60, proc)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            for _ in range(240):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.25)
            bodies = [json.dumps(meta_delivery(run, n), ensure_ascii=False).encode() for n in range(deliveries)]
            warm = json.dumps(meta_delivery("warm" + run, 0)).encode()
            await client.post("/webhooks/meta", content=warm, headers={
                "X-Hub-Signature-256": sign(warm, SECRET), "Content-Type": "application/json"})
            queue: asyncio.Queue[bytes] = asyncio.Queue()
            for b in bodies:
                queue.put_nowait(b)
            statuses: list[int] = []

            async def worker() -> None:
                while not queue.empty():
                    body = queue.get_nowait()
                    r = await client.post("/webhooks/meta", content=body, headers={
                        "X-Hub-Signature-256": sign(body, SECRET), "Content-Type": "application/json"})
                    statuses.append(r.status_code)

            service = psutil.Process(proc.pid)
            cpu0 = sum(service.cpu_times()[:2])
            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            took = time.perf_counter() - start
            cpu = sum(service.cpu_times()[:2]) - cpu0
        ok = sum(s == 200 for s in statuses)
        print(f"webhook: {deliveries} deliveries x 100 comments, {concurrency} in flight, service "
              f"{'pinned to one core' if pinned else 'not pinned (no taskset)'}")
        print(f"webhook: {ok}/{len(statuses)} answered 200 in {took:.2f} s: {deliveries / took:,.1f} requests/s, "
              f"{deliveries * 100 / took:,.0f} comments/s")
        # The machine is shared: CPU seconds the service used say what one core of its own would do.
        print(f"webhook: the service used {cpu:.2f} CPU-s ({cpu / took:.0%} of one core): "
              f"{deliveries * 100 / cpu:,.0f} comments per CPU-second")
        expected = deliveries * 100 + 100
        n, distinct = await distinct_comments(bootstrap, "terrain.comments.v1", expected)
        print(f"webhook: {n} messages read back from terrain.comments.v1, {distinct} distinct comments "
              f"(expected {expected}, warm-up included)")
    finally:
        stop_process(proc)


async def bench_import(bootstrap: str, db_url: str, lines: int, tmp: Path, workers: int, shards: int) -> None:
    from rich.console import Console

    from services.ingest.app import IngestSettings
    from services.ingest.cli import auto_shards, import_file
    from services.ingest.importer import ImportOptions

    run = uuid.uuid4().hex[:6]
    path = tmp / "bench-import.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i in range(lines):
            fh.write(json.dumps({"source": "forum", "external_id": f"{run}-{i}", "community_id": f"c-{i % 50}",
                                 "thread_id": f"t-{i % 500}", "author_id": f"u{i % 3000}",
                                 "text": f"{TEXTS[i % len(TEXTS)]} #{i}", "created_at": "2026-11-20T10:00:00Z"},
                                ensure_ascii=False) + "\n")
    shards = shards or auto_shards(path)
    settings = IngestSettings(kafka_bootstrap_servers=bootstrap, database_url=db_url, log_level="WARNING")
    overrides = {"terrain.comments.v1": f"terrain.comments.v1.import{run}"}
    console = Console(stderr=True, highlight=False)
    me = psutil.Process()
    cpu0 = sum(me.cpu_times()[:4])  # this process and its finished children (shards, language workers)
    start = time.perf_counter()
    first = await import_file(path, ImportOptions(workers=workers, shards=shards), settings, topic_overrides=overrides,
                              console=console)
    took = time.perf_counter() - start
    cpu = sum(me.cpu_times()[:4]) - cpu0
    start = time.perf_counter()
    again = await import_file(path, ImportOptions(workers=workers, shards=shards), settings, topic_overrides=overrides,
                              console=console)
    took2 = time.perf_counter() - start
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"import ({shards} shard process{'es' if shards != 1 else ''}, {workers} language worker "
          f"process{'es' if workers != 1 else ''}): {lines:,} lines in "
          f"{took:.1f} s: {first.tally.accepted / took:,.0f} comments/s ({first.tally.accepted:,} accepted); "
          f"peak memory: this process {rss:,.0f} MB"
          + (f", the largest shard {first.peak_rss_mb:,.0f} MB" if shards > 1 else ""))
    print(f"import: {cpu:.1f} CPU-s in this process, its shards and language workers (the database and the broker not "
          f"counted): {first.tally.accepted / cpu:,.0f} comments per CPU-second")
    print(f"import, second run of the same file: {again.tally.accepted} accepted, {again.tally.duplicates:,} "
          f"duplicates in {took2:.1f} s ({lines / took2:,.0f} lines/s)")


def bench_lang() -> None:
    from services.ingest import language

    clean = re.compile(r"https?://\S+|www\.\S+|\S+@\S+|@\w+|\[@user\]|#|\d+|\bhttp\b")

    def short(texts: list[str], maxlen: int) -> list[str]:
        return [t for t in texts if 3 <= len(" ".join(clean.sub(" ", t).split())) <= maxlen]

    def jsonl(path: Path) -> list[str]:
        if not path.exists():
            return []
        return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    shared = Path(os.environ.get("TERRAIN_SENTIMENT_DATA", "/work/shared/data/sentiment"))
    seed = [s for s in (ROOT / "terrain/demo/seed_comments_fr.txt").read_text(encoding="utf-8").splitlines() if s]
    smoke = [json.loads(s) for s in (ROOT / "bench/data/brand_smoke.jsonl").read_text(encoding="utf-8").splitlines()]
    fr_all = (jsonl(shared / "dev_fr.jsonl") + jsonl(shared / "dev_fr_hostile.jsonl") + seed
              + [s["text"] for s in smoke if s.get("lang") == "fr"])
    en_all = jsonl(shared / "dev_en.jsonl")[:1500] + [s["text"] for s in smoke if s.get("lang") == "en"]
    if not en_all:
        print("lang: no English set found; French only")
    language.detect_language("warm up")
    language.detect_languages(["warm up"] * 10)
    for maxlen in (40, 80):
        for name, texts, want in (("French", short(fr_all, maxlen), "fr"), ("English", short(en_all, maxlen), "en")):
            if not texts:
                continue
            start = time.process_time()
            got = [language.detect_language(t) for t in texts]
            one = time.process_time() - start
            start = time.process_time()
            batched = [lang for k in range(0, len(texts), 100) for lang in language.detect_languages(texts[k:k + 100])]
            together = time.process_time() - start
            assert batched == got
            right = sum(g == want for g in got) / len(got)
            und = sum(g == "und" for g in got) / len(got)
            print(f"lang: {name} comments up to {maxlen} chars: n={len(texts)}, named {want} {right:.1%}, "
                  f"undetermined {und:.1%}, other language {1 - right - und:.1%}; CPU "
                  f"{one / len(texts) * 1e6:.0f} µs/comment one by one, {together / len(texts) * 1e6:.0f} "
                  f"in batches of 100 (as ingest runs it)")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deliveries", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--import-lines", type=int, default=100_000)
    ap.add_argument("--import-workers", type=int, default=0, help="language worker processes for the import")
    ap.add_argument("--import-shards", type=int, default=0,
                    help="processes importing side by side (0: as `terrain import` chooses)")
    ap.add_argument("--lang", action="store_true", help="also measure language detection")
    ap.add_argument("--only", choices=("webhook", "import", "lang"))
    args = ap.parse_args()
    if args.only == "lang" or args.lang:
        bench_lang()
        if args.only == "lang":
            return
    tmp = Path(tempfile.mkdtemp(prefix="terrain-bench-ingest-"))
    broker = TansuBroker().start()
    pg = EmbeddedPostgres(tmp / "pg").start()
    try:
        if args.only in (None, "webhook"):
            await bench_webhook(broker.bootstrap_servers, pg.url, args.deliveries, args.concurrency)
        if args.only in (None, "import"):
            await bench_import(broker.bootstrap_servers, pg.url, args.import_lines, tmp, args.import_workers,
                               args.import_shards)
    finally:
        pg.stop()
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
