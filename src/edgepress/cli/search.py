"""``edgepress search RECIPE`` (run or resume a study) and ``edgepress search show RECIPE`` (read one).

``search`` is a group whose default command is ``run``: ``edgepress search my.yaml`` means
``edgepress search run my.yaml``, as the README writes it, while ``show`` stays a subcommand."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from edgepress.cli.common import SetOption, reported
from edgepress.errors import RecipeError

StorageOption = typer.Option(None, help="Optuna storage URL (default: sqlite:///<run folder>/study.db); e.g. postgresql://user@host/db.")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class RunByDefault(TyperGroup):
    """A group that runs ``run`` when the first argument names no subcommand (a recipe file)."""

    def route(self, args: list[str]) -> list[str]:
        """``[recipe, ...]`` -> ``["run", recipe, ...]``; a subcommand or --help as given."""
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            return ["run", *args]
        return args

    def parse_args(self, ctx, args: list[str]) -> list[str]:  # ctx: typer's (vendored) click Context
        return super().parse_args(ctx, self.route(args))


app = typer.Typer(
    cls=RunByDefault,
    no_args_is_help=True,
    help="Search a recipe's values for the most accurate models within latency, size and accuracy limits (Optuna). "
    "`edgepress search RECIPE` runs (or resumes) the study: the same as `edgepress search run RECIPE`.",
)


@app.command("run")
@reported
def search_run(
    recipe: Path = typer.Argument(..., help="A recipe with a search section (space, objectives, limits)."),
    trials: Optional[int] = typer.Option(None, help="Trials in all (default: search.trials); a resumed study runs the missing ones."),
    timeout: Optional[str] = typer.Option(None, help="Start no trial after this long: seconds, or 90m, 2h."),
    storage: Optional[str] = StorageOption,
    overrides: Optional[list[str]] = SetOption,
) -> None:
    """Run (or resume) the study; print every trial and the feasible Pareto front; write best.yaml."""
    from edgepress.search.command import run_search

    run_search(recipe, overrides or [], trials, duration(timeout) if timeout else None, storage)


@app.command("show")
@reported
def search_show(
    recipe: Path = typer.Argument(..., help="The recipe the search ran (its name finds the study)."),
    storage: Optional[str] = StorageOption,
    overrides: Optional[list[str]] = SetOption,
) -> None:
    """Print a stored study: every trial (values, objectives, stopped or failed and why) and the front."""
    from edgepress.search.command import show_search

    show_search(recipe, overrides or [], storage)


def duration(text: str) -> float:
    """Seconds from ``7200``, ``90m``, ``2h``, ``1.5h``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match or float(match[1]) <= 0:
        raise RecipeError(f"--timeout {text!r} is not a duration; give seconds or a number with s, m, h or d, e.g. 2h")
    return float(match[1]) * UNITS[match[2] or "s"]
