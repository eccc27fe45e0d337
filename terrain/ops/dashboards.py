"""Grafana dashboards as code: pipeline, communities, incidents, events.

Prometheus panels use only metrics the services export (a test reads every service's /metrics); metric
labels never carry a community id, so per-community panels read the services' PostgreSQL tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]

PROM = {"type": "prometheus", "uid": "${ds_prometheus}"}
PG = {"type": "grafana-postgresql-datasource", "uid": "${ds_postgres}"}
RATE = "[$__rate_interval]"


@dataclass(frozen=True)
class Prom:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Sql:
    sql: str
    format: str = "time_series"  # or "table"


@dataclass
class Panel:
    title: str
    description: str
    targets: Sequence[Prom | Sql]
    kind: str = "timeseries"  # timeseries, stat, table, bargauge
    unit: str = "short"
    width: int = 12
    height: int = 8
    stack: bool = False
    extra: Json = field(default_factory=dict)


def _target(t: Prom | Sql, ref: str) -> Json:
    if isinstance(t, Prom):
        return {"refId": ref, "datasource": PROM, "expr": t.expr, "legendFormat": t.legend or "__auto",
                "range": True, "editorMode": "code"}
    return {"refId": ref, "datasource": PG, "rawSql": t.sql, "format": t.format, "rawQuery": True,
            "editorMode": "code"}


def _panel(p: Panel, pid: int, x: int, y: int) -> Json:
    ds = PG if isinstance(p.targets[0], Sql) else PROM
    defaults: Json = {"unit": p.unit}
    if p.kind == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                              "stacking": {"mode": "normal" if p.stack else "none", "group": "A"}}
    options: Json = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                     "tooltip": {"mode": "multi", "sort": "desc"}} if p.kind == "timeseries" else {}
    if p.kind == "stat":
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "colorMode": "value", "graphMode": "area", "textMode": "auto"}
    options.update(p.extra)
    return {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": ds,
        "gridPos": {"h": p.height, "w": p.width, "x": x, "y": y},
        "targets": [_target(t, chr(ord("A") + i)) for i, t in enumerate(p.targets)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
    }


def _row(title: str, pid: int, y: int) -> Json:
    return {"id": pid, "type": "row", "title": title, "collapsed": False, "panels": [],
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}}


def _datasource_var(name: str, label: str, plugin: str) -> Json:
    return {"name": name, "label": label, "type": "datasource", "query": plugin, "current": {}, "hide": 0,
            "refresh": 1, "options": [], "regex": ""}


def dashboard(uid: str, title: str, description: str, rows: list[tuple[str, list[Panel]]],
              *, postgres: bool = False, variables: list[Json] | None = None) -> Json:
    panels: list[Json] = []
    pid, y = 1, 0
    for row_title, row_panels in rows:
        panels.append(_row(row_title, pid, y))
        pid, y = pid + 1, y + 1
        x, row_h = 0, 0
        for p in row_panels:
            if x + p.width > 24:
                x, y = 0, y + row_h
                row_h = 0
            panels.append(_panel(p, pid, x, y))
            pid += 1
            x += p.width
            row_h = max(row_h, p.height)
        y += row_h
    templating = [_datasource_var("ds_prometheus", "Prometheus", "prometheus")]
    if postgres:
        templating.append(_datasource_var("ds_postgres", "PostgreSQL", "grafana-postgresql-datasource"))
    templating += variables or []
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["terrain"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["terrain"], "asDropdown": True, "title": "Terrain"}],
        "templating": {"list": templating},
        "panels": panels,
    }


def _q(metric: str, by: str, where: str = "") -> str:
    return f"sum by ({by}) (rate({metric}{{{where}}}{RATE}))" if where else f"sum by ({by}) (rate({metric}{RATE}))"


def _pct(metric: str, q: float, by: str) -> Prom:
    return Prom(f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{RATE})))",
                f"p{round(q * 100)} {{{{{by}}}}}")


def pipeline() -> Json:
    stages = [
        Prom(f"sum(rate(terrain_ingest_received_total{RATE}))", "ingest received"),
        Prom(f"sum(rate(terrain_ingest_accepted_total{RATE}))", "ingest published"),
        Prom(f"sum(rate(terrain_sentiment_scored_total{{channel=\"topic\"}}{RATE}))", "sentiment scored"),
        Prom(f"sum(rate(terrain_escalation_comments_total{RATE}))", "escalation decided"),
        Prom(f"sum(rate(terrain_events_engagement_comments_total{RATE}))", "events engagement"),
    ]
    rows = [
        ("Health", [
            Panel("Ready", "1 when database, broker and every consumer of the service are fine (terrain_ready).",
                  [Prom("min by (service) (terrain_ready)", "{{service}}")], kind="stat", width=8, height=5),
            Panel("Dead-letter bound tripped", "1 while a consumer has stopped because most recent messages failed.",
                  [Prom("max by (service, topic) (terrain_consumer_dead_letter_bound_tripped)",
                        "{{service}} {{topic}}")], kind="stat", width=8, height=5),
            Panel("Outbox depth", "Messages written to the outbox and not yet sent; it should stay near zero.",
                  [Prom("sum by (service) (terrain_outbox_depth)", "{{service}}")], width=8, height=5),
        ]),
        ("Throughput", [
            Panel("Comments per second by stage", "Each stage's comments per second; a gap between two stages is "
                  "work waiting (see lag).", stages, unit="ops"),
            Panel("Messages consumed by service and topic", "Processed messages per second (kernel consumer).",
                  [Prom(_q("terrain_consumer_messages_total", "service, topic", 'outcome="processed"'),
                        "{{service}} {{topic}}")], unit="ops"),
            Panel("Messages published by topic", "Messages acknowledged by the brokers, per topic.",
                  [Prom(_q("terrain_published_messages_total", "topic"), "{{topic}}")], unit="ops"),
            Panel("HTTP requests by service and status", "Requests served, by status class.",
                  [Prom(_q("terrain_http_requests_total", "service, status"), "{{service}} {{status}}")],
                  unit="reqps"),
        ]),
        ("Lag", [
            Panel("Consumer lag by service and topic", "Messages behind the end of the topic, all partitions.",
                  [Prom("sum by (service, topic) (terrain_consumer_lag)", "{{service}} {{topic}}")]),
            Panel("Worst partition lag", "The partition furthest behind, per service and topic: one hot community "
                  "shows here before it shows in the sum.",
                  [Prom("max by (service, topic) (terrain_consumer_lag)", "{{service}} {{topic}}")]),
        ]),
        ("Errors", [
            Panel("Dead-lettered per second", "Messages sent to a dead-letter twin, by consumer and origin topic.",
                  [Prom(_q("terrain_consumer_messages_total", "service, topic", 'outcome="dead_lettered"'),
                        "{{service}} {{topic}}")], unit="ops"),
            Panel("Retries after transient failures", "Batches retried (database or broker briefly gone).",
                  [Prom(_q("terrain_consumer_retries_total", "service, topic"), "{{service}} {{topic}}")],
                  unit="ops"),
            Panel("HTTP 5xx", "Server errors per second, by service.",
                  [Prom(_q("terrain_http_requests_total", "service", 'status="5xx"'), "{{service}}")], unit="reqps"),
            Panel("Ingest refusals by reason", "Comments or requests refused by ingest (invalid, bad_signature, …).",
                  [Prom(_q("terrain_ingest_rejected_total", "channel, reason"), "{{channel}} {{reason}}")],
                  unit="ops"),
        ]),
        ("Latency", [
            Panel("Consumer batch duration", "Time to process one batch with its effects stored, p50/p95/p99.",
                  [_pct("terrain_consumer_batch_seconds", q, "service") for q in (0.5, 0.95, 0.99)], unit="s"),
            Panel("Ingest publish latency", "From receipt to the brokers' acknowledgement, p50/p95/p99.",
                  [_pct("terrain_ingest_publish_latency_seconds", q, "channel") for q in (0.5, 0.95, 0.99)],
                  unit="s"),
            Panel("Sentiment batch duration", "Score, flag and publish one batch, p50/p95/p99.",
                  [Prom(f"histogram_quantile({q}, sum by (le) (rate(terrain_sentiment_batch_seconds_bucket{RATE})))",
                        f"p{round(q * 100)}") for q in (0.5, 0.95, 0.99)], unit="s"),
            Panel("Event loop lag", "How late each service's event loop woke, p99 and the largest since start: "
                  "work that held the loop (a slow text, a large decode) while health checks and heartbeats waited.",
                  [_pct("terrain_event_loop_lag_seconds", 0.99, "service"),
                   Prom("max by (service) (terrain_event_loop_lag_max_seconds)", "{{service}} max")], unit="s"),
            Panel("Processed-message records pruned", "Idempotency records deleted after their retention.",
                  [Prom(_q("terrain_processed_messages_pruned_total", "service"), "{{service}}")], unit="ops"),
        ]),
        ("HTTP", [
            Panel("HTTP request duration", "From a request's arrival to the end of its answer, refusals included, "
                  "p50/p95/p99 by service (rate and errors: the panels by status above).",
                  [_pct("terrain_http_request_duration_seconds", q, "service") for q in (0.5, 0.95, 0.99)],
                  unit="s", width=8),
            Panel("Slowest HTTP routes (p95)", "The five route templates with the highest p95 duration.",
                  [Prom("topk(5, histogram_quantile(0.95, sum by (le, service, route) "
                        f"(rate(terrain_http_request_duration_seconds_bucket{RATE}))))", "{{service}} {{route}}")],
                  unit="s", width=8),
            Panel("HTTP refusals before the body is read", "Requests refused from their headers or while their "
                  "body was counted: unauthorized (no or wrong token), too_large (over the route's body limit), "
                  "unsupported_media_type (not sent as JSON).",
                  [Prom(_q("terrain_http_refused_total", "service, reason"), "{{service}} {{reason}}")],
                  unit="reqps", width=8),
        ]),
    ]
    return dashboard("terrain-pipeline", "Terrain / Pipeline overview",
                     "Comments per second through each stage, lag, dead letters, errors and latency.", rows)


COMMUNITY_VAR: Json = {
    "name": "community", "label": "Community", "type": "query", "datasource": PG,
    "query": "SELECT DISTINCT community_id FROM events_engagement_daily ORDER BY 1",
    "definition": "SELECT DISTINCT community_id FROM events_engagement_daily ORDER BY 1",
    "multi": True, "includeAll": True, "current": {}, "refresh": 2, "hide": 0, "options": [], "sort": 1,
}


def communities() -> Json:
    rows = [
        ("Whole pipeline (Prometheus)", [
            Panel("Comments scored by label", "Scored comments per second by label (all communities).",
                  [Prom(_q("terrain_sentiment_scored_total", "label", 'channel="topic"'), "{{label}}")],
                  unit="ops", stack=True),
            Panel("Negative share", "Share of scored comments labelled negative (all communities).",
                  [Prom(f"sum(rate(terrain_sentiment_scored_total{{channel=\"topic\",label=\"negative\"}}{RATE}))"
                        f" / sum(rate(terrain_sentiment_scored_total{{channel=\"topic\"}}{RATE}))", "negative")],
                  unit="percentunit"),
            Panel("Cascades and spikes that paged someone", "Escalations by trigger (cascade, spike).",
                  [Prom("sum by (trigger) (increase(terrain_escalation_escalations_total"
                        "{trigger=~\"cascade|spike\"}[$__interval]))", "{{trigger}}")], kind="timeseries"),
            Panel("Charter flags by kind", "Insults, threats, spam and personal data flagged.",
                  [Prom(_q("terrain_sentiment_flags_total", "kind", 'channel="topic"'), "{{kind}}")], unit="ops"),
        ]),
        ("By community (PostgreSQL: events_engagement_daily, escalation_incidents)", [
            Panel("Mean sentiment by community, per day", "Mean score (-1..1) of the day's comments "
                  "(events_engagement_daily).",
                  [Sql("SELECT day::timestamptz AS time, community_id AS metric, "
                       "sentiment_sum / NULLIF(comments, 0) AS value FROM events_engagement_daily "
                       "WHERE $__timeFilter(day) AND community_id IN ($community) ORDER BY 1")]),
            Panel("Negative share by community, per day", "Negative comments over all comments of the day.",
                  [Sql("SELECT day::timestamptz AS time, community_id AS metric, "
                       "negative::double precision / NULLIF(comments, 0) AS value FROM events_engagement_daily "
                       "WHERE $__timeFilter(day) AND community_id IN ($community) ORDER BY 1")],
                  unit="percentunit"),
            Panel("Communities in the range", "Comments, negative share and mean sentiment over the range.",
                  [Sql("SELECT community_id AS community, sum(comments) AS comments, "
                       "round((sum(negative)::numeric / NULLIF(sum(comments), 0)), 3) AS negative_share, "
                       "round((sum(sentiment_sum) / NULLIF(sum(comments), 0))::numeric, 3) AS mean_sentiment "
                       "FROM events_engagement_daily WHERE $__timeFilter(day) AND community_id IN ($community) "
                       "GROUP BY community_id ORDER BY negative_share DESC NULLS LAST", "table")],
                  kind="table"),
            Panel("Cascades and spikes by community", "Incidents that paged someone: a cascade under one thread, "
                  "or a spike across the community (thread `*`).",
                  [Sql("SELECT community_id AS community, "
                       "count(*) FILTER (WHERE thread_id <> '*') AS cascades, "
                       "count(*) FILTER (WHERE thread_id = '*') AS spikes "
                       "FROM escalation_incidents WHERE $__timeFilter(opened_at) AND level IN ('human', 'field') "
                       "AND community_id IN ($community) GROUP BY community_id ORDER BY 2 DESC, 3 DESC", "table")],
                  kind="table"),
        ]),
    ]
    return dashboard("terrain-communities", "Terrain / Communities",
                     "Sentiment and negative share by community, cascades and spikes.",
                     rows, postgres=True, variables=[COMMUNITY_VAR])


def incidents() -> Json:
    rows = [
        ("Open incidents", [
            Panel("Open by level", "Incidents not yet resolved, by level.",
                  [Prom("sum by (level) (terrain_escalation_open_incidents)", "{{level}}")], kind="stat", width=8),
            Panel("Opened by level", "Incidents opened per interval, by the level they opened at.",
                  [Prom("sum by (level) (increase(terrain_escalation_incidents_opened_total[$__interval]))",
                        "{{level}}")], width=8, stack=True),
            Panel("Lifecycle steps", "Opened, updated, escalated, acknowledged, resolved per second.",
                  [Prom(_q("terrain_escalation_incident_transitions_total", "event"), "{{event}}")], width=8,
                  unit="ops"),
        ]),
        ("Acknowledgement (PostgreSQL: escalation_incidents)", [
            Panel("Time to acknowledge", "From opening to acknowledgement, median and 90th percentile, per day "
                  "and level.",
                  [Sql("SELECT date_trunc('day', opened_at) AS time, level || ' p50' AS metric, "
                       "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM acknowledged_at - opened_at))"
                       " AS value FROM escalation_incidents WHERE acknowledged_at IS NOT NULL AND "
                       "$__timeFilter(opened_at) GROUP BY 1, 2 "
                       "UNION ALL SELECT date_trunc('day', opened_at), level || ' p90', "
                       "percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM acknowledged_at - opened_at))"
                       " FROM escalation_incidents WHERE acknowledged_at IS NOT NULL AND $__timeFilter(opened_at) "
                       "GROUP BY 1, 2 ORDER BY 1")], unit="s"),
            Panel("Paged and not acknowledged", "Open incidents at human or field level past their deadline.",
                  [Sql("SELECT community_id AS community, thread_id AS thread, level, opened_at, ack_deadline "
                       "FROM escalation_incidents WHERE resolved_at IS NULL AND acknowledged_at IS NULL "
                       "AND level IN ('human', 'field') AND ack_deadline < now() ORDER BY ack_deadline", "table")],
                  kind="table"),
        ]),
        ("Escalations and notifications", [
            Panel("Field escalations by trigger", "Requests to send someone into the field.",
                  [Prom("sum by (trigger) (increase(terrain_escalation_escalations_total{target=\"field\"}"
                        "[$__interval]))", "{{trigger}}")], width=8),
            Panel("Human escalations by trigger", "Pages to the on-call person.",
                  [Prom("sum by (trigger) (increase(terrain_escalation_escalations_total{target=\"human\"}"
                        "[$__interval]))", "{{trigger}}")], width=8),
            Panel("Escalation timers", "Timers taken when due: fired, or stale (fenced off).",
                  [Prom(_q("terrain_escalation_timers_total", "kind, outcome"), "{{kind}} {{outcome}}")], width=8,
                  unit="ops"),
            Panel("Notifications by outcome", "Sends by notifier kind and outcome (sent, retry, failed).",
                  [Prom(_q("terrain_escalation_notifications_total", "kind, outcome"), "{{kind}} {{outcome}}")],
                  width=8, unit="ops"),
            Panel("Notifications pending", "Not yet sent or failed.",
                  [Prom("sum(terrain_escalation_notifications_pending)", "pending")], width=8),
            Panel("Notification send time", "p95 of one send, by notifier kind.",
                  [_pct("terrain_escalation_notification_send_seconds", 0.95, "kind")], width=8, unit="s"),
        ]),
        ("Silences", [
            Panel("Silences created and expired", "Through the operator API.",
                  [Prom("sum by (action) (increase(terrain_escalation_silences_total[$__interval]))", "{{action}}")]),
            Panel("Active silences", "Silences in force now (escalation_silences).",
                  [Sql("SELECT created_by, comment, starts_at, ends_at FROM escalation_silences "
                       "WHERE expired_at IS NULL AND starts_at <= now() AND ends_at > now() ORDER BY ends_at",
                       "table")],
                  kind="table"),
        ]),
    ]
    return dashboard("terrain-incidents", "Terrain / Incidents",
                     "Open incidents by level, time to acknowledge, field escalations, notifications and silences.",
                     rows, postgres=True)


def events() -> Json:
    rows = [
        ("Field visits", [
            Panel("Field visits open", "Visits requested or scheduled, not yet done or cancelled.",
                  [Prom("sum by (status) (terrain_events_field_visits_open)", "{{status}}")], kind="stat", width=8),
            Panel("From escalation to visit", "Time from a field escalation to the visit being scheduled or done, "
                  "median and 90th percentile.",
                  [_pct("terrain_events_escalation_to_visit_seconds", q, "step") for q in (0.5, 0.9)], width=8,
                  unit="s"),
            Panel("Escalations received by events", "By target and outcome (planned, already_planned, ignored).",
                  [Prom("sum by (target, outcome) (increase(terrain_events_escalations_total[$__interval]))",
                        "{{target}} {{outcome}}")], width=8),
        ]),
        ("Results", [
            Panel("Events by result", "Stored events by kind and result.",
                  [Prom("sum by (kind, result) (terrain_events_stored)", "{{kind}} {{result}}")],
                  kind="bargauge"),
            Panel("Events closed", "Events that reached done, by result.",
                  [Prom("sum by (result) (increase(terrain_events_closed_total[$__interval]))", "{{result}}")],
                  stack=True),
        ]),
        ("Impact", [
            Panel("Impact verdicts", "Events whose latest impact estimate has this verdict.",
                  [Prom("sum by (verdict) (terrain_events_impact_estimates)", "{{verdict}}")], kind="stat", width=8),
            Panel("Impact report limitations", "Why reports were less sure (too little data, overlaps, …).",
                  [Prom("sum by (limitation) (increase(terrain_events_impact_limitations_total[$__interval]))",
                        "{{limitation}}")], width=8),
            Panel("Engagement comments", "Scored comments counted for engagement, by outcome.",
                  [Prom(_q("terrain_events_engagement_comments_total", "outcome"), "{{outcome}}")], width=8,
                  unit="ops"),
            Panel("Latest impact estimates", "Per event: the effect on the community's sentiment and its interval "
                  "(events_log, events_impact_estimates).",
                  [Sql("SELECT e.community_id AS community, e.kind, e.title, e.starts_at, i.verdict, "
                       "round(i.estimate::numeric, 3) AS estimate, round(i.ci_low::numeric, 3) AS ci_low, "
                       "round(i.ci_high::numeric, 3) AS ci_high, i.computed_at FROM events_impact_estimates i "
                       "JOIN events_log e ON e.id = i.event_id WHERE $__timeFilter(e.starts_at) "
                       "ORDER BY e.starts_at DESC LIMIT 200", "table")],
                  kind="table", width=24),
        ]),
    ]
    return dashboard("terrain-events", "Terrain / Events and field visits",
                     "Field visits, results and measured impact.", rows, postgres=True)


def all_dashboards() -> dict[str, Json]:
    return {"pipeline": pipeline(), "communities": communities(), "incidents": incidents(), "events": events()}


def prometheus_exprs(board: Json) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p.get("targets", []) if "expr" in t]


def sql_queries(board: Json) -> list[str]:
    found = [t["rawSql"] for p in board["panels"] for t in p.get("targets", []) if "rawSql" in t]
    found += [v["query"] for v in board["templating"]["list"] if v.get("type") == "query"]
    return found
