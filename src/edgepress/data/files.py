"""Reading one local data file (csv, tsv, jsonl, parquet, CoNLL) with errors that name the file and row."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd

from edgepress.errors import DataError
from edgepress.tasks.base import RawSplit

SUFFIX_FORMAT = {
    ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".conll": "conll", ".bio": "conll",
}  # fmt: skip


def read_table(path: Path, fmt: str = "auto", header: bool = True, tag_column: int = -1) -> RawSplit:
    """Read a file into a RawSplit; ``fmt='auto'`` picks the format from the extension.
    ``tag_column``: which whitespace-separated column of a CoNLL file holds the tag."""
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; check the path")
    fmt = _format_of(path, fmt)
    if fmt == "parquet":
        frame = _read_parquet(path)
    else:
        text = _decode(path)
        if not text.strip():
            raise DataError(f"data file {path} is empty; point the recipe at a file with examples")
        if fmt == "conll":
            frame = read_conll(path, text, tag_column)
        else:
            frame = _read_jsonl(path, text) if fmt == "jsonl" else _read_delimited(path, text, fmt, header)
    return RawSplit(frame, str(path), fmt)


def _format_of(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    try:
        return SUFFIX_FORMAT[path.suffix.lower()]
    except KeyError:
        raise DataError(
            f"cannot tell the format of {path} from its extension; rename it to one of "
            f"{', '.join(SUFFIX_FORMAT)} or set data.format"
        ) from None


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "re-save the file as UTF-8 (e.g. `iconv -f cp1252 -t utf-8`)"
        ) from None


def _read_delimited(path: Path, text: str, fmt: str, header: bool) -> pd.DataFrame:
    # TSV files in NLP (GLUE, SST-2) are unquoted: a quote character is part of the text.
    quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
    if header:
        _check_header(path, text, "\t" if fmt == "tsv" else ",", quoting)
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep="\t" if fmt == "tsv" else ",",
            header=0 if header else None,
            dtype=str,
            keep_default_na=False,
            quoting=quoting,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path} is not a valid {fmt.upper()} file: {str(exc).strip()}") from None
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _check_header(path: Path, text: str, sep: str, quoting: int) -> None:
    """pandas renames a repeated column (``text``, ``text.1``) and the recipe would read the first
    one without a word: a header that names a column twice is an error."""
    names = next(csv.reader(io.StringIO(text), delimiter=sep, quoting=quoting), [])
    for i, name in enumerate(names):
        if name in names[:i]:
            raise DataError(
                f"{path}: the header names the column {name!r} twice (columns {names.index(name) + 1} and {i + 1}); "
                "rename one, so that data.*_column can name the one to read"
            )


def _read_jsonl(path: Path, text: str) -> pd.DataFrame:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number} is not valid JSON ({exc.msg}); each line must be one JSON object") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number} is a JSON {type(record).__name__}, not an object with named fields")
        records.append(record)
    return pd.DataFrame.from_records(records)


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for damaged files
        raise DataError(f"{path} is not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    frame.columns = [str(c) for c in frame.columns]
    return frame


def read_conll(path: Path, text: str, tag_column: int = -1) -> pd.DataFrame:
    """CoNLL-style sentences: one token per line (``token<TAB>tag``, or more whitespace-separated
    columns as in CoNLL-2003), a blank line between sentences, ``-DOCSTART-`` lines skipped.
    Columns: ``tokens``, ``tags`` (lists) and ``line`` (where each sentence starts, for messages)."""
    sentences: list[dict] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.startswith("-DOCSTART-"):
            if tokens:
                sentences.append({"tokens": tokens, "tags": tags, "line": start})
            tokens, tags = [], []
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) < 2 or not -len(parts) <= tag_column < len(parts) or tag_column % len(parts) == 0:
            raise DataError(
                f"{path}: line {number} has {len(parts)} column(s) ({line[:60]!r}); a CoNLL line is token<TAB>tag "
                f"(the tag in column {tag_column} of data.conll_tag_column), with a blank line between sentences"
            )
        if not tokens:
            start = number
        tokens.append(parts[0].strip())
        tags.append(parts[tag_column].strip())
    if tokens:
        sentences.append({"tokens": tokens, "tags": tags, "line": start})
    if not sentences:
        raise DataError(f"{path} has no sentences; a CoNLL file has one token<TAB>tag per line")
    return pd.DataFrame.from_records(sentences)
