"""``edgepress bench`` (measure artifacts outside a recipe run) and ``edgepress targets setup``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgepress.cli.common import SetOption, given, reported
from edgepress.cli.stages import DataOption, LabelColumnOption, TaskOption, TextColumnOption, TextPairColumnOption


@reported
def bench(
    run: Optional[Path] = typer.Option(None, help="A run folder (e.g. runs/bbc-news): measure all of its artifacts."),
    model: Optional[list[str]] = typer.Option(None, help="NAME=PATH of an ONNX file or model folder (repeatable)."),
    data: str = DataOption,
    text_column: Optional[str] = TextColumnOption,
    text_pair_column: Optional[str] = TextPairColumnOption,
    label_column: Optional[str] = LabelColumnOption,
    task: Optional[str] = TaskOption,
    threads: Optional[list[int]] = typer.Option(None, help="Intra-op thread count (repeatable; default 1 and all cores)."),
    examples: Optional[int] = typer.Option(None, help="Test texts timed per round (default 64)."),
    rounds: Optional[int] = typer.Option(None, help="Interleaved rounds (default 5)."),
    batch_size: Optional[list[int]] = typer.Option(None, help="Padded batch size besides batch 1 (repeatable; default 8 and 32)."),
    max_seq_length: Optional[int] = typer.Option(None, help="Truncate and pad to this many tokens (default 128)."),
    torch_models: Optional[bool] = typer.Option(None, "--torch/--no-torch", help="Time the run's torch artifacts too."),
    target: Optional[str] = typer.Option(None, help="cpu (default), cuda, arm64-emulated, browser, or ssh://[user@]host[:port]."),
    ssh_config: Optional[str] = typer.Option(None, help="ssh config file for an ssh target (default: ~/.ssh/config)."),
    remote_python: Optional[str] = typer.Option(None, help="Python on the ssh device (default python3)."),
    emulator_root: Optional[str] = typer.Option(None, help="arm64-emulated target folder (default: the user cache)."),
    browser_root: Optional[str] = typer.Option(None, help="browser target folder (default: the user cache)."),
    output: Path = typer.Option(Path("bench"), help="Folder for bench.json and report.md."),
    overrides: Optional[list[str]] = SetOption,
) -> None:
    """Measure latency, throughput, memory, size and accuracy of a run's artifacts and/or named models."""
    from edgepress.bench.artifacts import check_unique_names, named_models, run_artifacts, training_curves
    from edgepress.bench.stage import benchmark
    from edgepress.data.load import load_data
    from edgepress.errors import RecipeError
    from edgepress.recipe.loading import load_recipe

    if run is None and not model:
        raise RecipeError("nothing to measure; pass --run FOLDER and/or --model NAME=PATH")
    flags = {
        "task": task,
        "data.source": data, "data.text_column": text_column, "data.text_pair_column": text_pair_column,
        "data.label_column": label_column, "bench.threads": threads or None, "bench.examples": examples,
        "bench.rounds": rounds, "bench.batch_sizes": batch_size or None, "bench.max_seq_length": max_seq_length,
        "bench.torch": torch_models, "bench.target": target, "bench.ssh_config": ssh_config,
        "bench.remote_python": remote_python, "bench.emulator_root": emulator_root, "bench.browser_root": browser_root,
    }  # fmt: skip
    recipe = load_recipe(None, overrides, given(flags))
    artifacts = (run_artifacts(run, recipe.bench.torch) if run else []) + named_models(model or [])
    check_unique_names(artifacts)
    document = benchmark(artifacts, load_data(recipe.data, recipe.task), recipe.bench, output, training_curves(run) if run else [])
    typer.echo((output / "report.md").read_text(encoding="utf-8"))
    typer.echo(f"wrote {_files(output)} ({_count(len(document['artifacts']), 'artifact')})")


def _files(output: Path) -> str:
    written = [output / name for name in ("bench.json", "report.md", "report.html", "pareto.png") if (output / name).is_file()]
    return ", ".join(str(p) for p in written[:-1]) + f" and {written[-1]}" if len(written) > 1 else str(written[0])


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


@reported
def targets_setup(
    name: str = typer.Argument(..., help="The target to set up: arm64-emulated or browser."),
    folder: Optional[Path] = typer.Option(None, "--dir", help="Where to build it (default: ~/.cache/edgepress/<target>)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when a working target is there."),
) -> None:
    """Prepare a benchmark target on this machine: arm64-emulated downloads an arm64 Python and wheels
    (~210 MB); browser installs the pinned onnxruntime-web and transformers.js with npm ci (~480 MB)."""
    from edgepress.errors import TargetError

    if name == "browser":
        from edgepress.web.target import setup as setup_browser

        target = setup_browser(folder, force)
        facts = target.facts
        typer.echo(
            f"browser ready in {target.root}: Chromium {facts['chromium']} ({target.chromium}), onnxruntime-web "
            f"{facts['onnxruntime_web']}, transformers.js {facts['transformers_js']}, Playwright {facts['playwright']}"
        )
        return
    if name != "arm64-emulated":
        raise TargetError(f"no set-up for target {name!r}; arm64-emulated and browser need one (cpu and cuda need none, ssh uses your ssh set-up)")
    from edgepress.bench.emulator import setup

    emulator = setup(folder, force)
    facts = emulator.facts
    typer.echo(
        f"arm64-emulated ready in {emulator.root}: {facts['qemu']}, -cpu {facts['cpu']}, Python {facts['python']}, "
        f"onnxruntime {facts['onnxruntime']}, numpy {facts['numpy']}"
    )
