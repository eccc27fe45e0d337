"""The operators' reference (topics, schemas, consumer groups, every TERRAIN_* variable), built from the code."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from terrain.ops.plan import CLUSTER_PARTITIONS, CONSUMER_GROUPS, DAY_MS, kafka_access, topic_plans
from terrain.settings import TerrainSettings
from terrain.stack import SERVICES
from terrain.topics import ALL_TOPICS

# Descriptions for settings declared without one (the reference refuses a variable nobody explained).
FALLBACK_DESCRIPTIONS: dict[str, str] = {
    "kafka_bootstrap_servers": "Kafka bootstrap servers, comma-separated host:port.",
    "database_url": "PostgreSQL URL (postgresql://user:password@host:port/db); put it in a Secret.",
    "host": "Address the HTTP server binds to (0.0.0.0 in containers).",
    "log_format": "json (one object per line) or console.",
    "log_level": "Root log level (DEBUG, INFO, WARNING, ERROR).",
    "kafka_session_timeout_ms": "Consumer-group session timeout; a silent member is dropped after it.",
    "kafka_heartbeat_interval_ms": "Consumer-group heartbeat interval (about a third of the session timeout).",
    "kafka_auto_offset_reset": "Where a new consumer group starts reading.",
    "kafka_client_id": "Kafka client id prefix.",
    "topic_replication_factor": "Replicas per topic when Terrain creates it (`terrain topics`, local runs).",
    "batch_max_records": "Most messages a consumer takes in one batch.",
    "batch_timeout_ms": "Longest a consumer waits to fill a batch.",
    "dlq_window": "Recent messages over which the dead-letter share is measured.",
    "dlq_max_ratio": "Dead-lettered share of the window that stops the consumer (it turns not-ready).",
    "retry_attempts": "Attempts after a transient failure (database down) before the consumer stops.",
    "retry_base_delay_s": "First retry delay; doubles each attempt.",
    "retry_max_delay_s": "Longest retry delay.",
    "db_pool_min_size": "Connections the pool keeps open.",
    "db_pool_max_size": "Most connections the pool opens.",
    "outbox_relay_interval_s": "How often the outbox relay looks for rows left unsent.",
    "outbox_relay_min_age_s": "Age an outbox row must reach before the relay sends it (the writer usually has).",
    "health_probe_interval_s": "How often the database and the broker are probed for readiness.",
    "processed_retention_hours": "Processed-message records (redelivery no-ops) are kept this long.",
    "processed_prune_interval_s": "How often processed-message records past their retention are pruned.",
    "ingest_max_comments_per_request": "Most comments one POST /v1/comments accepts.",
    "ingest_prune_interval_s": "How often dedup records past their retention are pruned.",
    "ingest_prune_batch": "Dedup records whose content hash is pruned per statement.",
    "escalation_prune_interval_s": "How often detection state past its retention is pruned.",
    "escalation_smtp_port": "SMTP port.",
    "escalation_smtp_sender": "From address of e-mail notifications.",
    "escalation_smtp_username": "SMTP user name, if the server wants one.",
    "escalation_smtp_password": "SMTP password; put it in a Secret.",
    "escalation_smtp_starttls": "Upgrade the SMTP connection with STARTTLS.",
}

_ENV_READ = re.compile(
    r"""(?:(?:environ|env)(?:\.get\(|\.setdefault\(|\[)\s*|envvar=)["'](TERRAIN_[A-Z0-9_]+)["']"""
)


def settings_classes() -> list[tuple[str, type[TerrainSettings]]]:
    """(service, settings class) for the kernel and each service, found in each service's app module."""
    found: list[tuple[str, type[TerrainSettings]]] = [("all services", TerrainSettings)]
    for svc in SERVICES:
        module = importlib.import_module(f"{svc.module}.app")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, TerrainSettings) and obj is not TerrainSettings and obj.__module__ == module.__name__:
                found.append((svc.name, obj))
    return found


def http_routes() -> list[tuple[str, str, str, str]]:
    """(service, route, who may call it, body limit): the public routes and the routes with a body limit of
    their own, read from each service's app as built with its settings' defaults (the environment aside)."""
    from terrain.access.deps import route_permission
    from terrain.access.model import allowed_roles
    from terrain.http import PUBLIC_ROUTES

    rows = [("all services", route, f"anyone: {why}", "") for route, why in PUBLIC_ROUTES.items()]
    classes = dict(settings_classes()[1:])
    for svc in SERVICES:
        app = importlib.import_module(f"{svc.module}.app").build_app(classes[svc.name].model_construct())
        edge = app.state.http_edge
        needs: dict[str, set[str]] = {}
        for r in app.routes:
            found = route_permission(r)
            if found is not None:
                needs.setdefault(str(r.path), set()).add(
                    f"{', '.join(sorted(getattr(r, 'methods', ())))} {found.value} "
                    f"({', '.join(role.value for role in allowed_roles(found))})")
        public = [r for r in edge.public if r not in PUBLIC_ROUTES]
        routes = public + sorted((set(edge.max_body_bytes) | set(needs)) - set(public))
        for route in routes:
            who = f"anyone: {edge.public[route]}" if route in edge.public else "; ".join(sorted(needs.get(route, ())))
            limit = edge.max_body_bytes.get(route)
            rows.append((svc.name, route, who or "a credential", f"{limit:,} bytes" if limit else ""))
    return rows


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        return "(computed)"
    value: Any = info.default
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"`{value}`"


def _type(info: FieldInfo) -> str:
    text = str(info.annotation).replace("typing.", "").replace("pydantic.types.", "")
    text = re.sub(r"<class '([\w.]+)'>", r"\1", text)
    return text.replace("|", "or").replace("NoneType", "None")


def variables() -> list[tuple[str, str, str, str, str]]:
    """(service, variable, type, default, description), each variable once, under the class that declares it."""
    rows: list[tuple[str, str, str, str, str]] = []
    seen: set[str] = set()
    for owner, cls in settings_classes():
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, info in cls.model_fields.items():
            if name in seen:
                continue
            seen.add(name)
            description = info.description or FALLBACK_DESCRIPTIONS.get(name)
            if not description:
                raise ValueError(
                    f"{cls.__name__}.{name} has no description: add one to the field (or to "
                    "FALLBACK_DESCRIPTIONS in terrain/ops/reference.py)"
                )
            rows.append((owner, (prefix + name).upper(), _type(info), _default(info), " ".join(description.split())))
    return rows


def command_variables() -> dict[str, str]:
    """TERRAIN_* variables a `terrain` command option reads (Typer's `envvar`), described by the option's help."""
    import typer.main

    from terrain.cli import app

    found: dict[str, str] = {}

    def walk(command: Any, path: str) -> None:  # a click command, of the click Typer brings
        for param in command.params:
            names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())
            for name in names:
                found[name] = f"`{path} --{param.name}`: {getattr(param, 'help', None) or ''}".strip()
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "terrain")
    return found


def environ_descriptions() -> dict[str, str]:
    from terrain.stack import LOCAL_RUN_VARIABLES

    return {**LOCAL_RUN_VARIABLES, **command_variables()}


def environ_reads(root: Path) -> dict[str, list[str]]:
    """TERRAIN_* variables read straight from the environment (local runs, CLI helpers) or by a command option
    that no settings class declares, with where."""
    declared = {row[1] for row in variables()}
    out: dict[str, list[str]] = {}
    for folder in ("terrain", "services"):
        for path in sorted((root / folder).rglob("*.py")):
            for var in _ENV_READ.findall(path.read_text(encoding="utf-8")):
                if var in declared:
                    continue
                where = str(path.relative_to(root))
                out.setdefault(var, [])
                if where not in out[var]:
                    out[var].append(where)
    return dict(sorted(out.items()))


def exit_codes() -> list[tuple[str, int, str]]:
    """(command, exit code, meaning) for the commands a service adds, from `EXIT_CODES` in its `cli` module."""
    rows: list[tuple[str, int, str]] = []
    for svc in SERVICES:
        if importlib.util.find_spec(f"{svc.module}.cli") is None:
            continue
        table: dict[str, dict[int, str]] = getattr(importlib.import_module(f"{svc.module}.cli"), "EXIT_CODES", {})
        for command, codes in table.items():
            rows += [(command, code, meaning) for code, meaning in sorted(codes.items())]
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(root: Path) -> str:
    lines = [
        "# Terrain operators' reference",
        "",
        "Generated by `terrain deploy generate` from the topic registry (`terrain/topics.py`), the deployment",
        "plan (`terrain/ops/plan.py`) and the settings classes; `terrain deploy check` fails when it drifts.",
        "Do not edit by hand.",
        "",
        "## Topics",
        "",
        f"Partitions: {CLUSTER_PARTITIONS} on a cluster (`deploy/k8s`, `TERRAIN_TOPIC_PARTITIONS` for",
        "`terrain topics`), 4 in local runs. Existing topics are never altered by `terrain topics`.",
        "",
        "| topic | key | producers → consumers | retention | dead-letter twin | schema | what |",
        "|---|---|---|---|---|---|---|",
    ]
    plans = {p.name: p for p in topic_plans(CLUSTER_PARTITIONS)}
    for spec in ALL_TOPICS:
        plan, dlq = plans[spec.name], plans[spec.dlq]
        lines.append(
            f"| `{spec.name}` | `{spec.key}` | {', '.join(spec.producers)} → {', '.join(spec.consumers)} "
            f"| {plan.retention_ms // DAY_MS} d | `{spec.dlq}` ({dlq.retention_ms // DAY_MS} d) "
            f"| [`{spec.model.__name__}`](../contracts/schemas/{spec.name}.json) | {_cell(spec.description)} |"
        )
    lines += [
        "",
        "A dead-letter message keeps the original key and value; its headers name the origin topic,",
        "partition, offset and the reason. Example messages: `docs/contracts/examples/`.",
        "",
        "## Consumer groups",
        "",
        "Named `<TERRAIN_KAFKA_GROUP_PREFIX>-<service>[-<stream>]` (prefix `terrain` by default); the",
        "autoscalers in `deploy/k8s` watch the lag of these groups.",
        "",
        "| service | group | topic |",
        "|---|---|---|",
    ]
    for g in CONSUMER_GROUPS:
        lines.append(f"| {g.service} | `{g.group_id()}` | `{g.topic.name}` |")
    lines += [
        "",
        "## Kafka connections and users",
        "",
        "Every Kafka client of a service (its consumers, its producers, its admin client; `terrain topics`;",
        "ingest's bulk producer) connects as `TERRAIN_KAFKA_SECURITY_PROTOCOL` says: `PLAINTEXT` (local runs,",
        "a private network), `SSL` (TLS; with `TERRAIN_KAFKA_SSL_CERT_FILE` and `_KEY_FILE`, mutual TLS),",
        "`SASL_SSL` (TLS and `TERRAIN_KAFKA_SASL_MECHANISM` SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN with",
        "`TERRAIN_KAFKA_SASL_USERNAME` and `_PASSWORD`) or `SASL_PLAINTEXT` (the same without TLS). The brokers'",
        "certificates are checked against `TERRAIN_KAFKA_SSL_CA_FILE`, else the system's CAs. A combination",
        "that cannot work (a mechanism without a user name, a certificate file without TLS, a missing file)",
        "stops the service at start with one line naming the variables (exit code 2), and a listener that takes",
        "the connection but no TLS handshake stops it with one line too, instead of a wait for the broker.",
        "",
        "On Kubernetes each service logs in as its own Strimzi `KafkaUser` (`deploy/k8s/base/kafka-users.yaml`),",
        "allowed exactly this (topics and groups by literal name; Describe on each):",
        "",
        "| Kafka user | reads | writes | consumer groups |",
        "|---|---|---|---|",
    ]
    for svc in SERVICES:
        access = kafka_access(svc.name)
        lines.append(f"| `terrain-{svc.name}` | {', '.join(f'`{t}`' for t in access.reads)} "
                     f"| {', '.join(f'`{t}`' for t in access.writes)} | {', '.join(f'`{g}`' for g in access.groups)} |")
    lines.append("| `terrain-topics` (the topics Job) | | | (creates and describes the planned topics) |")
    default_limit = TerrainSettings.model_fields["http_max_body_bytes"].default
    lines += [
        "",
        "## HTTP",
        "",
        "Before a service reads a request's body it checks, from the headers: the caller's credential (an API",
        "key, a session token, an OIDC access token or `TERRAIN_API_TOKEN`; 401, except on the public routes",
        "below; 403 when the role lacks the route's permission), that the body is JSON",
        "(`Content-Type: application/json` or `application/*+json`, else 415), and its size (413 past the",
        "route's limit, by `Content-Length` or counted as a chunked body streams in). A refused body is",
        f"never read. Body limit: `TERRAIN_HTTP_MAX_BODY_BYTES` ({default_limit:,} bytes) unless listed here.",
        "Metrics: `terrain_http_requests_total` and `terrain_http_request_duration_seconds` by service, route",
        "template and status class; `terrain_http_refused_total` by service, route and reason (unauthorized,",
        "too_large, unsupported_media_type). With `TERRAIN_METRICS_PORT` set (as on Kubernetes, 9464), the",
        "metrics are served on that port of `TERRAIN_HOST` by their own server and `/metrics` leaves the API",
        "port (401 there without a credential, 404 with one). `/readyz` names no process; `/healthz` does.",
        "",
        "Comment text: at most 20,000 characters (the contract's limit). The sentiment and charter rules read the",
        "whole text, each pattern in linear time; ingest's language detection reads the first 400 characters.",
        "A comment dated more than `TERRAIN_INGEST_MAX_FUTURE_SKEW_S` ahead of its arrival is refused. Every",
        "service exports how late its event loop woke (`terrain_event_loop_lag_seconds`, a histogram, and",
        "`terrain_event_loop_lag_max_seconds`): work that held the loop while health checks and heartbeats waited.",
        "",
        "| service | route | who may call it | body limit |",
        "|---|---|---|---|",
    ]
    for owner, route, who, limit in http_routes():
        lines.append(f"| {owner} | `{route}` | {_cell(who)} | {limit or 'default'} |")
    lines += [
        "",
        "## Configuration variables",
        "",
        "Every service reads the shared variables and its own. Values that are secrets (database URL with",
        "its password, API token, Meta secrets, webhook secret, SMTP password) belong in a Secret.",
        "",
        "| service | variable | type | default | description |",
        "|---|---|---|---|---|",
    ]
    for owner, var, typ, default, description in variables():
        lines.append(f"| {owner} | `{var}` | {_cell(typ)} | {_cell(default)} | {_cell(description)} |")
    lines += [
        "",
        "### Read directly from the environment",
        "",
        "Variables outside the settings classes, mostly for local runs (`terrain up`) and the CLI:",
        "",
        "| variable | read in | description |",
        "|---|---|---|",
    ]
    described = environ_descriptions()
    for var, where in environ_reads(root).items():
        if var not in described:
            raise ValueError(f"{var} is read in {', '.join(where)} but described nowhere: add it to "
                             "LOCAL_RUN_VARIABLES in terrain/stack.py (or give its option a help text)")
        lines.append(f"| `{var}` | {', '.join(f'`{w}`' for w in where)} | {_cell(described[var])} |")
    codes = exit_codes()
    if codes:
        lines += [
            "",
            "## Exit codes",
            "",
            "What the services' commands exit with, for the scripts and Jobs that run them:",
            "",
            "| command | exit code | meaning |",
            "|---|---|---|",
        ]
        lines += [f"| `{command}` | {code} | {_cell(meaning)} |" for command, code, meaning in codes]
    return "\n".join(lines) + "\n"
