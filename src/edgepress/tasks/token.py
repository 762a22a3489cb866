"""Token-classification data: sentences as word lists with one tag per word.

Sources: CoNLL files (``token<TAB>tag`` lines, data/files.py), JSONL or Parquet with a tokens list
and a tags list per row, and Hub datasets whose tags are a sequence of ClassLabel
(``tokens``/``ner_tags``, the Hub's convention; the ClassLabel order is kept). Every source ends as
examples with ``text`` (the words) and ``label`` (the tag names); stored with one tag id per word.
Pieces, alignment and entity metrics: tagging.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
import pandas as pd

from edgepress.errors import DataError
from edgepress.tasks import tagging
from edgepress.tasks.base import RawSplit, Task
from edgepress.tasks.tagging import check_tags

if TYPE_CHECKING:
    from edgepress.recipe.sections import DataSection

TAG_COLUMNS = ("tags", "ner_tags")  # tried in order when data.tags_column is not set


def tags_column(cfg: "DataSection", columns: list[str]) -> str:
    """The configured tags column, else the first of ``TAG_COLUMNS`` the source has."""
    if cfg.tags_column:
        return cfg.tags_column
    return next((c for c in TAG_COLUMNS if c in columns), TAG_COLUMNS[0])


class TokenClassification(Task):
    name = "token-classification"
    head = "ForTokenClassification"
    stratify = False  # a sentence holds many tags: a plain seeded split

    def check_source(self, split: RawSplit) -> None:
        if split.fmt == "builtin":
            raise DataError(f"{split.origin} is a text-classification corpus; token classification needs tagged sentences (data.source)")
        if split.fmt in ("csv", "tsv"):
            raise DataError(
                f"{split.origin}: token classification reads CoNLL (.conll), JSONL or Parquet files, not {Path(split.origin).suffix or split.fmt}"
            )

    def examples(self, split: RawSplit, cfg: "DataSection") -> pd.DataFrame:
        return _examples(split, cfg)

    def label_names(self, train: pd.DataFrame, split: RawSplit, cfg: "DataSection") -> list[str]:
        """Tag ids: a ClassLabel's own order; else sorted, as Transformers' run_ner does."""
        seen = {t for tags in train["label"] for t in tags}
        if len(seen) < 2:
            raise DataError(f"{split.origin}: every token has the tag {next(iter(seen))!r}; a tagger needs two or more tags")
        names = split.class_names.get(tags_column(cfg, list(split.frame.columns)))
        return list(names) if names else sorted(seen)

    def check_seen(self, frame: pd.DataFrame, labels: list[str], origin: str) -> None:
        known = set(labels)
        for tags, where in zip(frame["label"], frame["where"]):
            unseen = next((i for i, t in enumerate(tags) if t not in known), None)
            if unseen is not None:
                raise DataError(
                    f"{where.token(unseen)} has the tag {tags[unseen]!r}, which the training data never has "
                    f"(training tags: {', '.join(labels)}); fix the tag or add training sentences with it"
                )

    def columns(self, frame: pd.DataFrame, ids: dict[str, int]) -> dict[str, list]:
        return {"text": [list(map(str, words)) for words in frame["text"]], "label": [[ids[t] for t in tags] for tags in frame["label"]]}

    def trainer_metrics(self, labels: list[str], strict_entities: bool) -> Callable[[Any], dict[str, float]]:
        return tagging.trainer_metrics(labels, strict_entities)

    def scores(self, gold: list, predicted: np.ndarray, labels: list[str], strict_entities: bool) -> dict[str, float]:
        return tagging.score_words(gold, predicted, labels, strict_entities)


def _examples(split: RawSplit, cfg: "DataSection") -> pd.DataFrame:
    """``text`` (list of words) and ``label`` (list of tags) per sentence, checked row by row."""
    frame = split.frame
    if frame.empty:
        raise DataError(f"{split.origin} has no sentences; point the recipe at a file with examples")
    tags = tags_column(cfg, list(frame.columns))
    for role, column in (("tokens", cfg.tokens_column), ("tags", tags)):
        if column not in frame.columns:
            have = ", ".join(repr(str(c)) for c in frame.columns)
            raise DataError(
                f"{split.origin} has no column {column!r} for the {role}; its columns are {have}; set data.{role}_column "
                "(token classification reads CoNLL files, or JSONL/Parquet/Hub rows with a tokens list and a tags list)"
            )
    names = split.class_names.get(tags)
    if names:  # a Hub sequence of ClassLabel: ids to names
        frame = frame.assign(**{tags: [[names[int(i)] for i in row] for row in frame[tags]]})
    places = [Place(split.origin, row, line) for row, line in enumerate(frame["line"] if "line" in frame.columns else [None] * len(frame))]
    words = [_as_list(v, str(places[i]), "tokens") for i, v in enumerate(frame[cfg.tokens_column])]
    labels = [[str(t).strip() for t in _as_list(v, str(places[i]), "tags")] for i, v in enumerate(frame[tags])]
    for place, sentence, sentence_tags in zip(places, words, labels):
        _check_sentence(sentence, sentence_tags, place)
    return pd.DataFrame({"text": words, "label": labels, "where": places})


@dataclass(frozen=True)
class Place:
    """Where a sentence is, for messages: its first line in a CoNLL file, else its data row."""

    origin: str
    row: int
    line: Optional[int] = None

    def __str__(self) -> str:
        return f"{self.origin}: line {self.line}" if self.line else f"{self.origin}: data row {self.row + 1}"

    def token(self, i: int) -> str:
        """The i-th token: its own line in a CoNLL file (one token per line)."""
        return f"{self.origin}: line {self.line + i}" if self.line else f"{self} (token {i + 1})"


def _as_list(value: object, where: str, role: str) -> list:
    if hasattr(value, "tolist") and not isinstance(value, str):  # Parquet and the Hub give numpy arrays
        value = value.tolist()
    if value is None or (isinstance(value, float) and value != value):  # a JSONL row without the field
        raise DataError(f"{where} has no {role}; each row needs a list of {role}")
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{where}: the {role} are a {type(value).__name__}, not a list; each row needs a list of {role}")
    return list(value)


def _check_sentence(words: list, tags: list[str], where: Place) -> None:
    if not words:
        raise DataError(f"{where} has no tokens; drop empty sentences")
    if len(words) != len(tags):
        raise DataError(f"{where} has {len(words)} tokens but {len(tags)} tags; give exactly one tag per token")
    empty = next((i for i, w in enumerate(words) if not isinstance(w, str) or not w.strip()), None)
    if empty is not None:
        raise DataError(f"{where}: token {empty + 1} is empty or not a string; every token needs text")
    check_tags(tags, where.token)
