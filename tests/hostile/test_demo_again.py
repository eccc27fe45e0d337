"""`terrain up --demo` a second time on the same home: it says the comments were ingested already and shows
what they opened, without waiting for scores that will not come (it used to stall 30 s and print an empty
table). Runs on the hostile-input pipeline, whose log test then also looks for the demo's texts and authors."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from terrain import cli
from terrain.demo import CASCADE_COMMUNITY
from terrain.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def run_demo(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> tuple[str, float]:
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=200, highlight=False))
    t0 = time.monotonic()
    cli._run_demo(stack)
    return out.getvalue(), time.monotonic() - t0


def test_the_demo_a_second_time_shows_what_the_first_opened_without_stalling(pipeline: Stack,
                                                                            monkeypatch: pytest.MonkeyPatch):
    first, _ = run_demo(pipeline, monkeypatch)
    assert "new)" in first and "(0 new)" not in first, first
    assert f"demo: {CASCADE_COMMUNITY}/" in first, first  # the cascade opened an incident
    second, took = run_demo(pipeline, monkeypatch)
    assert "(0 new)" in second and "already ingested" in second, second
    assert "comments scored" not in second, second  # no table of scores that will not come
    assert f"demo: {CASCADE_COMMUNITY}/" in second, second
    assert second.count(": incident ") >= first.count(": incident ") > 0  # incidents do not go away
    assert took < 20, f"the second demo took {took:.0f}s"
