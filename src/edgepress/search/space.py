"""The search space: recipe values to vary, and how each trial's values become a recipe.

A space maps recipe paths to a domain: a list (categorical, also booleans and whole sections) or a
range ``{low, high}`` with optional ``step`` (a grid) or ``log`` (sampled on a log scale); a range of
integers samples integers. Paths are checked against the recipe's schema, so a typo names itself,
and every domain's values are validated as recipe values before any trial runs.

Optuna draws the values (``suggest``); a trial's recipe is the base recipe with them set
(``trial_recipe``), validated like a file, so a combination the recipe refuses is one clear error.
"""

from __future__ import annotations

import copy
import itertools
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from pydantic import BaseModel, Field, model_validator

from edgepress.errors import RecipeError
from edgepress.recipe.loading import Recipe, set_path, validate_recipe
from edgepress.recipe.sections import Section

if TYPE_CHECKING:
    import optuna

# where the trials' folders go, what they are called and which stages run are the search's to decide
NOT_SEARCHABLE = ("name", "output_dir", "stages")


class Range(Section):
    """A numeric range; integers when ``low`` and ``high`` are both integers (and ``step`` is)."""

    low: float
    high: float
    step: Optional[float] = Field(None, gt=0, description="Grid spacing; the grid sampler needs it.")
    log: bool = Field(False, description="Sample on a log scale (learning rates).")

    @model_validator(mode="after")
    def _ordered(self) -> "Range":
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and (self.step or self.low <= 0):
            raise ValueError("log needs low > 0 and no step")
        return self

    @property
    def integer(self) -> bool:
        return all(float(v).is_integer() for v in (self.low, self.high, self.step or 1))

    def values(self) -> list[Any]:
        """Every grid point (for the grid sampler)."""
        if not self.step:
            raise RecipeError("the grid sampler needs a step on every range (or a list of values)")
        count = int(round((self.high - self.low) / self.step)) + 1
        points = [self.low + i * self.step for i in range(count)]
        return [int(p) for p in points] if self.integer else [round(p, 10) for p in points]


Domain = Union[list[Any], Range]


class Space(BaseModel):
    """``{recipe path: domain}``, checked against the recipe schema."""

    params: dict[str, Domain] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _paths_exist(self) -> "Space":
        for path, domain in self.params.items():
            check_path(path)
            if isinstance(domain, list) and not domain:
                raise ValueError(f"{path}: give at least one value")
        return self


def check_path(path: str) -> None:
    """``path`` names a recipe value (``prune.heads``, ``distill.student.num_layers``), else a RecipeError naming it."""
    parts, model = path.split("."), Recipe
    if parts[0] in NOT_SEARCHABLE:
        raise RecipeError(f"search space: {path} is set by the search itself; remove it from the space")
    for depth, part in enumerate(parts):
        fields = model.model_fields if model else {}
        if part not in fields:
            known = ", ".join(sorted(fields)) or "none: it is a value, not a section"
            raise RecipeError(f"search space: {path} is not a recipe value ({'.'.join(parts[: depth + 1])} unknown; known here: {known})")
        model = _section_type(fields[part].annotation)


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The section class behind a field's annotation (``Optional[Section]`` included), else None."""
    candidates = [annotation, *typing.get_args(annotation)]
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


def _check_task_metrics(settings, task: str, where: str) -> None:
    """Objectives and limits the task's validation metrics can answer: entity F1 (f1) is token
    classification's, macro-F1 text classification's; accuracy is both (words, for tokens)."""
    tokens = task == "token-classification"
    wrong = ["f1_macro"] if tokens else ["f1"]
    asked = [o for o in settings.objectives if o in wrong]
    asked += [] if tokens else [n for n in ("min_f1", "max_f1_drop") if getattr(settings, n) is not None]
    if asked:
        fix = "use f1 (entity F1) or accuracy (of words)" if tokens else "use accuracy or f1_macro (entity F1 is for token classification)"
        raise RecipeError(f"{where}: search {asked[0]} does not apply to task: {task}; {fix}")


def check_search(raw: dict[str, Any], recipe: Recipe, where: str) -> Space | None:
    """Everything ``edgepress search`` refuses before its first trial, so that ``recipe check`` says
    it too: the space (paths, domains, each value as a recipe value), the task, the reference file."""
    settings = recipe.search
    if not settings.space:
        return None
    _check_task_metrics(settings, recipe.task, where)
    space = parse_space(settings.space, raw)
    if settings.reference:
        reference_file(settings.reference)
    return space


def reference_file(reference: str) -> Path:
    if not Path(reference).is_file():
        raise RecipeError(f"search.reference {reference} is not a file; give an ONNX model, e.g. runs/bbc-news/04-export/model_optimized.onnx")
    return Path(reference)


def parse_space(params: dict[str, Any], base: dict[str, Any]) -> Space:
    """The space, with each domain's values (a range's ends) validated in ``base``, the raw recipe."""
    try:
        space = Space(params=params)
    except ValueError as exc:  # pydantic's ValidationError, or our RecipeError from a validator
        raise RecipeError(f"search space: {_first_message(exc)}") from exc
    for path, domain in space.params.items():
        for value in domain if isinstance(domain, list) else _ends(domain):
            try:
                trial_recipe(base, {path: value})
            except RecipeError as exc:
                raise RecipeError(f"search space: {path} = {value!r} is not a valid recipe value: {exc}") from exc
    return space


def _ends(domain: Range) -> list[Any]:
    return [int(domain.low), int(domain.high)] if domain.integer else [domain.low, domain.high]


def _first_message(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        found = errors()
        # a domain is a list or a range: for a mapping, the list branch's complaint is noise
        first = next((e for e in found if "list[any]" not in e["loc"]), found[0])
        where = ".".join(str(p) for p in first["loc"] if p not in ("params", "Range") and "[" not in str(p))
        message = first["msg"].removeprefix("Value error, ")
        return f"{where}: {message}" if where else message
    return str(exc)


def suggest(trial: "optuna.Trial", space: Space) -> dict[str, Any]:
    """One value per path, drawn by the trial's sampler."""
    values = {}
    for path, domain in space.params.items():
        if isinstance(domain, list):
            # Optuna stores choices as JSON-like scalars: sections (dicts) go through their index
            if all(v is None or isinstance(v, (bool, int, float, str)) for v in domain):
                values[path] = trial.suggest_categorical(path, domain)
            else:
                values[path] = domain[trial.suggest_categorical(path, list(range(len(domain))))]
        elif domain.integer:
            values[path] = trial.suggest_int(path, int(domain.low), int(domain.high), step=int(domain.step or 1), log=domain.log)
        else:
            values[path] = trial.suggest_float(path, domain.low, domain.high, step=domain.step, log=domain.log)
    return values


def grid(space: Space) -> dict[str, list[Any]]:
    """The grid sampler's search space: every value of every path."""
    return {path: d if isinstance(d, list) else d.values() for path, d in space.params.items()}


def grid_points(space: Space) -> list[dict[str, Any]]:
    """Every combination, in a fixed order (for tests and a brute-force check)."""
    axes = grid(space)
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def trial_recipe(base: dict[str, Any], values: dict[str, Any], where: str = "search trial") -> Recipe:
    """``base`` (a raw recipe mapping) with ``values`` set at their paths, validated."""
    raw = copy.deepcopy(base)
    for path, value in values.items():
        set_path(raw, path, copy.deepcopy(value))
    return validate_recipe(raw, where)
