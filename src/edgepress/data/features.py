"""Turning splits into model inputs, the same way for training, evaluation and export.

Texts (``text``, optional ``text_pair``) are tokenized as they are; pre-split sentences (token
classification, see tasks/tagging.py) with ``is_split_into_words``, each word's pieces in order."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgepress.tasks.tagging import encode_labelled, is_words

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase


def encode(tokenizer: "PreTrainedTokenizerBase", rows: dict[str, list], max_length: int, **kwargs: Any):
    """Tokenize a batch of rows (``text`` and optional ``text_pair``), truncating to ``max_length``."""
    if is_words(rows):
        return tokenizer(rows["text"], is_split_into_words=True, truncation=True, max_length=max_length, **kwargs)
    pair = rows.get("text_pair")
    return tokenizer(rows["text"], pair, truncation=True, max_length=max_length, **kwargs)


def text_slice(rows: dict[str, list], start: int, stop: int) -> dict[str, list]:
    """Rows ``start`` to ``stop`` of the text columns (``text``, optional ``text_pair``): what ``encode`` reads."""
    return {k: rows[k][start:stop] for k in ("text", "text_pair") if k in rows}


def tokenize_split(
    split: "datasets.Dataset", tokenizer: "PreTrainedTokenizerBase", max_length: int, label_all_pieces: bool = False
) -> "datasets.Dataset":
    """Token ids for a split, unpadded: the collator pads each batch to its own longest row. Tagged
    sentences get ``labels`` aligned to their pieces (``label_all_pieces``: on every piece)."""
    if is_words(split[:1]):
        return split.map(
            lambda rows: encode_labelled(tokenizer, rows, max_length, label_all_pieces),
            batched=True,
            remove_columns=["text", "label"],
            desc="tokenizing",
        )
    text_columns = [c for c in ("text", "text_pair") if c in split.column_names]
    return split.map(
        lambda rows: encode(tokenizer, rows, max_length),
        batched=True,
        remove_columns=text_columns,
        desc="tokenizing",
    )


def collator(tokenizer: "PreTrainedTokenizerBase", split: "datasets.Dataset") -> Any:
    """Pads each batch; for tagged sentences the labels too (with the ignored label, -100)."""
    from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

    if "labels" in split.column_names:
        return DataCollatorForTokenClassification(tokenizer)
    return DataCollatorWithPadding(tokenizer)
