"""A service with TERRAIN_METRICS_PORT, in its own process on the real broker and PostgreSQL: Prometheus metrics on
that port, nothing at /metrics on the API port, and /readyz naming no process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from terrain.devstack import free_port, stop_process

pytestmark = pytest.mark.integration


def test_metrics_are_served_on_their_own_port_and_leave_the_api_port(
    settings_kwargs, topic_overrides, kafka_bootstrap, tmp_path: Path
):
    api, metrics = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRAIN_")}
    env.update({
        "TERRAIN_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TERRAIN_DATABASE_URL": settings_kwargs["database_url"],
        "TERRAIN_ESCALATION_PORT": str(api), "TERRAIN_METRICS_PORT": str(metrics), "TERRAIN_HOST": "127.0.0.1",
        "TERRAIN_API_TOKEN": "test-token", "TERRAIN_KAFKA_GROUP_PREFIX": settings_kwargs["kafka_group_prefix"],
        "TERRAIN_TEST_TOPIC_OVERRIDES": json.dumps(topic_overrides),
    })
    log = tmp_path / "escalation.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.procs.serve_escalation"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{api}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        scraped = httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5)
        assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
        assert 'terrain_ready{service="escalation"} 1.0' in scraped.text
        assert "terrain_consumer_lag" in scraped.text or "terrain_http_requests_total" in scraped.text
        # The API port no longer has /metrics: a stranger is refused like on any path, a caller finds nothing.
        assert httpx.get(f"http://127.0.0.1:{api}/metrics", timeout=5).status_code == 401
        found = httpx.get(f"http://127.0.0.1:{api}/metrics", headers={"Authorization": "Bearer test-token"},
                          timeout=5)
        assert found.status_code == 404
        ready = httpx.get(f"http://127.0.0.1:{api}/readyz", timeout=5).json()
        assert ready["ready"] is True and "pid" not in ready
        assert httpx.get(f"http://127.0.0.1:{api}/healthz", timeout=5).json()["pid"] == proc.pid
    finally:
        stop_process(proc)
    # Stopping closes the metrics port with the rest.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=2)
