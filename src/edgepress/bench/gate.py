"""The CI gate: compare a benchmark against a baseline, fail on latency or accuracy regressions.

Every check of the baseline (each artifact's latency at each thread count and batch case, and its
test accuracy) ends in one of three states: ``ok``, ``regressed`` or ``not comparable`` (the
current benchmark lacks the artifact, thread count or case, was timed on other texts or lengths,
or has too few rounds to tell a slow-down from noise). "Not comparable" fails the gate unless the
user allows it (``--allow-missing``): a gate that compared nothing never passes in silence.

Latency is decided on the per-round medians (``round_p50_ms``) that ``bench`` records: the change
is the ratio of the current to the baseline median of those, and a latency check regresses only
when the change is over the limit *and* a one-sided Mann-Whitney rank test says the current rounds
are slower than the baseline rounds (p below ``significance``), so that a run whose rounds scatter
widely is not called a regression on one unlucky median. With a reference artifact (``--reference``,
and by default when the two files come from different machines), each round's value is the
artifact's median divided by the reference's median *in the same round* (bench interleaves them),
so that drift of the machine between or within runs cancels out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any, Callable, Optional
from xml.sax.saxutils import escape, quoteattr

from edgepress.bench.report import SCHEMA
from edgepress.errors import EdgepressError

OK, REGRESSED, NOT_COMPARABLE = "ok", "regressed", "not comparable"
# With n rounds on each side, the smallest one-sided rank-test p-value is 1 / C(2n, n): 0.05 for 3
# rounds, 0.014 for 4. Fewer than 4 rounds can never show a regression at the 5% level.
MIN_ROUNDS = 4


class GateInputError(EdgepressError):
    exit_code = 2


@dataclass
class Check:
    artifact: str
    what: str  # "latency 1T batch 1", "accuracy", "entity F1" or "present"
    baseline: Optional[float] = None
    current: Optional[float] = None
    change: Optional[float] = None  # relative for latency, points for accuracy
    limit: float = 0.0
    status: str = OK
    note: str = ""
    p_value: Optional[float] = None
    allowed: bool = False  # not comparable, and the user allowed that
    test: str = "rank test"  # what gave p: the stored-baseline rank test, or the A/B mode's paired signed-rank test
    attempts: list[dict] = field(default_factory=list)  # A/B mode: every measurement, when a regression was re-measured
    ratios: list[float] = field(default_factory=list)  # A/B mode: each round's change / base latency

    @property
    def failed(self) -> bool:
        return self.status == REGRESSED or (self.status == NOT_COMPARABLE and not self.allowed)


@dataclass
class GateResult:
    checks: list[Check]
    reference: Optional[str]
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.failed]


def load_bench(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GateInputError(f"{path} is not a readable bench.json ({type(exc).__name__}); pass the file `edgepress bench` wrote") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        found = document.get("schema") if isinstance(document, dict) else None
        raise GateInputError(f"{path} has schema {found!r}, expected {SCHEMA!r}; re-run edgepress bench to refresh it")
    if document["environment"].get("emulated"):
        raise GateInputError(f"{path} holds emulated latencies, which say nothing about a device; gate on a cpu, cuda or ssh benchmark")
    return document


def pool_baselines(documents: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Several benchmarks of the accepted state as one baseline: each case's per-round medians of
    every file, concatenated in the same order for every artifact (so that per-round ratios to a
    reference stay paired). The run-to-run spread of the machine then counts as noise, which the
    rounds of a single run cannot show. The files must have been benched alike."""
    first = documents[0]
    keys = ("threads", "cases", "examples", "max_seq_length", "target")
    for document, name in zip(documents[1:], names[1:]):
        differs = [k for k in keys if document["settings"].get(k) != first["settings"].get(k)]
        if differs or [a["name"] for a in document["artifacts"]] != [a["name"] for a in first["artifacts"]]:
            what = ", ".join(differs) or "artifacts"
            raise GateInputError(f"baseline {name} was benched unlike {names[0]} ({what} differ); pool only benchmarks made with one command")
    pooled = json.loads(json.dumps(first))
    for index, artifact in enumerate(pooled["artifacts"]):
        for threads, cases in artifact["latency"].items():
            for case, stats in cases.items():
                stats["round_p50_ms"] = [v for d in documents for v in _round_values(d["artifacts"][index], threads, case)]
    return pooled


def _round_values(artifact: dict, threads: str, case: str) -> list[float]:
    return list(artifact["latency"].get(threads, {}).get(case, {}).get("round_p50_ms") or [])


def parse_fraction(text: str, flag: str = "--max-latency-regression") -> float:
    """'10%' -> 0.10; a bare number is a fraction already ('0.1'). A bare number above 1 is refused:
    '10' almost always means 10%, and read as a fraction it would allow a 1000% slow-down."""
    percent = text.strip().endswith("%")
    try:
        value = float(text.strip()[:-1]) / 100 if percent else float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise GateInputError(f"{flag} {text!r} is not a percentage of 0 or more; write e.g. 10% or 0.1")
    if not percent and value > 1:
        raise GateInputError(f"{flag} {text} would mean {100 * value:.0f}%; write {text}% (or {value / 100:g} as a fraction)")
    return value


def same_machine(a: dict, b: dict) -> bool:
    keys = ("cpu", "cores", "machine", "target", "device")
    return all(a["environment"].get(k) == b["environment"].get(k) for k in keys)


@dataclass
class Limits:
    latency: float  # largest allowed relative slow-down
    accuracy_points: float  # largest allowed accuracy drop in points
    significance: float = 0.05  # the rank test's level
    allow_missing: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.latency < float("inf"):
            raise GateInputError(f"--max-latency-regression {self.latency} must be 0 or more, e.g. 10%")
        if not 0 <= self.accuracy_points < float("inf"):
            raise GateInputError(f"--max-accuracy-drop {self.accuracy_points:g} must be 0 or more points, e.g. 0.5")
        if not 0 < self.significance < 1:
            raise GateInputError(f"--significance {self.significance} must lie between 0 and 1, e.g. 0.05")


def compare(baseline: dict, current: dict, limits: Limits, reference: Optional[str] = None) -> GateResult:
    """Every check of the baseline, compared or marked not comparable; the reference used, if any."""
    base = {a["name"]: a for a in baseline["artifacts"]}
    cur = {a["name"]: a for a in current["artifacts"]}
    common = [name for name in base if name in cur]
    if reference is None and not same_machine(baseline, current):
        reference = common[0] if common else None
    if reference is not None and reference not in common:
        raise GateInputError(f"reference artifact {reference!r} is not in both files; artifacts in both: {', '.join(common) or 'none'}")
    context = _Context(baseline, current, base.get(reference), cur.get(reference), reference)
    checks = []
    for name, entry in base.items():
        if name not in cur:
            checks.append(Check(name, "present", status=NOT_COMPARABLE, note="artifact missing from the current benchmark"))
            continue
        if name != reference:  # the reference against itself is 1.0 by construction
            checks += [_latency_check(context, entry, cur[name], threads, case, limits) for threads, case in _cases(entry)]
        checks += accuracy_check(name, entry, cur[name], limits.accuracy_points)
    mark_allowed(checks, limits)
    require_latency(checks, lambda: _nothing_compared(base, cur, common))
    return GateResult(checks, reference, _notes(baseline, current, reference))


def require_latency(checks: list[Check], why: Callable[[], str]) -> None:
    """--allow-missing lets some cases go, never all of them: a gate that compared no latency would
    pass having measured nothing. ``why`` says what to do, for that case."""
    if not any(c.what.startswith("latency") and c.status != NOT_COMPARABLE for c in checks):
        checks.append(Check("(all)", "latency", status=NOT_COMPARABLE, note=why()))


def mark_allowed(checks: list[Check], limits: Limits) -> None:
    """Checks that could not be compared pass only where the user allowed it (--allow-missing)."""
    for check in checks:
        check.allowed = limits.allow_missing and check.status == NOT_COMPARABLE


def _nothing_compared(base: dict, cur: dict, common: list[str]) -> str:
    if not common:
        return (
            f"no artifact of the baseline ({_listed(list(base))}) is in the current benchmark ({_listed(list(cur)) or 'none'}); "
            "bench the same artifacts under the same names (--model NAME=PATH) on both sides"
        )
    return "no latency check could be compared; bench the change with the baseline's settings (threads, batch sizes, lengths, texts)"


def _cases(entry: dict) -> list[tuple[str, str]]:
    return [(threads, case) for threads, cases in entry["latency"].items() for case in cases]


@dataclass
class _Context:
    baseline: dict
    current: dict
    base_ref: Optional[dict]
    cur_ref: Optional[dict]
    reference: Optional[str]


def _latency_check(ctx: _Context, entry: dict, now: dict, threads: str, case: str, limits: Limits) -> Check:
    check = Check(entry["name"], f"latency {threads}T {case}", limit=limits.latency)
    reason = _why_not_comparable(ctx, now, threads, case)
    before = after = None
    if not reason:
        before = _rounds(entry, threads, case, ctx.base_ref)
        after = _rounds(now, threads, case, ctx.cur_ref)
        reason = _rounds_problem(before, after)
    if reason:
        check.status, check.note = NOT_COMPARABLE, reason
        return check
    check.baseline, check.current = median(before), median(after)
    check.change = check.current / check.baseline - 1
    check.p_value = slower_p_value(before, after)
    if check.change > limits.latency and check.p_value < limits.significance:
        check.status = REGRESSED
    check.note = f"relative to {ctx.reference}" if ctx.reference else ""
    return check


def _why_not_comparable(ctx: _Context, now: dict, threads: str, case: str) -> str:
    """Why this (threads, case) of the baseline cannot be compared with the current file; '' if it can."""
    b_set, c_set = ctx.baseline["settings"], ctx.current["settings"]
    if threads not in now["latency"]:
        b_cores, c_cores = ctx.baseline["environment"].get("cores"), ctx.current["environment"].get("cores")
        more = f" (baseline on {b_cores} cores, current on {c_cores})" if b_cores != c_cores else ""
        return f"thread count {threads} not in the current benchmark, which ran {_listed(c_set['threads'])}{more}"
    if b_set.get("max_seq_length") != c_set.get("max_seq_length"):
        return f"sequence length: baseline max {b_set.get('max_seq_length')} tokens, current {c_set.get('max_seq_length')}"
    if case not in now["latency"][threads]:
        return f"batch shape {case!r} not in the current benchmark, which has {_listed(c_set['cases'])}"
    if ctx.baseline.get("examples") != ctx.current.get("examples"):
        return f"timed texts: baseline {ctx.baseline.get('examples')}, current {ctx.current.get('examples')}"
    for side, ref in (("baseline", ctx.base_ref), ("current", ctx.cur_ref)):
        if ref is not None and case not in ref["latency"].get(threads, {}):
            return f"reference {ctx.reference!r} has no {threads}T {case} in the {side} benchmark"
    return ""


def _rounds(entry: dict, threads: str, case: str, ref: Optional[dict]) -> list[float]:
    """Per-round medians of the artifact, each divided by the reference's of the same round."""
    values = [float(v) for v in _round_values(entry, threads, case)]
    if ref is None:
        return values
    ref_values = [float(v) for v in _round_values(ref, threads, case)]
    if len(ref_values) != len(values) or not all(v > 0 for v in ref_values):
        return []
    return [v / r for v, r in zip(values, ref_values)]


def _rounds_problem(before: list[float], after: list[float]) -> str:
    for side, values in (("baseline", before), ("current", after)):
        if len(values) < MIN_ROUNDS:
            return f"{len(values)} round(s) in the {side} benchmark cannot tell a slow-down from noise; bench with --rounds {MIN_ROUNDS} or more"
        if not all(0 < v < float("inf") for v in values):
            return f"the {side} benchmark has a zero or invalid round median; re-run edgepress bench"
    return ""


def slower_p_value(before: list[float], after: list[float]) -> float:
    """One-sided Mann-Whitney U test that the ``after`` rounds are slower than the ``before`` ones
    (exact for the small round counts bench uses)."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(after, before, alternative="greater", method="exact").pvalue)


def accuracy_check(name: str, entry: dict, now: dict, limit_points: float) -> list[Check]:
    key = "f1" if "f1" in entry["test"] else "accuracy"  # token classification is held to entity F1
    what = "entity F1" if key == "f1" else "accuracy"
    before, after = entry["test"].get(key), now["test"].get(key)
    if before is None:
        return []  # nothing to hold the current benchmark to
    check = Check(name, what, before, after, limit=limit_points)
    if after is None:
        check.status, check.note = NOT_COMPARABLE, f"{what} not measured in the current benchmark"
        return [check]
    check.change = -100 * (before - after)
    check.status = REGRESSED if -check.change > limit_points else OK
    return [check]


def _notes(baseline: dict, current: dict, reference: Optional[str]) -> list[str]:
    notes = []
    b_env, c_env = baseline["environment"], current["environment"]
    if b_env.get("cores") != c_env.get("cores"):
        both = sorted(set(baseline["settings"]["threads"]) & set(current["settings"]["threads"]))
        notes.append(
            f"the baseline ran on {b_env.get('cores')} cores and the current benchmark on {c_env.get('cores')}: "
            f"latency is compared on the thread counts both have ({_listed(both) or 'none'})"
        )
    if reference and not same_machine(baseline, current):
        notes.append(f"the files come from different machines: latency is compared relative to {reference}")
    return notes


def _listed(values: list) -> str:
    return ", ".join(str(v) for v in values)


def junit(checks: list[Check]) -> str:
    failures = sum(c.failed for c in checks)
    lines = [f'<testsuite name="edgepress gate" tests="{len(checks)}" failures="{failures}">']
    for c in checks:
        lines.append(f"  <testcase classname={quoteattr(c.artifact)} name={quoteattr(c.what)}>")
        if c.failed:
            lines.append(f"    <failure message={quoteattr(describe(c))}>{escape(describe(c))}</failure>")
        elif c.status == NOT_COMPARABLE:
            lines.append(f"    <skipped message={quoteattr(describe(c))}/>")
        if len(c.attempts) > 1:  # a re-measured check: every measurement, whatever the verdict
            lines.append(f"    <system-out>{escape(_attempts(c))}</system-out>")
        lines.append("  </testcase>")
    lines.append("</testsuite>")
    return "\n".join(lines) + "\n"


def _attempts(c: Check) -> str:
    return "; ".join(
        f"measurement {i}: {a['baseline']:.4g} ms -> {a['current']:.4g} ms ({100 * a['change']:+.1f}%, p={a['p_value']:.3f}) {a['status']}"
        for i, a in enumerate(c.attempts, 1)
    )


def describe(c: Check) -> str:
    if c.status == NOT_COMPARABLE:
        return f"{c.artifact}: {c.what}: not comparable: {c.note}"
    if c.what in ("accuracy", "entity F1"):
        return f"{c.artifact}: {c.what} {100 * c.baseline:.2f}% -> {100 * c.current:.2f}% ({round(c.change, 2) + 0.0:+.2f} points; limit -{c.limit} points)"
    unit = "" if c.note.startswith("relative to") else " ms"  # a ratio to the reference, else milliseconds
    return (
        f"{c.artifact}: {c.what}: {c.baseline:.4g}{unit} -> {c.current:.4g}{unit} ({100 * c.change:+.1f}%; "
        f"limit +{100 * c.limit:g}%; {c.test} p={c.p_value:.3f}){' ' + c.note if c.note else ''}"
    )
