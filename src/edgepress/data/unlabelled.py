"""Unlabelled text: a transfer set the teacher labels (``distill.transfer``, ``prune.transfer``).

A source is a file (``.txt``: one text per line; csv, tsv, jsonl, parquet: a column; CoNLL: its
words), a folder of such files, or a Hub dataset id (a dataset-repo folder too). For token
classification each text is a sentence split into words the way the task's data is: a list column
as it is, a string split on whitespace. Evaluation texts never enter the set (XtremeDistil and
TinyBERT both distil on text disjoint from what they report on), nor do repeats.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Union

from edgepress.data.files import SUFFIX_FORMAT, read_table
from edgepress.data.sources import looks_like_path
from edgepress.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

Text = Union[str, list[str]]  # a text, or a sentence's words
TEXT_SUFFIXES = (".txt", ".text")


def read_unlabelled(source: str, column: str, words: bool, split: str = "train", where: str = "distill.transfer") -> tuple[list[Text], str]:
    """Every text of ``source`` (see the module docstring), and a description for the run log.
    ``where``: the recipe section that names the source, for messages."""
    path = Path(source).expanduser()
    if path.is_file():
        texts = _read_file(path, column, words, where)
    elif path.is_dir() and (files := _text_files(path)):
        texts = [t for file in files for t in _read_file(file, column, words, where)]
    elif path.is_dir() or not looks_like_path(source, (*TEXT_SUFFIXES, *SUFFIX_FORMAT)):
        texts = _read_hub(source, column, words, split, where)
    else:
        raise DataError(f"unlabelled text {source} does not exist; check {where}.source (a file, folder or Hub dataset id)")
    texts = [t for t in texts if (t if words else t.strip())]
    if not texts:
        raise DataError(f"unlabelled text {source} has no texts; point {where}.source at unlabelled text, one per line")
    return texts, source


def select(texts: Iterable[Any], exclude: Iterable[Any], limit: int, seed: int) -> tuple[list[Any], dict[str, int]]:
    """``texts`` (texts, word lists, or (text, pair) tuples) without repeats and without any text of ``exclude`` (the evaluation splits and the
    training texts already in the set), then at most ``limit`` of them, a seeded sample."""
    import random

    banned = {_key(t) for t in exclude}
    kept, seen, counts = [], set(), {"read": 0, "evaluation_or_train": 0, "repeated": 0}
    for text in texts:
        counts["read"] += 1
        key = _key(text)
        if key in banned:
            counts["evaluation_or_train"] += 1
        elif key in seen:
            counts["repeated"] += 1
        else:
            seen.add(key)
            kept.append(text)
    counts["over_limit"] = max(0, len(kept) - limit)
    if len(kept) > limit:
        kept = random.Random(seed).sample(kept, limit)
    counts["kept"] = len(kept)
    return kept, counts


def fingerprint(source: str) -> str:
    """What a stage's fingerprint needs of a local source (so that editing the file re-runs it):
    the files' names, sizes and a hash of their bytes. A Hub id is its own fingerprint."""
    path = Path(source).expanduser()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    if not files:
        return source
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(path) if path.is_dir() else file.name}:{file.stat().st_size}".encode())
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()[:20]


def _key(text: Text | tuple[str, str]) -> str:
    """What two texts share when they are the same text: their words, case folded (a sentence pair: both)."""
    if isinstance(text, tuple):
        return "\t".join(_key(part) for part in text)
    words = text if isinstance(text, list) else text.split()
    return " ".join(words).casefold()


def _read_file(path: Path, column: str, words: bool, where: str) -> list[Text]:
    if path.suffix.lower() in TEXT_SUFFIXES:
        lines = _decode(path).splitlines()
        return [line.split() for line in lines] if words else lines
    frame = read_table(path).frame
    return _column(frame, "tokens" if "tokens" in frame and SUFFIX_FORMAT.get(path.suffix.lower()) == "conll" else column, str(path), words, where)


def _decode(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"unlabelled text {path} is not valid UTF-8 ({exc.reason} at byte {exc.start}); re-save it as UTF-8") from None
    except OSError as exc:
        raise DataError(f"cannot read unlabelled text {path}: {exc.strerror}; check its permissions") from None


def _column(frame: "pd.DataFrame", column: str, origin: str, words: bool, where: str) -> list[Text]:
    if column not in frame:
        raise DataError(
            f"{origin} has no column {column!r} (columns: {', '.join(map(str, frame.columns))}); "
            f"set {where}.column to the column with the texts"
        )
    values = frame[column].tolist()
    if not words:
        return [str(v) for v in values if v is not None]
    return [list(map(str, v)) if not isinstance(v, str) else v.split() for v in values if v is not None]


def _text_files(folder: Path) -> list[Path]:
    suffixes = (*TEXT_SUFFIXES, *SUFFIX_FORMAT)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."))


def _read_hub(source: str, column: str, words: bool, split: str, where: str) -> list[Text]:
    import datasets

    try:
        dataset = datasets.load_dataset(source, split=split)
    except Exception as exc:  # datasets raises many types (FileNotFound, DatasetNotFound, ValueError for a split, ...)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"could not load unlabelled text {source!r} (split {split}): {first}. A local path must exist; "
            "a Hub id needs the network (or a filled HF cache when offline)"
        ) from exc
    return _column(dataset.to_pandas(), column, f"{source} (split {split})", words, where)

