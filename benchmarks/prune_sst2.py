"""Structured pruning on SST-2: accuracy and ONNX Runtime batch-1 latency before and after, in one run.

The default recipe's prune settings (recipes/bbc-news.yaml: half the heads of every layer, half the
FFN neurons, two steps with recovery by distillation) applied to the SST-2 student of
recipes/sst2.yaml. Both students, unpruned and pruned, are exported with the same settings and
timed interleaved on the same tokenized test sentences (batch 1, real lengths), with 1 thread and
with every core.

    python benchmarks/prune_sst2.py                                   # fine-tunes the teacher first
    python benchmarks/prune_sst2.py --teacher runs/bench-teacher/01-finetune

Prints a table and writes benchmarks/results/prune_sst2.json.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import yaml
from common import log_like_the_cli
from recipe_runs import run_stages

from edgepress.bench.runner import measure
from edgepress.running.runs import environment

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    args = parse_args()
    log_like_the_cli()
    base = yaml.safe_load(args.recipe.read_text())
    base["prune"] = yaml.safe_load((ROOT / "recipes" / "bbc-news.yaml").read_text())["prune"]
    base["prune"]["max_seq_length"] = base["distill"]["max_seq_length"]  # SST-2 sentences: 64 tokens
    base["export"] = {"max_seq_length": base["distill"]["max_seq_length"], "mobile": False}
    teacher = args.teacher or teacher_folder(base, args)
    pruned_run = run(base, args, "bench-prune-sst2", ["distill", "prune", "export"], str(teacher))
    distilled, pruned, pruned_export = pruned_run
    (unpruned_export,) = run(base, args, "bench-prune-sst2-unpruned", ["export"], str(distilled.folder))
    models = {"unpruned": unpruned_export.folder / "model_optimized.onnx", "pruned": pruned_export.folder / "model_optimized.onnx"}
    examples = test_inputs(unpruned_export.folder, base, args.examples)
    latency = {
        threads: measure({k: str(v) for k, v in models.items()}, examples, threads, args.rounds)
        for threads in sorted({1, os.cpu_count() or 1})
    }
    report(args, base, teacher, distilled, pruned, unpruned_export, pruned_export, models, latency, len(examples))


def run(base: dict, args: argparse.Namespace, name: str, stages: list[str], model: str):
    return run_stages(base, args.set, args.output_dir, name, stages, model)


def teacher_folder(base: dict, args) -> Path:
    (outcome,) = run(base, args, "bench-teacher", ["finetune"], base["model"]["name_or_path"])
    return outcome.folder


def test_inputs(folder: Path, base: dict, count: int) -> list[dict]:
    """The first ``count`` test sentences, tokenized one by one (batch 1, no padding)."""
    from transformers import AutoTokenizer

    from edgepress.data.load import load_data
    from edgepress.recipe.sections import DataSection

    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = load_data(DataSection(**base["data"])).test["text"][:count]
    length = base["distill"]["max_seq_length"]
    return [dict(tokenizer([t], truncation=True, max_length=length, return_tensors="np")) for t in texts]


def report(args, base, teacher, distilled, pruned, unpruned_export, pruned_export, models, latency, examples) -> None:
    rows = []
    for name, torch_stage, onnx_stage in (("unpruned", distilled, unpruned_export), ("pruned", pruned, pruned_export)):
        shape = pruned.manifest["metrics"]["before" if name == "unpruned" else "after"]
        rows.append({
            "model": name,
            "torch_test_accuracy": torch_stage.manifest["metrics"]["test"]["accuracy"],
            "onnx_test_accuracy": onnx_stage.manifest["metrics"]["test"]["accuracy"],
            "parameters": shape["parameters"],
            "heads_per_layer": shape["heads_per_layer"],
            "ffn_per_layer": shape["ffn_per_layer"],
            "onnx_bytes": models[name].stat().st_size,
            "latency": {str(t): latency[t][name] for t in latency},
        })  # fmt: skip
    print(f"{'model':<9} {'test acc':>9} {'ONNX acc':>9} {'params':>11} {'heads/layer':>12} {'FFN':>5} {'MB':>6}", end="")
    print("".join(f" {f'p50 {t}T ms':>11}" for t in latency))
    for r in rows:
        print(
            f"{r['model']:<9} {100 * r['torch_test_accuracy']:>8.2f}% {100 * r['onnx_test_accuracy']:>8.2f}% "
            f"{r['parameters']:>11,} {r['heads_per_layer'][0]:>12} {r['ffn_per_layer'][0]:>5} {r['onnx_bytes'] / 1e6:>6.1f}",
            end="",
        )
        print("".join(f" {r['latency'][str(t)]['p50_ms']:>11.3f}" for t in latency))
    speedups = {str(t): round(latency[t]["unpruned"]["p50_ms"] / latency[t]["pruned"]["p50_ms"], 3) for t in latency}
    change = 100 * (rows[1]["torch_test_accuracy"] - rows[0]["torch_test_accuracy"])
    print(f"pruned vs unpruned: test accuracy {change:+.2f} points; p50 speed-up {speedups} (threads: ratio)")
    result = {
        "benchmark": "prune_sst2",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "recipe": str(args.recipe),
        "prune_section": base["prune"],
        "overrides": args.set,
        "teacher": str(teacher),
        "latency_examples": examples,
        "latency_rounds": args.rounds,
        "machine": environment(),
        "rows": rows,
        "test_accuracy_change_points": round(change, 2),
        "p50_speedup": speedups,
        "prune_steps": pruned.manifest["metrics"]["steps"],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.json}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "sst2.yaml")
    parser.add_argument("--teacher", type=Path, help="a fine-tuned SST-2 teacher folder; fine-tuned first when absent")
    parser.add_argument("--examples", type=int, default=200, help="test sentences timed per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved passes over the sentences")
    parser.add_argument("--set", action="append", default=[], help="recipe override, e.g. prune.steps=1")
    parser.add_argument("--output-dir", default="runs")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "prune_sst2.json")
    return parser.parse_args()


if __name__ == "__main__":
    main()
