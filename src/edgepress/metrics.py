"""Accuracy and macro-F1 for any model the pipeline produces, on the same evaluation splits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from edgepress.features import encode, text_slice

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from edgepress.data import SplitData


def classification_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1_macro": float(f1_score(labels, predictions, average="macro", zero_division=0)),
    }


def trainer_metrics(eval_pred) -> dict[str, float]:
    """``compute_metrics`` for the Transformers Trainer."""
    logits, labels = eval_pred
    return classification_metrics(np.asarray(labels), np.asarray(logits).argmax(axis=-1))


def torch_logits(
    model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", rows: dict[str, list], max_length: int, batch_size: int = 64
) -> np.ndarray:
    """Logits of a torch classifier for ``rows`` (``text``, optional ``text_pair``), in eval mode, no grad."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(rows["text"]), batch_size):
            inputs = encode(tokenizer, text_slice(rows, start, start + batch_size), max_length, padding=True, return_tensors="pt").to(device)
            chunks.append(model(**inputs).logits.float().cpu().numpy())
    return np.concatenate(chunks)


def evaluate_torch(
    model: "PreTrainedModel",
    tokenizer: "PreTrainedTokenizerBase",
    data: "SplitData",
    max_length: int,
    splits: tuple[str, ...] = ("validation", "test"),
    batch_size: int = 64,
) -> dict[str, dict[str, float]]:
    """``{split: {"accuracy": ..., "f1_macro": ...}}`` for the given splits."""
    return evaluate_splits(data, splits, lambda rows: torch_logits(model, tokenizer, rows, max_length, batch_size))


def evaluate_splits(
    data: "SplitData", splits: tuple[str, ...], logits_of: Callable[[dict[str, list]], np.ndarray]
) -> dict[str, dict[str, float]]:
    """Accuracy and macro-F1 per split for any model, given a function from rows to logits."""
    results = {}
    for name in splits:
        split = data.split(name)
        logits = logits_of(split.to_dict())
        results[name] = classification_metrics(np.asarray(split["label"]), logits.argmax(axis=-1))
    return results
