"""`terrain sentiment train|eval|score`: train a fast model on your own labelled comments, measure, score."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.console import Console

from services.sentiment.scorers import DEFAULT_SCORER, SCORER_NAMES

sentiment_app = typer.Typer(help="Sentiment models: train on labelled comments, evaluate, score JSON lines.",
                            no_args_is_help=True)
err = Console(stderr=True, highlight=False)

# The learned scorers' classes (learned.CLASSES), repeated so that `terrain --help` does not load numpy/sklearn.
CLASSES = ("negative", "neutral", "positive")
SHARED_DATA_ENV = "TERRAIN_SENTIMENT_DATA"
SHARED_DATA_DEFAULT = "/work/shared/data/sentiment"
SHARED_TRAIN = {"train_fr.jsonl": "fr", "train_en.jsonl": "en"}
SCORE_BATCH = 1000
SHARED_TERMS = (
    "Trained on research datasets (see services/sentiment/models/MODEL_CARD.md): DEFT 2017 French tweets "
    "(research use), Allocine reviews (no licence stated), Amazon.fr book reviews from the pattern corpora "
    "(personal use), SemEval-2017 tweets (Twitter terms), US-airline tweets (CC BY-NC-SA 4.0). Research and "
    "non-commercial use only; for other uses, train on your own data or use the lexicon scorer."
)


class DataError(ValueError):
    """A labelled file that cannot be used; the message names the file and line."""


def read_labelled(path: Path, *, default_lang: str | None = None) -> list[dict[str, Any]]:
    """Rows {"text", "label", "lang"?, "source"?} of a JSON-lines file; every problem names its line."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise DataError(f"{path}:{number}: expected an object with a string \"text\"")
            if row.get("label") not in CLASSES:
                raise DataError(f"{path}:{number}: label {row.get('label')!r} is not one of {', '.join(CLASSES)}")
            lang = row.get("lang") or default_lang
            rows.append({"text": row["text"], "label": row["label"], "lang": lang,
                         "source": str(row.get("source") or path.name)})
    if not rows:
        raise DataError(f"{path}: no labelled rows")
    return rows


def _shared_dir() -> Path:
    return Path(os.environ.get(SHARED_DATA_ENV, SHARED_DATA_DEFAULT))


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", soft_wrap=True)
    return typer.Exit(code)


def _make_scorer(name: str, model: Path | None) -> Any:
    from services.sentiment.scorers import make_scorer

    try:
        return make_scorer(name, str(model) if model else None)
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None


@sentiment_app.command()
def train(
    data: Annotated[list[Path] | None, typer.Option(
        "--data", help="Labelled JSON lines {\"text\", \"label\", \"lang\"?}; repeat for several files.")] = None,
    out: Annotated[Path, typer.Option(help="Model file to write (.npz, with its .json beside it).")] = Path(
        "sentiment-model.npz"),
    include_shared: Annotated[bool, typer.Option(
        help=f"Also train on the shared train_fr/train_en files (from ${SHARED_DATA_ENV}, else "
             f"{SHARED_DATA_DEFAULT}); they carry research/non-commercial terms.")] = False,
    version: Annotated[str | None, typer.Option(help="Model version name (default: fast-custom-<date>).")] = None,
    c: Annotated[float, typer.Option(help="Inverse regularisation strength of the logistic regression.")] = 25.0,
    bits: Annotated[int, typer.Option(min=10, max=22, help="log2 of hashed columns per block (word, char); "
                                      "fewer train faster on small data.")] = 19,
    char_min: Annotated[int, typer.Option(min=1, max=5, help="Shortest character n-gram.")] = 3,
    char_chars: Annotated[int, typer.Option(min=0, help="Characters of a text that feed the character n-grams.")
                          ] = 400,
    source_weight: Annotated[list[str] | None, typer.Option(
        help="TEXT=W: weigh rows whose `source` contains TEXT by W (e.g. to favour comments like yours); "
             "repeatable.")] = None,
    dev: Annotated[list[Path] | None, typer.Option(
        help="Labelled files to measure the trained model on; the scores go into its metadata. Repeatable.")] = None,
    static: Annotated[bool, typer.Option(
        help="Also fit a head on the shipped static word vectors (e5, one word at a time) and average it with "
             "the hashed model: it knows words that training never showed. Needs all three labels.")] = True,
) -> None:
    """Train a fast model on labelled comments (yours, and optionally the shared research data)."""
    from services.sentiment.scorers.fast import FeatureConfig
    from services.sentiment.scorers.language import language_of
    from services.sentiment.scorers.static import DEFAULT_TABLE, load_table
    from services.sentiment.training.fast import train_fast

    files: list[tuple[Path, str | None]] = [(p, None) for p in data or []]
    if include_shared:
        shared = _shared_dir()
        files += [(shared / name, lang) for name, lang in SHARED_TRAIN.items()]
    if not files:
        raise _fail("no training data: pass --data FILE.jsonl (repeatable) and/or --include-shared")
    weights_by_source: list[tuple[str, float]] = []
    for spec in source_weight or []:
        text, _, weight = spec.rpartition("=")
        try:
            weights_by_source.append((text, float(weight)))
        except ValueError:
            raise _fail(f"--source-weight {spec!r}: expected TEXT=NUMBER") from None
    rows: list[dict[str, Any]] = []
    sources: list[dict[str, Any]] = []
    for path, lang in files:
        if path.name.startswith("dev_"):
            err.print(f"[yellow]warning:[/yellow] {path.name} looks like a dev set; measure on it, do not train")
        try:
            file_rows = read_labelled(path, default_lang=lang)
        except DataError as exc:
            raise _fail(str(exc)) from None
        rows += file_rows
        sources.append({"file": path.name, "examples": len(file_rows),
                        "labels": {k: sum(r["label"] == k for r in file_rows) for k in CLASSES}})
        err.print(f"read {len(file_rows)} labelled texts from {path}")
    with err.status("detecting languages…"):
        langs = [r["lang"] or language_of(r["text"], None) for r in rows]
    created = datetime.now(UTC).strftime("%Y-%m-%d")
    metadata: dict[str, Any] = {
        "version": version or f"fast-custom-{created}",
        "created": created,
        "training_data": sources,
        "terms": SHARED_TERMS if include_shared else "the terms of the training files apply to this model",
    }
    if weights_by_source:
        metadata["source_weights"] = dict(weights_by_source)
    sample_weight = [
        next((w for text, w in weights_by_source if text in r["source"]), 1.0) for r in rows
    ] if weights_by_source else None
    status = err.status("training…")
    status.start()
    try:
        model = train_fast([r["text"] for r in rows], langs, [r["label"] for r in rows], c=c,
                           config=FeatureConfig(word_bits=bits, char_bits=bits, char_ngram_min=char_min,
                                                char_chars=char_chars),
                           metadata=metadata, sample_weight=sample_weight,
                           static_table=(DEFAULT_TABLE, load_table()) if static else None,
                           sources=[r["source"] for r in rows],
                           progress=lambda msg: status.update(f"training: {msg}…"))
    except ValueError as exc:
        status.stop()
        raise _fail(str(exc)) from None
    status.stop()
    from services.sentiment.scorers.fast import FastScorer, save_model

    if dev:
        model.metadata["dev_scores"] = _dev_scores(FastScorer(model=model), dev)
    path = save_model(model, out)
    head = (f", static head on {model.static.table_name}" if model.static is not None
            else f", no static head ({model.metadata['training']['static_head']})"
            if "static_head" in model.metadata["training"] else "")
    err.print(f"wrote {path} and {path.with_suffix('.json').name} (version {model.version}, "
              f"{len(model.columns)} weighted features, temperature {model.temperature:.3f}{head})")


def _dev_scores(scorer: Any, files: list[Path]) -> dict[str, Any]:
    """Per file and per source: n, accuracy, macro-F1 and per-class recall of the freshly trained model."""
    from services.sentiment.evaluation import evaluate

    out: dict[str, Any] = {}
    for path in files:
        try:
            rows = read_labelled(path)
        except DataError as exc:
            raise _fail(str(exc)) from None
        with err.status(f"measuring on {path.name}…"):
            predicted = _scored_labels(scorer, rows)
        groups = {"all": list(range(len(rows)))}
        for i, r in enumerate(rows):
            groups.setdefault(r["source"], []).append(i)
        out[path.name] = {}
        for name, idx in groups.items():
            report = evaluate([rows[i]["label"] for i in idx], [predicted[i] for i in idx])
            out[path.name][name] = {"n": report.n, "accuracy": round(report.accuracy, 4),
                                    "macro_f1": round(report.macro_f1, 4),
                                    "recall": {k: round(v.recall, 4) for k, v in report.per_class.items()}}
        err.print(f"{path.name}: accuracy {out[path.name]['all']['accuracy']:.4f}, "
                  f"macro-F1 {out[path.name]['all']['macro_f1']:.4f}")
    return out


def _scored_labels(scorer: Any, rows: list[dict[str, Any]]) -> list[str]:
    from services.sentiment.scorers.base import ScoreInput

    labels: list[str] = []
    for start in range(0, len(rows), SCORE_BATCH):
        chunk = rows[start:start + SCORE_BATCH]
        labels += [s.label.value for s in scorer.score_batch([ScoreInput(r["text"], r["lang"]) for r in chunk])]
    return labels


@sentiment_app.command("eval")
def evaluate_cmd(
    file: Annotated[Path, typer.Argument(help="Labelled JSON lines {\"text\", \"label\", \"lang\"?, \"source\"?}.")],
    scorer: Annotated[str, typer.Option(help=f"Scorer: {', '.join(SCORER_NAMES)}.")] = DEFAULT_SCORER,
    model: Annotated[Path | None, typer.Option(help="Model file for a learned scorer (default: shipped).")] = None,
    by_source: Annotated[bool, typer.Option("--by-source", help="Also report each `source` separately.")] = False,
) -> None:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix of a scorer on a file."""
    from services.sentiment.evaluation import evaluate

    try:
        rows = read_labelled(file)
    except DataError as exc:
        raise _fail(str(exc)) from None
    chosen = _make_scorer(scorer, model)
    with err.status(f"scoring {len(rows)} texts…"):
        predicted = _scored_labels(chosen, rows)
    gold = [r["label"] for r in rows]
    typer.echo(f"scorer {chosen.model_version} on {file.name}")
    typer.echo(evaluate(gold, predicted).text())
    if by_source:
        for source in sorted({r["source"] for r in rows}):
            idx = [i for i, r in enumerate(rows) if r["source"] == source]
            typer.echo(f"\n== source: {source}")
            typer.echo(evaluate([gold[i] for i in idx], [predicted[i] for i in idx]).text())


def _parse_score_line(line: str) -> tuple[str, str | None]:
    """(text, lang) of one input line; ValueError names what is wrong."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg}") from None
    if not isinstance(row, dict):
        raise ValueError("expected a JSON object with \"text\"")
    text = row.get("text")
    if not isinstance(text, str):
        raise ValueError("missing or non-string \"text\"")
    lang = row.get("lang")
    if lang is not None and not isinstance(lang, str):
        raise ValueError("\"lang\" must be a string")
    return text, lang


def _chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for line in lines:
        if not line.strip():
            continue
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def score_lines(scorer: Any, lines: Iterable[str], out: TextIO, flagger: Callable[[str], list[Any]] | None = None
                ) -> int:
    """Score JSON lines in order, one output line per non-blank input line; returns the number of errors.

    A line out is the sentiment's fields, plus `flags` (the charter flags, as `/v1/score` gives them) when a
    flagger is given."""
    from services.sentiment.scorers.base import ScoreInput

    errors = 0
    line_no = 0
    for chunk in _chunks(lines, SCORE_BATCH):
        parsed: list[tuple[int, ScoreInput | str]] = []
        for line in chunk:
            line_no += 1
            try:
                text, lang = _parse_score_line(line)
                parsed.append((line_no, ScoreInput(text, lang)))
            except ValueError as exc:
                parsed.append((line_no, str(exc)))
        good = [item for _, item in parsed if isinstance(item, ScoreInput)]
        try:
            results = iter(scorer.score_batch(good))
        except Exception as exc:  # one bad text should not lose the batch: score one by one to find it
            results = iter(_score_one_by_one(scorer, good, exc))
        for number, item in parsed:
            if isinstance(item, str):
                errors += 1
                out.write(json.dumps({"line": number, "error": item}, ensure_ascii=False) + "\n")
                continue
            result = next(results)
            if isinstance(result, str):
                errors += 1
                out.write(json.dumps({"line": number, "error": result}, ensure_ascii=False) + "\n")
            else:
                row = result.model_dump(mode="json")
                if flagger is not None:
                    row["flags"] = [f.model_dump(mode="json") for f in flagger(item.text)]
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        out.flush()
    return errors


def _score_one_by_one(scorer: Any, items: list[Any], _first: Exception) -> list[Any]:
    out: list[Any] = []
    for item in items:
        try:
            out += scorer.score_batch([item])
        except Exception as exc:
            out.append(f"could not score: {type(exc).__name__}")
    return out


@sentiment_app.command()
def score(
    texts: Annotated[list[str] | None, typer.Argument(
        help="Texts to score, one answer line each; without any, JSON lines are read from stdin.",
        show_default=False)] = None,
    scorer: Annotated[str, typer.Option(help=f"Scorer: {', '.join(SCORER_NAMES)}.")] = DEFAULT_SCORER,
    model: Annotated[Path | None, typer.Option(help="Model file for a learned scorer (default: shipped).")] = None,
    charter_models: Annotated[bool, typer.Option(
        help="Use the shipped hostility and identity-hate models for the insult and hate flags (research-only "
             "data terms); --no-charter-models: rules only.")] = True,
) -> None:
    """Score JSON lines {"text", "lang"?} from stdin, or the texts given as arguments; one JSON line out per
    text, in order: the sentiment and its charter flags."""
    from services.sentiment import charter

    chosen = _make_scorer(scorer, model)
    models = charter.charter_models(charter_models)
    if texts:
        lines: Iterable[str] = [json.dumps({"text": t}, ensure_ascii=False) for t in texts]
    else:
        if sys.stdin.isatty():
            err.print('reading JSON lines {"text": ..., "lang"?: ...} from stdin (Ctrl-D to end); '
                      'or pass the texts as arguments')
        lines = sys.stdin
    errors = score_lines(chosen, lines, sys.stdout, lambda text: charter.flags_with(models, text))
    if errors:
        err.print(f"{errors} line(s) could not be scored (see their \"error\" field)")
        raise typer.Exit(1)
