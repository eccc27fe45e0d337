"""Policy files: `terrain policy check` on good and bad files, rota hand-offs, community overrides merged."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.escalation.cli import policy_app
from services.escalation.policy import PolicyFile, Rota, StepRule, load_policy, parse_policy

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "escalation-policy.example.yaml"
runner = CliRunner()


def check(path: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(policy_app, ["check", str(path), *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_the_example_policy_passes_the_check_and_says_who_is_on_call() -> None:
    code, out = check(EXAMPLE, "--at", "2026-03-30T08:00:00Z")
    assert code == 0, out
    assert "valid" in out
    assert "marque-nationale" in out and "resto-lyon-croix-rousse" in out
    # Twelve weeks after the rota's start (an even shift): Camille, at 10:00 Paris time, each zone named.
    assert ("rota community-managers: on call at 2026-03-30 08:00 UTC (2026-03-30 10:00 CEST Europe/Paris): "
            "camille") in out


def test_the_example_policy_sets_a_quiet_default_and_a_busy_override() -> None:
    pf = load_policy(EXAMPLE)
    quiet, busy = pf.defaults, pf.community("marque-nationale")
    assert quiet.cascade.min_negatives < busy.cascade.min_negatives
    assert busy.spike.bucket == timedelta(minutes=5) and quiet.spike.bucket == timedelta(minutes=15)
    assert pf.community("resto-lyon-croix-rousse").place == "Lyon, Croix-Rousse"


GOOD_STEPS = "  steps:\n    - {notify: ['rota:cm'], wait: 10m}\n"
PEOPLE = "people:\n  camille: {name: Camille, email: c@example.org}\n"
ROTA = "rotas:\n  cm: {people: [camille], start: 2026-01-05}\n"

BAD_FILES = [
    # A duration nobody can read: the path names the field, and the error the forms a duration takes.
    ("defaults:\n  horizon: soon\n", ["defaults.horizon", "'soon' is not a duration: write 90s, 30m, 2h, 7d"]),
    # A policy that pages nobody: the engine ran step 1 of none and failed on the comment (IndexError).
    ("defaults:\n  steps: []\n", ["defaults.steps", "a policy must page someone: give at least one step",
                                   "[rota:<name>, channel:<name> or person:<name>]"]),
    ("communities:\n  quiet:\n    steps: []\n", ["communities.quiet.steps", "must page someone"]),
    # Durations past a year: one past what Python can hold was a traceback, one of a million days passed and
    # then made the engine dead-letter every comment.
    ("defaults:\n  cascade: {window: 5000000000d}\n", ["defaults.cascade.window", "may not exceed 366 days"]),
    ("defaults:\n  horizon: 999999999d\n", ["defaults.horizon", "may not exceed 366 days"]),
    ("defaults:\n  repeat_interval: -60\n", ["defaults.repeat_interval", "may not be negative"]),
    # A step that pages a rota the file does not define.
    ("defaults:\n  steps:\n    - {notify: ['rota:nobody'], wait: 10m}\n" + PEOPLE + ROTA,
     ["defaults.steps.0.notify", "no rota 'nobody'"]),
    # A time zone that does not exist.
    ("defaults:\n" + GOOD_STEPS + PEOPLE
     + "rotas:\n  cm: {people: [camille], start: 2026-01-05, timezone: Mars/Olympus}\n",
     ["rotas.cm.timezone", "unknown time zone 'Mars/Olympus'"]),
    # A step that says neither rota:, channel: nor person:.
    ("defaults:\n  steps:\n    - {notify: ['camille']}\n", ["defaults.steps.0.notify", "rota:<name>"]),
    # A person nobody can reach.
    ("people:\n  ghost: {name: Ghost}\n", ["people.ghost", "needs an email or a webhook"]),
    # Not YAML at all.
    ("defaults: [unclosed\n", ["not valid YAML"]),
]


@pytest.mark.parametrize(("text", "expected"), BAD_FILES)
def test_a_bad_policy_file_is_refused_with_the_path_of_its_error(tmp_path: Path, text: str, expected: list[str]
                                                                ) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    code, out = check(path)
    assert code == 1, out
    for fragment in expected:
        assert fragment in out, out


def test_a_bad_json_policy_file_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text('{"defaults": {"cascade": {"window": "a while"}}}', encoding="utf-8")
    code, out = check(path)
    assert code == 1 and "defaults.cascade.window" in out, out


def test_a_bad_community_override_names_the_community(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("communities:\n  busy:\n    cascade: {min_negatives: 0}\n", encoding="utf-8")
    code, out = check(path)
    assert code == 1
    assert "communities.busy.cascade.min_negatives" in out, out


def test_every_error_of_a_file_is_listed_at_once(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "defaults:\n  horizon: soon\n  steps:\n    - {notify: ['rota:nobody']}\n"
        "communities:\n  busy:\n    cascade: {min_negatives: 0}\n"
        + PEOPLE + "rotas:\n  cm: {people: [camille], start: 2026-01-05, timezone: Mars/Olympus}\n",
        encoding="utf-8",
    )
    code, out = check(path)
    assert code == 1
    for fragment in ("defaults.horizon", "rotas.cm.timezone", "no rota 'nobody'",
                     "communities.busy.cascade.min_negatives"):
        assert fragment in out, out


def test_a_missing_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    code, out = check(tmp_path / "nowhere.yaml")
    assert code == 1 and "cannot read" in out


# ---------------------------------------------------------------------------------------------- rotas

# Shifts of 7 days handed off on Mondays at 09:00 Paris time, from Monday 23 March 2026 (Ada first).
# Paris moves to summer time on Sunday 29 March 2026 (UTC+1 -> UTC+2) and back on Sunday 25 October.
ROTA_PARIS = Rota(people=["ada", "bob"], start=date(2026, 3, 23), handoff=time(9, 0), shift_days=7,
                  timezone="Europe/Paris")

ON_CALL = [
    # 08:59 in Paris on the first Monday: the first shift has not started; the one before it (Bob's) runs.
    (datetime(2026, 3, 23, 7, 59, tzinfo=UTC), "bob"),
    # 09:00 in Paris (UTC+1): Ada takes over.
    (datetime(2026, 3, 23, 8, 0, tzinfo=UTC), "ada"),
    # The night the clocks go forward (03:30 summer time): still Ada.
    (datetime(2026, 3, 29, 1, 30, tzinfo=UTC), "ada"),
    # 08:59 in Paris, now UTC+2: one minute before the hand-off, still Ada.
    (datetime(2026, 3, 30, 6, 59, tzinfo=UTC), "ada"),
    # 09:00 in Paris is 07:00 UTC after the change: Bob takes over at local time, not an hour late.
    (datetime(2026, 3, 30, 7, 0, tzinfo=UTC), "bob"),
    # 08:30 UTC: a rota computed in fixed UTC+1 would still answer Ada here.
    (datetime(2026, 3, 30, 7, 30, tzinfo=UTC), "bob"),
    # Back to winter time on 25 October: 08:59 Paris (UTC+1) on Monday 26 October is still shift 30, Ada's.
    (datetime(2026, 10, 26, 7, 59, tzinfo=UTC), "ada"),
    # 09:00 Paris is 08:00 UTC again: shift 31, Bob's.
    (datetime(2026, 10, 26, 8, 0, tzinfo=UTC), "bob"),
    # The same instant given in another offset names the same person.
    (datetime(2026, 10, 26, 8, 0, tzinfo=UTC).astimezone(), "bob"),
]


@pytest.mark.parametrize(("at", "who"), ON_CALL)
def test_who_is_on_call_across_hand_offs_and_daylight_saving(at: datetime, who: str) -> None:
    assert ROTA_PARIS.on_call(at) == who


def test_a_daily_rota_of_three_turns_at_its_local_hand_off() -> None:
    # New York hands off at 18:00 local; 2026-03-08 is the US change to summer time (UTC-5 -> UTC-4).
    rota = Rota(people=["a", "b", "c"], start=date(2026, 3, 6), handoff=time(18, 0), shift_days=1,
                timezone="America/New_York")
    assert rota.on_call(datetime(2026, 3, 6, 23, 0, tzinfo=UTC)) == "a"  # 18:00 EST on the 6th
    assert rota.on_call(datetime(2026, 3, 8, 21, 59, tzinfo=UTC)) == "b"  # 17:59 EDT on the 8th
    assert rota.on_call(datetime(2026, 3, 8, 22, 0, tzinfo=UTC)) == "c"  # 18:00 EDT on the 8th


# ---------------------------------------------------------------------------------------------- merge


def test_a_community_override_is_merged_key_by_key_over_the_defaults() -> None:
    pf = parse_policy({
        "defaults": {"cascade": {"window": "20m", "min_negatives": 4}, "horizon": "24h"},
        "communities": {"busy": {"cascade": {"min_negatives": 12}, "steps": [{"notify": ["person:lea"]}]}},
        "people": {"lea": {"name": "Léa", "email": "lea@example.org"}},
    })
    busy = pf.community("busy")
    assert busy.cascade.min_negatives == 12  # overridden
    assert busy.cascade.window == timedelta(minutes=20)  # kept from the defaults' same section
    assert busy.horizon == timedelta(hours=24)  # another section of the defaults, untouched
    assert busy.steps == [StepRule(notify=["person:lea"])]  # a list is replaced, not merged
    assert pf.community("elsewhere") is pf.defaults  # no override: the defaults themselves
    assert pf.defaults.cascade.min_negatives == 4  # the defaults are not changed by the merge


def test_an_empty_policy_file_means_the_built_in_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n", encoding="utf-8")
    assert load_policy(path) == PolicyFile()


def test_a_step_notifying_a_rota_the_file_does_not_define_is_valid_with_a_warning_that_says_why(
    tmp_path: Path,
) -> None:
    # The built-in default step, `rota:oncall`, with no rota defined: valid (pages travel on the escalations
    # topic), but nobody is notified directly, which an empty file's author may not know.
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n", encoding="utf-8")
    code, out = check(path)
    assert code == 0, out
    assert "valid, with 1 warning(s)" in out
    assert "warning: defaults.steps.0.notify: rota:oncall names no rota of this file, so this step notifies " \
           "nobody directly: its page goes to terrain.escalations.v1 only" in out
    # Defining it, or notifying a person, silences the warning; the shipped example has none.
    path.write_text("defaults:\n" + GOOD_STEPS + PEOPLE + ROTA, encoding="utf-8")
    code, out = check(path)
    assert code == 0 and "warning" not in out, out
    code, out = check(EXAMPLE)
    assert code == 0 and "warning" not in out, out


def test_a_community_that_sets_its_own_steps_is_warned_about_separately() -> None:
    from services.escalation.policy import policy_warnings

    pf = parse_policy({"communities": {"quiet": {"steps": [{"notify": ["rota:oncall"], "wait": "1h"}]},
                                       "loud": {"horizon": "1h"}}})
    assert [w.split(":", 1)[0] for w in policy_warnings(pf)] == ["defaults.steps.0.notify",
                                                                  "communities.quiet.steps.0.notify"]


@pytest.mark.parametrize(("written", "seconds"), [
    ("90s", 90), ("30m", 1800), ("2h", 7200), ("7d", 7 * 86400), ("2w", 14 * 86400), ("500ms", 0.5), (600, 600),
    # What pydantic reads besides stays accepted: ISO 8601 and clock forms.
    ("PT15M", 900), ("00:10:00", 600),
])
def test_the_forms_a_duration_is_written_in(written: object, seconds: float) -> None:
    pf = parse_policy({"defaults": {"horizon": written}})
    assert pf.defaults.horizon == timedelta(seconds=seconds)
