"""Token classification (NER and other sequence labelling): tags on words, models on pieces.

A token-classification split holds, per sentence, its words in ``text`` (a list of strings) and one
tag id per word in ``label``. The tokenizer splits words into pieces; the usual alignment
(Hugging Face's ``run_ner``) gives each word's tag to its first piece and ``-100`` (ignored by the
loss and the metrics) to the others and to special tokens, or, with ``label_all_pieces``, the tag to
every piece. Predictions are read back per word from its first piece. A word past the truncation
limit has no piece: it gets no logits (NaN here) and is scored as predicted ``O``.

Metrics are seqeval's entity-level precision, recall and F1 (micro-averaged; strict IOB2 matching by
default, as the CoNLL and WNUT shared tasks score) and the share of words tagged right.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    from transformers import BatchEncoding, PreTrainedTokenizerBase

IGNORE = -100  # the label PyTorch's cross-entropy and the Trainer skip
OUTSIDE = "O"


def is_words(rows: dict[str, list]) -> bool:
    """True when ``rows`` hold pre-split sentences (token classification) rather than texts."""
    texts = rows.get("text") or []
    return len(texts) > 0 and isinstance(texts[0], (list, tuple))


def align(word_ids: Sequence[int | None], word_tags: Sequence[int], label_all_pieces: bool = False) -> list[int]:
    """Piece labels for one sentence: the word's tag on its first piece (every piece with
    ``label_all_pieces``), ``IGNORE`` on the other pieces and on special tokens."""
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(IGNORE)
        elif word != previous or label_all_pieces:
            labels.append(int(word_tags[word]))
        else:
            labels.append(IGNORE)
        previous = word
    return labels


def encode_labelled(
    tokenizer: "PreTrainedTokenizerBase", rows: dict[str, list], max_length: int, label_all_pieces: bool = False, **kwargs: Any
) -> "BatchEncoding":
    """Tokenize pre-split sentences and add aligned ``labels`` (unpadded lists, or padded with
    ``IGNORE`` to the batch's width when ``padding`` is asked for)."""
    encoded = tokenizer(rows["text"], is_split_into_words=True, truncation=True, max_length=max_length, **kwargs)
    labels = [align(encoded.word_ids(i), tags, label_all_pieces) for i, tags in enumerate(rows["label"])]
    if kwargs.get("padding"):
        width = max(len(ids) for ids in encoded["input_ids"])
        labels = [row + [IGNORE] * (width - len(row)) for row in labels]
    encoded["labels"] = labels
    return encoded


def first_piece_logits(encoded: "BatchEncoding", piece_logits: np.ndarray, word_counts: Sequence[int]) -> list[np.ndarray]:
    """Per sentence, ``[words, tags]`` logits read from each word's first piece; NaN for words the
    truncation cut off."""
    out = []
    for i, count in enumerate(word_counts):
        words = np.full((count, piece_logits.shape[-1]), np.nan, dtype=np.float32)
        seen: set[int] = set()
        for position, word in enumerate(encoded.word_ids(i)):
            if word is not None and word not in seen:
                seen.add(word)
                words[word] = piece_logits[i, position]
        out.append(words)
    return out


def stack(per_sentence: list[np.ndarray]) -> np.ndarray:
    """``[sentences, longest sentence, tags]``, NaN where a sentence has no such word."""
    width = max((len(a) for a in per_sentence), default=0)
    tags = per_sentence[0].shape[-1] if per_sentence else 0
    out = np.full((len(per_sentence), width, tags), np.nan, dtype=np.float32)
    for i, words in enumerate(per_sentence):
        out[i, : len(words)] = words
    return out


def word_predictions(word_logits: np.ndarray) -> np.ndarray:
    """Tag ids per word, ``-1`` where the word has no logits (cut off, or past the sentence's end)."""
    missing = np.isnan(word_logits).any(axis=-1)
    return np.where(missing, -1, np.nan_to_num(word_logits, nan=-np.inf).argmax(axis=-1))


def entity_metrics(true_tags: list[list[str]], predicted_tags: list[list[str]], strict: bool = True) -> dict[str, float]:
    """Entity-level precision, recall, F1 (seqeval, micro-averaged) and word accuracy."""
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    mode = {"mode": "strict", "scheme": IOB2} if strict else {}
    return {
        "f1": float(f1_score(true_tags, predicted_tags, zero_division=0, **mode)),
        "precision": float(precision_score(true_tags, predicted_tags, zero_division=0, **mode)),
        "recall": float(recall_score(true_tags, predicted_tags, zero_division=0, **mode)),
        "accuracy": float(accuracy_score(true_tags, predicted_tags)),
    }


def score_words(labels: list[list[int]], predictions: np.ndarray, names: list[str], strict: bool = True) -> dict[str, float]:
    """``entity_metrics`` of word predictions (``word_predictions``) against the gold tag ids."""
    def tag(i: int) -> str:
        return names[i] if i >= 0 else OUTSIDE

    true = [[names[t] for t in row] for row in labels]
    predicted = [[tag(int(p)) for p in predictions[i, : len(row)]] for i, row in enumerate(labels)]
    return entity_metrics(true, predicted, strict)


def trainer_metrics(names: list[str], strict: bool = True) -> Callable[[Any], dict[str, float]]:
    """``compute_metrics`` for the Trainer: pieces labelled ``IGNORE`` (not a word's first piece,
    padding) are left out, so each word counts once. Words cut by truncation are not in it."""
    def compute(eval_pred: Any) -> dict[str, float]:
        logits, labels = eval_pred
        predictions = np.asarray(logits).argmax(axis=-1)
        true, predicted = [], []
        for row_pred, row_labels in zip(predictions, np.asarray(labels)):
            keep = row_labels != IGNORE
            true.append([names[t] for t in row_labels[keep]])
            predicted.append([names[p] for p in row_pred[keep]])
        return entity_metrics(true, predicted, strict)

    return compute


def check_tags(tags: Sequence[str], where: Callable[[int], str]) -> None:
    """Refuse a tag that is not ``O``, ``B-<type>`` or ``I-<type>``: strict entity matching needs IOB2."""
    from edgepress.errors import DataError

    for i, tag in enumerate(tags):
        if tag != OUTSIDE and not (len(tag) > 2 and tag[:2] in ("B-", "I-")):
            raise DataError(
                f"{where(i)} has the tag {tag!r}, which is not O, B-<type> or I-<type>; "
                "entity metrics read IOB2 tags: convert the file's tags (e.g. PER -> B-PER/I-PER)"
            )
