"""Distillation against the same student trained on hard labels only, in one run.

Each pair of students is built the same way and sees the same training data for the same number
of steps with the same learning rate, schedule and seed; within a pair the only difference is the
loss: hard labels + the teacher's soft labels (KD), or hard labels alone. Students are made of the
teacher's layers 0, 2, 4 (copied, DistilBERT-style) or have the same 3-layer architecture
initialized at random, where the teacher reaches the student only through the loss (alone, or
with hidden-state and attention losses). ``--augment N`` adds a comparison on augmented texts and
its no-teacher control (see ``variants``).

    python benchmarks/distill_vs_hard_labels.py                      # fine-tunes the teacher first
    python benchmarks/distill_vs_hard_labels.py --teacher runs/bbc-news/01-finetune
    python benchmarks/distill_vs_hard_labels.py --recipe recipes/sst2.yaml \
        --teacher-set data.max_train_samples=null --teacher-set finetune.epochs=1 --teacher-name bench-teacher-full \
        --only teacher-init --augment 2 --set distill.epochs=2 --seeds 42 43 44 \
        --json benchmarks/results/distill_vs_hard_labels_sst2_full_teacher.json   # the README's headline run

Prints a table and writes benchmarks/results/distill_vs_hard_labels.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml
from common import log_like_the_cli, slug, variant_recipe, write_result

from edgepress.running.pipeline import run_recipe

ROOT = Path(__file__).resolve().parent.parent
HARD = ["distill.loss.hard_weight=1.0", "distill.loss.soft_weight=0.0"]
TEACHER_INIT, RANDOM_INIT = "distill.student.from_teacher=true", "distill.student.from_teacher=false"
INTERMEDIATE = ["distill.loss.hidden_weight=1.0", "distill.loss.attention_weight=1.0"]


def variants(base: dict, args: argparse.Namespace) -> dict[str, list[str]]:
    """The pairs of students that differ only in the loss. With ``--augment N``, three more students
    at the same number of steps: KD on the training texts and N augmented copies of each, labelled
    by the teacher; hard labels on the training texts alone for (1 + N) times the epochs; and hard
    labels on the same augmented texts, each copy labelled as the text it was made from (what
    augmentation gives without a teacher)."""
    kd = [f"distill.loss.hard_weight={1 - args.soft_weight:g}", f"distill.loss.soft_weight={args.soft_weight:g}"]
    found = {
        "teacher-init, KD": [*kd, TEACHER_INIT],
        "teacher-init, hard only": [*HARD, TEACHER_INIT],
        "random-init, KD": [*kd, RANDOM_INIT],
        "random-init, hard only": [*HARD, RANDOM_INIT],
        # TinyBERT's finding: a student that starts from nothing learns most from the teacher's insides
        "random-init, KD + hidden + attention": [*kd, *INTERMEDIATE, RANDOM_INIT],
    }
    if args.augment:
        epochs = variant_recipe(base, args.set, {}).distill.epochs
        found[f"teacher-init, KD + augmentation x{args.augment}"] = [*kd, TEACHER_INIT, f"distill.augment.factor={args.augment}"]
        found["teacher-init, hard only, same steps"] = [*HARD, TEACHER_INIT, f"distill.epochs={epochs * (1 + args.augment)}"]
        # the control: the same augmented texts and steps, each copy with its source's label, no teacher
        found[f"teacher-init, hard only + augmentation x{args.augment}, source labels"] = [
            *HARD, TEACHER_INIT, f"distill.augment.factor={args.augment}", "distill.augment.labels=source",
        ]  # fmt: skip
    return found


def main() -> None:
    args = parse_args()
    log_like_the_cli()
    base = yaml.safe_load(args.recipe.read_text())  # read once: every variant starts from the same recipe
    teacher = args.teacher or fine_tune_teacher(base, args)
    rows = []
    for seed in args.seeds:
        for variant, overrides in variants(base, args).items():
            if args.only and not any(word in variant for word in args.only):
                continue
            recipe = variant_recipe(
                base,
                [*args.set, *overrides, f"seed={seed}", "stages=[distill]"],
                {"name": f"bench-distill-{slug(variant)}-s{seed}", "output_dir": args.output_dir, "model.name_or_path": str(teacher)},
            )
            start = time.perf_counter()
            (outcome,) = run_recipe(recipe, force=True)
            metrics = outcome.manifest["metrics"]
            rows.append({"variant": variant, "seed": seed, "wall_s": round(time.perf_counter() - start, 1), **flat(metrics)})
    report(rows, teacher, args, base)


def fine_tune_teacher(base: dict, args: argparse.Namespace) -> Path:
    overrides = ["stages=[finetune]", *args.set, *args.teacher_set]
    recipe = variant_recipe(base, overrides, {"name": args.teacher_name, "output_dir": args.output_dir})
    (outcome,) = run_recipe(recipe)  # reused when a run folder holds the same teacher already
    return outcome.folder


def flat(metrics: dict) -> dict:
    return {
        "val_accuracy": metrics["validation"]["accuracy"],
        "test_accuracy": metrics["test"]["accuracy"],
        "test_f1_macro": metrics["test"]["f1_macro"],
        "teacher_test_accuracy": metrics.get("teacher_test", {}).get("accuracy"),
        "retained": metrics.get("test_accuracy_retained"),
        "steps": metrics["train"]["steps"],
        "student_parameters": metrics["student"]["parameters"],
    }


def report(rows: list[dict], teacher: Path, args: argparse.Namespace, base: dict) -> None:
    print(f"{'variant':<24} {'seed':>4} {'val acc':>8} {'test acc':>9} {'test F1':>8} {'retained':>9} {'steps':>6} {'wall s':>7}")
    for r in rows:
        print(
            f"{r['variant']:<24} {r['seed']:>4} {100 * r['val_accuracy']:>7.2f}% {100 * r['test_accuracy']:>8.2f}% "
            f"{100 * r['test_f1_macro']:>7.2f}% {r['retained'] or 0:>9.4f} {r['steps']:>6} {r['wall_s']:>7}"
        )
    write_result(args.json, "distill_vs_hard_labels", {
        "recipe": str(args.recipe),
        "recipe_distill_section": base.get("distill"),
        "overrides": args.set,
        "teacher_overrides": args.teacher_set,
        "augment": args.augment,
        "soft_weight": args.soft_weight,
        "only": args.only,
        "teacher": str(teacher),
        "rows": rows,
    })


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "bbc-news.yaml")
    parser.add_argument("--teacher", type=Path, help="a fine-tuned teacher folder; fine-tuned first when absent")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--only", nargs="+", help="run the variants whose name contains one of these, e.g. teacher-init")
    parser.add_argument("--soft-weight", type=float, default=0.5, help="KD variants: soft-label weight (hard = 1 - this)")
    parser.add_argument("--augment", type=int, default=0, help="also compare KD with N augmented copies per text (TinyBERT)")
    parser.add_argument("--set", action="append", default=[], help="recipe override, e.g. distill.epochs=1")
    parser.add_argument(
        "--teacher-set", action="append", default=[],
        help="override for the teacher's fine-tuning only, e.g. data.max_train_samples=null (all training texts)",
    )
    parser.add_argument("--teacher-name", default="bench-teacher", help="run folder of the fine-tuned teacher")
    parser.add_argument("--output-dir", default="runs")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "distill_vs_hard_labels.json")
    return parser.parse_args()


if __name__ == "__main__":
    main()
