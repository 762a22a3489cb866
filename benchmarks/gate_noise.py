"""Does `edgepress gate` tell noise from a regression on this machine? Four benchmarks, two gates each.

Benchmarks a reference model next to the model under test three times (a baseline and two repeats
of the same model), and once more with a slower model under the model's name; then gates each
repeat and the slower one against the baseline, with the reference model (ratios, not absolute
milliseconds) and without it. Every benchmark and gate is the real `edgepress` command.

    python benchmarks/gate_noise.py --reference runs/bbc-news/04-export/model.onnx \\
        --model runs/bbc-news/05-quantize/model_int8_dynamic.onnx --slower runs/bbc-news/04-export/model_optimized.onnx

The slower model must sit beside the same tokenizer files. Prints every gate's table and a summary;
writes benchmarks/results/gate_noise.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {"repeat 1": 0, "repeat 2": 0, "slower": 1}


def main() -> None:
    args = parse_args()
    out = args.output_dir
    benches = {"baseline": args.model, "repeat 1": args.model, "repeat 2": args.model, "slower": args.slower}
    for name, model in benches.items():
        bench(args, out / slug(name), model)
    rows = []
    for name in EXPECTED:
        for reference in (True, False):
            rows.append(gate(args, out / "baseline" / "bench.json", out / slug(name) / "bench.json", name, reference))
    summary(rows)
    result = {
        "benchmark": "gate_noise",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "reference": str(args.reference), "model": str(args.model), "slower": str(args.slower),
        "bench_args": args.bench_args, "max_latency_regression": args.max_latency_regression,
        "environment": json.loads((out / "baseline" / "bench.json").read_text())["environment"],
        "gates": rows,
    }  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


def bench(args: argparse.Namespace, out: Path, model: Path) -> None:
    command = [sys.executable, "-m", "edgepress", "bench", "--model", f"ref={args.reference}", "--model", f"m={model}",
               "--output", str(out), *args.bench_args.split()]  # fmt: skip
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def gate(args: argparse.Namespace, baseline: Path, current: Path, name: str, reference: bool) -> dict:
    command = [sys.executable, "-m", "edgepress", "gate", "--baseline", str(baseline), "--current", str(current),
               "--max-latency-regression", args.max_latency_regression, "--junit", str(current.with_suffix(".xml"))]  # fmt: skip
    command += ["--reference", "ref"] if reference else []
    done = subprocess.run(command, capture_output=True, text=True)
    print(f"\n## {name}, {'relative to ref' if reference else 'absolute ms'}: exit {done.returncode}\n{done.stdout}{done.stderr}")
    base, cur = (json.loads(p.read_text()) for p in (baseline, current))
    return {
        "current": name, "reference": "ref" if reference else None, "exit": done.returncode,
        "expected_exit": EXPECTED[name], "latency_changes": changes(base, cur, "ref" if reference else None),
    }  # fmt: skip


def changes(baseline: dict, current: dict, reference: str | None) -> dict[str, float]:
    """Relative change of m's median round p50 per thread count and case, as the gate computes it."""
    from edgepress.bench.gate import compare

    checks, _ = compare(baseline, current, 1e9, 100.0, reference)
    return {c.what: round(c.change, 4) for c in checks if c.artifact == "m" and c.what.startswith("latency")}


def summary(rows: list[dict]) -> None:
    print(f"{'current':<10} {'normalized':<12} {'exit':>4} {'expected':>8}  latency change of m (min .. max)")
    for r in rows:
        values = list(r["latency_changes"].values())
        print(
            f"{r['current']:<10} {'by ref' if r['reference'] else 'no':<12} {r['exit']:>4} {r['expected_exit']:>8}  "
            f"{100 * min(values):+.1f}% .. {100 * max(values):+.1f}%"
        )


def slug(text: str) -> str:
    return text.replace(" ", "-")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="the fixed model every benchmark also times")
    parser.add_argument("--model", type=Path, required=True, help="the model under test")
    parser.add_argument("--slower", type=Path, required=True, help="a slower model, benchmarked under the model's name")
    parser.add_argument("--bench-args", default="", help="more `edgepress bench` options, e.g. '--data ../shared/data/sst2'")
    parser.add_argument("--max-latency-regression", default="10%")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "runs" / "gate-noise")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "gate_noise.json")
    return parser.parse_args()


if __name__ == "__main__":
    main()
