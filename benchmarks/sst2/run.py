"""SST-2 headline: edgepress's compressed model against the usual path, measured in one bench run.

    python benchmarks/sst2/run.py ../shared/data/sst2

1. `edgepress run benchmarks/sst2/recipe.yaml` with data.source set to the data folder: fine-tunes
   the teacher (builtin:minilm-l6), distills, prunes, trims the vocabulary, exports and quantizes.
   Every stage selects on dev.tsv (its "validation" split); test.tsv is only reported.
2. The usual path, what a user does without edgepress: the same teacher exported with optimum and
   quantized with ORTQuantizer, AutoQuantizationConfig.avx2(is_static=False, per_channel=False), in
   optimum's own environment (transformers 4.57 and optimum-onnx 0.1.0, usual-path.txt), which also
   opens edgepress's ONNX files with ORTModelForSequenceClassification (usual_path.py).
3. `edgepress bench` on every test sentence: the teacher in PyTorch fp32, the teacher in ONNX Runtime
   fp32 (optimum's export), the usual path, and edgepress's int8 models (the one with the best dev
   accuracy is "edgepress"; its copy with the tokenizer inside the graph is timed too), batch 1 at real
   lengths and batch 32 padded to 64 tokens, 1 thread and all cores.

Prints the side-by-side table, the ratios against the targets of issue 15 and the dev-set table of
every model the recipe made; writes benchmarks/results/sst2.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))
from common import edgepress, stage_folders  # noqa: E402
TARGETS = {"accuracy_points_below_teacher": 1.0, "speedup_vs_torch": 15.0, "speedup_vs_usual": 6.0, "size_ratio_vs_onnx": 10.0, "minutes": 75.0}  # minutes: issue 30 (60 before it)


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    timings: dict[str, float] = {}
    run = Path(args.output_dir) / args.name
    with timed(timings, "recipe"):
        edgepress("run", str(args.recipe), "--name", args.name, "--output-dir", args.output_dir,
                  "--set", f"data.source={args.data.resolve()}", *sum((["--set", s] for s in args.set), []))  # fmt: skip
    stages = stage_folders(run)
    teacher = stages["finetune"]
    with timed(timings, "usual path"):
        usual = usual_path(teacher, run / "usual-path")
    chosen, int8 = pick_int8(stages["quantize"])
    with timed(timings, "optimum opens edgepress's files"):  # the folders still serve optimum's users
        plain = [p.name for p in int8.values() if "tokenizer" not in p.name]
        opened = {**in_optimum_env("open", stages["export"], "model.onnx", "model_optimized.onnx"), **in_optimum_env("open", stages["quantize"], *plain)}
    models = {
        "teacher torch fp32": teacher,
        "teacher ORT fp32": usual["fp32"],
        "usual path int8": usual["int8"],
        **{f"edgepress {k}": v for k, v in int8.items()},
    }
    with timed(timings, "bench"):
        bench = run_bench(args, models, run / "bench")
    timings["total"] = round(time.monotonic() - started, 1)
    result = summarize(args, bench, stages, chosen, timings)
    result["optimum_opens"] = {name: v for name, v in opened.items() if name != "transformers"}
    print_result(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


class timed:
    """Wall seconds of a step into ``timings[name]``."""

    def __init__(self, timings: dict[str, float], name: str):
        self.timings, self.name = timings, name

    def __enter__(self) -> None:
        self.start = time.monotonic()

    def __exit__(self, *exc) -> None:
        self.timings[self.name] = round(time.monotonic() - self.start, 1)


def usual_path(teacher: Path, folder: Path) -> dict[str, Path]:
    """optimum's export of the teacher and its avx2 dynamic int8 quantization, in optimum's own
    environment (usual_path.py)."""
    done = in_optimum_env("export", teacher, folder)
    return {"fp32": Path(done["fp32"]), "int8": Path(done["int8"])}


def in_optimum_env(*arguments: object) -> dict:
    """Run usual_path.py with transformers 4.57 and optimum-onnx first on the path (usual-path.txt),
    installed once into a folder of their own."""
    overlay = Path.home() / ".cache" / "edgepress" / "usual-path"
    pins = HERE / "usual-path.txt"
    stamp = overlay / ".installed"
    if not stamp.is_file() or stamp.read_text() != pins.read_text():
        shutil.rmtree(overlay, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                        "--target", str(overlay), "-r", str(pins)], check=True)  # fmt: skip
        stamp.write_text(pins.read_text())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(overlay), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    done = subprocess.run([sys.executable, str(HERE / "usual_path.py"), *map(str, arguments)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"the usual path failed in optimum's environment:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def pick_int8(quantize: Path) -> tuple[str, dict[str, Path]]:
    """edgepress's int8 files, and the one with the best dev accuracy (dynamic on a tie)."""
    variants = json.loads((quantize / "edgepress.json").read_text())["metrics"]["variants"]
    files = {name: quantize / v["file"] for name, v in variants.items()}
    files |= {f"{name} + tokenizer": quantize / f"model_int8_{name}_with_tokenizer.onnx" for name, v in variants.items() if "with_tokenizer" in v}
    best = max(sorted(variants), key=lambda n: (variants[n]["validation"]["accuracy"], n == "dynamic"))
    return f"edgepress {best}", files


def run_bench(args: argparse.Namespace, models: dict[str, Path], out: Path) -> dict:
    named = sum((["--model", f"{name}={path}"] for name, path in models.items()), [])
    edgepress("bench", *named, "--data", str(args.data.resolve()), "--text-column", "sentence", "--label-column", "label",
              "--examples", str(args.examples), "--rounds", str(args.rounds), "--batch-size", "32",
              "--max-seq-length", "64", "--output", str(out))  # fmt: skip
    return json.loads((out / "bench.json").read_text())


def summarize(args: argparse.Namespace, bench: dict, stages: dict[str, Path], chosen: str, timings: dict[str, float]) -> dict:
    rows = {r["name"]: r for r in bench["artifacts"]}
    threads = [str(t) for t in bench["settings"]["threads"]]
    torch_row, onnx_row, usual_row, ours = rows["teacher torch fp32"], rows["teacher ORT fp32"], rows["usual path int8"], rows[chosen]

    def speedup(base: dict, t: str, case: str = "batch 1") -> float:
        return round(base["latency"][t][case]["p50_ms"] / ours["latency"][t][case]["p50_ms"], 2)

    ratios = {
        "accuracy_points_vs_teacher": round(100 * (ours["test"]["accuracy"] - torch_row["test"]["accuracy"]), 2),
        "speedup_vs_torch": {t: speedup(torch_row, t) for t in threads},
        "speedup_vs_usual": {t: speedup(usual_row, t) for t in threads},
        "size_ratio_vs_onnx": round(onnx_row["bytes"] / ours["bytes"], 2),
        "minutes": round(timings["total"] / 60, 1),
    }
    met = {
        "accuracy": ratios["accuracy_points_vs_teacher"] >= -TARGETS["accuracy_points_below_teacher"],
        "speedup_vs_torch": min(ratios["speedup_vs_torch"].values()) >= TARGETS["speedup_vs_torch"],
        "speedup_vs_usual": min(ratios["speedup_vs_usual"].values()) >= TARGETS["speedup_vs_usual"],
        "size": ratios["size_ratio_vs_onnx"] >= TARGETS["size_ratio_vs_onnx"],
        "time": ratios["minutes"] <= TARGETS["minutes"],
    }
    return {
        "benchmark": "sst2",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "recipe": str(args.recipe),
        "overrides": args.set,
        "machine": bench["environment"],
        "settings": bench["settings"],
        "examples": bench["examples"],
        "chosen": chosen,
        "rows": [table_row(r, threads) for r in bench["artifacts"]],
        "ratios": ratios,
        "targets": TARGETS,
        "met": met,
        "dev": dev_table(stages),
        "timings_s": timings,
    }


def table_row(row: dict, threads: list[str]) -> dict:
    latency = row["latency"]
    return {
        "model": row["name"],
        "test_accuracy": row["test"]["accuracy"],
        "p50_ms_batch1": {t: latency[t]["batch 1"]["p50_ms"] for t in threads},
        "sequences_per_s_batch32": {t: (latency[t].get("batch 32 x 64") or {}).get("sequences_per_s") for t in threads},
        "bytes": row["bytes"],
        "parameters": row.get("parameters"),
        "memory_added_mb": row.get("session_rss_mb"),
    }


def dev_table(stages: dict[str, Path]) -> list[dict]:
    """Dev-set (validation) accuracy of every model the recipe made: what the choices were made on."""
    rows = []
    for stage, folder in stages.items():
        metrics = json.loads((folder / "edgepress.json").read_text())["metrics"]
        if stage == "quantize":
            rows += [{"model": f"int8 {name}: {v['described']}", "dev_accuracy": v["validation"]["accuracy"], "test_accuracy": v["test"]["accuracy"]}
                     for name, v in metrics["variants"].items()]  # fmt: skip
            continue
        rows.append({"model": f"{folder.name}", "dev_accuracy": metrics["validation"]["accuracy"], "test_accuracy": metrics["test"]["accuracy"],
                     "parameters": _parameters(metrics)})  # fmt: skip
        if stage == "prune":
            for step in metrics["steps"]:
                rows.append({"model": f"  prune step {step['step']}", "dev_accuracy": step["validation_score_after_recovery"], "parameters": step["parameters"]})
            if metrics.get("vocabulary"):
                v = metrics["vocabulary"]
                rows.append({"model": f"  vocabulary {v['before']} -> {v['after']}", "dev_accuracy": v["validation_score_after"], "parameters": v["parameters_after"]})
    return rows


def _parameters(metrics: dict) -> int | None:
    """finetune and export record ``parameters``, prune ``after``, distill ``student``."""
    return metrics.get("parameters") or (metrics.get("after") or {}).get("parameters") or (metrics.get("student") or {}).get("parameters")


def print_result(result: dict) -> None:
    threads = list(result["rows"][0]["p50_ms_batch1"])
    head = f"{'model':<22} {'test acc':>8}" + "".join(f" {f'p50 {t}T ms':>10}" for t in threads)
    head += "".join(f" {f'b32 {t}T seq/s':>13}" for t in threads) + f" {'MB':>6} {'mem MB':>7}"
    print(f"\nSST-2 test.tsv, {result['examples']} sentences, {result['machine'].get('cpu')} ({' '.join(result['machine'].get('isa', []))})")
    print(head)
    for r in result["rows"]:
        memory = max((m for m in (r["memory_added_mb"] or {}).values() if m is not None), default=float("nan"))
        line = f"{r['model']:<22} {100 * r['test_accuracy']:>7.2f}%" + "".join(f" {r['p50_ms_batch1'][t]:>10.3f}" for t in threads)
        line += "".join(f" {_number(r['sequences_per_s_batch32'][t]):>13}" for t in threads) + f" {r['bytes'] / 1e6:>6.1f} {memory:>7.1f}"
        print(line)
    ratios, met = result["ratios"], result["met"]
    print(f"\n{result['chosen']} (best dev accuracy of edgepress's int8 models) against the targets:")
    print(f"  accuracy vs teacher (torch fp32): {ratios['accuracy_points_vs_teacher']:+.2f} points (target >= -1.0): {_verdict(met['accuracy'])}")
    print(f"  batch-1 p50 speed-up vs teacher torch fp32: {ratios['speedup_vs_torch']} (target >= 15x): {_verdict(met['speedup_vs_torch'])}")
    print(f"  batch-1 p50 speed-up vs the usual path: {ratios['speedup_vs_usual']} (target >= 6x): {_verdict(met['speedup_vs_usual'])}")
    print(f"  file vs teacher ORT fp32: {ratios['size_ratio_vs_onnx']}x smaller (target >= 10x): {_verdict(met['size'])}")
    print(f"  whole script: {ratios['minutes']} min (target <= {TARGETS['minutes']:g}): {_verdict(met['time'])}   {result['timings_s']}")
    print("\ndev.tsv accuracy of every model the recipe made (what was selected on):")
    for r in result["dev"]:
        test = f"{100 * r['test_accuracy']:.2f}%" if "test_accuracy" in r else "-"
        params = f"{r['parameters']:,}" if r.get("parameters") else "-"
        print(f"  {r['model']:<62} dev {100 * r['dev_accuracy']:6.2f}%  test {test:>7}  params {params}")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the SST-2 folder: train.tsv, dev.tsv, test.tsv (e.g. ../shared/data/sst2)")
    parser.add_argument("--recipe", type=Path, default=HERE / "recipe.yaml")
    parser.add_argument("--set", action="append", default=[], help="recipe override, e.g. prune.steps=1 (repeatable)")
    parser.add_argument("--name", default="sst2-headline", help="run folder name under --output-dir")
    parser.add_argument("--output-dir", default="runs")
    parser.add_argument("--examples", type=int, default=872, help="test sentences timed per round (872: all of test.tsv)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved passes over the sentences")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "sst2.json")
    args = parser.parse_args()
    if not (args.data / "train.tsv").is_file():
        parser.error(f"{args.data} has no train.tsv; give the SST-2 folder, e.g. ../shared/data/sst2")
    return args


if __name__ == "__main__":
    main()
