"""The ``edgepress`` command. Thin: each command builds a recipe and calls the library.

Heavy imports (torch, transformers, onnxruntime) happen inside commands so that ``--help``
answers at once. Errors print one line and exit non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from edgepress import __version__
from edgepress.errors import EdgepressError

app = typer.Typer(
    help="Compress Transformer text classifiers: fine-tune, distill, prune, quantize, export to ONNX, benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
recipe_app = typer.Typer(help="Write and check recipes.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")

_STATE = {"debug": False}

SetOption = typer.Option(None, "--set", help="Override a recipe value: --set finetune.epochs=1 (repeatable).")
ForceOption = typer.Option(False, "--force", help="Re-run stages even when their manifest is up to date.")


def reported(command: Callable) -> Callable:
    """Turn errors into one line on stderr and a non-zero exit (a traceback only with --debug)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except EdgepressError as exc:
            _fail(exc, str(exc), exc.exit_code)
        except KeyboardInterrupt as exc:
            _fail(exc, "interrupted; stages that had not finished left nothing behind", 130)
        except Exception as exc:  # a bug, not bad input: still one line, and how to get more
            _fail(exc, f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1)

    return wrapper


def _fail(exc: BaseException, message: str, code: int) -> None:
    if _STATE["debug"]:
        raise exc
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgepress {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    _STATE["debug"] = debug
    _setup_logging(debug)


def _setup_logging(debug: bool) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    handler = RichHandler(console=Console(stderr=True), show_time=False, show_path=False, markup=False)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler], force=True)
    logging.getLogger("edgepress").setLevel(logging.DEBUG if debug else logging.INFO)


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
    from edgepress.recipe import load_recipe

    updates = {k: v for k, v in {"name": name, "output_dir": output_dir}.items() if v is not None}
    _execute(load_recipe(recipe, overrides, updates), force)


@app.command()
@reported
def finetune(
    model: str = typer.Option("builtin:minilm-l6", help="Local folder, Hub id, or builtin:minilm-l6."),
    data: str = typer.Option("builtin:bbc-news", help="Data file, folder, Hub id, or builtin:bbc-news."),
    text_column: Optional[str] = typer.Option(None, help="Text column (default: text)."),
    text_pair_column: Optional[str] = typer.Option(None, help="Second text column, for sentence pairs."),
    label_column: Optional[str] = typer.Option(None, help="Label column (default: label)."),
    no_header: bool = typer.Option(False, "--no-header", help="csv/tsv without a header row; columns are '0', '1', ..."),
    epochs: Optional[float] = typer.Option(None, help="Training epochs."),
    learning_rate: Optional[float] = typer.Option(None, help="Peak learning rate."),
    batch_size: Optional[int] = typer.Option(None, help="Training batch size."),
    max_seq_length: Optional[int] = typer.Option(None, help="Truncate texts to this many tokens."),
    seed: Optional[int] = typer.Option(None, help="Random seed."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Accept pickle weights (unsafe for untrusted files)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run model code from the Hub repo."),
    recipe: Optional[Path] = typer.Option(None, help="Start from this recipe instead of the defaults."),
    overrides: Optional[list[str]] = SetOption,
    name: Optional[str] = typer.Option(None, help="Run name (default: finetune)."),
    output_dir: Optional[str] = typer.Option(None, help="Where run folders go (default: runs)."),
    force: bool = ForceOption,
) -> None:
    """Fine-tune a teacher from flags (the recipe's other sections keep their defaults)."""
    from edgepress.recipe import load_recipe

    flags = {
        "stages": ["finetune"], "name": name or (None if recipe else "finetune"), "output_dir": output_dir,
        "seed": seed, "model.name_or_path": model, "data.source": data,
        "data.text_column": text_column, "data.text_pair_column": text_pair_column,
        "data.label_column": label_column, "data.header": False if no_header else None,
        "model.allow_pickle": allow_pickle or None, "model.trust_remote_code": trust_remote_code or None,
        "finetune.epochs": epochs, "finetune.learning_rate": learning_rate,
        "finetune.batch_size": batch_size, "finetune.max_seq_length": max_seq_length,
    }  # fmt: skip
    _execute(load_recipe(recipe, overrides, {k: v for k, v in flags.items() if v is not None}), force)


def _execute(recipe: Any, force: bool) -> None:
    from edgepress.pipeline import run_recipe
    from edgepress.summary import print_summary

    outcomes = run_recipe(recipe, force=force)
    print_summary(outcomes)


@recipe_app.command("show")
@reported
def recipe_show(
    plain: bool = typer.Option(False, "--plain", help="Without the comments that describe each key."),
    recipe: Optional[Path] = typer.Argument(None, help="Resolve this recipe instead of the defaults."),
    overrides: Optional[list[str]] = SetOption,
) -> None:
    """Print a recipe as YAML (the defaults, with a comment per key): a starting point to edit."""
    from edgepress.recipe import load_recipe, recipe_to_yaml

    typer.echo(recipe_to_yaml(load_recipe(recipe, overrides), comments=not plain), nl=False)


@recipe_app.command("check")
@reported
def recipe_check(recipe: Path = typer.Argument(..., help="Recipe YAML file.")) -> None:
    """Validate a recipe without running it."""
    from edgepress.recipe import load_recipe

    resolved = load_recipe(recipe)
    typer.echo(f"{recipe}: valid; stages: {' -> '.join(resolved.stages)}")


def main() -> None:
    app(prog_name="edgepress")


if __name__ == "__main__":
    sys.exit(main())
