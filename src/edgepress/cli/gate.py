"""``edgepress gate``: fail CI on a latency or accuracy regression, in one of two modes.

A/B (``--base-model`` and ``--model``): both models are timed here, in the same rounds, and
decided on paired ratios (bench/ab.py); a regression is re-measured before it fails. Stored
baseline (``--baseline`` and ``--current``): two bench.json files made earlier (bench/gate.py), for
users who cannot rebuild the accepted model.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from edgepress.cli.common import SetOption, given, reported
from edgepress.cli.stages import DataOption, LabelColumnOption, TaskOption, TextColumnOption, TextPairColumnOption

if TYPE_CHECKING:
    from edgepress.bench.gate import Check, GateResult, Limits

AB_ROUNDS = 10  # paired rounds per check unless --rounds: 1/2**10 is far below any usual significance


@reported
def gate(
    base_model: Optional[Path] = typer.Option(None, help="A/B mode: the accepted model (ONNX file, OpenVINO .xml, model folder) or run folder."),
    model: Optional[Path] = typer.Option(None, help="A/B mode: the changed model or run folder, timed beside --base-model."),
    baseline: Optional[list[Path]] = typer.Option(None, help="Stored mode: bench.json of the accepted state; repeat it to pool several runs' rounds."),
    current: Optional[Path] = typer.Option(None, help="Stored mode: bench.json of the change under test."),
    max_latency_regression: str = typer.Option("10%", help="Largest allowed p50 slow-down, e.g. 10%."),
    max_accuracy_drop: float = typer.Option(0.5, help="Largest allowed test-accuracy drop, in points."),
    significance: float = typer.Option(0.05, help="Level of the test a slow-down must also pass to count."),
    confirm: int = typer.Option(1, min=0, help="A/B mode: re-measure a regressed check this many times; it fails only if every measurement regressed."),
    reference: Optional[str] = typer.Option(None, help="Stored mode: artifact to normalize by (default: only across machines)."),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="Pass although some checks could not be compared."),
    data: str = DataOption,
    text_column: Optional[str] = TextColumnOption,
    text_pair_column: Optional[str] = TextPairColumnOption,
    label_column: Optional[str] = LabelColumnOption,
    task: Optional[str] = TaskOption,
    threads: Optional[list[int]] = typer.Option(None, help="A/B mode: intra-op thread counts (repeatable; default 1 and all cores)."),
    examples: Optional[int] = typer.Option(None, help="A/B mode: test texts timed per round (default 64)."),
    rounds: Optional[int] = typer.Option(None, help=f"A/B mode: paired rounds per check (default {AB_ROUNDS})."),
    batch_size: Optional[list[int]] = typer.Option(None, help="A/B mode: also time this padded batch size (repeatable; default: batch 1 only)."),
    max_seq_length: Optional[int] = typer.Option(None, help="A/B mode: truncate and pad to this many tokens (default 128)."),
    torch_models: bool = typer.Option(False, "--torch/--no-torch", help="A/B mode with run folders: time their torch artifacts too."),
    junit: Optional[Path] = typer.Option(None, help="Also write the checks as JUnit XML here."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the checks, every measurement and the machine as JSON here."),
    overrides: Optional[list[str]] = SetOption,
) -> None:
    """Exit 1 when the change is slower or less accurate than the limits allow, or cannot be compared."""
    from edgepress.bench.gate import GateInputError, Limits, parse_fraction

    ab = base_model is not None or model is not None
    if ab and (baseline or current):
        raise GateInputError("give --base-model and --model (A/B mode) or --baseline and --current (stored mode), not both")
    if ab and (base_model is None or model is None):
        raise GateInputError(f"A/B mode needs both models; add {'--model' if model is None else '--base-model'} PATH")
    if not ab and (not baseline or current is None):
        raise GateInputError("nothing to compare; give --base-model and --model (A/B: both timed here), or --baseline and --current bench.json files")
    limits = Limits(parse_fraction(max_latency_regression), max_accuracy_drop, significance, allow_missing)
    if ab:
        flags = {
            "task": task, "data.source": data, "data.text_column": text_column, "data.text_pair_column": text_pair_column,
            "data.label_column": label_column, "bench.threads": threads or None, "bench.examples": examples,
            "bench.rounds": rounds, "bench.batch_sizes": batch_size or None, "bench.max_seq_length": max_seq_length,
        }  # fmt: skip
        result, document = _ab(base_model, model, flags, overrides, limits, confirm, torch_models)
    else:
        result, document = _stored(baseline, current, limits, reference)
    _finish(result, document, junit, json_path)


def _ab(base_model: Path, model: Path, flags: dict, overrides: Optional[list[str]], limits: "Limits", confirm: int, torch_models: bool):
    from edgepress.bench import ab
    from edgepress.bench.gate import GateResult, mark_allowed, require_latency
    from edgepress.bench.measure import case_names, thread_counts
    from edgepress.bench.runner import environment
    from edgepress.data.load import load_data
    from edgepress.errors import RecipeError
    from edgepress.recipe.loading import load_recipe

    recipe = load_recipe(None, overrides, given(flags))
    # the gate's own defaults where neither a flag nor --set chose: more rounds than bench, batch 1 only
    chosen = {o.split("=", 1)[0].strip() for o in overrides or []} | set(given(flags))
    defaults = {"rounds": AB_ROUNDS, "batch_sizes": []}
    cfg = recipe.bench.model_copy(update={k: v for k, v in defaults.items() if f"bench.{k}" not in chosen})
    if cfg.target != "cpu":
        raise RecipeError(f"the A/B gate times both models on this machine's CPU; bench.target {cfg.target!r} is for edgepress bench")
    pairs, missing = ab.pair_up(_artifacts(base_model, "--base-model", torch_models), _artifacts(model, "--model", torch_models))
    data = load_data(recipe.data, recipe.task)
    test = data.test.to_dict()
    rows = {k: list(test[k][: cfg.examples]) for k in ("text", "text_pair") if k in test}
    threads, cases = thread_counts(cfg), case_names(cfg)
    checks = missing + ab.accuracy_checks(pairs, data, cfg.max_seq_length, limits.accuracy_points)
    checks += ab.compare_models(pairs, threads, cases, limits, confirm, ab.PairedTimer(rows, cfg))
    mark_allowed(checks, limits)
    require_latency(checks, lambda: "no latency check could be compared (see the checks above); time at least 5 rounds")
    settings = {"threads": threads, "cases": cases, "rounds": cfg.rounds, "examples": len(rows["text"]),
                "max_seq_length": cfg.max_seq_length, "order": ab.ORDER, "confirm": confirm}  # fmt: skip
    document = {"mode": "ab", "base": str(base_model), "change": str(model), "settings": settings, "environment": environment()}
    return GateResult(checks, None, [f"A/B: {base_model} and {model} timed in the same rounds here ({ab.ORDER})"]), document


def _artifacts(path: Path, flag: str, torch_models: bool) -> list:
    from edgepress.bench.artifacts import named_models, run_artifacts
    from edgepress.bench.gate import GateInputError
    from edgepress.running.runs import read_manifest

    if not path.exists():
        raise GateInputError(f"{flag} {path} does not exist; give an ONNX file, an OpenVINO .xml, a model folder or a run folder")
    if path.is_dir() and (path / "recipe.yaml").is_file() and not read_manifest(path):  # a run folder, not a stage's
        found = run_artifacts(path, torch_models)
        if not found:
            from edgepress.errors import RecipeError

            raise RecipeError(f"{flag} {path}: the run folder holds no artifact to time; finish its recipe, or name a model file")
        return found
    return named_models([str(path)])


def _stored(baseline: list[Path], current: Path, limits: "Limits", reference: Optional[str]):
    from edgepress.bench.gate import compare, load_bench, pool_baselines

    accepted = pool_baselines([load_bench(path) for path in baseline], [str(path) for path in baseline])
    result = compare(accepted, load_bench(current), limits, reference)
    return result, {"mode": "stored", "baseline": [str(p) for p in baseline], "current": str(current), "reference": result.reference}


def _finish(result: "GateResult", document: dict, junit: Optional[Path], json_path: Optional[Path]) -> None:
    from edgepress.bench.gate import describe
    from edgepress.bench.gate import junit as junit_xml

    _print_gate(result)
    if junit:  # its folder made as pytest's --junitxml does: CI steps point it at a reports/ folder
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_text(junit_xml(result.checks), encoding="utf-8")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        record = {"schema": "edgepress.gate/1", **document, "passed": not result.failed, "checks": [asdict(c) for c in result.checks]}
        json_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    for c in result.failed:
        typer.echo(f"{'regressed' if c.status == 'regressed' else 'not compared'}: {describe(c)}", err=True)
    if result.failed:
        if any(c.status != "regressed" for c in result.failed):
            typer.echo("checks that could not be compared fail the gate; bench both sides alike, or pass --allow-missing", err=True)
        raise typer.Exit(1)
    skipped = sum(c.status == "not comparable" for c in result.checks)
    cleared = [c for c in result.checks if len(c.attempts) > 1]
    typer.echo(
        f"gate passed: {len(result.checks) - skipped} checks compared" + (f", {skipped} not comparable (allowed)" if skipped else "")
        + (f"; {len(cleared)} regression(s) of a first measurement not confirmed when measured again: {_listed(cleared)}" if cleared else "")
    )  # fmt: skip


def _listed(checks: list["Check"]) -> str:
    return ", ".join(f"{c.artifact} {c.what}" for c in checks)


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
        table.add_row(c.artifact, c.what, fmt(c.baseline), fmt(c.current), _change(c.change, latency), p, _verdict(c))
    console.print(table)


def _verdict(c: "Check") -> str:
    if c.status == "not comparable":
        return f"{'allowed' if c.allowed else 'FAIL'}: not comparable ({c.note})"
    verdict = {"ok": "ok", "regressed": "FAIL"}[c.status]
    if len(c.attempts) > 1:
        changes = ", ".join(f"{100 * a['change']:+.1f}%" for a in c.attempts)
        verdict += f" ({'confirmed' if c.status == 'regressed' else 'not confirmed'}: {changes})"
    return verdict


def _change(change: Optional[float], latency: bool) -> str:
    if change is None:
        return "-"
    value, digits = (100 * change, 1) if latency else (change, 2)
    value = round(value, digits) + 0.0  # + 0.0 turns -0.0 into 0.0: no "-0.00 pt"
    return f"{value:+.{digits}f}" + ("%" if latency else " pt")
