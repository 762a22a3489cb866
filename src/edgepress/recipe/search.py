"""The recipe's ``search`` section: schema only; ``edgepress.search`` runs it (``edgepress search``).
Apart from sections.py because nothing but the search reads it, and stage fingerprints ignore it."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from edgepress.recipe.sections import Section

Objective = Literal["accuracy", "f1_macro", "f1", "latency_ms", "size_mb"]
# the validation score each limit reads: accuracy for any task, entity F1 for token classification
SCORE_LIMITS = {"min_accuracy": "accuracy", "min_f1": "f1"}


class SearchSection(Section):
    """A search over this recipe's values: each trial is the recipe with one value per path of the space."""

    space: dict[str, Any] = Field(
        {}, description="Recipe path -> a list of values, or a range {low, high, step, log}; e.g. prune.heads: {low: 0, high: 0.75, step: 0.25}."
    )
    objectives: list[Objective] = Field(
        ["accuracy", "latency_ms"], min_length=1,
        description="Validation accuracy, macro-F1 (text classification) or entity F1 (f1, token classification), maximized; "
        "batch-1 latency and file size, minimized.",
    )
    max_latency_ms: Optional[float] = Field(None, gt=0, description="Limit: a trial slower than this is infeasible.")
    max_latency_ratio: Optional[float] = Field(
        None, gt=0, description="Limit: at most this fraction of the reference's latency, timed in the same rounds (0.85: 15% faster)."
    )
    max_size_mb: Optional[float] = Field(None, gt=0, description="Limit: a final file larger than this is infeasible.")
    min_accuracy: Optional[float] = Field(None, ge=0, le=1, description="Limit: validation accuracy at least this.")
    max_accuracy_drop: Optional[float] = Field(
        None, ge=0, le=100, description="Limit: validation accuracy at most this many points below the reference model's."
    )
    min_f1: Optional[float] = Field(None, ge=0, le=1, description="Limit (token classification): validation entity F1 at least this.")
    max_f1_drop: Optional[float] = Field(
        None, ge=0, le=100, description="Limit (token classification): validation entity F1 at most this many points below the reference's."
    )
    trials: int = Field(20, gt=0, description="Trials in all; a resumed search runs only the missing ones.")
    sampler: Literal["tpe", "nsga2", "random", "grid"] = Field("tpe", description="Optuna's sampler; grid needs lists or ranges with a step.")
    reference: Optional[str] = Field(
        None, description="ONNX file every trial is timed against (interleaved), e.g. the default recipe's model_optimized.onnx."
    )
    latency_texts: int = Field(32, gt=0, description="Validation texts timed per round, batch 1, real lengths.")
    threads: int = Field(1, gt=0, description="Intra-op threads of the latency measurement.")
    rounds: int = Field(5, gt=0, description="Interleaved rounds of the latency measurement.")
    stop_early: bool = Field(
        True, description="Stop a trial whose untrained architecture is over the latency limit, or whose accuracy falls below the floor before its last stage."
    )
    probe_margin: float = Field(0.05, ge=0, description="An untrained architecture stops its trial when slower than the latency limit by more than this fraction.")
    heartbeat_s: int = Field(60, gt=0, description="A trial without a heartbeat for twice this (its process died) is failed and re-run.")

    @model_validator(mode="after")
    def _latency_needs_a_reference(self) -> "SearchSection":
        if self.space and self.timed and not self.reference:
            raise ValueError("latency is measured against a reference model: set search.reference to an ONNX file")
        for name in ("max_accuracy_drop", "max_f1_drop"):
            if getattr(self, name) is not None and not self.reference:
                raise ValueError(f"{name} counts from the reference model's score: set search.reference to an ONNX file")
        return self

    @property
    def needs_reference_scores(self) -> bool:
        return self.max_accuracy_drop is not None or self.max_f1_drop is not None

    @property
    def timed(self) -> bool:
        """Whether trials are timed: latency is an objective or a limit."""
        return "latency_ms" in self.objectives or self.max_latency_ms is not None or self.max_latency_ratio is not None

    def limits(self, reference: dict[str, float] | None = None) -> tuple[tuple[str, float], ...]:
        """(limit, value) pairs; a ``max_*_drop`` becomes a ``min_*`` floor from the reference's validation ``reference`` scores."""
        reference = reference or {}
        floors = {"min_accuracy": (self.min_accuracy, self.max_accuracy_drop), "min_f1": (self.min_f1, self.max_f1_drop)}
        given: dict[str, float | None] = {"latency_ms": self.max_latency_ms, "latency_ratio": self.max_latency_ratio, "size_mb": self.max_size_mb}
        for name, (floor, drop) in floors.items():
            if drop is not None and reference.get(SCORE_LIMITS[name]) is not None:
                floor = max(floor or 0.0, reference[SCORE_LIMITS[name]] - drop / 100)
            given[name] = floor
        return tuple((k, v) for k, v in given.items() if v is not None)
