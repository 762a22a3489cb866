"""Datasets for text and token classification: local files, Hub ids and the builtin BBC News corpus.

Every source ends as three ``datasets.Dataset`` splits with the columns ``text`` (and
``text_pair`` for sentence pairs) and ``label`` (an int id), plus the ordered label names. For
token classification (data_tokens.py) ``text`` holds each sentence's words and ``label`` one tag id
per word.
Files are read here rather than through ``datasets.load_dataset("csv")`` so that a bad row can
be reported by file and row number; Hub ids and dataset-repo folders go through ``datasets``
(data_sources.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from edgepress import data_tokens
from edgepress.data_files import SUFFIX_FORMAT, RawSplit, read_table
from edgepress.data_sources import SPLIT_ALIASES, read_builtin, read_hub
from edgepress.errors import DataError
from edgepress.sections import DataSection

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class SplitData:
    train: "datasets.Dataset"
    validation: "datasets.Dataset"
    test: "datasets.Dataset"
    labels: list[str]  # index = label id
    fingerprint: str  # sha256 of the prepared splits: a change in data re-runs the stages
    task: str = "text-classification"  # or "token-classification"
    label_all_pieces: bool = False  # token classification: every piece of a word carries its tag in training
    strict_entities: bool = True  # token classification: seqeval's strict IOB2 entity matching

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}

    @property
    def tokens(self) -> bool:
        """True for token classification."""
        return self.task == "token-classification"

    @property
    def has_pairs(self) -> bool:
        return "text_pair" in self.train.column_names

    def split(self, name: str) -> "datasets.Dataset":
        return getattr(self, name)

    def describe(self) -> str:
        sizes = " / ".join(f"{len(self.split(s))} {s}" for s in SPLITS)
        return f"{sizes}; {len(self.labels)} labels: {', '.join(self.labels[:8])}" + (
            ", ..." if len(self.labels) > 8 else ""
        )


# --------------------------------------------------------------------------- entry point


def load_data(cfg: DataSection, task: str = "text-classification") -> SplitData:
    """Read the configured source, check it, split it, and return the prepared splits."""
    tokens = task == "token-classification"
    raw = read_splits(cfg, tokens)
    if tokens:
        frames = {name: data_tokens.normalize(split, cfg) for name, split in raw.items()}
        labels = data_tokens.tag_names(frames["train"], raw["train"])
    else:
        frames = {name: _normalize(split, cfg) for name, split in raw.items()}
        labels = _label_names(frames["train"], raw["train"])
    for name in ("validation", "test"):
        if name in frames:
            check = data_tokens.check_seen if tokens else _check_labels_seen
            check(frames[name], labels, raw[name].origin)
    frames = _split_missing(frames, cfg, stratify=not tokens)
    if cfg.max_train_samples and len(frames["train"]) > cfg.max_train_samples:
        frames["train"] = frames["train"].sample(n=cfg.max_train_samples, random_state=cfg.split_seed)
    data = _to_split_data(frames, labels)
    if tokens:
        strict = cfg.entity_matching == "strict"
        data = replace(data, task=task, label_all_pieces=cfg.label_all_pieces, strict_entities=strict)
    return data


def read_splits(cfg: DataSection, tokens: bool = False) -> dict[str, RawSplit]:
    """Raw splits from whichever source the section names; 'train' is always present."""
    if cfg.train_file:
        return {split: _read_file(Path(f).expanduser(), cfg, tokens) for split, f in _explicit_files(cfg).items()}
    if cfg.source.startswith("builtin:"):
        if tokens:
            raise DataError(f"{cfg.source} is a text-classification corpus; token classification needs tagged sentences (data.source)")
        return {"train": read_builtin(cfg.source.removeprefix("builtin:"))}
    path = Path(cfg.source).expanduser()
    if path.is_file():
        return {"train": _read_file(path, cfg, tokens)}
    if path.is_dir() and _split_files(path):
        return {split: _read_file(file, cfg, tokens) for split, file in _split_files(path).items()}
    if path.is_dir() or not _looks_like_path(cfg.source):
        return read_hub(cfg, tokens)
    raise DataError(f"data file {cfg.source} does not exist; check the path (relative paths start at the current folder)")


def _explicit_files(cfg: DataSection) -> dict[str, str]:
    files = {"train": cfg.train_file, "validation": cfg.validation_file, "test": cfg.test_file}
    return {split: f for split, f in files.items() if f}


def _read_file(path: Path, cfg: DataSection, tokens: bool) -> RawSplit:
    split = read_table(path, cfg.format, cfg.header, cfg.conll_tag_column)
    conll = "line" in split.frame.columns and "tokens" in split.frame.columns
    if conll and not tokens:
        raise DataError(f"{path} is a CoNLL file of tagged tokens; set task: token-classification in the recipe")
    delimited = cfg.format in ("csv", "tsv") or (cfg.format == "auto" and path.suffix.lower() in (".csv", ".tsv"))
    if tokens and delimited:
        raise DataError(f"{path}: token classification reads CoNLL (.conll), JSONL or Parquet files, not {path.suffix or cfg.format}")
    return split


def _split_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for split, stems in SPLIT_ALIASES.items():
        for stem in stems:
            hits = [folder / f"{stem}{suffix}" for suffix in SUFFIX_FORMAT if (folder / f"{stem}{suffix}").is_file()]
            if hits:
                found[split] = hits[0]
                break
    return found if "train" in found else {}


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or Path(source).suffix.lower() in SUFFIX_FORMAT


# --------------------------------------------------------------------------- checks and labels


def _normalize(split: RawSplit, cfg: DataSection) -> pd.DataFrame:
    """Keep the configured columns under canonical names, and refuse empty texts or labels."""
    frame = split.frame
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


def _label_names(train: pd.DataFrame, raw: RawSplit) -> list[str]:
    """Label ids: a ClassLabel's own order (so that a checkpoint trained on the dataset keeps its
    head), else integer labels by value and other names alphabetically."""
    names = set(train["label"])
    if len(names) < 2:
        raise DataError(f"{raw.origin}: every training example has the label {next(iter(names))!r}; a classifier needs two or more")
    if raw.label_names:
        return [_label_text(n) for n in raw.label_names]
    if all(_is_int(n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _check_labels_seen(frame: pd.DataFrame, labels: list[str], origin: str) -> None:
    known = set(labels)
    for i, label in enumerate(frame["label"]):
        if label not in known:
            raise DataError(
                f"{origin}: data row {i + 1} has the label {label!r}, which the training data never has "
                f"(training labels: {', '.join(labels)}); fix the label or add training examples for it"
            )


# --------------------------------------------------------------------------- splitting


def _split_missing(frames: dict[str, pd.DataFrame], cfg: DataSection, stratify: bool = True) -> dict[str, pd.DataFrame]:
    """Split test, then validation, off the training data when the source lacks them (stratified by
    label for text classification; a plain seeded split of sentences for token classification)."""
    frames = dict(frames)
    had_test = "test" in frames
    if not had_test:
        frames["train"], frames["test"] = _stratified_split(frames["train"], cfg.test_size, cfg.split_seed, stratify)
    if "validation" not in frames:
        # validation_size is a fraction of all the data the source gave for training.
        fraction = cfg.validation_size if had_test else cfg.validation_size / (1 - cfg.test_size)
        frames["train"], frames["validation"] = _stratified_split(frames["train"], fraction, cfg.split_seed, stratify)
    return frames


def _stratified_split(frame: pd.DataFrame, fraction: float, seed: int, stratify: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    if len(frame) < 4:
        raise DataError(f"only {len(frame)} training examples; splitting off validation/test data needs more")
    if not stratify:
        keep, held = train_test_split(frame, test_size=fraction, random_state=seed)
        return keep, held
    try:
        keep, held = train_test_split(frame, test_size=fraction, random_state=seed, stratify=frame["label"])
    except ValueError:
        # A label with a single example cannot be stratified; a plain seeded split still works.
        log.warning("some label has too few examples for a stratified split; splitting without stratification")
        keep, held = train_test_split(frame, test_size=fraction, random_state=seed)
    return keep, held


def _to_split_data(frames: dict[str, pd.DataFrame], labels: list[str]) -> SplitData:
    import datasets

    ids = {name: i for i, name in enumerate(labels)}
    digest = hashlib.sha256(json.dumps(labels).encode())
    splits = {}
    for name in SPLITS:
        frame = frames[name]
        if "where" in frame.columns:  # token classification: word lists and a tag id per word
            columns = {"text": [list(map(str, words)) for words in frame["text"]], "label": [[ids[t] for t in tags] for tags in frame["label"]]}
        else:
            columns = {c: frame[c].astype(str).tolist() for c in frame.columns if c != "label"}
            columns["label"] = [ids[v] for v in frame["label"]]
        digest.update(json.dumps({name: columns}, sort_keys=True).encode())
        splits[name] = datasets.Dataset.from_dict(columns)
    return SplitData(**splits, labels=labels, fingerprint=digest.hexdigest())
