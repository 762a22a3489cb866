"""Loading a recipe's data, one way: source -> raw rows (sources.py) -> the task's examples
(tasks/) -> splits and the label map.

Every source ends as three ``datasets.Dataset`` splits with the columns ``text`` (and
``text_pair`` for sentence pairs) and ``label`` (an int id), plus the ordered label names. For
token classification ``text`` holds each sentence's words and ``label`` one tag id per word.
Files are read by files.py rather than through ``datasets.load_dataset("csv")`` so that a bad row
can be reported by file and row number; Hub ids and dataset-repo folders go through ``datasets``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import pandas as pd

from edgepress.data.sources import read_splits
from edgepress.errors import DataError
from edgepress.recipe.sections import DataSection
from edgepress.tasks import Task, get_task

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
    # the training rows data.max_train_samples left out, labels dropped (columns text, text_pair)
    left_out: dict[str, list] = field(default_factory=dict)

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
    """Read the configured source once, let the task turn its rows into examples, check them,
    split them, and return the prepared splits."""
    handler = get_task(task)
    raw = read_splits(cfg)
    for split in raw.values():
        handler.check_source(split)
    frames = {name: handler.examples(split, cfg) for name, split in raw.items()}
    frames = {name: frame for name, frame in frames.items() if frame is not None}
    if "train" not in frames:
        raise DataError(f"dataset {cfg.source!r} has no labelled train split (its train labels are hidden)")
    labels = handler.label_names(frames["train"], raw["train"], cfg)
    for name in ("validation", "test"):
        if name in frames:
            handler.check_seen(frames[name], labels, raw[name].origin)
    frames = _split_missing(frames, cfg, stratify=handler.stratify)
    left_out = None
    if cfg.max_train_samples and len(frames["train"]) > cfg.max_train_samples:
        train = frames["train"].reset_index(drop=True)
        frames["train"] = train.sample(n=cfg.max_train_samples, random_state=cfg.split_seed)
        left_out = train.drop(frames["train"].index)
    handler.check_splits(frames, raw["train"].origin)
    data = _to_split_data(frames, labels, handler)
    if left_out is not None:
        columns = handler.columns(left_out, data.label2id)
        data = replace(data, left_out={k: v for k, v in columns.items() if k != "label"})
    if task == "token-classification":
        strict = cfg.entity_matching == "strict"
        data = replace(data, task=task, label_all_pieces=cfg.label_all_pieces, strict_entities=strict)
    return data


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


def _to_split_data(frames: dict[str, pd.DataFrame], labels: list[str], handler: Task) -> SplitData:
    import datasets

    ids = {name: i for i, name in enumerate(labels)}
    digest = hashlib.sha256(json.dumps(labels).encode())
    splits = {}
    for name in SPLITS:
        columns = handler.columns(frames[name], ids)
        digest.update(json.dumps({name: columns}, sort_keys=True).encode())
        splits[name] = datasets.Dataset.from_dict(columns)
    return SplitData(**splits, labels=labels, fingerprint=digest.hexdigest())
