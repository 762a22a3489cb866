"""What every task answers, and the raw rows it reads.

A data source (data/) reads a file, folder, Hub dataset or the builtin corpus into ``RawSplit``
rows once, knowing nothing of tasks. The task then turns each split's rows into its examples
(canonical ``text`` and ``label`` columns), names the labels, and says how a split is divided and
stored. Stages ask the task what kind of model head serves it. A new task (extractive question
answering is planned) is a new module beside ``text.py`` and ``token.py``, not a branch in each stage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    import pandas as pd

    from edgepress.recipe.sections import DataSection


@dataclass(frozen=True)
class RawSplit:
    """A split as read, before the task looks at it; ``origin`` names it in error messages."""

    frame: "pd.DataFrame"
    origin: str
    fmt: str = ""  # the file format read (csv, tsv, jsonl, parquet, conll), "builtin" or "hub"
    # Hub ClassLabel names per column, in the dataset's id order (a sequence of ClassLabel too);
    # the column still holds the ids
    class_names: dict[str, list[str]] = field(default_factory=dict)


class Task(ABC):
    name: str
    head: str  # the Transformers architecture suffix, e.g. "ForSequenceClassification"
    stratify: bool  # split off missing validation/test data stratified by label

    @abstractmethod
    def check_source(self, split: RawSplit) -> None:
        """Refuse, with the fix, a source this task cannot read (a CoNLL file for texts, say)."""

    @abstractmethod
    def examples(self, split: RawSplit, cfg: "DataSection") -> Optional["pd.DataFrame"]:
        """The split's examples under canonical columns, checked row by row; None for a split
        without usable labels (a Hub test split whose labels are hidden)."""

    @abstractmethod
    def label_names(self, train: "pd.DataFrame", split: RawSplit, cfg: "DataSection") -> list[str]:
        """The ordered label names (index = label id), from the training examples."""

    @abstractmethod
    def check_seen(self, frame: "pd.DataFrame", labels: list[str], origin: str) -> None:
        """Every label of a validation or test split occurs in training."""

    def check_splits(self, frames: dict[str, "pd.DataFrame"], origin: str) -> None:
        """After validation and test were split off the training data: refuse splits that cannot
        be scored (none by default)."""

    @abstractmethod
    def columns(self, frame: "pd.DataFrame", ids: dict[str, int]) -> dict[str, list]:
        """The columns stored in the prepared ``datasets.Dataset``, labels as ids."""

    @abstractmethod
    def trainer_metrics(self, labels: list[str], strict_entities: bool) -> Callable[[Any], dict[str, float]]:
        """The Trainer's ``compute_metrics`` for this task."""

    @abstractmethod
    def scores(self, gold: list, predicted: Any, labels: list[str], strict_entities: bool) -> dict[str, float]:
        """The task's metrics of predicted label ids (``metrics.predictions_of``) against the gold ids."""

    def auto_class(self) -> Any:
        import transformers

        return getattr(transformers, f"AutoModel{self.head}")
