"""Does `edgepress gate` tell noise from a regression on this machine? False alarms and detections, counted.

Two modes, measured in one run, alternating so that the machine's drift hits both alike:

- stored (``--modes stored``): ``--baseline-runs`` benchmarks of the model under test (beside a
  fixed reference model), pooled into one baseline as `edgepress gate --baseline a --baseline b ...`
  does, then ``--repeats`` separate benchmarks of the same model (self-comparisons: every failing
  gate is a false alarm) and as many of a copy made slower on purpose (every passing gate is a
  missed regression). Each is gated against the baseline twice: relative to the reference model
  (per-round ratios) and in absolute milliseconds.
- A/B (``--modes ab``): ``--repeats`` runs of `edgepress gate --base-model MODEL --model MODEL` (both
  timed in the same rounds; a failing gate is a false alarm) and as many with the slower copy as
  ``--model``, each with the gate's confirmation (``--ab-args`` passes more gate options).

Every benchmark and gate is the real `edgepress` command.

The slower copy is the model plus a chain of fp32 MatMuls over the attention mask, widened to the
hidden size, whose result is added to the logits times 1e-30 (so predictions do not change and no
optimizer can drop the work). The chain's length is calibrated here so that batch 1 at one thread,
at ``--length`` tokens, is about ``--slowdown`` slower; the gates record the slow-down they measured.

    python benchmarks/gate_noise.py --reference runs/gate-models/01-quantize/model_int8_static.onnx \\
        --model runs/gate-models/01-quantize/model_int8_dynamic.onnx --repeats 20 --slowdown 0.1 \\
        --max-latency-regression 5% --bench-args "--threads 1 --threads 2 --examples 32 --rounds 5" \\
        --ab-args "--threads 1 --threads 2 --examples 32 --rounds 10"

Prints every unexpected gate's table, a summary, the per-round spread of the A/B self-comparisons,
and writes benchmarks/results/gate_noise.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import write_result

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    args = parse_args()
    if args.summarize:  # a saved result again, e.g. to read it per thread count
        summary(json.loads(args.summarize.read_text())["gates"])
        return
    out = args.output_dir
    slower = args.slower_model or make_slower(args.model, args.slowdown, out / "slower", args.length, args.calibrate_threads)
    baselines = [out / f"baseline-{i}" / "bench.json" for i in range(1, args.baseline_runs + 1)]
    for path in baselines if "stored" in args.modes else []:
        bench(args, path.parent, args.model)
    rows = []
    for i in range(1, args.repeats + 1):
        for kind, model in (("repeat", args.model), ("slower", slower)):
            if "stored" in args.modes:
                bench(args, out / f"{kind}-{i}", model)
                rows += [gate(args, baselines, out / f"{kind}-{i}" / "bench.json", kind, ref) for ref in (True, False)]
            if "ab" in args.modes:
                rows.append(ab_gate(args, model, kind, out / f"ab-{kind}-{i}.json"))
    counts = summary(rows)
    environment = json.loads((baselines[0] if "stored" in args.modes else out / "ab-repeat-1.json").read_text())["environment"]
    write_result(args.json, "gate_noise", {
        "modes": args.modes, "reference": str(args.reference), "model": str(args.model), "slower": str(slower),
        "slowdown_target": args.slowdown, "bench_args": args.bench_args, "ab_args": args.ab_args,
        "max_latency_regression": args.max_latency_regression, "repeats": args.repeats, "baseline_runs": args.baseline_runs,
        "slowdown_length": args.length, "calibrate_threads": args.calibrate_threads, "environment": environment, "counts": counts, "gates": rows,
    }, with_machine=False)  # fmt: skip


def make_slower(model: Path, slowdown: float, folder: Path, length: int, threads: int = 1) -> Path:
    """A copy of ``model`` (beside its tokenizer and config) that is about ``slowdown`` slower at batch 1:
    the chain's length is re-scaled by the measured slow-down until it is within a fifth of the target."""
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(model.parent, folder, ignore=shutil.ignore_patterns("*.onnx", "*.ort", "*.data"))
    hidden = json.loads((model.parent / "config.json").read_text()).get("hidden_size", 256)
    matmuls, measured = 4, 0.0
    for _ in range(4):
        slower = slow_down(model, folder / model.name, hidden, matmuls)
        measured = batch1_ratio(model, slower, length, threads) - 1
        if abs(measured - slowdown) <= slowdown / 5:
            break
        matmuls = max(1, round(matmuls * slowdown / max(measured, 1e-3)))
    print(f"slower model: {matmuls} extra {hidden}x{hidden} MatMuls, batch 1 at {threads} thread(s) and {length} tokens {100 * measured:+.1f}% "
          f"(target {100 * slowdown:+.0f}%)", flush=True)  # fmt: skip
    return slower


def slow_down(source: Path, target: Path, hidden: int, matmuls: int) -> Path:
    """``source`` with ``matmuls`` chained [batch, seq, hidden] x [hidden, hidden] MatMuls added to its logits x 1e-30."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    logits = graph.output[0].name
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(np.ones((1, hidden), np.float32), "slow_w_in"), numpy_helper.from_array(np.array(1e-30, np.float32), "slow_eps")]
    weights += [numpy_helper.from_array((rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32), f"slow_w{i}") for i in range(matmuls)]
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["slow_mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["slow_mask", "slow_axis"], ["slow_x"]),
        helper.make_node("MatMul", ["slow_x", "slow_w_in"], ["slow_h0"]),
    ]
    weights.append(numpy_helper.from_array(np.array([-1], np.int64), "slow_axis"))
    nodes += [helper.make_node("MatMul", [f"slow_h{i}", f"slow_w{i}"], [f"slow_h{i + 1}"]) for i in range(matmuls)]
    nodes += [
        helper.make_node("ReduceMean", [f"slow_h{matmuls}"], ["slow_mean"], keepdims=0),
        helper.make_node("Mul", ["slow_mean", "slow_eps"], ["slow_tiny"]),
        helper.make_node("Add", ["slow_logits", "slow_tiny"], [logits]),
    ]
    for node in graph.node:  # the model's own logits now feed the Add
        node.output[:] = ["slow_logits" if o == logits else o for o in node.output]
    graph.node.extend(nodes)
    graph.initializer.extend(weights)
    onnx.save(model, str(target))
    return target


def batch1_ratio(model: Path, other: Path, length: int, threads: int = 1, texts: int = 16, rounds: int = 9) -> float:
    """Median latency of ``other`` over ``model`` at batch 1 and ``threads`` threads, on inputs of ``length`` tokens, interleaved."""
    from edgepress.bench import runner

    sessions = [runner.open_session(str(p), threads) for p in (model, other)]
    example = {"input_ids": np.full((1, length), 1000, np.int64), "attention_mask": np.ones((1, length), np.int64)}
    calls = {str(i): [lambda s=s: s.run(None, runner.feeds_for(s, example))] * texts for i, s in enumerate(sessions)}
    times = runner.time_interleaved(calls, rounds)
    return float(np.median(times["1"]) / np.median(times["0"]))


def bench(args: argparse.Namespace, out: Path, model: Path) -> None:
    command = [sys.executable, "-m", "edgepress", "bench", "--model", f"ref={args.reference}", "--model", f"m={model}",
               "--output", str(out), *args.bench_args.split()]  # fmt: skip
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def gate(args: argparse.Namespace, baselines: list[Path], current: Path, kind: str, reference: bool) -> dict:
    command = [sys.executable, "-m", "edgepress", "gate", *(a for b in baselines for a in ("--baseline", str(b))), "--current", str(current),
               "--max-latency-regression", args.max_latency_regression]  # fmt: skip
    command += ["--reference", "ref"] if reference else []
    done = subprocess.run(command, capture_output=True, text=True)
    expected = 1 if kind == "slower" else 0
    if done.returncode != expected:
        print(f"\n## {current.parent.name}, {'relative to ref' if reference else 'absolute ms'}: exit {done.returncode}\n{done.stdout}{done.stderr}")
    return {
        "current": current.parent.name, "kind": kind, "reference": "ref" if reference else None, "mode": "stored", "exit": done.returncode,
        "expected_exit": expected, "latency_changes": changes(baselines, current, "ref" if reference else None, args),
    }  # fmt: skip


def ab_gate(args: argparse.Namespace, model: Path, kind: str, record: Path) -> dict:
    """`edgepress gate` in A/B mode: the model under test as the base, ``model`` as the change."""
    command = [sys.executable, "-m", "edgepress", "gate", "--base-model", str(args.model), "--model", str(model),
               "--max-latency-regression", args.max_latency_regression, "--json", str(record), *args.ab_args.split()]  # fmt: skip
    print("$", " ".join(command[2:]), flush=True)
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = round(time.monotonic() - started, 1)  # the whole command: what a CI step costs
    expected = 1 if kind == "slower" else 0
    if done.returncode != expected:
        print(f"\n## {record.stem}, A/B: exit {done.returncode}\n{done.stdout}{done.stderr}")
    checks = json.loads(record.read_text())["checks"] if record.is_file() else []
    changes = {
        c["what"]: {"change": round(c["change"], 4), "p": round(c["p_value"], 4), "status": c["status"],
                    "attempts": [a["status"] for a in c["attempts"]], "ratios": c["ratios"]}
        for c in checks if c["what"].startswith("latency") and c["change"] is not None
    }  # fmt: skip
    return {"current": record.stem, "kind": kind, "reference": None, "mode": "ab", "exit": done.returncode, "expected_exit": expected,
            "seconds": seconds, "latency_changes": changes}  # fmt: skip


def changes(baselines: list[Path], current: Path, reference: str | None, args: argparse.Namespace) -> dict[str, dict]:
    """Change of m's median round p50 (or ratio to ref) and the rank test's p, per case, as the gate computes them."""
    from edgepress.bench.gate import Limits, compare, load_bench, parse_fraction, pool_baselines

    limits = Limits(parse_fraction(args.max_latency_regression), 100.0)
    pooled = pool_baselines([load_bench(b) for b in baselines], [str(b) for b in baselines])
    result = compare(pooled, load_bench(current), limits, reference)
    return {c.what: {"change": round(c.change, 4), "p": round(c.p_value, 4), "status": c.status}
            for c in result.checks if c.artifact == "m" and c.p_value is not None}  # fmt: skip


def summary(rows: list[dict]) -> dict[str, str]:
    """Failed gates per comparison, what they would be if only one thread count's checks counted, and
    (A/B) how many first measurements regressed and were cleared by the confirmation."""
    threads = sorted({k.split()[1] for r in rows for k in r["latency_changes"]}, key=lambda t: int(t[:-1]))
    print(f"\n{'mode':<7} {'compared with':<14} {'normalized':<11} {'gates failed':>12}  goal   "
          + "".join(f"{'on ' + t + ' alone':>12}" for t in threads) + f"{'cleared':>9}   latency change of m over all cases (min .. median .. max)")  # fmt: skip
    counts = {}
    for mode in ("stored", "ab"):
        for kind in ("repeat", "slower"):
            for reference in ("ref", None):
                group = [r for r in rows if r.get("mode", "stored") == mode and r["kind"] == kind and r["reference"] == reference]
                if not group:
                    continue
                values = sorted(v["change"] for r in group for v in r["latency_changes"].values())
                label = f"{kind}, {'by ref' if reference else 'absolute'}" + (", A/B" if mode == "ab" else "")
                counts[label] = f"{sum(r['exit'] != 0 for r in group)}/{len(group)}"
                per_thread = [sum(_regressed(r, t) for r in group) for t in threads]
                cleared = sum(_cleared(r) for r in group) if mode == "ab" else None
                goal = f"0/{len(group)}" if kind == "repeat" else f"{len(group)}/{len(group)}"
                spread = f"{100 * values[0]:+.1f}% .. {100 * values[len(values) // 2]:+.1f}% .. {100 * values[-1]:+.1f}%" if values else "-"
                print(f"{'A/B' if mode == 'ab' else mode:<7} {kind:<14} {'by ref' if reference else 'no':<11} {counts[label]:>12}  {goal:<6} "
                      + "".join(f"{f'{n}/{len(group)}':>12}" for n in per_thread) + f"{'-' if cleared is None else cleared:>9}   {spread}")  # fmt: skip
    _round_spread(rows, threads)
    seconds = [r["seconds"] for r in rows if r.get("mode") == "ab"]
    if seconds:
        print(f"an A/B gate took {min(seconds):.0f} .. {np.median(seconds):.0f} .. {max(seconds):.0f} s (min .. median .. max; the whole command)")
    return counts


def _cleared(row: dict) -> bool:
    """A gate whose first measurement of some check regressed and whose confirmation did not."""
    return any(v.get("attempts", [])[:1] == ["regressed"] and v["status"] != "regressed" for v in row["latency_changes"].values())


def _round_spread(rows: list[dict], threads: list[str]) -> None:
    """The A/B self-comparisons' per-round ratios per thread count: the noise a paired round carries."""
    for t in threads:
        ratios = np.array([x for r in rows if r.get("mode") == "ab" and r["kind"] == "repeat"
                           for k, v in r["latency_changes"].items() if k.split()[1] == t for x in v.get("ratios", [])])  # fmt: skip
        medians = {kind: np.median([v["change"] for r in rows if r.get("mode") == "ab" and r["kind"] == kind
                                     for k, v in r["latency_changes"].items() if k.split()[1] == t] or [np.nan]) for kind in ("repeat", "slower")}  # fmt: skip
        if ratios.size:
            print(f"A/B at {t}: median change of m over itself {100 * medians['repeat']:+.1f}%, of the slower copy over m {100 * medians['slower']:+.1f}%")
            low, mid, high = np.percentile(ratios, [5, 50, 95])
            print(f"A/B self-comparisons at {t}: {ratios.size} paired rounds, ratio 5th .. 50th .. 95th percentile "
                  f"{low:.3f} .. {mid:.3f} .. {high:.3f}, std {ratios.std():.3f}")  # fmt: skip


def _regressed(row: dict, threads: str) -> bool:
    return any(v["status"] == "regressed" for k, v in row["latency_changes"].items() if k.split()[1] == threads)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, help="the fixed model every benchmark also times")
    parser.add_argument("--model", type=Path, help="the model under test (beside its config and tokenizer)")
    parser.add_argument("--summarize", type=Path, help="print the summary of a result JSON this script wrote, and stop")
    parser.add_argument("--repeats", type=int, default=20, help="self-comparisons, and as many comparisons with the slower model")
    parser.add_argument("--baseline-runs", type=int, default=3, help="separate benchmarks pooled into the baseline")
    parser.add_argument("--slowdown", type=float, default=0.2, help="how much slower the slowed copy is made (0.2: 20%%)")
    parser.add_argument("--length", type=int, default=128, help="tokens per input when calibrating the slow-down (bench's max_seq_length)")
    parser.add_argument("--calibrate-threads", type=int, default=1, help="thread count at which the slow-down is calibrated")
    parser.add_argument("--slower-model", type=Path, help="use this model as the slower one instead of making one")
    parser.add_argument("--modes", nargs="+", choices=("stored", "ab"), default=["stored", "ab"], help="which gate modes to measure")
    parser.add_argument("--bench-args", default="", help="more `edgepress bench` options, e.g. '--threads 1 --threads 2'")
    parser.add_argument("--ab-args", default="", help="more `edgepress gate` options for the A/B mode, e.g. '--threads 1 --rounds 10'")
    parser.add_argument("--max-latency-regression", default="10%")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "runs" / "gate-noise")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "gate_noise.json")
    args = parser.parse_args()
    if not args.summarize and not (args.model and (args.reference or args.modes == ["ab"])):
        parser.error("--model is required, and --reference for the stored mode (or --summarize FILE)")
    return args


if __name__ == "__main__":
    main()
