"""Low-label SST-2: what domain adaptation (the adapt stage) buys when labels are few (issue 34).

    python benchmarks/sst2/low_label.py ../shared/data/sst2

Two runs of the default chain (recipes/bbc-news.yaml's finetune, distill, prune, export, quantize,
at 64 tokens) on 1,000 labelled SST-2 phrases (a seeded sample of train.tsv), side by side:

- without adapt;
- with adapt first: masked-language-model training of the teacher's encoder on the other training
  phrases, labels dropped (`adapt.unused_train`), and the 1,000 (`adapt.training_texts`).

Both select on dev.tsv and report test.tsv (872 sentences). Prints, per run: the teacher's and the
final int8 student's test accuracy (the int8 file with the best dev accuracy), the adaptation's
held-out perplexity before and after and its wall time, and the whole run's; writes
benchmarks/results/sst2_low_label.json. The with-adapt run ends with a bench stage, whose
report.html shows every stage's training curves.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))
from common import edgepress, stage_folders, write_result  # noqa: E402

from edgepress.recipe.loading import apply_override  # noqa: E402

STAGES = ["finetune", "distill", "prune", "export", "quantize"]


def main() -> None:
    args = parse_args()
    rows = []
    for seed in args.seeds:
        for adapted in (False, True):
            rows.append(run_arm(args, seed, adapted))
            print_table(rows)
    write_result(args.json, "sst2_low_label", {"labelled": args.labelled, "adapt_texts": args.adapt_texts, "rows": rows})
    print(f"wrote {args.json}")


def recipe(args: argparse.Namespace, seed: int, adapted: bool) -> dict:
    """The default recipe on SST-2 at 64 tokens, ``args.labelled`` labels, with or without adapt."""
    raw = yaml.safe_load((ROOT / "recipes" / "bbc-news.yaml").read_text())
    raw.update(name=f"sst2-low-{'adapt' if adapted else 'plain'}-{seed}", seed=seed, output_dir=args.output_dir)
    raw["stages"] = (["adapt"] if adapted else []) + STAGES + (["bench"] if adapted else [])
    raw["data"] = {"source": str(args.data.resolve()), "text_column": "sentence", "label_column": "label", "max_train_samples": args.labelled}
    for section in ("finetune", "distill", "prune", "export", "quantize"):
        raw.setdefault(section, {})["max_seq_length"] = 64  # 99% of SST-2 sentences fit
    # the default recipe's vocabulary trimming keeps the tokens of the training texts: 1,000 phrases
    # hold 5,157 of 30,522, and trimming to them cost 5.76 validation points (the stage refused it)
    raw["prune"]["vocabulary"] = {"trim": False}
    raw["adapt"] = {
        "unused_train": True, "training_texts": True, "max_texts": args.adapt_texts, "epochs": 1, "batch_size": 32,
        "learning_rate": 1e-4, "max_seq_length": 64, "whole_word_masking": True, "checkpoint_steps": 500,
    }  # fmt: skip
    raw["bench"] = {"examples": 128, "rounds": 2, "threads": [1], "batch_sizes": [], "max_seq_length": 64, "torch": False}
    raw["tracking"] = {"report_to": ["tensorboard"]}
    if args.model:
        raw["model"]["name_or_path"] = args.model
    for item in args.set:
        apply_override(raw, item)
    return raw


def run_arm(args: argparse.Namespace, seed: int, adapted: bool) -> dict:
    raw = recipe(args, seed, adapted)
    path = Path(args.output_dir) / f"{raw['name']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    start = time.monotonic()
    edgepress("run", str(path))
    wall = round(time.monotonic() - start, 1)
    stages = stage_folders(Path(args.output_dir) / raw["name"])
    manifest = lambda stage: json.loads((stages[stage] / "edgepress.json").read_text())  # noqa: E731
    teacher = manifest("finetune")["metrics"]
    variants = manifest("quantize")["metrics"]["variants"]
    best = max(sorted(variants), key=lambda n: (variants[n]["validation"]["accuracy"], n == "dynamic"))
    row = {
        "seed": seed, "adapt": adapted, "teacher_test_accuracy": teacher["test"]["accuracy"],
        "teacher_dev_accuracy": teacher["validation"]["accuracy"], "int8": best,
        "int8_test_accuracy": variants[best]["test"]["accuracy"], "int8_dev_accuracy": variants[best]["validation"]["accuracy"],
        "stage_wall_s": {stage: manifest(stage)["wall_time_s"] for stage in stages}, "run_wall_s": wall,
    }  # fmt: skip
    if adapted:
        adapt = manifest("adapt")
        row["adapt"] = True
        row["adapt_perplexity"] = [adapt["metrics"]["perplexity_before"], adapt["metrics"]["perplexity"]]
        row["adapt_texts"] = adapt["metrics"]["texts"]
        row["report"] = str(stages["bench"] / "report.html")
    return row


def print_table(rows: list[dict]) -> None:
    print(f"\n{'seed':>4}  {'adapt':5}  {'teacher test':>12}  {'int8 student test':>17}  {'adapt wall':>10}  {'perplexity':>15}  {'run wall':>8}")
    for r in rows:
        perplexity = f"{r['adapt_perplexity'][0]:.1f} -> {r['adapt_perplexity'][1]:.1f}" if r["adapt"] else "-"
        adapt_wall = f"{r['stage_wall_s']['adapt'] / 60:.1f} min" if r["adapt"] else "-"
        print(f"{r['seed']:>4}  {'yes' if r['adapt'] else 'no':5}  {100 * r['teacher_test_accuracy']:>11.2f}%  "
              f"{100 * r['int8_test_accuracy']:>16.2f}%  {adapt_wall:>10}  {perplexity:>15}  {r['run_wall_s'] / 60:>6.1f} m")  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the SST-2 folder (train.tsv, dev.tsv, test.tsv)")
    parser.add_argument("--labelled", type=int, default=1000, help="labelled training phrases")
    parser.add_argument("--adapt-texts", type=int, default=60_000, help="at most this many unlabelled phrases for adapt")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--model", help="another base model than the default recipe's builtin:minilm-l6")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a recipe override for both runs")
    parser.add_argument("--output-dir", default="runs")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "sst2_low_label.json")
    args = parser.parse_args()
    if not (args.data / "train.tsv").is_file():
        sys.exit(f"{args.data} has no train.tsv; pass the SST-2 folder (e.g. ../shared/data/sst2)")
    return args


if __name__ == "__main__":
    main()
