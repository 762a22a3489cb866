"""The one stage registry: a table from stage name to the function that runs it.

Entries are import paths, resolved only when a stage runs, so that reading a recipe or
printing ``--help`` never imports torch. The table's order is the pipeline order. It lives with
the recipe, below the running layer, because checking a recipe needs the stage names; the pipeline
(running/) reads it to run a stage and to ask a stage for its environment facts, and so never
imports a stage's code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from edgepress.errors import RecipeError


@dataclass(frozen=True)
class StageSpec:
    name: str
    entry: str  # "package.module:function"; the function takes a StageContext
    summary: str
    every_process: bool = False  # under a multi-process launcher: runs on every rank (training), else on the main one
    # "package.module:function" taking the recipe and returning facts of this machine, beyond the
    # installed packages, that change the stage's output; they join its fingerprint
    facts: str = ""

    def load(self) -> Callable:
        return _resolve(self.entry)

    def environment_facts(self, recipe: Any) -> dict[str, str]:
        return _resolve(self.facts)(recipe) if self.facts else {}


def _resolve(entry: str) -> Callable:
    module_name, _, attr = entry.partition(":")
    return getattr(importlib.import_module(module_name), attr)


STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec("adapt", "edgepress.compress.training.adapt:run_stage", "masked-language-model training on unlabelled in-domain text",
                  every_process=True, facts="edgepress.compress.training.adapt:adapt_facts"),
        StageSpec("finetune", "edgepress.compress.training.finetune:run_stage", "fine-tune the teacher with the Trainer", every_process=True),
        StageSpec("distill", "edgepress.compress.training.distill:run_stage", "distill the teacher into a smaller student", every_process=True,
                  facts="edgepress.compress.training.augment:distill_facts"),
        StageSpec("prune", "edgepress.compress.pruning.prune:run_stage", "remove heads, FFN neurons and layers, recovering by distillation", every_process=True),
        StageSpec("export", "edgepress.export.onnx:run_stage", "export to ONNX, check parity, optimize"),
        StageSpec("quantize", "edgepress.compress.quantization.quantize:run_stage", "int8 dynamic and static quantization of the ONNX model"),
        StageSpec("bench", "edgepress.bench.stage:run_stage", "latency, size and accuracy of every artifact of the run"),
    )
}


def check_stage_order(names: list[str]) -> None:
    """Stages must be known, unique, and in pipeline order (each reads the previous one's artifact)."""
    if not names:
        raise ValueError(f"name at least one stage; known stages: {', '.join(STAGES)}")
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]!r}; known stages, in order: {', '.join(STAGES)}")
    if len(set(names)) != len(names):
        raise ValueError("a stage is listed twice; list each stage once")
    order = list(STAGES)
    positions = [order.index(n) for n in names]
    if positions != sorted(positions):
        raise ValueError(f"stages must follow the pipeline order {' -> '.join(order)}")


def get_stage(name: str) -> StageSpec:
    try:
        return STAGES[name]
    except KeyError:
        raise RecipeError(f"unknown stage {name!r}; known stages: {', '.join(STAGES)}") from None
