"""`terrain sentiment train|eval|score` through typer's CliRunner, on a tiny model trained by the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.sentiment.scorers.fast import load_model
from terrain.cli import app
from tests.unit.test_sentiment_learned import tiny_rows

runner = CliRunner()


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    data = write_jsonl(folder / "mine.jsonl", [{"text": t, "label": lab, "lang": "fr"} for t, lab in tiny_rows()])
    out = folder / "model.npz"
    result = runner.invoke(app, ["sentiment", "train", "--data", str(data), "--out", str(out),
                                 "--version", "fast-cli-test", "--bits", "14", "--dev", str(data)])
    assert result.exit_code == 0, result.output
    return out


def test_train_writes_a_loadable_model(trained: Path) -> None:
    model = load_model(trained)
    assert model.version == "fast-cli-test"
    meta = json.loads(trained.with_suffix(".json").read_text(encoding="utf-8"))
    assert meta["training_data"][0]["file"] == "mine.jsonl"
    assert meta["training_data"][0]["examples"] == len(tiny_rows())
    # --dev measured the new model on the given file (here its own training data: near perfect)
    assert meta["dev_scores"]["mine.jsonl"]["all"]["macro_f1"] > 0.9


def test_score_reads_json_lines_and_answers_in_order(trained: Path) -> None:
    stdin = "\n".join([
        json.dumps({"text": "arnaque honteux", "lang": "fr"}),
        "this is not json",
        json.dumps({"text": "génial, bravo", "lang": "fr"}),
        json.dumps({"lang": "fr"}),
        json.dumps({"text": "où se trouve la boutique ?"}),
    ]) + "\n"
    result = runner.invoke(app, ["sentiment", "score", "--scorer", "fast", "--model", str(trained)], input=stdin)
    assert result.exit_code == 1, result.output  # every line answered, and the failed ones make the exit code
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 5
    assert lines[0]["label"] == "negative" and lines[2]["label"] == "positive"
    assert lines[4]["label"] == "neutral" and lines[4]["lang"] == "fr"  # lang detected when not given
    assert lines[1] == {"line": 2, "error": lines[1]["error"]} and "not JSON" in lines[1]["error"]
    assert "text" in lines[3]["error"]
    for good in (lines[0], lines[2], lines[4]):
        assert set(good) >= {"label", "score", "confidence", "lang", "model_version", "drivers", "flags"}
        assert good["model_version"] == "fast-cli-test"


def test_score_with_the_lexicon_scorer() -> None:
    result = runner.invoke(app, ["sentiment", "score", "--scorer", "lexicon"],
                           input=json.dumps({"text": "I love it", "lang": "en"}) + "\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0])["label"] == "positive"


def test_score_takes_texts_as_arguments_in_order() -> None:
    result = runner.invoke(app, ["sentiment", "score", "--scorer", "lexicon", "--no-charter-models",
                                 "C'est super !", "Service déplorable, je suis furieux", "Appelez le 06 12 34 56 78"],
                           input="")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["label"] for r in rows[:2]] == ["positive", "negative"]
    assert [f["kind"] for f in rows[2]["flags"]] == ["personal_data"]
    assert len(rows) == 3


def test_eval_prints_macro_f1_and_by_source(trained: Path, tmp_path: Path) -> None:
    rows = [{"text": "génial la boutique", "label": "positive", "source": "a"},
            {"text": "arnaque la livraison", "label": "negative", "source": "a"},
            {"text": "quand arrive la livraison ?", "label": "neutral", "source": "b"}]
    data = write_jsonl(tmp_path / "dev.jsonl", rows)
    result = runner.invoke(app, ["sentiment", "eval", str(data), "--model", str(trained), "--by-source"])
    assert result.exit_code == 0, result.output
    assert "accuracy=1.0000  macro-F1=1.0000" in result.stdout
    assert "== source: a" in result.stdout and "== source: b" in result.stdout
    assert "confusion" in result.stdout


@pytest.mark.parametrize(
    ("args", "content", "message"),
    [
        # a missing file names the file
        (["eval", "{missing}"], None, "no such file"),
        # a label outside the three classes names the line and the label
        (["eval", "{file}"], '{"text": "x", "label": "great"}\n', "label 'great'"),
        # a line that is not JSON names its line
        (["train", "--data", "{file}"], '{"text": "x", "label": "positive"}\nnope\n', ":2: not JSON"),
        # nothing to train on
        (["train"], None, "no training data"),
        # an unknown scorer lists the known ones
        (["score", "--scorer", "magic"], None, "known: "),
    ],
)
def test_clear_errors(tmp_path: Path, args: list[str], content: str | None, message: str) -> None:
    file = tmp_path / "data.jsonl"
    if content is not None:
        file.write_text(content, encoding="utf-8")
    argv = [a.replace("{missing}", str(tmp_path / "nope.jsonl")).replace("{file}", str(file)) for a in args]
    result = runner.invoke(app, ["sentiment", *argv], input="")
    assert result.exit_code == 2
    assert message in result.output
