"""Static int8 calibration on short texts: padded to max_seq_length, or at their real lengths?

SST-2 sentences are short (about 10-25 tokens) while the quantize stage truncates at 128 tokens.
Padding every calibration text to 128 fills most calibration positions with [PAD], whose
activations then set the int8 ranges. This benchmark quantizes the same fp32 SST-2 model statically
with both settings of ``quantize.calibration_padding`` (``max_length``, the old behaviour, and
``longest``, the default: each batch padded to its longest text), for each calibration method
asked for, with tuning off and a 99% tolerance, so that each result is the configuration as set, and
prints validation and test accuracy against fp32 side by side.

    python benchmarks/calibration_lengths.py                                 # fine-tunes on SST-2 first
    python benchmarks/calibration_lengths.py --model runs/bench-calibration-sst2/01-finetune

Writes benchmarks/results/calibration_lengths.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml
from common import log_like_the_cli, write_result
from recipe_runs import run_stages


ROOT = Path(__file__).resolve().parent.parent
PADDINGS = ("max_length", "longest")


def main() -> None:
    args = parse_args()
    log_like_the_cli()
    base = yaml.safe_load(args.recipe.read_text())
    base["export"] = {"max_seq_length": base["finetune"]["max_seq_length"], "mobile": False}
    stages = ["export"] if args.model else ["finetune", "export"]
    export = run(base, args, "bench-calibration-sst2" if not args.model else "bench-calibration-sst2-export", stages, str(args.model or base["model"]["name_or_path"]))[-1]
    rows = []
    for method in args.methods:
        for padding in PADDINGS:
            base["quantize"] = {
                "dynamic": False, "static": True, "tune": False, "tolerance": 0.99, "max_seq_length": args.max_seq_length,
                "calibration_method": method, "calibration_padding": padding, "calibration_samples": args.samples,
            }  # fmt: skip
            (outcome,) = run(base, args, f"bench-calibration-{method}-{padding}", ["quantize"], str(export.folder))
            rows.append(row(method, padding, outcome.manifest["metrics"]))
    report(args, export, rows)


def run(base: dict, args: argparse.Namespace, name: str, stages: list[str], model: str):
    return run_stages(base, args.set, args.output_dir, name, stages, model)


def row(method: str, padding: str, metrics: dict) -> dict:
    static = metrics["variants"]["static"]
    return {
        "method": method, "padding": padding,
        "fp32_validation": metrics["fp32"]["validation"]["accuracy"], "fp32_test": metrics["fp32"]["test"]["accuracy"],
        "validation": static["validation"]["accuracy"], "test": static["test"]["accuracy"],
        "test_agreement_with_fp32": static["test_agreement_with_fp32"], "described": static["described"],
    }  # fmt: skip


def report(args: argparse.Namespace, export, rows: list[dict]) -> None:
    first = rows[0]
    print(f"fp32 ONNX: validation {100 * first['fp32_validation']:.2f}%, test {100 * first['fp32_test']:.2f}%")
    print(f"{'method':<11} {'padding':<11} {'val acc':>8} {'change':>7} {'test acc':>9} {'change':>7} {'agrees w/ fp32 (test)':>22}")
    for r in rows:
        print(
            f"{r['method']:<11} {r['padding']:<11} {100 * r['validation']:>7.2f}% {100 * (r['validation'] - r['fp32_validation']):>+7.2f} "
            f"{100 * r['test']:>8.2f}% {100 * (r['test'] - r['fp32_test']):>+7.2f} {100 * r['test_agreement_with_fp32']:>21.1f}%"
        )
    write_result(args.json, "calibration_lengths", {
        "recipe": str(args.recipe), "overrides": args.set, "fp32_model": str(export.folder),
        "max_seq_length": args.max_seq_length, "calibration_samples": args.samples, "rows": rows,
    })  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "sst2.yaml")
    parser.add_argument("--model", type=Path, help="a fine-tuned SST-2 model folder; fine-tuned first when absent")
    parser.add_argument("--methods", nargs="+", default=["minmax", "percentile"], choices=["minmax", "entropy", "percentile"])
    parser.add_argument("--max-seq-length", type=int, default=128, help="quantize.max_seq_length (the stage's default)")
    parser.add_argument("--samples", type=int, default=128, help="quantize.calibration_samples")
    parser.add_argument("--set", action="append", default=[], help="recipe override, e.g. finetune.epochs=1")
    parser.add_argument("--output-dir", default="runs")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "calibration_lengths.json")
    return parser.parse_args()


if __name__ == "__main__":
    main()
