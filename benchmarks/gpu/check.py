"""The CUDA paths on a real GPU, in one bounded run: training stages in mixed precision, the cuda bench
target, the fp16 ONNX export, and int8 ONNX Runtime across many CPU cores.

    python benchmarks/gpu/check.py --out gpu-check                          # on a GPU machine
    python benchmarks/gpu/check.py --device cpu --size tiny --out dry-run   # the same steps on a CPU (tests)

A BERT built from a config (BERT-base size for timings, ``--size tiny`` for checks) and synthetic
topic texts, so that nothing is downloaded. Steps, each timed and recorded even when it fails:
1. finetune, distill (6 layers), prune (half the heads and FFN neurons) through ``run_recipe`` on the
   device, with ``precision`` bf16 (or fp32 on a CPU): the loss must go down, and each artifact
   reloaded on the CPU must give the device's logits within ``--logit-atol``;
2. ``bench`` with target cuda on the torch artifacts (fp32 and fp16 rows, batch 1 and 32, synchronized
   timing), beside target cpu on all cores for the same artifacts;
3. the export stage with fp16: the fp16 graph's parity on the CPU ONNX Runtime (the CUDA execution
   provider needs onnxruntime-gpu, which the machine may not have: then that row is "not run");
4. the quantize stage's int8 dynamic model on ONNX Runtime at 1, 4, 8, 16 threads (batch 1 and 32);
5. one JSON (``check.json``) and a printed table in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

SIZES = {  # hidden, layers, heads, ffn; the student keeps half the layers
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
}
TOPICS = {"sports": ["goal", "team", "match", "coach"], "politics": ["vote", "party", "law", "minister"], "tech": ["chip", "code", "robot", "cloud"]}
FILLER = [f"w{i}" for i in range(200)]


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "args": {k: str(v) for k, v in vars(args).items()},
                              "environment": environment(args.device), "steps": {}}  # fmt: skip
    deadline = time.monotonic() + args.budget_s
    context: dict[str, Any] = {}
    for name, step in STEPS:
        if time.monotonic() > deadline:
            report["steps"][name] = {"status": "not run", "why": f"the run's budget of {args.budget_s} s was spent"}
            continue
        started = time.perf_counter()
        try:
            result = {"status": "ok", **step(args, context)}
        except Exception as exc:  # a step that fails is recorded, and the others still run
            result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": traceback.format_exc()[-4000:]}
        result["seconds"] = round(time.perf_counter() - started, 1)
        report["steps"][name] = result
        print(f"[{name}] {result['status']} in {result['seconds']} s", flush=True)
        (args.out / "check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")  # after each step: a kill keeps what ran
    print_table(report)
    failed = [n for n, r in report["steps"].items() if r["status"] == "failed"]
    sys.exit(1 if failed else 0)


# --------------------------------------------------------------------------- the steps


def make_model_and_data(args: argparse.Namespace, ctx: dict) -> dict:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = args.out / "inputs"
    (root / "base").mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLER, *[w for words in TOPICS.values() for w in words]]
    (root / "base" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), max_position_embeddings=512, **SIZES[args.size])
    BertModel(config).save_pretrained(root / "base")
    BertTokenizerFast.from_pretrained(str(root / "base")).save_pretrained(root / "base")
    rng = random.Random(0)
    lines = ["text,label"]
    for _ in range(args.examples):
        topic = rng.choice(sorted(TOPICS))
        words = rng.choices(FILLER, k=rng.randint(8, args.max_words)) + rng.choices(TOPICS[topic], k=2)
        rng.shuffle(words)
        lines.append(f"{' '.join(words)},{topic}")
    (root / "topics.csv").write_text("\n".join(lines) + "\n")
    ctx.update(base=root / "base", data=root / "topics.csv")
    return {"parameters": sum(p.numel() for p in BertModel(config).parameters()), "examples": args.examples}


def recipe_for(args: argparse.Namespace, ctx: dict, stages: list[str]):
    from edgepress.recipe.loading import validate_recipe

    precision = "bf16" if args.device == "cuda" else "fp32"
    training = {"epochs": args.epochs, "batch_size": 32, "learning_rate": args.learning_rate, "max_seq_length": 64,
                "precision": precision, "logging_steps": 5, "eval_batch_size": 64}  # fmt: skip
    half = max(1, SIZES[args.size]["num_hidden_layers"] // 2)
    return validate_recipe({
        "name": "gpu-check", "output_dir": str(args.out / "runs"), "stages": stages,
        "model": {"name_or_path": str(ctx["base"])}, "data": {"source": str(ctx["data"])},
        "finetune": training, "distill": {**training, "student": {"num_layers": half}},
        "prune": {**training, "epochs": 1, "heads": 0.5, "ffn": 0.5, "steps": 1, "importance": {"samples": 128}},
        "export": {"fp16": True, "max_seq_length": 64}, "quantize": {"static": False, "max_seq_length": 64, "tolerance": 0.2},
    })  # fmt: skip


def train_stages(args: argparse.Namespace, ctx: dict) -> dict:
    """finetune, distill and prune on the device: the loss goes down in each training run."""
    from edgepress.running.pipeline import run_recipe

    recipe = recipe_for(args, ctx, ["finetune", "distill", "prune"])
    outcomes = run_recipe(recipe)
    ctx["stages"] = {o.stage: o.folder for o in outcomes}
    found = {}
    for outcome in outcomes:
        found[outcome.stage] = {"wall_time_s": outcome.manifest["wall_time_s"], "test": outcome.manifest["metrics"].get("test"),
                                "loss": loss_curve(outcome.folder)}  # fmt: skip
    for stage in ("finetune", "distill"):
        curve = found[stage]["loss"]
        if len(curve) >= 2 and not curve[-1] < curve[0]:
            raise AssertionError(f"{stage}: the training loss did not go down ({curve[0]:.4f} -> {curve[-1]:.4f})")
    return {"precision": recipe.finetune.precision, "stages": found}


def deploy_stages(args: argparse.Namespace, ctx: dict) -> dict:
    """export (with fp16) and quantize after the training stages, which are skipped as up to date."""
    from edgepress.running.pipeline import run_recipe

    outcomes = run_recipe(recipe_for(args, ctx, ["finetune", "distill", "prune", "export", "quantize"]))
    ctx["stages"] = {o.stage: o.folder for o in outcomes}
    return {o.stage: {"skipped": o.skipped, "wall_time_s": o.manifest["wall_time_s"], "test": o.manifest["metrics"].get("test")} for o in outcomes}


def loss_curve(folder: Path) -> list[float]:
    """The logged training losses of a stage, as its manifest recorded them ([step, loss] pairs)."""
    metrics = json.loads((folder / "edgepress.json").read_text())["metrics"]
    return [loss for _, loss in (metrics.get("train") or {}).get("loss_curve", [])]


def cpu_reload(args: argparse.Namespace, ctx: dict) -> dict:
    """Each torch artifact on the device and again on the CPU: the same logits within --logit-atol."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from edgepress.models import from_pretrained

    texts = [line.split(",")[0] for line in ctx["data"].read_text().splitlines()[1:17]]
    diffs = {}
    for stage in ("finetune", "distill", "prune"):
        folder = ctx["stages"][stage]
        tokenizer = AutoTokenizer.from_pretrained(folder)
        inputs = tokenizer(texts, padding=True, return_tensors="pt")
        logits = {}
        for device in dict.fromkeys([args.device, "cpu"]):
            model = from_pretrained(AutoModelForSequenceClassification, folder).eval().to(device)
            with torch.no_grad():
                logits[device] = model(**{k: v.to(device) for k, v in inputs.items()}).logits.float().cpu()
        diffs[stage] = float((logits[args.device] - logits["cpu"]).abs().max())
        if diffs[stage] > args.logit_atol:
            raise AssertionError(f"{stage}: device and CPU logits differ by {diffs[stage]:.2e} > {args.logit_atol}")
    return {"max_abs_logit_diff": diffs, "tolerance": args.logit_atol}


def bench_torch(args: argparse.Namespace, ctx: dict) -> dict:
    """The torch artifacts on the bench target (cuda: fp32 and fp16 rows) and on the CPU, one run each."""
    from edgepress.bench.artifacts import named_models
    from edgepress.bench.stage import benchmark
    from edgepress.data.load import load_data
    from edgepress.recipe.deploy import BenchSection
    from edgepress.recipe.sections import DataSection

    data = load_data(DataSection(source=str(ctx["data"])))
    models = [f"{stage}={ctx['stages'][stage]}" for stage in ("finetune", "distill", "prune")]
    found = {}
    for target, threads in ((args.device, [os.cpu_count() or 1]), ("cpu", [os.cpu_count() or 1])) if args.device == "cuda" else (("cpu", [1]),):
        cfg = BenchSection(target=target, threads=threads, examples=args.bench_examples, rounds=args.rounds, batch_sizes=[32], max_seq_length=64)
        document = benchmark(named_models(models), data, cfg, args.out / f"bench-{target}")
        found[target] = {a["name"]: summarize_latency(a) for a in document["artifacts"]}
    return found


def summarize_latency(artifact: dict) -> dict:
    out = {}
    for threads, cases in artifact["latency"].items():
        for case, stats in cases.items():
            per_call = stats["p50_ms"]
            size = int(case.split(" x ")[0].split()[-1]) if case != "batch 1" else 1
            out[f"{threads}T {case}"] = {"p50_ms": per_call, "seq_per_s": round(1000 * size / per_call, 1) if per_call else None}
    return out


def fp16_onnx(args: argparse.Namespace, ctx: dict) -> dict:
    """The export stage's fp16 graph: its parity on the CPU ONNX Runtime, as the stage measured it."""
    import onnxruntime as ort

    files = json.loads((ctx["stages"]["export"] / "edgepress.json").read_text())["metrics"]["files"]
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    return {
        "fp16_parity_cpu": files["model_fp16.onnx"]["parity"]["max_abs_diff"], "tolerance": files["model_fp16.onnx"]["parity"]["tolerance"],
        "fp32_parity_cpu": files["model.onnx"]["parity"]["max_abs_diff"],
        "cuda_execution_provider": "run" if cuda else f"not run: onnxruntime {ort.__version__} has no CUDAExecutionProvider (needs onnxruntime-gpu)",
    }  # fmt: skip


def int8_threads(args: argparse.Namespace, ctx: dict) -> dict:
    """The int8 dynamic student on ONNX Runtime at 1, 4, 8 and 16 threads (as many as the machine has)."""
    from edgepress.bench.artifacts import named_models
    from edgepress.bench.stage import benchmark
    from edgepress.data.load import load_data
    from edgepress.recipe.deploy import BenchSection
    from edgepress.recipe.sections import DataSection

    cores = os.cpu_count() or 1
    threads = sorted({t for t in (1, 4, 8, 16) if t <= cores} or {1})
    int8 = ctx["stages"]["quantize"] / "model_int8_dynamic.onnx"
    cfg = BenchSection(threads=threads, examples=args.bench_examples, rounds=args.rounds, batch_sizes=[32], max_seq_length=64, torch=False)
    document = benchmark(named_models([f"int8={int8}"]), load_data(DataSection(source=str(ctx["data"]))), cfg, args.out / "bench-int8")
    return {"threads": threads, "int8 dynamic": summarize_latency(document["artifacts"][0])}


STEPS: list[tuple[str, Callable[[argparse.Namespace, dict], dict]]] = [
    ("model and data", make_model_and_data), ("training stages", train_stages), ("cpu reload", cpu_reload),
    ("bench torch", bench_torch), ("export and quantize", deploy_stages), ("fp16 onnx", fp16_onnx), ("int8 threads", int8_threads),
]  # fmt: skip


# --------------------------------------------------------------------------- reporting


def environment(device: str) -> dict:
    import onnxruntime
    import torch
    import transformers

    facts = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
             "onnxruntime": onnxruntime.__version__, "cores": os.cpu_count(), "cpu": platform.processor() or platform.machine()}  # fmt: skip
    if device == "cuda" and torch.cuda.is_available():
        facts.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda, driver=_driver())
    return facts


def _driver() -> str:
    import subprocess

    done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def print_table(report: dict) -> None:
    print(f"\nedgepress GPU check, {report['date']}: {json.dumps(report['environment'])}")
    print("| step | status | seconds | result |\n|---|---|---|---|")
    for name, result in report["steps"].items():
        detail = {k: v for k, v in result.items() if k not in ("status", "seconds", "traceback")}
        print(f"| {name} | {result['status']} | {result.get('seconds', '-')} | {json.dumps(detail, default=str)[:600]} |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for check.json, the runs and the bench reports")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--size", choices=sorted(SIZES), default="base")
    parser.add_argument("--examples", type=int, default=3000, help="synthetic texts in all (split 70/15/15)")
    parser.add_argument("--max-words", type=int, default=40, help="longest synthetic text, in words")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="of every training stage (a tiny model wants about 2e-3)")
    parser.add_argument("--bench-examples", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--logit-atol", type=float, default=1e-3, help="largest device-vs-CPU logit difference (fp32 evaluation)")
    parser.add_argument("--budget-s", type=int, default=480, help="steps that would start after this many seconds are not run")
    args = parser.parse_args()
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("PyTorch sees no CUDA device; run on a GPU machine, or pass --device cpu for a dry run")
    return args


if __name__ == "__main__":
    main()
