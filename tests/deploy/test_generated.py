"""Generated deployment files are in step with the code; the consumer-group table is in step with the apps."""

from __future__ import annotations

import importlib
from pathlib import Path

from terrain.ops.cli import drift, generated
from terrain.ops.plan import CLUSTER_PARTITIONS, CONSUMER_GROUPS, RETENTION_DAYS, topic_plans
from terrain.stack import SERVICES
from terrain.topics import ALL_TOPICS, all_topic_names


def test_committed_files_match_what_the_code_generates(root: Path) -> None:
    assert drift(root) == [], "run `terrain deploy generate` and commit the result"


def test_drift_is_reported(root: Path, tmp_path: Path) -> None:
    for rel, text in generated(root).items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    # The reference lists variables read from the environment by the sources under the root it is given.
    for folder in ("terrain", "services"):
        (tmp_path / folder).symlink_to(root / folder)
    assert drift(tmp_path) == []
    (tmp_path / "deploy/k8s/base/kafka-topics.yaml").write_text("# edited\n")
    assert drift(tmp_path) == ["deploy/k8s/base/kafka-topics.yaml: differs from what the code generates"]


def test_every_registry_topic_has_a_plan() -> None:
    assert set(RETENTION_DAYS) == {t.name for t in ALL_TOPICS}
    plans = topic_plans(CLUSTER_PARTITIONS)
    assert [p.name for p in plans] == all_topic_names()
    assert all(p.partitions == CLUSTER_PARTITIONS and p.retention_ms > 0 for p in plans)


def test_consumer_groups_are_the_ones_the_services_subscribe_with() -> None:
    subscribed = set()
    for svc in SERVICES:
        app = importlib.import_module(f"{svc.module}.app").build_app()
        for sub in app.state.runtime.broker.subscribers:
            for topic in sub.topic_names:
                subscribed.add((svc.name, sub.group_id, topic))
    assert subscribed == {(g.service, g.group_id(), g.topic.name) for g in CONSUMER_GROUPS}
