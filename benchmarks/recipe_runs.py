"""What the SST-2 benchmark scripts share: a recipe file's sections, re-run under another name,
stages and input model, with the command line's ``--set`` overrides applied."""

from __future__ import annotations

import copy

from edgepress.recipe.loading import apply_override, set_path, validate_recipe
from edgepress.running.pipeline import StageOutcome, run_recipe


def run_stages(base: dict, overrides: list[str], output_dir: str, name: str, stages: list[str], model: str) -> list[StageOutcome]:
    raw = copy.deepcopy(base)
    for item in overrides:
        apply_override(raw, item)
    for key, value in {"name": name, "output_dir": output_dir, "stages": stages, "model.name_or_path": model}.items():
        set_path(raw, key, value)
    return run_recipe(validate_recipe(raw))
