"""Vocabulary trimming: keep the token ids a task uses, drop the embedding rows of the rest.

A pre-trained WordPiece vocabulary has ~30k entries, most of which a given task never produces; their
embedding rows are most of a small student's parameters. We keep

- every id the task's training texts tokenize to (optionally only those seen ``min_count`` times),
- the special and added tokens,
- every single-character piece, with and without the ``##`` prefix, so any text can still be spelled,

then rebuild the fast tokenizer from the same ``tokenizers`` pipeline (normalizer, pre-tokenizer,
post-processor) with a smaller WordPiece vocabulary, and slice the embedding matrix with the same id map.

Why the training texts tokenize to the same pieces afterwards: WordPiece takes, at each position of a
word, the longest piece in the vocabulary. Every piece it chose on a training text is kept, and any longer
match would have been chosen before, so the choices are unchanged. A word never seen in training may
split into more, shorter pieces; it becomes ``[UNK]`` only where the original vocabulary lacks a
single-character piece for one of its characters.

No library does this for Hugging Face tokenizers (the ``tokenizers`` library can retrain a vocabulary,
which changes the pieces, not trim it), hence this module.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from edgepress.errors import RecipeError, StageError
from edgepress.models import tokenizer_spec, wordpiece_spec

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

PREFIX_KEY = "continuing_subword_prefix"


@dataclass
class Plan:
    """Which old ids survive, in their old order (the new id of ``keep[i]`` is ``i``), and why."""

    keep: list[int]
    seen: int
    special: int
    single_characters: int
    before: int

    def report(self, min_count: int) -> dict[str, int]:
        return {
            "before": self.before,
            "after": len(self.keep),
            "seen_in_training": self.seen,
            "special": self.special,
            "single_characters": self.single_characters,
            "min_count": min_count,
        }


def token_counts(tokenizer: "PreTrainedTokenizerFast", rows: dict[str, list], batch: int = 1000) -> Counter:
    """How often each id occurs when the texts (and text pairs) are tokenized in full, without truncation."""
    counts: Counter = Counter()
    for start in range(0, len(rows["text"]), batch):
        for column in ("text", "text_pair"):
            if column in rows:
                texts = rows[column][start : start + batch]
                # whole texts: every piece counts, even past the model's length (hence verbose=False)
                for ids in tokenizer(texts, add_special_tokens=False, verbose=False, is_split_into_words=_words(texts))["input_ids"]:
                    counts.update(ids)
    return counts


def plan(tokenizer: "PreTrainedTokenizerFast", counts: Counter, min_count: int = 1) -> Plan:
    """The ids to keep: seen at least ``min_count`` times, special, or a single character."""
    spec = wordpiece_spec(tokenizer, "vocabulary trimming", "prune.vocabulary.trim")
    prefix = spec["model"].get(PREFIX_KEY) or "##"
    vocab: dict[str, int] = spec["model"]["vocab"]
    seen = {i for i, n in counts.items() if n >= min_count}
    special = set(tokenizer.all_special_ids) | {int(t["id"]) for t in spec["added_tokens"]}
    single = {i for token, i in vocab.items() if len(token.removeprefix(prefix)) == 1}
    keep = sorted(seen | special | single)
    return Plan(keep, len(seen), len(special), len(single - seen - special), len(vocab))


def trimmed_tokenizer(tokenizer: "PreTrainedTokenizerFast", keep: list[int]) -> "PreTrainedTokenizerFast":
    """The same tokenizer class and settings over the kept ids, renumbered 0..len(keep)-1."""
    from tokenizers import Tokenizer

    new_id = {old: new for new, old in enumerate(keep)}
    spec = tokenizer_spec(tokenizer)
    spec["model"]["vocab"] = {t: new_id[i] for t, i in spec["model"]["vocab"].items() if i in new_id}
    for token in spec["added_tokens"]:
        token["id"] = new_id[token["id"]]
    _remap_post_processor(spec.get("post_processor"), new_id)
    if spec.get("padding"):
        spec["padding"]["pad_id"] = new_id[spec["padding"]["pad_id"]]
    backend = Tokenizer.from_str(json.dumps(spec))
    settings = {k: v for k, v in tokenizer.init_kwargs.items() if k not in _FILE_KEYS}
    return type(tokenizer)(tokenizer_object=backend, **settings)


_FILE_KEYS = {"vocab_file", "tokenizer_file", "merges_file", "name_or_path", "added_tokens_decoder", "tokenizer_object"}


def _remap_post_processor(processor: dict | None, new_id: dict[int, int]) -> None:
    """Special-token ids are spelled out in the post-processor (the [CLS] ... [SEP] template)."""
    if not processor:
        return
    kind = processor["type"]
    if kind == "Sequence":
        for step in processor["processors"]:
            _remap_post_processor(step, new_id)
    elif kind == "TemplateProcessing":
        for special in processor["special_tokens"].values():
            special["ids"] = [new_id[i] for i in special["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            processor[key][1] = new_id[processor[key][1]]
    elif kind != "ByteLevel":
        raise StageError(f"vocabulary trimming does not know the tokenizer post-processor {kind!r}; set prune.vocabulary.trim to false")


def slice_embeddings(model: "PreTrainedModel", keep: list[int]) -> None:
    """Keep the rows of ``keep`` in the word-embedding matrix (in that order) and renumber the config's ids."""
    import torch

    if model.get_output_embeddings() is not None:
        raise RecipeError("vocabulary trimming is for classifiers; this model has an output layer over the vocabulary (a language-model head)")
    old = model.get_input_embeddings()
    new = torch.nn.Embedding(len(keep), old.embedding_dim, padding_idx=None)
    new.weight.data = old.weight.data[torch.tensor(keep)].clone()
    new_id = {o: n for n, o in enumerate(keep)}
    if old.padding_idx is not None:
        new.padding_idx = new_id[old.padding_idx]
    model.set_input_embeddings(new)
    model.config.vocab_size = len(keep)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id"):
        value = getattr(model.config, key, None)
        if value is not None:
            setattr(model.config, key, new_id.get(value))


def check_same_tokens(before: "PreTrainedTokenizerFast", after: "PreTrainedTokenizerFast", texts: Iterable[str], batch: int = 1000) -> int:
    """The trimmed tokenizer must split ``texts`` into the same token strings; returns how many were compared."""
    texts = list(texts)
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        old = before(chunk, verbose=False, is_split_into_words=_words(chunk))["input_ids"]
        new = after(chunk, verbose=False, is_split_into_words=_words(chunk))["input_ids"]
        for text, a, b in zip(chunk, old, new):
            if before.convert_ids_to_tokens(a) != after.convert_ids_to_tokens(b):
                raise StageError(f"the trimmed tokenizer splits a training text differently ({str(text)[:60]!r}); this is a bug, please report it")
    return len(texts)


def _words(texts: list) -> bool:
    """Pre-split sentences (token classification): each word is tokenized on its own."""
    return bool(texts) and isinstance(texts[0], (list, tuple))
