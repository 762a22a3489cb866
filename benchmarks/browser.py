"""A run's teacher and final student in the browser (onnxruntime-web in headless Chromium) beside the
same files in ONNX Runtime on this CPU.

    python benchmarks/browser.py runs/bbc-news
    python benchmarks/browser.py runs/sst2-t30 --text-column sentence

Needs `edgepress targets setup browser`. Steps, each an `edgepress` command:

1. The teacher (the run's finetune folder) exported to ONNX, and its export quantized to dynamic
   and static int8 with `quantize.web` on (a web-ready folder: fp32 and q8); both under <output>/.
2. The student's export (the run's export folder) quantized again the same way, with `quantize.web`
   (the run's own quantize stage is left as it is; its recipe may predate web folders).
3. `edgepress bench --model ...` of the six files (teacher and student: fp32, int8 dynamic, int8
   static) on this CPU, then the same on `--target browser` (which also times the web folders' whole
   transformers.js pipeline): batch 1 at the test texts' real lengths, 1 thread and all cores.

Prints one table (CPU and browser side by side, the browser's agreement with the CPU) and the
fastest file in the browser, and writes <output>/browser.json and benchmarks/results/browser-<run>.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from common import edgepress, slug, stage_folder

HERE = Path(__file__).resolve().parent


def main() -> None:
    args = parse_args()
    run = args.run.resolve()
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    source = args.data or recipe["data"]["source"]
    data = ["--data", source, "--task", recipe["task"]] + (["--text-column", args.text_column] if args.text_column else [])
    out = (args.output or run / "browser-bench").resolve()
    quantize = ["--max-seq-length", str(args.max_seq_length), "--tolerance", str(args.tolerance), "--set", "quantize.web=true"]
    edgepress("export", "--model", str(stage_folder(run, "finetune")), *data, "--no-mobile", "--name", "teacher-onnx", "--output-dir", str(out))
    teacher = out / "teacher-onnx" / "01-export"
    edgepress("quantize", "--model", str(teacher), *data, *quantize, "--name", "teacher-int8", "--output-dir", str(out))
    student = stage_folder(run, "export")
    edgepress("quantize", "--model", str(student), *data, *quantize, "--name", "student-int8", "--output-dir", str(out))
    models = {}
    for who, fp32, int8 in (("teacher", teacher, out / "teacher-int8" / "01-quantize"), ("student", student, out / "student-int8" / "01-quantize")):
        models |= {f"{who} fp32": fp32 / "model.onnx", f"{who} int8 dynamic": int8 / "model_int8_dynamic.onnx", f"{who} int8 static": int8 / "model_int8_static.onnx"}
    named = sum((["--model", f"{name}={path}"] for name, path in models.items()), [])
    settings = [*data, "--examples", str(args.examples), "--rounds", str(args.rounds), "--max-seq-length", str(args.max_seq_length),
                "--set", "bench.batch_sizes=[]", *sum((["--threads", str(t)] for t in args.threads), [])]  # fmt: skip
    edgepress("bench", *named, *settings, "--output", str(out / "bench-cpu"))
    edgepress("bench", *named, *settings, "--target", "browser", "--output", str(out / "bench-browser"))
    cpu, browser = (json.loads((out / f"bench-{t}" / "bench.json").read_text()) for t in ("cpu", "browser"))
    result = summary(run, cpu, browser, args.tolerance)
    print_table(result)
    text = json.dumps(result, indent=2) + "\n"
    (out / "browser.json").write_text(text)
    results = args.results or HERE / "results" / f"browser-{slug(run.name)}.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(text)


def summary(run: Path, cpu: dict, browser: dict, tolerance: float) -> dict:
    threads = [str(t) for t in browser["settings"]["threads"]]
    on_cpu = {row["name"]: row for row in cpu["artifacts"]}
    rows = []
    for row in browser["artifacts"]:
        native = on_cpu.get(row["name"])
        entry = {
            "name": row["name"], "runtime": row["runtime"], "precision": row["precision"], "mb": round(row["bytes"] / 1e6, 1),
            "test": row["test"], "agreement": row["agreement"],
            "browser_p50_ms": {t: row["latency"][t]["batch 1"]["p50_ms"] for t in threads},
            "browser_p90_ms": {t: row["latency"][t]["batch 1"]["p90_ms"] for t in threads},
            "browser_p99_ms": {t: row["latency"][t]["batch 1"]["p99_ms"] for t in threads},
            "cpu_p50_ms": {t: native["latency"][t]["batch 1"]["p50_ms"] for t in threads} if native else None,
        }  # fmt: skip
        rows.append(entry)
    return {
        "run": str(run), "created": browser["created"], "environment": browser["environment"], "cpu_environment": cpu["environment"],
        "settings": browser["settings"], "examples": browser["examples"], "rows": rows, "quantize_tolerance": tolerance,
        "fastest_in_browser": fastest(rows, threads),
    }  # fmt: skip


def fastest(rows: list[dict], threads: list[str]) -> dict:
    """Per thread count: the fastest ONNX file in the browser, and how much faster it is than the
    second fastest and than the same model's fp32 file (raw sessions; pipelines add the tokenizer)."""
    files = [r for r in rows if r["runtime"] == "onnxruntime-web"]
    found = {}
    for t in threads:
        ranked = sorted(files, key=lambda r: r["browser_p50_ms"][t])
        first, second = ranked[0], ranked[1]
        fp32 = next(r for r in files if r["name"] == first["name"].split()[0] + " fp32")
        found[t] = {"name": first["name"], "p50_ms": first["browser_p50_ms"][t], "vs_second": round(second["browser_p50_ms"][t] / first["browser_p50_ms"][t], 2),
                    "second": second["name"], "vs_its_fp32": round(fp32["browser_p50_ms"][t] / first["browser_p50_ms"][t], 2)}  # fmt: skip
    return found


def print_table(result: dict) -> None:
    env, browser = result["environment"], result["environment"]["browser"]
    threads = [str(t) for t in result["settings"]["threads"]]
    print(f"\n{result['created']}; {env['cpu']} ({', '.join(env['isa'])}), {env['cores']} cores; Chromium {browser['chromium']} headless, "
          f"onnxruntime-web {browser['onnxruntime_web']}, transformers.js {browser['transformers_js']}, cross-origin isolated "
          f"{browser['cross_origin_isolated']}; ONNX Runtime {result['cpu_environment']['packages'].get('onnxruntime')} on the CPU; "
          f"{result['examples']} test texts, batch 1 at their real lengths, {result['settings']['rounds']} interleaved rounds; "
          f"int8 files kept within {100 * result['quantize_tolerance']:g}% (relative) of fp32's validation score\n")  # fmt: skip
    head = ["file", "runtime in the browser", "test", "MB"] + [f"CPU ORT p50 {t}T" for t in threads] + [f"browser p50 {t}T" for t in threads]
    head += [f"browser / CPU {t}T" for t in threads] + ["agreement with CPU"]
    print("| " + " | ".join(head) + " |\n" + "|---" * len(head) + "|")
    for row in result["rows"]:
        score = row["test"].get("accuracy", row["test"].get("f1"))
        cells = [row["name"], row["runtime"], "-" if score is None else f"{100 * score:.2f}%", f"{row['mb']:.1f}"]
        cells += [f"{row['cpu_p50_ms'][t]:.2f} ms" if row["cpu_p50_ms"] else "-" for t in threads]
        cells += [f"{row['browser_p50_ms'][t]:.2f} ms" for t in threads]
        cells += [f"{row['browser_p50_ms'][t] / row['cpu_p50_ms'][t]:.2f}x" if row["cpu_p50_ms"] else "-" for t in threads]
        agreement = row["agreement"]
        cells += [f"{100 * agreement['argmax']:.1f}%, max diff {agreement['max_abs_diff']:.1e}"]
        print("| " + " | ".join(cells) + " |")
    print()
    for t, best in result["fastest_in_browser"].items():
        print(f"fastest in the browser at {t} thread(s): {best['name']} at {best['p50_ms']:.2f} ms, {best['vs_second']:.2f}x faster than "
              f"the next ({best['second']}), {best['vs_its_fp32']:.2f}x faster than its fp32 file")  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run folder with finetune and export stages (e.g. runs/bbc-news)")
    parser.add_argument("--data", help="the run's data source (default: the one in its recipe.yaml)")
    parser.add_argument("--text-column", help="the text column, where the data's is not 'text' (SST-2: sentence)")
    parser.add_argument("--output", type=Path, help="default: <run>/browser-bench")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--tolerance", type=float, default=0.01, help="quantize.tolerance of both quantizations (default 0.01)")
    parser.add_argument("--results", type=Path, help="default: benchmarks/results/browser-<run>.json")
    return parser.parse_args()


if __name__ == "__main__":
    main()
