"""Grafana dashboards: every Prometheus query names metrics the services export; the layout is well formed.

The metric names come from each service's real /metrics route: every app is built in this process, as
`terrain serve` builds it, and its /metrics is requested through ASGI. The lifespan (broker, database) is not
started: every metric is declared when the service's modules are imported, and prometheus_client lists a
declared metric (HELP/TYPE) before its first sample, so the names are all there without a broker, in about a
second, which keeps this test in the default run.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import re
from typing import Any

import httpx
import pytest

from terrain.ops.dashboards import all_dashboards, prometheus_exprs
from terrain.stack import SERVICES

FUNCTIONS = {
    "sum", "min", "max", "avg", "count", "rate", "irate", "increase", "histogram_quantile", "topk", "bottomk",
    "clamp_min", "clamp_max", "abs", "delta", "deriv", "avg_over_time", "max_over_time", "min_over_time",
    "label_replace", "vector", "scalar", "time", "absent", "changes", "resets", "sort", "sort_desc", "round",
}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool"}


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression (label matchers, grouping labels, ranges and strings removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = m.group(0)
        after = text[m.end():].lstrip()
        if after.startswith("(") or word in KEYWORDS or word in FUNCTIONS or word.startswith("$"):
            continue
        if text[:m.start()].endswith("$"):
            continue
        names.add(word)
    return names


async def _scrape() -> dict[str, set[str]]:
    exported: dict[str, set[str]] = {}
    for svc in SERVICES:
        app = importlib.import_module(f"{svc.module}.app").build_app()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
            response = await client.get("/metrics")
        assert response.status_code == 200
        names: set[str] = set()
        for line in response.text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split()[:4]
                if kind == "histogram":
                    names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
                elif kind == "summary":
                    names |= {name, f"{name}_sum", f"{name}_count"}
                else:
                    names.add(name)
            elif line and not line.startswith("#"):
                names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
        exported[svc.name] = names
    return exported


@pytest.fixture(scope="module")
def per_service() -> dict[str, set[str]]:
    return asyncio.run(_scrape())


@pytest.fixture(scope="module")
def exported(per_service: dict[str, set[str]]) -> set[str]:
    return set().union(*per_service.values())


def test_no_metric_name_says_a_word_twice(per_service: dict[str, set[str]]) -> None:
    # `terrain_<service>_<thing>_<unit>`: the service is said once (`terrain_events_events_by_result` said it twice).
    for service, names in per_service.items():
        assert any(n.startswith(f"terrain_{service}_") for n in names), service
        repeated = sorted(n for n in names if any(a == b for a, b in itertools.pairwise(n.split("_"))))
        assert repeated == [], service


def test_metric_name_extraction() -> None:
    assert metric_names('histogram_quantile(0.95, sum by (le, service) (rate(x_bucket{a="b"}[$__rate_interval])))'
                        ) == {"x_bucket"}
    assert metric_names('sum(rate(a_total{l="x|y"}[5m])) / sum(rate(b_total[5m]))') == {"a_total", "b_total"}
    assert metric_names("max by (service, topic) (terrain_consumer_lag)") == {"terrain_consumer_lag"}


def test_every_query_names_only_exported_metrics(exported: set[str]) -> None:
    used: dict[str, set[str]] = {}
    for name, board in all_dashboards().items():
        for expr in prometheus_exprs(board):
            for metric in metric_names(expr):
                used.setdefault(metric, set()).add(name)
    assert used, "no Prometheus query found"
    unknown = {m: sorted(b) for m, b in used.items() if m not in exported}
    assert unknown == {}, f"metrics no service exports: {unknown}"
    # The kernel's, which every service exports, are among those the boards read.
    assert {"terrain_consumer_lag", "terrain_outbox_depth", "terrain_ready"} <= set(used)


def test_check_catches_a_metric_nobody_exports(exported: set[str]) -> None:
    assert "terrain_ingest_comments_per_second" not in exported
    assert metric_names("rate(terrain_ingest_comments_per_second[1m])") - exported == {
        "terrain_ingest_comments_per_second"}


@pytest.mark.parametrize("name", ["pipeline", "communities", "incidents", "events"])
def test_dashboard_is_well_formed(name: str) -> None:
    board: dict[str, Any] = all_dashboards()[name]
    assert board["uid"] == f"terrain-{name}" and board["title"].startswith("Terrain / ")
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in board["templating"]["list"]}
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["description"], panel["title"]
        uid = panel["datasource"]["uid"]
        assert uid.startswith("${") and uid[2:-1] in variables
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
    # No two panels overlap.
    cells = set()
    for panel in board["panels"]:
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))


def test_the_dashboards_cover_what_operators_asked_for() -> None:
    titles = {name: " / ".join(p["title"] for p in b["panels"]) for name, b in all_dashboards().items()}
    for name, words in {
        "pipeline": ["Comments per second by stage", "lag", "Dead-lettered", "5xx", "batch duration"],
        "communities": ["sentiment by community", "Negative share by community", "Cascades and spikes"],
        "incidents": ["Open by level", "Time to acknowledge", "Field escalations", "silences"],
        "events": ["Field visits", "Events by result", "impact"],
    }.items():
        for word in words:
            assert word.lower() in titles[name].lower(), (name, word)
