"""The policy file is reloaded when it changes; a bad edit keeps the last good policy."""

from __future__ import annotations

import os
from pathlib import Path

from services.escalation.app import EscalationSettings, PolicyReloader
from services.escalation.policy import PolicyFile


def write(path: Path, text: str, mtime: float) -> None:
    path.write_text(text, encoding="utf-8")
    os.utime(path, (mtime, mtime))


def test_reload_on_change_and_keep_the_last_good_one(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    write(path, "defaults:\n  cascade:\n    min_negatives: 4\n", 1000)
    settings = EscalationSettings(escalation_policy_file=str(path))
    assert settings.policies().defaults.cascade.min_negatives == 4
    applied: list[PolicyFile] = []
    reload = PolicyReloader(settings, applied.append)
    reload()  # unchanged: nothing to do
    assert applied == []
    write(path, "defaults:\n  cascade:\n    min_negatives: 5\n", 2000)
    reload()
    assert [p.defaults.cascade.min_negatives for p in applied] == [5]
    write(path, "defaults:\n  cascade:\n    min_negatives: zero\n", 3000)  # a bad edit
    reload()
    assert len(applied) == 1  # refused: the service keeps running on the last good policy
    write(path, "defaults:\n  cascade:\n    window: 10m\n", 4000)
    reload()
    assert applied[-1].defaults.cascade.window.total_seconds() == 600


def test_environment_shortcuts_apply_over_the_defaults() -> None:
    s = EscalationSettings(escalation_cascade_threshold=1, escalation_ack_deadline_s=60, escalation_min_confidence=0.7)
    d = s.policies().defaults
    assert (d.cascade.min_negatives, d.steps[0].wait.total_seconds(), d.respond.min_confidence) == (1, 60, 0.7)
