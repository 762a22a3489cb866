"""``edgepress bench`` (measure artifacts outside a recipe run) and ``edgepress gate`` (CI check)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from edgepress.cli.common import SetOption, given, reported
from edgepress.cli.stages import DataOption, LabelColumnOption, TaskOption, TextColumnOption, TextPairColumnOption

if TYPE_CHECKING:
    from edgepress.bench.gate import GateResult


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
    from edgepress.bench.artifacts import check_unique_names, named_models, run_artifacts
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
    document = benchmark(artifacts, load_data(recipe.data, recipe.task), recipe.bench, output)
    typer.echo((output / "report.md").read_text(encoding="utf-8"))
    typer.echo(f"wrote {_files(output)} ({_count(len(document['artifacts']), 'artifact')})")


def _files(output: Path) -> str:
    written = [output / name for name in ("bench.json", "report.md", "report.html", "pareto.png") if (output / name).is_file()]
    return ", ".join(str(p) for p in written[:-1]) + f" and {written[-1]}" if len(written) > 1 else str(written[0])


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


@reported
def gate(
    baseline: list[Path] = typer.Option(..., help="bench.json of the accepted state (e.g. from the main branch); repeat it to pool several runs' rounds."),
    current: Path = typer.Option(..., help="bench.json of the change under test."),
    max_latency_regression: str = typer.Option("10%", help="Largest allowed p50 slow-down, e.g. 10%."),
    max_accuracy_drop: float = typer.Option(0.5, help="Largest allowed test-accuracy drop, in points."),
    significance: float = typer.Option(0.05, help="Level of the rank test a slow-down must also pass to count."),
    reference: Optional[str] = typer.Option(None, help="Artifact to normalize by (default: only across machines)."),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="Pass although some baseline checks could not be compared."),
    junit: Optional[Path] = typer.Option(None, help="Also write the checks as JUnit XML here."),
) -> None:
    """Exit 1 when the current benchmark is slower or less accurate than the baseline allows, or cannot be compared with it."""
    from edgepress.bench.gate import Limits, compare, describe, load_bench, parse_fraction, pool_baselines
    from edgepress.bench.gate import junit as junit_xml

    limits = Limits(parse_fraction(max_latency_regression), max_accuracy_drop, significance, allow_missing)
    accepted = pool_baselines([load_bench(path) for path in baseline], [str(path) for path in baseline])
    result = compare(accepted, load_bench(current), limits, reference)
    _print_gate(result)
    if junit:  # its folder made as pytest's --junitxml does: CI steps point it at a reports/ folder
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_text(junit_xml(result.checks), encoding="utf-8")
    for c in result.failed:
        typer.echo(f"{'regressed' if c.status == 'regressed' else 'not compared'}: {describe(c)}", err=True)
    if result.failed:
        if any(c.status != "regressed" for c in result.failed):
            typer.echo("checks that could not be compared fail the gate; bench both sides alike, or pass --allow-missing", err=True)
        raise typer.Exit(1)
    skipped = sum(c.status == "not comparable" for c in result.checks)
    typer.echo(f"gate passed: {len(result.checks) - skipped} checks compared" + (f", {skipped} not comparable (allowed)" if skipped else ""))


def _print_gate(result: "GateResult") -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    for note in result.notes:
        console.print(f"note: {note}")
    table = Table(title="edgepress gate" + (f" (latency relative to {result.reference})" if result.reference else ""))
    for column in ("artifact", "check", "baseline", "current", "change", "p", "result"):
        table.add_column(column, overflow="fold")
    for c in result.checks:
        latency = c.what.startswith("latency")
        # latency is a p50 in ms, or a ratio to the reference's p50 in the same round; accuracy in %
        unit = "" if not latency else " x ref" if result.reference else " ms"
        fmt = (lambda v: "-" if v is None else f"{v:.4g}{unit}") if latency else (lambda v: "-" if v is None else f"{100 * v:.2f}%")
        p = "-" if c.p_value is None else f"{c.p_value:.3f}"
        verdict = {"ok": "ok", "regressed": "FAIL"}.get(c.status, f"{'allowed' if c.allowed else 'FAIL'}: not comparable ({c.note})")
        table.add_row(c.artifact, c.what, fmt(c.baseline), fmt(c.current), _change(c.change, latency), p, verdict)
    console.print(table)


def _change(change: Optional[float], latency: bool) -> str:
    if change is None:
        return "-"
    value, digits = (100 * change, 1) if latency else (change, 2)
    value = round(value, digits) + 0.0  # + 0.0 turns -0.0 into 0.0: no "-0.00 pt"
    return f"{value:+.{digits}f}" + ("%" if latency else " pt")


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
