"""Token-classification data: sentences as word lists with one tag per word.

Sources: CoNLL files (``token<TAB>tag`` lines, data_files.read_conll), JSONL or Parquet with a
tokens list and a tags list per row, and Hub datasets whose tags are a sequence of ClassLabel
(``tokens``/``ner_tags``, the Hub's convention; the ClassLabel order is kept). Every source ends as
a frame with ``text`` (the words) and ``label`` (the tag names); data.py turns names into ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import pandas as pd

from edgepress.data_files import RawSplit
from edgepress.errors import DataError
from edgepress.tokens import check_tags

if TYPE_CHECKING:
    import datasets

    from edgepress.sections import DataSection

TAG_COLUMNS = ("tags", "ner_tags")  # tried in order when data.tags_column is not set


def tags_column(cfg: "DataSection", columns: list[str]) -> str:
    """The configured tags column, else the first of ``TAG_COLUMNS`` the source has."""
    if cfg.tags_column:
        return cfg.tags_column
    return next((c for c in TAG_COLUMNS if c in columns), TAG_COLUMNS[0])


def normalize(split: RawSplit, cfg: "DataSection") -> pd.DataFrame:
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


def tag_names(train: pd.DataFrame, raw: RawSplit) -> list[str]:
    """Tag ids: a ClassLabel's own order; else sorted, as Transformers' run_ner does."""
    seen = {t for tags in train["label"] for t in tags}
    if len(seen) < 2:
        raise DataError(f"{raw.origin}: every token has the tag {next(iter(seen))!r}; a tagger needs two or more tags")
    if raw.label_names:
        return list(raw.label_names)
    return sorted(seen)


def check_seen(frame: pd.DataFrame, names: list[str], origin: str) -> None:
    known = set(names)
    for tags, where in zip(frame["label"], frame["where"]):
        unseen = next((i for i, t in enumerate(tags) if t not in known), None)
        if unseen is not None:
            raise DataError(
                f"{where.token(unseen)} has the tag {tags[unseen]!r}, which the training data never has "
                f"(training tags: {', '.join(names)}); fix the tag or add training sentences with it"
            )


def hub_frame(ds: "datasets.Dataset", cfg: "DataSection") -> tuple[pd.DataFrame, Optional[list[str]]]:
    """A Hub split with its tag ids turned into names (a sequence of ClassLabel) and those names in order."""
    column = tags_column(cfg, list(ds.column_names))
    frame = ds.to_pandas()
    feature = getattr(ds.features.get(column), "feature", None)
    names = list(getattr(feature, "names", None) or []) or None
    if names and column in frame:
        frame[column] = [[names[int(i)] for i in row] for row in frame[column]]
    return frame, names
