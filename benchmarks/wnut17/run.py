"""WNUT 2017 named entities: the fine-tuned teacher against its 3-layer distilled, pruned, int8 student,
measured in one bench run (issue 18).

    python benchmarks/wnut17/run.py ../shared/data/wnut17

1. `edgepress run benchmarks/wnut17/recipe.yaml`: fine-tunes builtin:minilm-l6 as a tagger, distills
   a 3-layer student, prunes it with recovery, exports and quantizes it (dynamic and static int8).
   Every stage selects on dev.conll (entity F1); test.conll is only reported.
2. The teacher exported by `edgepress export` (torch.onnx, parity-checked): the graph as exported
   ("teacher ORT fp32", what optimum's exporter gave until 2026-12; optimum needs Transformers < 4.58)
   and its fused copy ("teacher ORT fp32 fused"), so that the teacher is timed in ONNX Runtime too.
3. `edgepress bench --task token-classification` on the first ``--examples`` test sentences: the teacher
   (PyTorch fp32, ONNX Runtime fp32), the pruned student (PyTorch) and edgepress's int8 files, batch 1 at
   real lengths and batch 32 padded to 128 tokens, 1 thread and all cores, interleaved rounds.

Prints the table, the student's entity F1 against the teacher's (points) and its batch-1 speed-ups;
writes benchmarks/results/wnut17.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from common import edgepress, stage_folders  # noqa: E402
GOAL = {"f1_points_below_teacher": 2.0, "speedup": 4.0}


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    run = Path(args.output_dir) / args.name
    extra = list(args.set)
    if args.transfer_news:  # unlabelled transfer text for the student: news sentences, rich in names
        news = news_sentences(args.transfer_news, run.parent / f"{args.name}-news-sentences.txt")
        extra += [f"distill.transfer.source={news.resolve()}", f"distill.transfer.max_texts={args.transfer_news}"]
    edgepress("run", str(HERE / "recipe.yaml"), "--name", args.name, "--output-dir", args.output_dir,
              "--set", f"data.source={args.data.resolve()}", *sum((["--set", s] for s in extra), []))  # fmt: skip
    stages = stage_folders(run)
    teacher_onnx = export_teacher(stages["finetune"], args, run)  # model.onnx as exported, model_optimized.onnx fused
    quantize = json.loads((stages["quantize"] / "edgepress.json").read_text())["metrics"]["variants"]
    models = {
        "teacher torch fp32": stages["finetune"],
        "teacher ORT fp32": teacher_onnx / "model.onnx",
        "teacher ORT fp32 fused": teacher_onnx / "model_optimized.onnx",
        "student torch fp32 (pruned)": stages["prune"],
        **{f"student int8 {mode}": stages["quantize"] / v["file"] for mode, v in quantize.items()},
    }
    bench = run_bench(args, models, run / "bench")
    result = summarize(bench, models, round(time.monotonic() - started, 1))
    print(json.dumps(result["comparison"], indent=2))
    for name, entry in result["comparison"].items():
        verdict = " and ".join(f"{goal} {'met' if ok else 'MISSED'}" for goal, ok in entry["goal_met"].items())
        print(f"{name}: {entry['f1_points_vs_teacher']:+.2f} entity-F1 points vs the teacher (goal >= -{GOAL['f1_points_below_teacher']}), "
              f"batch-1 speed-up vs teacher ORT fp32 at every thread count >= {GOAL['speedup']}x: {verdict}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


def news_sentences(count: int, path: Path) -> Path:
    """The first ``count`` sentences (5 to 40 words) of the builtin BBC News articles, one per line,
    words and punctuation separated by spaces as in WNUT's files: text the teacher tags."""
    import re

    from edgepress.data.sources import read_builtin

    sentences = []
    for article in read_builtin("bbc-news").frame["text"]:
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(article.split())):
            words = re.findall(r"\w+(?:[-'.]\w+)*|[^\w\s]", sentence)
            if 5 <= len(words) <= 40:
                sentences.append(" ".join(words))
        if len(sentences) >= count:
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sentences[:count]) + "\n", encoding="utf-8")
    return path


def export_teacher(teacher: Path, args: argparse.Namespace, run: Path) -> Path:
    """The teacher's export folder: the graph as exported (what optimum's export gives) and the fused
    one, their parity checked on the dev sentences."""
    edgepress("export", "--model", str(teacher), "--data", str(args.data.resolve()), "--task", "token-classification",
              "--max-seq-length", "128", "--no-mobile", "--name", "teacher-onnx", "--output-dir", str(run))  # fmt: skip
    return run / "teacher-onnx" / "01-export"


def run_bench(args: argparse.Namespace, models: dict[str, Path], out: Path) -> dict:
    named = sum((["--model", f"{name}={path}"] for name, path in models.items()), [])
    edgepress("bench", *named, "--data", str(args.data.resolve()), "--task", "token-classification",
              "--examples", str(args.examples), "--rounds", str(args.rounds), "--batch-size", "32",
              "--max-seq-length", "128", "--output", str(out))  # fmt: skip
    return json.loads((out / "bench.json").read_text())


def summarize(bench: dict, models: dict[str, Path], seconds: float) -> dict:
    rows = {r["name"]: r for r in bench["artifacts"]}
    threads = [str(t) for t in bench["settings"]["threads"]]
    teacher_f1 = rows["teacher torch fp32"]["test"]["f1"]
    comparison = {}
    for name in [n for n in models if n.startswith("student int8")]:
        row = rows[name]
        comparison[name] = {
            "test_f1": row["test"]["f1"],
            "f1_points_vs_teacher": round(100 * (row["test"]["f1"] - teacher_f1), 2),
            "f1_relative_to_teacher": round(row["test"]["f1"] / teacher_f1, 4),
            **{f"speedup_b1_{t}T_vs_{base}": round(p50(rows[base], t) / p50(row, t), 2)
               for t in threads for base in ("teacher torch fp32", "teacher ORT fp32", "teacher ORT fp32 fused")},  # fmt: skip
            "size_mb": round(row["bytes"] / 1e6, 2),
        }
        entry = comparison[name]
        speedups = [entry[f"speedup_b1_{t}T_vs_teacher ORT fp32"] for t in threads]
        entry["goal_met"] = {"f1": entry["f1_points_vs_teacher"] >= -GOAL["f1_points_below_teacher"],
                             "speed": min(speedups) >= GOAL["speedup"]}  # fmt: skip
    return {"teacher_test": rows["teacher torch fp32"]["test"], "goal": GOAL, "comparison": comparison, "wall_s": seconds, "bench": bench}


def p50(row: dict, threads: str) -> float:
    return row["latency"][threads]["batch 1"]["p50_ms"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder with train.conll, dev.conll, test.conll")
    parser.add_argument("--set", action="append", default=[], help="recipe override, e.g. distill.epochs=4 (repeatable)")
    parser.add_argument(
        "--transfer-news", type=int, default=0,
        help="also distil on this many unlabelled sentences of the builtin BBC News articles (distill.transfer)",
    )  # fmt: skip
    parser.add_argument("--name", default="wnut17")
    parser.add_argument("--output-dir", default="runs")
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=HERE.parent / "results" / "wnut17.json")
    return parser.parse_args()


if __name__ == "__main__":
    main()
