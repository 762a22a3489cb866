"""``edgepress search RECIPE``: run (or resume) the study of the recipe's ``search`` section, print the
feasible Pareto front, and write the best trial's recipe as YAML."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from edgepress.errors import RecipeError
from edgepress.recipe import apply_override, read_yaml, validate_recipe
from edgepress.search.space import grid, parse_space, trial_recipe
from edgepress.search.study import Plan, feasible_front, run_study

if TYPE_CHECKING:
    import optuna

    from edgepress.sections_search import SearchSection


def run_search(path: Path, overrides: list[str], trials: int | None, timeout: float | None, storage: str | None) -> Path:
    """Returns the written best recipe."""
    raw = read_yaml(path)
    for item in overrides:
        apply_override(raw, item)
    recipe = validate_recipe(raw, str(path))
    settings = recipe.search
    if not settings.space:
        raise RecipeError(f"{path} has no search.space; add one, e.g. search: {{space: {{prune.heads: [0.25, 0.5]}}}}")
    space = parse_space(settings.space, raw)
    run = Path(recipe.output_dir) / recipe.name
    run.mkdir(parents=True, exist_ok=True)
    plan = Plan(objectives=tuple(settings.objectives), limits=settings.limits(), trials=trials or settings.trials)
    study = run_study(
        raw, space, plan, storage or f"sqlite:///{run / 'study.db'}", _timer(recipe) if _times(settings) else None,
        _sampler(settings, space, recipe.seed), timeout,
    )  # fmt: skip
    front = feasible_front(study)
    _print_front(study, front, plan)
    if not front:
        raise RecipeError(f"no trial of {len(study.trials)} met the limits {dict(plan.limits)}; loosen them or widen search.space")
    return _write_best(raw, front, plan, run)


def _times(settings: "SearchSection") -> bool:
    return "latency_ms" in settings.objectives or settings.max_latency_ms is not None


def _timer(recipe):
    from edgepress.data import load_data
    from edgepress.search.latency import ReferenceTimer

    cfg = recipe.search
    if not Path(cfg.reference).is_file():
        raise RecipeError(f"search.reference {cfg.reference} is not a file; give an ONNX model, e.g. runs/bbc-news/04-export/model_optimized.onnx")
    texts = list(load_data(recipe.data).validation["text"][: cfg.latency_texts])  # never the test split
    return ReferenceTimer(Path(cfg.reference), texts, recipe.bench.max_seq_length, cfg.threads, cfg.rounds)


def _sampler(settings: "SearchSection", space, seed: int) -> "optuna.samplers.BaseSampler":
    import optuna

    def constraints(trial):
        return trial.user_attrs.get("constraints", [])

    if settings.sampler == "grid":
        return optuna.samplers.GridSampler(grid(space), seed=seed)
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraints)
    return optuna.samplers.TPESampler(seed=seed, constraints_func=constraints)


def _print_front(study, front, plan: Plan) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"search {study.study_name}: {len(front)} feasible Pareto-optimal of {len(study.trials)} trials")
    for column in ("trial", *plan.objectives, "values"):
        table.add_column(column, justify="left" if column == "values" else "right", overflow="fold")
    for trial in sorted(front, key=lambda t: t.number):
        measured = trial.user_attrs["values"]
        table.add_row(str(trial.number), *(f"{measured[o]:.4g}" for o in plan.objectives), ", ".join(f"{k}={v}" for k, v in trial.params.items()))
    Console(highlight=False).print(table)


def _write_best(raw: dict[str, Any], front, plan: Plan, run: Path) -> Path:
    """The front's most accurate trial (its first objective, if accuracy is not one) as a plain recipe."""
    key = next((o for o in plan.objectives if o in ("accuracy", "f1_macro")), plan.objectives[0])
    sign = 1 if key in ("accuracy", "f1_macro") else -1
    best = max(front, key=lambda t: sign * t.user_attrs["values"][key])
    recipe = trial_recipe({k: v for k, v in copy.deepcopy(raw).items() if k != "search"}, best.user_attrs["chosen"])
    recipe = recipe.model_copy(update={"name": f"{recipe.name}-best"})
    target = run / "best.yaml"
    target.write_text(yaml.safe_dump(recipe.model_dump(mode="json", exclude={"search"}), sort_keys=False), encoding="utf-8")
    print(f"best under the limits: trial {best.number}; its recipe: {target} (edgepress run {target})")
    return target
