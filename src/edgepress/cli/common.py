"""What every edgepress command shares: error reporting, common options, running a recipe."""

from __future__ import annotations

import errno
import functools
import inspect
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from edgepress.errors import EdgepressError

STATE = {"debug": False}

SetOption = typer.Option(None, "--set", help="Override a recipe value: --set finetune.epochs=1 (repeatable).")
ForceOption = typer.Option(False, "--force", help="Re-run stages even when their manifest is up to date.")


def reported(command: Callable) -> Callable:
    """Turn errors into one line on stderr and a non-zero exit (a traceback only with --debug)."""

    flags = " or ".join(flag for name, flag in OUTPUT_FLAGS.items() if name in inspect.signature(command).parameters)

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise  # a command's own exit code (the gate's 1), not an error
        except EdgepressError as exc:
            _fail(exc, str(exc), exc.exit_code)
        except KeyboardInterrupt as exc:
            _fail(exc, "interrupted; stages that had not finished left nothing behind", 130)
        except OSError as exc:  # the file system refused: a full disk, a path that is a file, no permission
            _fail(exc, _os_message(exc, flags), 1)
        except Exception as exc:  # a bug, not bad input: still one line, and how to get more
            wrapped = _wrapped_os_error(exc)
            if wrapped is not None:
                _fail(exc, _os_message(wrapped, flags), 1)
            _fail(exc, f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1)

    return wrapper


FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# the options through which a command writes files, named in messages about paths it cannot write
OUTPUT_FLAGS = {"output_dir": "--output-dir", "output": "--output", "junit": "--junit"}


def _wrapped_os_error(exc: Exception) -> OSError | None:
    """An OS error that a Rust or C extension reported as its own type (safetensors: "... (os error 28)")."""
    found = re.search(r"(?:I/O error: )?([^:]*?) \(os error (\d+)\)", str(exc))
    return OSError(int(found[2]), found[1].strip()) if found else None


def _os_message(exc: OSError, flags: str) -> str:
    where = exc.filename or "a file"
    if exc.errno in FULL:
        elsewhere = f" (or write elsewhere: {flags})" if flags else ""
        return f"could not write {where}: {exc.strerror}; free disk space{elsewhere}, then run again; nothing half-written was kept"
    return f"could not use {where}: {exc.strerror}; check that the path is a folder you can write{f' ({flags})' if flags else ''}, then run again"


def _fail(exc: BaseException, message: str, code: int) -> None:
    if STATE["debug"]:  # the traceback too, but the same exit code: scripts must not see another answer
        traceback.print_exception(exc)
    _end_progress_bars()
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _end_progress_bars() -> None:
    """Close the progress bars the error interrupted (the Trainer's, a tokenizer's): each ends its
    line, so that the error starts a line of its own instead of trailing a half-drawn bar."""
    tqdm = sys.modules.get("tqdm")  # never imported here: no bar can be open without it
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ()))[::-1]:
        try:
            bar.close()
        except Exception:  # a bar whose stream is gone: nothing to end
            pass


def execute(recipe: Any, force: bool, origin: str) -> None:
    """Run a resolved recipe and print the summary table; ``origin`` (``origin_of``) is recorded in
    the run folder, so that a run from another recipe does not replace this one's stages."""
    from edgepress import distributed
    from edgepress.running.pipeline import run_recipe
    from edgepress.running.summary import print_summary

    outcomes = run_recipe(recipe, force=force, origin=origin)
    if distributed.is_main():  # under torchrun every process returns here; one table is enough
        print_summary(outcomes)


def origin_of(recipe_file: Optional[Path], command: str) -> str:
    """Where a run's recipe comes from: its file (absolute), else the stage command that built it."""
    return str(recipe_file.expanduser().resolve()) if recipe_file else f"edgepress {command}"


def given(flags: dict[str, Any]) -> dict[str, Any]:
    """The flags the user set: a flag left out is None and must not override the recipe."""
    return {key: value for key, value in flags.items() if value is not None}
