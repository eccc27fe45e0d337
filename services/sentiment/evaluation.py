"""Quality measures for sentiment labels: accuracy, macro-F1, per-class precision/recall/F1, confusion."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.sentiment.scorers.base import CLASSES


@dataclass(frozen=True)
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Report:
    """Scores over the labels the gold data uses (binary reviews: macro-F1 over negative and positive)."""

    n: int
    accuracy: float
    macro_f1: float
    per_class: dict[str, ClassScores]
    labels: tuple[str, ...]  # rows and columns of the confusion matrix
    confusion: np.ndarray  # confusion[i, j]: gold labels[i] predicted labels[j]

    def recall(self, label: str) -> float:
        scores = self.per_class.get(label)
        return scores.recall if scores else float("nan")

    def text(self) -> str:
        lines = [f"n={self.n}  accuracy={self.accuracy:.4f}  macro-F1={self.macro_f1:.4f}",
                 f"{'class':<10} {'precision':>9} {'recall':>7} {'F1':>7} {'support':>8}"]
        for label, s in self.per_class.items():
            lines.append(f"{label:<10} {s.precision:>9.4f} {s.recall:>7.4f} {s.f1:>7.4f} {s.support:>8}")
        width = max(len(lab) for lab in self.labels) + 1
        lines.append("confusion (rows gold, columns predicted):")
        lines.append(" " * width + "".join(f"{lab:>{width}}" for lab in self.labels))
        for label, row in zip(self.labels, self.confusion, strict=True):
            lines.append(f"{label:<{width}}" + "".join(f"{int(v):>{width}}" for v in row))
        return "\n".join(lines)


def evaluate(gold: Sequence[str], predicted: Sequence[str]) -> Report:
    """Scores of `predicted` against `gold`; macro-F1 averages over the classes present in gold."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    present = [c for c in CLASSES if c in set(gold)] + sorted(set(gold) - set(CLASSES))
    labels = tuple(present + sorted(set(predicted) - set(present), key=lambda c: (c not in CLASSES, c)))
    index = {lab: i for i, lab in enumerate(labels)}
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for g, p in zip(gold, predicted, strict=True):
        confusion[index[g], index[p]] += 1
    per_class = {}
    for label in present:
        i = index[label]
        tp = int(confusion[i, i])
        predicted_n = int(confusion[:, i].sum())
        support = int(confusion[i].sum())
        precision = tp / predicted_n if predicted_n else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = ClassScores(precision, recall, f1, support)
    n = len(gold)
    accuracy = float(np.trace(confusion)) / n if n else 0.0
    macro = float(np.mean([s.f1 for s in per_class.values()])) if per_class else 0.0
    return Report(n, accuracy, macro, per_class, labels, confusion)
