"""The recipe's ``search`` section: schema only; ``edgepress.search`` runs it (``edgepress search``).
Apart from sections.py because nothing but the search reads it, and stage fingerprints ignore it."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from edgepress.sections import Section

Objective = Literal["accuracy", "f1_macro", "latency_ms", "size_mb"]


class SearchSection(Section):
    """A search over this recipe's values: each trial is the recipe with one value per path of the space."""

    space: dict[str, Any] = Field(
        {}, description="Recipe path -> a list of values, or a range {low, high, step, log}; e.g. prune.heads: {low: 0, high: 0.75, step: 0.25}."
    )
    objectives: list[Objective] = Field(
        ["accuracy", "latency_ms"], min_length=1, description="Validation accuracy or macro-F1 (maximized), batch-1 latency and file size (minimized)."
    )
    max_latency_ms: Optional[float] = Field(None, gt=0, description="Limit: a trial slower than this is infeasible.")
    max_size_mb: Optional[float] = Field(None, gt=0, description="Limit: a final file larger than this is infeasible.")
    min_accuracy: Optional[float] = Field(None, ge=0, le=1, description="Limit: validation accuracy at least this.")
    trials: int = Field(20, gt=0, description="Trials in all; a resumed search runs only the missing ones.")
    sampler: Literal["tpe", "nsga2", "random", "grid"] = Field("tpe", description="Optuna's sampler; grid needs lists or ranges with a step.")
    reference: Optional[str] = Field(
        None, description="ONNX file every trial is timed against (interleaved), e.g. the default recipe's model_optimized.onnx."
    )
    latency_texts: int = Field(32, gt=0, description="Validation texts timed per round, batch 1, real lengths.")
    threads: int = Field(1, gt=0, description="Intra-op threads of the latency measurement.")
    rounds: int = Field(5, gt=0, description="Interleaved rounds of the latency measurement.")

    @model_validator(mode="after")
    def _latency_needs_a_reference(self) -> "SearchSection":
        if self.space and ("latency_ms" in self.objectives or self.max_latency_ms) and not self.reference:
            raise ValueError("latency is measured against a reference model: set search.reference to an ONNX file")
        return self

    def limits(self) -> tuple[tuple[str, float], ...]:
        given = {"latency_ms": self.max_latency_ms, "size_mb": self.max_size_mb, "min_accuracy": self.min_accuracy}
        return tuple((k, v) for k, v in given.items() if v is not None)
