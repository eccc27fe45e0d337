"""How late a service's event loop wakes: the time one slow piece of work (a comment's text rules, a large decode)
held the loop or the interpreter's lock, while health checks, Kafka heartbeats and other comments waited."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import Gauge, Histogram

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

EVENT_LOOP_LAG = Histogram(
    "terrain_event_loop_lag_seconds",
    "How much later than asked the event loop woke a sleeping task (sampled every interval).",
    ["service"],
    buckets=LAG_BUCKETS,
)
EVENT_LOOP_LAG_MAX = Gauge(
    "terrain_event_loop_lag_max_seconds",
    "The largest event loop lag seen since the process started.",
    ["service"],
)

DEFAULT_INTERVAL_S = 0.05


class LoopLagMonitor:
    """Sleeps `interval_s` again and again and records how much longer each sleep took than asked."""

    def __init__(self, service: str, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.service = service
        self.interval_s = interval_s
        self.max_s = 0.0
        self._histogram = EVENT_LOOP_LAG.labels(service=service)
        self._max = EVENT_LOOP_LAG_MAX.labels(service=service)

    def record(self, lag_s: float) -> None:
        lag_s = max(0.0, lag_s)
        self._histogram.observe(lag_s)
        if lag_s > self.max_s:
            self.max_s = lag_s
            self._max.set(lag_s)

    async def run(self) -> None:
        # perf_counter, not the loop's clock: the lag is what a waiting request would see.
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            self.record(time.perf_counter() - asked - self.interval_s)
