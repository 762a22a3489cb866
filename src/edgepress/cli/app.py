"""The ``edgepress`` command. Thin: each command builds a recipe and calls the library.

Heavy imports (torch, transformers, onnxruntime) happen inside commands so that ``--help``
answers at once. Errors print one line and exit non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from edgepress import __version__
from edgepress.cli.bench import bench, targets_setup
from edgepress.cli.gate import gate
from edgepress.cli.common import STATE, ForceOption, SetOption, execute, origin_of, reported
from edgepress.cli.search import app as search_app
from edgepress.cli.deploy import export, quantize
from edgepress.cli.stages import adapt, distill, finetune, prune

app = typer.Typer(
    help="Compress Transformer text classifiers: fine-tune, distill, prune, quantize, export to ONNX, benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
recipe_app = typer.Typer(help="Write and check recipes.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")
targets_app = typer.Typer(help="Set up benchmark targets.", no_args_is_help=True)
app.add_typer(targets_app, name="targets")
targets_app.command("setup")(targets_setup)
app.command()(adapt)
app.command()(finetune)
app.command()(distill)
app.command()(prune)
app.command()(export)
app.command()(quantize)
app.command()(bench)
app.command()(gate)
app.add_typer(search_app, name="search")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgepress {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    STATE["debug"] = debug
    setup_logging(debug)


def setup_logging(debug: bool) -> None:
    """edgepress's INFO lines through rich, the libraries' bars and routine warnings off: for the CLI,
    and for scripts that run stages in their own process (benchmarks/common.py)."""
    from rich.console import Console
    from rich.logging import RichHandler

    handler = RichHandler(console=Console(stderr=True), show_time=False, show_path=False, markup=False)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler], force=True)
    from edgepress import distributed

    # under torchrun / accelerate launch every process would print the same lines: the main one speaks
    quiet = not distributed.is_main() and not debug
    logging.getLogger("edgepress").setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    if not debug:
        for name, level in NOISY_LOGGERS.items():
            logging.getLogger(name).setLevel(level)
        # one progress line per training run (compress/training/monitor.py): the libraries' own bars
        # (loading weights, tokenizing, writing shards) and routine warnings stay out of it; read
        # when transformers, datasets and the Hub client are first imported, and a user's setting wins
        for variable, value in QUIET_LIBRARIES.items():
            os.environ.setdefault(variable, value)


# Libraries that log routine steps as warnings: torchao (which the Trainer imports when installed, and
# neural-compressor-pt installs it) about CUDA kernels a CPU machine lacks and pytree registrations;
# torch.export's note that INC's file name does not end in .pt2; torch.onnx's notes on torchvision ops. (INC's own logger sets its level when
# imported, later: quantization.inc.quiet handles it.)
QUIET_LIBRARIES = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # MLflow sets its logger's level when imported: its database set-up notes
}  # fmt: skip
NOISY_LOGGERS = {
    "torchao": logging.ERROR, "torch.utils._pytree": logging.ERROR, "torch.export.pt2_archive._package": logging.ERROR,
    "torch.onnx._internal.exporter._registration": logging.ERROR,  # a warning per torchvision op when torchvision is absent
}  # fmt: skip


@app.command()
@reported
def run(
    recipe: Path = typer.Argument(..., help="Recipe YAML file (`edgepress recipe show` prints one)."),
    overrides: Optional[list[str]] = SetOption,
    name: Optional[str] = typer.Option(None, help="Run name (folder under the output directory)."),
    output_dir: Optional[str] = typer.Option(None, help="Where run folders go (default: runs)."),
    force: bool = ForceOption,
) -> None:
    """Run the recipe's stages; stages that are up to date are skipped."""
    from edgepress.recipe.loading import load_recipe

    updates = {k: v for k, v in {"name": name, "output_dir": output_dir}.items() if v is not None}
    execute(load_recipe(recipe, overrides, updates), force, origin_of(recipe, "run"))


@recipe_app.command("show")
@reported
def recipe_show(
    plain: bool = typer.Option(False, "--plain", help="Without the comments that describe each key."),
    recipe: Optional[Path] = typer.Argument(None, help="Resolve this recipe instead of the defaults."),
    overrides: Optional[list[str]] = SetOption,
) -> None:
    """Print a recipe as YAML (the defaults, with a comment per key): a starting point to edit."""
    from edgepress.recipe.loading import load_recipe, recipe_to_yaml

    typer.echo(recipe_to_yaml(load_recipe(recipe, overrides), comments=not plain), nl=False)


@recipe_app.command("check")
@reported
def recipe_check(recipe: Path = typer.Argument(..., help="Recipe YAML file.")) -> None:
    """Validate a recipe without running it (its search section too, as `edgepress search` would)."""
    from edgepress.recipe.loading import load_recipe, read_yaml
    from edgepress.search.space import check_search

    resolved = load_recipe(recipe)
    check_search(read_yaml(recipe), resolved, str(recipe))
    typer.echo(f"{recipe}: valid; stages: {' -> '.join(resolved.stages)}")


def main() -> None:
    app(prog_name="edgepress")


if __name__ == "__main__":
    sys.exit(main())
