"""Text classification: one label per text (or text pair); accuracy and macro-F1."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
import pandas as pd

from edgepress.errors import DataError
from edgepress.tasks.base import RawSplit, Task

if TYPE_CHECKING:
    from edgepress.recipe.sections import DataSection

log = logging.getLogger(__name__)


def classification_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1_macro": float(f1_score(labels, predictions, average="macro", zero_division=0)),
    }


def trainer_metrics(eval_pred: Any) -> dict[str, float]:
    """``compute_metrics`` for the Transformers Trainer (text classification)."""
    logits, labels = eval_pred
    return classification_metrics(np.asarray(labels), np.asarray(logits).argmax(axis=-1))


class TextClassification(Task):
    name = "text-classification"
    head = "ForSequenceClassification"
    stratify = True

    def check_source(self, split: RawSplit) -> None:
        if split.fmt == "conll":
            raise DataError(f"{split.origin} is a CoNLL file of tagged tokens; set task: token-classification in the recipe")

    def examples(self, split: RawSplit, cfg: "DataSection") -> Optional[pd.DataFrame]:
        """Keep the configured columns under canonical names, and refuse empty texts or labels."""
        frame = _label_ids_to_names(split, cfg.label_column)
        if frame is None:
            return None
        if frame.empty:
            raise DataError(f"{split.origin} has no data rows; point the recipe at a file with examples")
        columns = {"text": cfg.text_column, "label": cfg.label_column}
        if cfg.text_pair_column:
            columns["text_pair"] = cfg.text_pair_column
        for role, column in columns.items():
            if column not in frame.columns:
                raise DataError(_missing_column_message(split.origin, role, column, frame, cfg.header))
        out = pd.DataFrame({role: frame[column].tolist() for role, column in columns.items()})
        for role in columns:
            bad = [i for i, v in enumerate(out[role]) if v is None or (isinstance(v, float) and v != v) or str(v).strip() == ""]
            if bad:
                raise DataError(
                    f"{split.origin}: data row {bad[0] + 1} has an empty {role} (column {columns[role]!r})"
                    f"{f' and {len(bad) - 1} more rows do' if len(bad) > 1 else ''}; fill or drop those rows"
                )
        out["label"] = [_label_text(v) for v in out["label"]]
        return out

    def label_names(self, train: pd.DataFrame, split: RawSplit, cfg: "DataSection") -> list[str]:
        """Label ids: a ClassLabel's own order (so that a checkpoint trained on the dataset keeps its
        head), else integer labels by value and other names alphabetically."""
        names = set(train["label"])
        if len(names) < 2:
            raise DataError(f"{split.origin}: every training example has the label {next(iter(names))!r}; a classifier needs two or more")
        _refuse_numbers_as_classes(names, len(train), split.origin)
        class_names = split.class_names.get(cfg.label_column)
        if class_names:
            return [_label_text(n) for n in class_names]
        if all(_is_int(n) for n in names):
            return sorted(names, key=int)
        return sorted(names)

    def check_seen(self, frame: pd.DataFrame, labels: list[str], origin: str) -> None:
        known = set(labels)
        for i, label in enumerate(frame["label"]):
            if label not in known:
                raise DataError(
                    f"{origin}: data row {i + 1} has the label {label!r}, which the training data never has "
                    f"(training labels: {', '.join(labels)}); fix the label or add training examples for it"
                )

    def check_splits(self, frames: dict[str, pd.DataFrame], origin: str) -> None:
        """Held-out splits cut from the training data: most of their labels must occur in training."""
        known = set(frames["train"]["label"])
        held = [label for name in ("validation", "test") for label in frames[name]["label"]]
        unseen = sum(label not in known for label in held)
        if held and unseen > len(held) / 2:
            raise DataError(
                f"{origin}: {unseen} of {len(held)} validation/test examples have a label no training example has; "
                f"{REGRESSION_HINT}"
            )

    def columns(self, frame: pd.DataFrame, ids: dict[str, int]) -> dict[str, list]:
        columns = {c: frame[c].astype(str).tolist() for c in frame.columns if c != "label"}
        columns["label"] = [ids[v] for v in frame["label"]]
        return columns

    def trainer_metrics(self, labels: list[str], strict_entities: bool) -> Callable[[Any], dict[str, float]]:
        return trainer_metrics

    def scores(self, gold: list, predicted: np.ndarray, labels: list[str], strict_entities: bool) -> dict[str, float]:
        return classification_metrics(np.asarray(gold), predicted)


REGRESSION_HINT = (
    "this looks like a regression target (a number per example), and edgepress trains classifiers: "
    "give class labels (or bin the numbers into classes), or point data.label_column at the column of classes"
)


def _refuse_numbers_as_classes(names: set[str], rows: int, origin: str) -> None:
    """Nearly one label per training row: float scores read as classes would train to chance."""
    if len(names) >= 10 and len(names) > rows / 2:
        examples = ", ".join(sorted(names)[:3])
        raise DataError(f"{origin}: {len(names)} different labels in {rows} training examples (e.g. {examples}); {REGRESSION_HINT}")


def _label_ids_to_names(split: RawSplit, label_column: str) -> Optional[pd.DataFrame]:
    """A Hub split's ClassLabel ids as names; None for a split whose labels are hidden (-1, as in GLUE test)."""
    names = split.class_names.get(label_column)
    frame = split.frame
    if not names or label_column not in frame:
        return frame
    if (frame[label_column] < 0).all():
        log.warning("ignoring a split whose labels are all hidden (-1)")
        return None
    frame = frame.copy()
    frame[label_column] = [names[i] if i >= 0 else None for i in frame[label_column]]
    return frame


def _missing_column_message(origin: str, role: str, column: str, frame: pd.DataFrame, header: bool) -> str:
    have = ", ".join(repr(str(c)) for c in frame.columns)
    hint = f"set data.{role}_column to one of them" if role != "text_pair" else "set data.text_pair_column"
    if header:
        hint += "; if the file has no header row, set data.header: false and name columns by position ('0', '1', ...)"
    return f"{origin} has no column {column!r} for the {role}; its columns are {have}; {hint}"


def _label_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()
