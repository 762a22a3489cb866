"""Stopping a trial that cannot meet the search's limits before it spends its training time.

Optuna's pruners read intermediate values, which only single-objective studies report; in a
multi-objective study a trial stops by raising ``optuna.TrialPruned``, recorded as PRUNED. Two checks:

- before any stage: the probe (probe.py) times the trial's architecture, untrained; a trial whose
  architecture is already slower than the latency limit (``max_latency_ms``, or ``max_latency_ratio``
  of the reference's) by more than ``probe_margin`` stops. The
  result is kept in the study per architecture, so trials that differ only in training values reuse it.
- after each stage but the last: a validation accuracy below the floor (``min_accuracy``, or the
  reference's minus ``max_accuracy_drop`` points) stops the trial, on the premise that the stages
  after it (distillation, pruning, int8) lose accuracy rather than gain it. ``stop_early: false``
  turns both checks off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edgepress.recipe.loading import Recipe

if TYPE_CHECKING:
    import optuna

    from edgepress.running.pipeline import StageOutcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EarlyStop:
    max_latency_ms: float | None  # with a timer: probe architectures against it
    floor: float | None  # validation score (``floor_metric``) every stage before the last must reach
    margin: float = 0.05  # the probe's latency must exceed the limit by this fraction to stop a trial
    timer: Callable[[Path], float] | None = None
    max_latency_ratio: float | None = None  # the same limit as a fraction of the reference's latency
    floor_metric: str = "accuracy"  # or "f1", entity F1, for token classification

    def check_architecture(self, trial: "optuna.Trial", recipe: Recipe) -> None:
        """Stop the trial when its untrained architecture is already over the latency limit."""
        limit = self._latency_limit()
        if limit is None:
            return
        key = f"probe:{architecture_key(recipe)}"
        attrs = trial.study.user_attrs
        measured = attrs[key] if key in attrs else self._probe(recipe)
        if key not in attrs and measured is not None:
            trial.study.set_user_attr(key, measured)
        if measured is None:
            return
        trial.set_user_attr("probe_latency_ms", measured)
        if measured > limit * (1 + self.margin):
            self._stop(trial, f"architecture measures {measured:.3g} ms untrained, over the {limit:.3g} ms limit")

    def _latency_limit(self) -> float | None:
        """The tighter of the limits in ms, a ratio turned into ms by the reference's recorded latency."""
        if self.timer is None:
            return None
        baseline = getattr(self.timer, "baseline_ms", None)
        limits = [self.max_latency_ms, self.max_latency_ratio * baseline if self.max_latency_ratio and baseline else None]
        given = [v for v in limits if v is not None]
        return min(given) if given else None

    def after_stage(self, trial: "optuna.Trial", last: str) -> Callable[["StageOutcome"], None]:
        """The pipeline's hook: stop after a stage (not the last) whose validation score is below the floor."""

        def check(outcome: "StageOutcome") -> None:
            score = ((outcome.manifest.get("metrics") or {}).get("validation") or {}).get(self.floor_metric)
            if self.floor is None or outcome.stage == last or score is None:
                return
            if score < self.floor:
                self._stop(trial, f"validation {self.floor_metric} {score:.4f} after {outcome.stage}, below the floor {self.floor:.4f}")

        return check

    def _probe(self, recipe: Recipe) -> float | None:
        from edgepress.data.load import load_data
        from edgepress.search.probe import probe_file

        with tempfile.TemporaryDirectory(prefix="edgepress-probe-") as work:
            path = probe_file(recipe, load_data(recipe.data, recipe.task), Path(work))
            return None if path is None else float(self.timer(path))

    @staticmethod
    def _stop(trial: "optuna.Trial", reason: str) -> None:
        import optuna

        trial.set_user_attr("stopped", reason)
        log.info("search trial %d stopped early: %s", trial.number, reason)
        raise optuna.TrialPruned(reason)


def architecture_key(recipe: Recipe) -> str:
    """What the deployed file's shape and int8 format depend on, hashed: not learning rates or epochs."""
    parts: dict[str, Any] = {"model": recipe.model.name_or_path, "stages": recipe.stages, "export": recipe.export.model_dump(mode="json")}
    if "distill" in recipe.stages:
        parts["student"] = recipe.distill.student.model_dump(mode="json")
    if "prune" in recipe.stages:
        shape = ("heads", "ffn", "head_scope", "min_heads_per_layer", "drop_layers", "drop_least_important_layers", "steps", "budget")
        parts["prune"] = recipe.prune.model_dump(mode="json", include=set(shape))
    if "quantize" in recipe.stages:
        parts["quantize"] = recipe.quantize.model_dump(mode="json", exclude={"tolerance", "eval_batch_size"})
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
