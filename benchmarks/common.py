"""What the benchmark scripts share: calling the `edgepress` command beside this Python, finding a
run's stage folders, and building recipe variants. A script in a subfolder puts this folder on
``sys.path`` first (the scripts are run as files, not as a package)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def edgepress(*arguments: str) -> None:
    """Run an edgepress command of this environment, echoed, failing the script when it fails."""
    print("+ edgepress " + " ".join(arguments), flush=True)
    subprocess.run([str(BIN / "edgepress"), *arguments], check=True)


def log_like_the_cli() -> None:
    """For scripts that run stages in this process (``run_recipe``): the same log lines as the
    ``edgepress`` command prints, without the libraries' own progress bars. Call it first."""
    from edgepress.cli.app import setup_logging

    setup_logging(debug=False)


def stage_folders(run: Path) -> dict[str, Path]:
    """Stage name -> folder of a run, from each folder's manifest."""
    found = {}
    for folder in sorted(run.glob("[0-9][0-9]-*")):
        manifest = folder / "edgepress.json"
        if manifest.is_file():
            found[json.loads(manifest.read_text())["stage"]] = folder
    return found


def stage_folder(run: Path, stage: str) -> Path:
    """One stage's folder of a run; exits with a one-line message when the run has none."""
    folder = stage_folders(run).get(stage)
    if folder is None:
        sys.exit(f"{run} has no {stage} stage folder; give a run folder whose recipe ran {stage}")
    return folder


def variant_recipe(base: dict, overrides: list[str], updates: dict):
    """A validated recipe: ``base`` (a parsed recipe file) with ``key=value`` overrides applied,
    then ``updates`` set (values that are not YAML text, such as paths)."""
    from edgepress.recipe.loading import apply_override, set_path, validate_recipe

    raw = copy.deepcopy(base)
    for item in overrides:
        apply_override(raw, item)
    for key, value in updates.items():
        set_path(raw, key, value)
    return validate_recipe(raw)


def write_result(path: Path, benchmark: str, fields: dict, with_machine: bool = True) -> None:
    """The script's JSON: its name, the date, this machine (CPU, instruction sets, library versions)
    unless the fields carry a bench.json's own environment, and ``fields``."""
    from datetime import datetime, timezone

    from edgepress.bench.report import machine

    result = {"benchmark": benchmark, "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    result |= ({"machine": machine()} if with_machine else {}) | fields
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())
