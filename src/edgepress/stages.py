"""The one stage registry: a table from stage name to the function that runs it.

Entries are import paths, resolved only when a stage runs, so that reading a recipe or
printing ``--help`` never imports torch. The table's order is the pipeline order.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from edgepress.errors import RecipeError


@dataclass(frozen=True)
class StageSpec:
    name: str
    entry: str  # "package.module:function"; the function takes a StageContext
    summary: str
    every_process: bool = False  # under a multi-process launcher: runs on every rank (training), else on the main one

    def load(self) -> Callable:
        module_name, _, attr = self.entry.partition(":")
        return getattr(importlib.import_module(module_name), attr)


STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec("finetune", "edgepress.compress.finetune:run_stage", "fine-tune the teacher with the Trainer", every_process=True),
        StageSpec("distill", "edgepress.compress.distill:run_stage", "distill the teacher into a smaller student", every_process=True),
        StageSpec("prune", "edgepress.compress.prune:run_stage", "remove heads, FFN neurons and layers, recovering by distillation", every_process=True),
        StageSpec("export", "edgepress.export.onnx:run_stage", "export to ONNX, check parity, optimize"),
        StageSpec("quantize", "edgepress.compress.quantize:run_stage", "int8 dynamic and static quantization of the ONNX model"),
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
