"""Which stage of which run is running now: what a training run needs to name itself on a dashboard.

The pipeline opens a scope around each stage; the training code (compress/training/monitor.py)
reads it. A context variable rather than an argument threaded through every stage and helper,
because only the monitoring needs it and it must not join any stage's fingerprint.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

if TYPE_CHECKING:
    from edgepress.recipe.loading import Recipe


@dataclass(frozen=True)
class StageScope:
    stage: str
    recipe: "Recipe"
    run_root: Path  # <output_dir>/<name>

    @property
    def label(self) -> str:
        return f"{self.recipe.name}/{self.stage}"


_CURRENT: ContextVar[Optional[StageScope]] = ContextVar("edgepress_stage", default=None)


@contextlib.contextmanager
def stage_scope(stage: str, recipe: "Recipe") -> Iterator[StageScope]:
    scope = StageScope(stage, recipe, Path(recipe.output_dir) / recipe.name)
    token = _CURRENT.set(scope)
    try:
        yield scope
    finally:
        _CURRENT.reset(token)


def current() -> Optional[StageScope]:
    """The running stage's scope; None outside a pipeline (a stage function called directly)."""
    return _CURRENT.get()


# the package that provides each dashboard Transformers logs to, for the message when it is missing
DASHBOARD_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow-skinny", "wandb": "wandb", "trackio": "trackio", "comet_ml": "comet-ml"}


def check_report_to(names: list[str]) -> None:
    """Every dashboard of ``tracking.report_to`` is one Transformers knows and can reach here: a run
    must not train for an hour and then lose its curves."""
    if not names:
        return
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    from edgepress.errors import RecipeError

    available = set(get_available_reporting_integrations())
    for name in names:
        if name not in INTEGRATION_TO_CALLBACK:
            raise RecipeError(f"tracking.report_to: unknown dashboard {name!r}; Transformers logs to {', '.join(sorted(INTEGRATION_TO_CALLBACK))}")
        if name not in available:
            package = DASHBOARD_PACKAGES.get(name, name)
            raise RecipeError(f"tracking.report_to: {name} is not installed; pip install {package} (or pip install 'edgepress[tracking]'), or remove it")
