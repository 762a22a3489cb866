"""What each distillation technique buys (issue 30): the same student distilled from the same teacher
with each technique alone and all together, in one run.

    python benchmarks/distill_ablation.py --recipe benchmarks/sst2/recipe.yaml --data ../shared/data/sst2 \
        --teacher runs/sst2-t30/01-finetune --ensemble-seeds 43 44 --json benchmarks/results/ablation_sst2.json
    python benchmarks/distill_ablation.py --recipe benchmarks/wnut17/recipe.yaml --data ../shared/data/wnut17 \
        --teacher runs/wnut17/01-finetune --json benchmarks/results/ablation_wnut17.json

Each variant runs the recipe's distill stage alone (``--force``) from the teacher, with the recipe's
student, loss and schedule; the variants differ only in:

- ``baseline``: the training texts only (augmentation and transfer text off, one teacher, one phase);
- ``+ transfer``: the training rows ``data.max_train_samples`` leaves out, and ``--transfer-source``
  if given, as unlabelled text the teacher labels (``--transfer-texts`` at most);
- ``+ augmentation``: ``--augment`` copies of each training text (text edits, or for token
  classification Dai & Adel's four operations), labelled by the teacher;
- ``+ staged``: ``--intermediate-epochs`` on ``--staged-terms`` first (default: hidden states and
  MiniLMv2's relations, weight 1 each), then the recipe's prediction terms;
- ``+ ensemble``: the soft targets averaged over the teacher and the teachers of ``--ensemble`` (folders),
  or of ``--ensemble-seeds`` (the teacher's recipe fine-tuned again with those seeds, once);
- ``together``: all of the above.

Prints the table (validation and test score, wall seconds of the stage, rows it trained on) and
writes JSON with the machine. The score is accuracy for text classification, entity F1 for token
classification.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml
from common import log_like_the_cli, slug, variant_recipe, write_result

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    args = parse_args()
    log_like_the_cli()
    base = yaml.safe_load(args.recipe.read_text())
    data = {"data.source": str(args.data.resolve())}
    ensemble = [str(p.resolve()) for p in args.ensemble] + [str(t) for t in extra_teachers(base, data, args)]
    rows = []
    for seed in args.seeds:
        for variant, overrides in variants(base, data, args, ensemble).items():
            if args.only and variant not in args.only:
                continue
            rows.append(run_variant(base, data, args, variant, overrides, seed))
            print_table(rows)
    write(rows, args, ensemble)


def variants(base: dict, data: dict, args: argparse.Namespace, ensemble: list[str]) -> dict[str, list[str]]:
    """Overrides of each variant; every one starts from the baseline's."""
    task = variant_recipe(base, [], data).task
    baseline = ["distill.augment.factor=0", "distill.transfer.unused_train=false", "distill.transfer.source=null",
                "distill.ensemble=[]", "distill.intermediate_epochs=0", "distill.loss.hidden_weight=0",
                "distill.loss.attention_weight=0", "distill.loss.relation_weight=0"]  # fmt: skip
    transfer = ["distill.transfer.unused_train=true", f"distill.transfer.max_texts={args.transfer_texts}"]
    if args.transfer_source:
        transfer.append(f"distill.transfer.source={args.transfer_source.resolve()}")
    augment = [f"distill.augment.factor={args.augment}"]
    staged = [f"distill.intermediate_epochs={args.intermediate_epochs:g}", *(f"distill.loss.{term}_weight=1" for term in args.staged_terms)]
    found = {"baseline": [], "+ transfer": transfer, "+ augmentation": augment, "+ staged": staged}
    if ensemble:
        found["+ ensemble"] = ["distill.ensemble=" + json.dumps(ensemble)]
    found["together"] = [item for name in list(found)[1:] for item in found[name]]
    if task == "token-classification" and not args.transfer_source and not base.get("data", {}).get("max_train_samples"):
        # no training row is left out and no source is given: the transfer set would be empty
        found = {k: [o for o in v if o not in transfer] for k, v in found.items() if k != "+ transfer"}
    return {name: [*baseline, *items] for name, items in found.items()}


def extra_teachers(base: dict, data: dict, args: argparse.Namespace) -> list[Path]:
    """The teacher's recipe fine-tuned again with each of ``--ensemble-seeds`` (reused when done),
    with ``--teacher-set`` overrides but not ``--set`` (which sizes the students' runs)."""
    from edgepress.running.pipeline import run_recipe

    folders = []
    for seed in args.ensemble_seeds:
        recipe = variant_recipe(base, ["stages=[finetune]", *args.teacher_set, f"seed={seed}"],
                                {**data, "name": f"ablation-teacher-s{seed}", "output_dir": args.output_dir})  # fmt: skip
        (outcome,) = run_recipe(recipe)
        folders.append(outcome.folder.resolve())
    return folders


def run_variant(base: dict, data: dict, args: argparse.Namespace, variant: str, overrides: list[str], seed: int) -> dict:
    from edgepress.running.pipeline import run_recipe

    updates = {**data, "name": f"ablation-{slug(variant) or 'baseline'}-s{seed}", "output_dir": args.output_dir,
               "model.name_or_path": str(args.teacher.resolve())}  # fmt: skip
    recipe = variant_recipe(base, [*args.set, *overrides, f"seed={seed}", "stages=[distill]"], updates)
    start = time.perf_counter()
    (outcome,) = run_recipe(recipe, force=True)
    wall = round(time.perf_counter() - start, 1)
    metrics = outcome.manifest["metrics"]
    key = "f1" if recipe.task == "token-classification" else "accuracy"
    return {
        "variant": variant, "seed": seed, "overrides": overrides, "metric": key, "wall_s": wall,
        "validation": metrics["validation"][key], "test": metrics["test"][key],
        "teacher_test": metrics.get("teacher_test", {}).get(key),
        "steps": metrics["train"].get("steps"), "rows": metrics["student"]["transfer_set_size"],
        "phases": 2 if "intermediate_phase" in metrics["train"] else 1, "teachers": 1 + len(recipe.distill.ensemble),
        "transfer": metrics.get("transfer"),
    }  # fmt: skip


def print_table(rows: list[dict]) -> None:
    print(f"\n{'variant':<16} {'seed':>4} {'dev':>7} {'test':>7} {'vs teacher':>10} {'rows':>7} {'steps':>6} {'wall s':>7}")
    for r in rows:
        gap = f"{100 * (r['test'] - r['teacher_test']):+.2f}" if r["teacher_test"] is not None else "-"
        print(f"{r['variant']:<16} {r['seed']:>4} {100 * r['validation']:>6.2f}% {100 * r['test']:>6.2f}% {gap:>10} {r['rows']:>7} {r['steps'] or 0:>6} {r['wall_s']:>7}")


def write(rows: list[dict], args: argparse.Namespace, ensemble: list[str]) -> None:
    write_result(args.json, "distill_ablation", {"recipe": str(args.recipe), "overrides": args.set, "teacher": str(args.teacher), "ensemble": ensemble, "rows": rows})


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, required=True, help="its distill section is the baseline's")
    parser.add_argument("--data", type=Path, required=True, help="the recipe's data folder")
    parser.add_argument("--teacher", type=Path, required=True, help="the fine-tuned teacher's folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--only", nargs="+", help="run only these variants (names as printed)")
    parser.add_argument("--transfer-texts", type=int, default=20000, help="at most this many transfer texts")
    parser.add_argument("--transfer-source", type=Path, help="a file or folder of unlabelled texts (distill.transfer.source)")
    parser.add_argument("--augment", type=int, default=1, help="augmented copies per training text")
    parser.add_argument("--intermediate-epochs", type=float, default=1.0)
    parser.add_argument(
        "--staged-terms", nargs="+", choices=["hidden", "attention", "relation"], default=["hidden", "relation"],
        help="the first phase's terms, weight 1 each (attention maps cost the most memory in the teacher cache: N x heads x L x L)",
    )  # fmt: skip
    parser.add_argument("--ensemble", type=Path, nargs="*", default=[], help="more fine-tuned teacher folders")
    parser.add_argument("--ensemble-seeds", type=int, nargs="*", default=[], help="fine-tune the teacher's recipe with these seeds")
    parser.add_argument("--set", action="append", default=[], help="recipe override for every variant, e.g. distill.epochs=2")
    parser.add_argument("--teacher-set", action="append", default=[], help="recipe override for the --ensemble-seeds teachers only")
    parser.add_argument("--output-dir", default="runs")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "distill_ablation.json")
    return parser.parse_args()


if __name__ == "__main__":
    main()
