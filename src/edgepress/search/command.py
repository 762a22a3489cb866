"""``edgepress search RECIPE``: run (or resume) the study of the recipe's ``search`` section, print the
trials and the feasible Pareto front, and write the best trial's recipe as YAML; ``edgepress search
show RECIPE`` prints a stored study."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from edgepress.errors import RecipeError
from edgepress.recipe.loading import apply_override, read_yaml, validate_recipe
from edgepress.search import report
from edgepress.search.space import check_search, grid, reference_file, trial_recipe
from edgepress.search.stopping import EarlyStop
from edgepress.search.study import SCORES, Plan, feasible_front, open_storage, run_study

if TYPE_CHECKING:
    import optuna

    from edgepress.recipe.search import SearchSection

log = logging.getLogger(__name__)


def run_search(path: Path, overrides: list[str], trials: int | None, timeout: float | None, storage: str | None) -> Path:
    """Returns the written best recipe."""
    raw, recipe = _recipe(path, overrides)
    settings = recipe.search
    if not settings.space:
        raise RecipeError(f"{path} has no search.space; add one, e.g. search: {{space: {{prune.heads: [0.25, 0.5]}}}}")
    space = check_search(raw, recipe, str(path))
    run = Path(recipe.output_dir) / recipe.name
    run.mkdir(parents=True, exist_ok=True)
    data = _validation_data(recipe) if settings.timed or settings.needs_reference_scores else None
    timer = _timer(recipe, data) if settings.timed else None
    plan = Plan(objectives=tuple(settings.objectives), limits=settings.limits(_reference_scores(recipe, data)), trials=trials or settings.trials)
    stop = _early_stop(settings, plan, timer)
    study = run_study(
        raw, space, plan, open_storage(storage or _default_storage(run), settings.heartbeat_s), timer,
        _sampler(settings, space, recipe.seed), timeout, stop,
    )  # fmt: skip
    front = _report(study, plan, run)
    if not front:
        raise RecipeError(f"no trial of {len(study.trials)} met the limits {dict(plan.limits)}; loosen them or widen search.space")
    return _write_best(raw, front, plan, run)


def show_search(path: Path, overrides: list[str], storage: str | None) -> None:
    """Print a stored study (every trial, then the feasible front) without running anything."""
    import optuna

    raw, recipe = _recipe(path, overrides)
    settings = recipe.search
    run = Path(recipe.output_dir) / recipe.name
    url = storage or _default_storage(run)
    if url == _default_storage(run) and not (run / "study.db").is_file():
        raise RecipeError(f"no study at {run / 'study.db'}; run edgepress search {path} first (or give --storage)")
    try:
        study = optuna.load_study(study_name=recipe.name, storage=open_storage(url, settings.heartbeat_s))
    except KeyError as exc:
        raise RecipeError(f"{url} holds no study named {recipe.name!r}; check the recipe's name or --storage") from exc
    plan = Plan(objectives=tuple(settings.objectives), limits=_stored_limits(study, settings), trials=settings.trials)
    report.print_trials(study, plan.objectives)
    front = feasible_front(study)
    report.print_front(study, front, plan.objectives, report.test_scores(front))


def _recipe(path: Path, overrides: list[str]):
    raw = read_yaml(path)
    for item in overrides:
        apply_override(raw, item)
    return raw, validate_recipe(raw, str(path))


def _default_storage(run: Path) -> str:
    return f"sqlite:///{run / 'study.db'}"


def _report(study, plan: Plan, run: Path) -> list:
    """Print the trials and the front; write search.json and pareto.png beside the study."""
    front = feasible_front(study)
    tests = report.test_scores(front)
    report.print_trials(study, plan.objectives)
    report.print_front(study, front, plan.objectives, tests)
    report.write_json(study, front, plan.objectives, dict(plan.limits), tests, run / "search.json")
    if report.write_plot(study, front, dict(plan.limits), run / "pareto.png"):
        print(f"plot: {run / 'pareto.png'}; every trial: {run / 'search.json'}")
    return front


def _stored_limits(study, settings: "SearchSection") -> tuple[tuple[str, float], ...]:
    """The limits the search ran under (a drop from the reference became an accuracy floor then)."""
    stored = study.user_attrs.get("limits")
    return tuple(stored.items()) if stored else settings.limits()


def _early_stop(settings: "SearchSection", plan: Plan, timer) -> EarlyStop | None:
    if not settings.stop_early:
        return None
    limits = dict(plan.limits)
    # one floor stops trials early: entity F1's where a token search sets one, else accuracy's
    metric = "f1" if "min_f1" in limits else "accuracy"
    floor = limits.get("min_f1" if metric == "f1" else "min_accuracy")
    return EarlyStop(limits.get("latency_ms"), floor, settings.probe_margin, timer, limits.get("latency_ratio"), metric)


def _validation_data(recipe):
    """The recipe's data, loaded once for the reference's accuracy and the timer (validation only)."""
    from edgepress.data.load import load_data

    return load_data(recipe.data, recipe.task)


def _reference_scores(recipe, data) -> dict[str, float] | None:
    """The reference model's validation scores (accuracy; entity F1 too for tokens), when a limit counts from them."""
    cfg = recipe.search
    if not cfg.needs_reference_scores:
        return None
    from transformers import AutoTokenizer

    from edgepress.export.runtime import evaluate_onnx, open_session

    reference = reference_file(cfg.reference)
    tokenizer = AutoTokenizer.from_pretrained(reference.parent)
    scores = evaluate_onnx(open_session(reference), tokenizer, data, recipe.bench.max_seq_length, ("validation",))["validation"]
    log.info("search: reference %s, validation %s", reference, ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    return {k: float(v) for k, v in scores.items()}


def _timer(recipe, data):
    from edgepress.search.latency import ReferenceTimer

    cfg = recipe.search
    reference = reference_file(cfg.reference)
    texts = list(data.validation["text"][: cfg.latency_texts])  # never the test split
    return ReferenceTimer(reference, texts, recipe.bench.max_seq_length, cfg.threads, cfg.rounds)


def _sampler(settings: "SearchSection", space, seed: int) -> "optuna.samplers.BaseSampler":
    import optuna

    if settings.sampler == "grid":
        return optuna.samplers.GridSampler(grid(space), seed=seed)
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)  # both read each trial's constraints (Trial.set_constraint)
    return optuna.samplers.TPESampler(seed=seed)


def _write_best(raw: dict[str, Any], front, plan: Plan, run: Path) -> Path:
    """The front's most accurate trial (its first objective, if accuracy is not one) as a plain recipe."""
    key = next((o for o in plan.objectives if o in SCORES), plan.objectives[0])
    sign = 1 if key in SCORES else -1
    best = max(front, key=lambda t: sign * t.user_attrs["values"][key])
    recipe = trial_recipe({k: v for k, v in copy.deepcopy(raw).items() if k != "search"}, best.user_attrs["chosen"])
    recipe = recipe.model_copy(update={"name": f"{recipe.name}-best"})
    target = run / "best.yaml"
    target.write_text(yaml.safe_dump(recipe.model_dump(mode="json", exclude={"search"}), sort_keys=False), encoding="utf-8")
    print(f"best under the limits: trial {best.number}; its recipe: {target} (edgepress run {target})")
    return target
