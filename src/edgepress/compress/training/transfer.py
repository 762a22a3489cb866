"""The unlabelled part of a distillation's transfer set (``distill.transfer``).

Texts from a source (data/unlabelled.py) and the training rows ``data.max_train_samples`` left out
join the transfer set without labels: the teacher's cached outputs are their targets. A text
classification row gets the teacher's prediction as its hard label (as augmented copies do); a
sentence's words get no hard tag (ignored by the cross-entropy), the teacher's per-piece
distributions are what the student learns from there (XtremeDistil's soft targets).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from edgepress import distributed
from edgepress.data.unlabelled import read_unlabelled, select
from edgepress.errors import StageError
from edgepress.tasks.tagging import IGNORE

if TYPE_CHECKING:
    from edgepress.data.load import SplitData
    from edgepress.recipe.training import TransferSection, UnlabelledSource

log = logging.getLogger(__name__)

UNLABELLED = -1  # a text row's label until the teacher's prediction replaces it (distill.teacher_labels)


def add_transfer(
    rows: dict[str, list], cfg: "TransferSection", data: "SplitData", seed: int, where: str = "distill.transfer"
) -> tuple[dict[str, list], dict[str, Any]]:
    """``rows`` plus the transfer texts ``cfg`` (the recipe's ``where``) names, and what was read, dropped and kept."""
    if not cfg.on:
        return rows, {}
    kept, counts = gather_unlabelled(cfg, data, seed, where, already=pairs_of(rows))
    return (_extend(rows, kept, data), counts) if kept else (rows, counts)


def gather_unlabelled(
    cfg: "UnlabelledSource", data: "SplitData", seed: int, where: str, already: list[Any]
) -> tuple[list[Any], dict[str, Any]]:
    """The texts of ``cfg``'s source and of the training rows ``data.max_train_samples`` left out,
    without evaluation texts, the texts in ``already`` and repeats, and what was read, dropped and kept."""
    if cfg.source and data.has_pairs:
        raise StageError(
            f"{where}.source holds single texts, and this data's examples are sentence pairs; "
            f"use {where}.unused_train, or remove {where}.source"
        )
    candidates: list[Any] = []
    origins = []
    if cfg.source:
        texts, origin = distributed.computed_once(lambda: read_unlabelled(cfg.source, cfg.column, data.tokens, cfg.split, where))
        candidates += texts
        origins.append(origin)
    if cfg.unused_train:
        if not data.left_out:
            log.warning("%s.unused_train: data.max_train_samples leaves no training rows out; nothing added", where)
        else:
            candidates += pairs_of(data.left_out)
            origins.append("training rows left out by data.max_train_samples")
    if not candidates:  # unused_train alone, with nothing left out: the recipe still runs, as the warning says
        return [], {"sources": [], "read": 0, "kept": 0}
    exclude = [*pairs_of(data.validation.to_dict()), *pairs_of(data.test.to_dict()), *already]
    kept, counts = select(candidates, exclude, cfg.max_texts, seed)
    log.info(
        "%s: %d texts read from %s; %d kept (%d evaluation or training texts dropped, %d repeats, %d over the limit)",
        where, counts["read"], " and ".join(origins), counts["kept"], counts["evaluation_or_train"], counts["repeated"], counts["over_limit"],
    )  # fmt: skip
    if not kept:
        raise StageError(f"{where}: none of the {counts['read']} unlabelled texts is new (all are evaluation or training texts, or repeats)")
    return kept, {"sources": origins, **counts}


def pairs_of(columns: dict[str, list]) -> list[Any]:
    """A split's texts, as ``select`` compares them: the text, or a (text, pair) tuple for sentence pairs."""
    if "text_pair" in columns:
        return list(zip(columns["text"], columns["text_pair"]))
    return list(columns["text"])


def _extend(rows: dict[str, list], kept: list[Any], data: "SplitData") -> dict[str, list]:
    rows = {k: list(v) for k, v in rows.items()}
    if data.has_pairs:
        rows["text"] += [text for text, _ in kept]
        rows["text_pair"] += [pair for _, pair in kept]
    else:
        rows["text"] += kept
    rows["label"] += [[IGNORE] * len(t) for t in kept] if data.tokens else [UNLABELLED] * len(kept)
    return rows
