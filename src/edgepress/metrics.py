"""Metrics for any model the pipeline produces, on the same evaluation splits.

Text classification: accuracy and macro-F1. Token classification: entity-level precision, recall
and F1, and word accuracy (tasks/tagging.py). ``score`` picks the figure that decides (best epoch,
quantization tolerance, the gate): entity F1 where there is one, else accuracy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from edgepress.data.features import encode, text_slice
from edgepress.tasks import get_task
from edgepress.tasks import tagging as tokens

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from edgepress.data.load import SplitData


def score(metrics: dict[str, float]) -> float:
    """The deciding figure of a metrics dict: entity F1 (token classification), else accuracy."""
    return metrics["f1"] if "f1" in metrics else metrics["accuracy"]


def score_name(metrics: dict[str, float]) -> str:
    return "entity F1" if "f1" in metrics else "accuracy"


def trainer_metrics_for(data: "SplitData") -> Callable:
    """``compute_metrics`` for this data's task."""
    return get_task(data.task).trainer_metrics(data.labels, data.strict_entities)


def predictions_of(logits: np.ndarray) -> np.ndarray:
    """Label ids; for word logits (token classification) ``-1`` where a word has none."""
    return tokens.word_predictions(logits) if logits.ndim == 3 else logits.argmax(axis=-1)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of predictions two models agree on (for words: only positions that are words)."""
    real = (a >= 0) | (b >= 0)
    return float((a == b)[real].mean())


def scores_of(data: "SplitData", split: str, predicted: np.ndarray) -> dict[str, float]:
    """The task's metrics for ``predicted`` (from ``predictions_of``) on a split of ``data``."""
    return get_task(data.task).scores(data.split(split)["label"], predicted, data.labels, data.strict_entities)


def torch_logits(
    model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", rows: dict[str, list], max_length: int, batch_size: int = 64
) -> np.ndarray:
    """Logits of a torch classifier for ``rows`` (``text``, optional ``text_pair``), in eval mode, no grad.
    For tagged sentences: ``[sentences, words, tags]`` read at each word's first piece (tasks/tagging.py)."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    chunks: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(rows["text"]), batch_size):
            batch = text_slice(rows, start, start + batch_size)
            inputs = encode(tokenizer, batch, max_length, padding=True, return_tensors="pt")
            logits = model(**inputs.to(device)).logits.float().cpu().numpy()
            chunks.extend(per_row(inputs, logits, batch))
    return tokens.stack(chunks) if tokens.is_words(rows) else np.concatenate(chunks)


def per_row(encoded, logits: np.ndarray, batch: dict[str, list]) -> list[np.ndarray]:
    """A batch's logits as one entry per row: word logits for tagged sentences, else the row's logits."""
    if tokens.is_words(batch):
        return tokens.first_piece_logits(encoded, logits, [len(words) for words in batch["text"]])
    return [logits]  # already [rows, labels]: concatenated as it is


def evaluate_torch(
    model: "PreTrainedModel",
    tokenizer: "PreTrainedTokenizerBase",
    data: "SplitData",
    max_length: int,
    splits: tuple[str, ...] = ("validation", "test"),
    batch_size: int = 64,
) -> dict[str, dict[str, float]]:
    """``{split: metrics}`` for the given splits."""
    return evaluate_splits(data, splits, lambda rows: torch_logits(model, tokenizer, rows, max_length, batch_size))


def evaluate_splits(
    data: "SplitData", splits: tuple[str, ...], logits_of: Callable[[dict[str, list]], np.ndarray]
) -> dict[str, dict[str, float]]:
    """The task's metrics per split for any model, given a function from rows to logits."""
    return {name: scores_of(data, name, predictions_of(logits_of(data.split(name).to_dict()))) for name in splits}
