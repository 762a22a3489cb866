"""Turning text splits into model inputs, the same way for training, evaluation and export."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase


def encode(tokenizer: "PreTrainedTokenizerBase", rows: dict[str, list], max_length: int, **kwargs: Any):
    """Tokenize a batch of rows (``text`` and optional ``text_pair``), truncating to ``max_length``."""
    pair = rows.get("text_pair")
    return tokenizer(rows["text"], pair, truncation=True, max_length=max_length, **kwargs)


def text_slice(rows: dict[str, list], start: int, stop: int) -> dict[str, list]:
    """Rows ``start`` to ``stop`` of the text columns (``text``, optional ``text_pair``): what ``encode`` reads."""
    return {k: rows[k][start:stop] for k in ("text", "text_pair") if k in rows}


def tokenize_split(
    split: "datasets.Dataset", tokenizer: "PreTrainedTokenizerBase", max_length: int
) -> "datasets.Dataset":
    """Token ids for a split, unpadded: the collator pads each batch to its own longest row."""
    text_columns = [c for c in ("text", "text_pair") if c in split.column_names]
    return split.map(
        lambda rows: encode(tokenizer, rows, max_length),
        batched=True,
        remove_columns=text_columns,
        desc="tokenizing",
    )
