"""The CI gate: compare a benchmark against a baseline, fail on latency or accuracy regressions.

Latency is compared as the median of the per-round medians (``round_p50_ms``), so that one noisy
round does not decide. When the two files come from different machines (another CPU model or core
count), absolute milliseconds mean nothing: each artifact's latency is divided by that of a
reference artifact measured in the same run (``--reference``, by default the first artifact both
files have), and those ratios are compared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any, Optional
from xml.sax.saxutils import escape, quoteattr

from edgepress.bench.report import SCHEMA
from edgepress.errors import EdgepressError


class GateInputError(EdgepressError):
    exit_code = 2


@dataclass
class Check:
    artifact: str
    what: str  # "latency 1T batch 1" or "accuracy"
    baseline: Optional[float]
    current: Optional[float]
    change: Optional[float]  # relative for latency, points for accuracy
    limit: float
    failed: bool
    note: str = ""


def load_bench(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GateInputError(f"{path} is not a readable bench.json ({type(exc).__name__}); pass the file `edgepress bench` wrote") from None
    if document.get("schema") != SCHEMA:
        raise GateInputError(f"{path} has schema {document.get('schema')!r}, expected {SCHEMA!r}; re-run edgepress bench to refresh it")
    if document["environment"].get("emulated"):
        raise GateInputError(f"{path} holds emulated latencies, which say nothing about a device; gate on a cpu, cuda or ssh benchmark")
    return document


def parse_fraction(text: str) -> float:
    """'10%' -> 0.10; a bare number is a fraction already ('0.1')."""
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise GateInputError(f"{text!r} is not a percentage; write e.g. 10% or 0.1") from None


def same_machine(a: dict, b: dict) -> bool:
    keys = ("cpu", "cores", "machine", "target", "device")
    return all(a["environment"].get(k) == b["environment"].get(k) for k in keys)


def _p50(entry: dict, threads: str, case: str) -> Optional[float]:
    stats = entry["latency"].get(threads, {}).get(case)
    return None if stats is None else float(median(stats.get("round_p50_ms") or [stats["p50_ms"]]))


def compare(
    baseline: dict, current: dict, max_latency: float, max_accuracy_drop: float, reference: Optional[str] = None
) -> tuple[list[Check], Optional[str]]:
    """Checks for every artifact of the baseline; the reference used for normalization, if any."""
    base = {a["name"]: a for a in baseline["artifacts"]}
    cur = {a["name"]: a for a in current["artifacts"]}
    common = [name for name in base if name in cur]
    if reference is None and not same_machine(baseline, current):
        reference = common[0] if common else None
    if reference is not None and reference not in common:
        raise GateInputError(f"reference artifact {reference!r} is not in both files; artifacts in both: {', '.join(common) or 'none'}")
    checks = []
    for name, entry in base.items():
        if name not in cur:
            checks.append(Check(name, "present", None, None, None, 0, True, "missing from the current benchmark"))
            continue
        checks += _latency_checks(name, entry, cur[name], base, cur, reference, max_latency)
        checks.append(_accuracy_check(name, entry, cur[name], max_accuracy_drop))
    return checks, reference


def _latency_checks(name, entry, now, base, cur, reference, limit) -> list[Check]:
    checks = []
    for threads, cases in entry["latency"].items():
        for case in cases:
            before, after = _p50(entry, threads, case), _p50(now, threads, case)
            if after is None:
                continue
            note = ""
            if reference is not None and name != reference:
                before /= _p50(base[reference], threads, case) or float("nan")
                after /= _p50(cur[reference], threads, case) or float("nan")
                note = f"relative to {reference}"
            elif reference is not None:
                continue  # the reference against itself is 1.0 by construction
            change = after / before - 1
            checks.append(Check(name, f"latency {threads}T {case}", before, after, change, limit, change > limit, note))
    return checks


def _accuracy_check(name, entry, now, limit_points) -> Check:
    before, after = entry["test"].get("accuracy"), now["test"].get("accuracy")
    if before is None or after is None:
        return Check(name, "accuracy", before, after, None, limit_points, False, "not measured")
    drop = 100 * (before - after)
    return Check(name, "accuracy", before, after, -drop, limit_points, drop > limit_points)


def junit(checks: list[Check]) -> str:
    failures = sum(c.failed for c in checks)
    lines = [f'<testsuite name="edgepress gate" tests="{len(checks)}" failures="{failures}">']
    for c in checks:
        lines.append(f"  <testcase classname={quoteattr(c.artifact)} name={quoteattr(c.what)}>")
        if c.failed:
            lines.append(f"    <failure message={quoteattr(describe(c))}>{escape(describe(c))}</failure>")
        lines.append("  </testcase>")
    lines.append("</testsuite>")
    return "\n".join(lines) + "\n"


def describe(c: Check) -> str:
    if c.change is None:
        return f"{c.artifact}: {c.what}: {c.note}"
    if c.what == "accuracy":
        return f"{c.artifact}: accuracy {100 * c.baseline:.2f}% -> {100 * c.current:.2f}% ({c.change:+.2f} points; limit -{c.limit} points)"
    unit = "" if c.note else " ms"
    return (
        f"{c.artifact}: {c.what}: {c.baseline:.4g}{unit} -> {c.current:.4g}{unit} ({100 * c.change:+.1f}%; "
        f"limit +{100 * c.limit:.0f}%){' ' + c.note if c.note else ''}"
    )
