"""The A/B gate: the accepted model and the changed one timed in one process, in the same rounds,
and decided on paired per-round ratios; a suspected regression is measured again before it fails.

Why not a stored baseline: two benchmarks made at different times see different machines (a
neighbour's job, a frequency change, another thread placement), and at every core of a small shared
machine that drift is as large as the regressions a gate should catch (benchmarks/README.md, "The
CI gate's noise"). Timed side by side, drift hits both models alike and cancels in their ratio, as
airspeed velocity's ``asv continuous`` does for two commits.

Order: every text runs through both models back to back, the first of the two alternating from
text to text and from round to round (A B, B A, A B, ...: ABBA), so that neither always runs on a
cache the other warmed or a core the other heated. Each round gives one ratio, the change's median
latency over the base's; the change is the median ratio - 1, and a check regresses when it is over
the limit *and* a one-sided Wilcoxon signed-rank test on the log ratios says the change is slower
(p below the significance). A check that regresses is measured again, afresh (new sessions), up to
``confirm`` more times, and fails the gate only when every measurement regressed.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from statistics import median
from typing import TYPE_CHECKING, Callable

from edgepress.bench.artifacts import Artifact
from edgepress.bench.gate import NOT_COMPARABLE, OK, REGRESSED, Check, GateInputError, Limits

if TYPE_CHECKING:
    from edgepress.recipe.deploy import BenchSection

log = logging.getLogger(__name__)

# With n rounds all slower, the one-sided signed-rank p-value is 1 / 2**n: 5 rounds can reach 0.031.
MIN_PAIRED_ROUNDS = 5
ORDER = "ABBA: within each round, text by text, the model that runs first alternates"
Rounds = list[tuple[float, float]]  # per round: (base median ms, change median ms)


@dataclass(frozen=True)
class Pair:
    name: str
    base: Artifact
    change: Artifact


def pair_up(base: list[Artifact], change: list[Artifact]) -> tuple[list[Pair], list[Check]]:
    """Artifacts of the two sides matched by name (one model each: matched whatever their names);
    the base's artifacts the change lacks, as checks that could not be compared."""
    if len(base) == 1 and len(change) == 1:
        return [Pair(change[0].name, base[0], change[0])], []
    found = {a.name: a for a in change}
    pairs = [Pair(a.name, a, found[a.name]) for a in base if a.name in found]
    if not pairs:
        raise GateInputError(
            f"the base ({', '.join(a.name for a in base)}) and the change ({', '.join(a.name for a in change)}) share no artifact "
            "name; give two models, or two run folders made by the same recipe"
        )
    missing = [Check(a.name, "present", status=NOT_COMPARABLE, note="artifact missing from the change") for a in base if a.name not in found]
    return pairs, missing


def paired_rounds(base: list[Callable], change: list[Callable], rounds: int, warmup: int) -> Rounds:
    """Per round, each model's median milliseconds over the calls (one per text), in ABBA order."""
    for call in base[:warmup] + change[:warmup]:
        call()
    measured = []
    for round_index in range(rounds):
        times: tuple[list[float], list[float]] = ([], [])
        for i, calls in enumerate(zip(base, change)):
            order = (0, 1) if (round_index + i) % 2 == 0 else (1, 0)
            for side in order:
                start = time.perf_counter()
                calls[side]()
                times[side].append(1000 * (time.perf_counter() - start))
        measured.append((median(times[0]), median(times[1])))
    return measured


def decide(artifact: str, what: str, rounds: Rounds, limits: Limits) -> Check:
    """One latency check from paired rounds: the median ratio's change, the signed-rank test, the verdict."""
    from scipy.stats import wilcoxon

    check = Check(artifact, what, limit=limits.latency, test="signed-rank test")
    if len(rounds) < MIN_PAIRED_ROUNDS:
        check.status, check.note = NOT_COMPARABLE, f"{len(rounds)} round(s) cannot tell a slow-down from noise; use --rounds {MIN_PAIRED_ROUNDS} or more"
        return check
    check.ratios = [round(b / a, 5) for a, b in rounds]
    logs = [math.log(b / a) for a, b in rounds]
    check.baseline, check.current = median(a for a, _ in rounds), median(b for _, b in rounds)
    check.change = math.exp(median(logs)) - 1
    check.p_value = 1.0 if all(v == 0 for v in logs) else float(wilcoxon(logs, alternative="greater").pvalue)
    check.status = REGRESSED if check.change > limits.latency and check.p_value < limits.significance else OK
    return check


def confirmed(measure: Callable[[], Check], confirm: int) -> Check:
    """The check, measured again while it regresses, at most ``confirm`` more times: it fails only
    when every measurement regressed. Every measurement is kept on the check (report, JUnit)."""
    attempts = [measure()]
    while attempts[-1].status == REGRESSED and len(attempts) <= confirm:
        log.info("gate: %s %s regressed; measuring again to confirm", attempts[-1].artifact, attempts[-1].what)
        attempts.append(measure())
    final = attempts[-1]
    keys = ("change", "p_value", "status", "baseline", "current", "ratios")
    final.attempts = [{k: getattr(a, k) for k in keys} for a in attempts]
    if len(attempts) > 1:
        first = attempts[0]
        final.note = (
            f"confirmed: regressed in all {len(attempts)} measurements" if final.status == REGRESSED
            else f"not confirmed: measurement 1 regressed ({100 * first.change:+.1f}%, p={first.p_value:.3f}), measurement {len(attempts)} did not"
        )  # fmt: skip
    return final


class PairedTimer:
    """Times a pair on the same texts at one thread count, each call opening both models afresh."""

    def __init__(self, rows: dict[str, list], cfg: "BenchSection"):
        self.rows, self.cfg = rows, cfg

    def __call__(self, pair: Pair, threads: int, cases: list[str]) -> dict[str, Rounds]:
        from edgepress.bench.measure import Loaded

        base, change = Loaded(pair.base, self.rows, self.cfg), Loaded(pair.change, self.rows, self.cfg)
        base_calls, change_calls = base.calls(threads), change.calls(threads)
        measured = {}
        for case in cases:
            if base_calls.get(case) and change_calls.get(case):  # a bundle has batch 1 only; few texts, no full batch
                log.info("gate: %s, %d thread(s), %s", pair.name, threads, case)
                measured[case] = paired_rounds(base_calls[case], change_calls[case], self.cfg.rounds, self.cfg.warmup)
        return measured


def compare_models(pairs: list[Pair], threads: list[int], cases: list[str], limits: Limits, confirm: int, timer: Callable) -> list[Check]:
    """Every latency check of every pair (``timer(pair, threads, cases)`` gives paired rounds per case),
    each confirmed by measuring it again when it regresses."""
    checks = []
    for pair in pairs:
        for count in threads:
            first = timer(pair, count, cases)
            for case in cases:
                what = f"latency {count}T {case}"
                if case not in first:
                    checks.append(Check(pair.name, what, status=NOT_COMPARABLE, note=f"{case} cannot be timed for both models (a bundle takes batch 1 only; or too few texts)"))
                    continue
                checks.append(confirmed(_measurer(pair, count, case, first[case], limits, timer), confirm))
    return checks


def _measurer(pair: Pair, threads: int, case: str, first: Rounds, limits: Limits, timer: Callable) -> Callable[[], Check]:
    """The check's measurements: the rounds already timed, then fresh ones on each call."""
    pending = [first]

    def measure() -> Check:
        rounds = pending.pop() if pending else timer(pair, threads, [case])[case]
        return decide(pair.name, f"latency {threads}T {case}", rounds, limits)

    return measure


def accuracy_checks(pairs: list[Pair], data, max_length: int, limit_points: float) -> list[Check]:
    """Both models of each pair evaluated here on the same test texts (a run's recorded scores may
    come from other data), then held to the accuracy limit as the stored-baseline gate does."""
    from edgepress.bench.gate import accuracy_check
    from edgepress.bench.stage import measure_missing_accuracy

    checks = []
    for pair in pairs:
        for artifact in (pair.base, pair.change):
            artifact.test, artifact.test_source = {}, None
        measure_missing_accuracy([pair.base, pair.change], data, max_length)
        checks += accuracy_check(pair.name, {"test": pair.base.test}, {"test": pair.change.test}, limit_points)
    return checks
