"""The benchmark scripts run end to end on tiny models, so that they do not rot between releases."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import tiny_recipe

ROOT = Path(__file__).resolve().parent.parent


def test_distill_benchmark_compares_all_variants_in_one_run(tmp_path, tiny_bert, tiny_csv):
    recipe = tiny_recipe(tmp_path, tiny_bert, tiny_csv).model_dump(mode="json")
    recipe["distill"] = {"learning_rate": 2e-3, "epochs": 2, "max_seq_length": 24, "warmup_ratio": 0.1, "student": {"num_layers": 1}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "result.json"
    args = [
        "--recipe", str(tmp_path / "recipe.yaml"), "--output-dir", str(tmp_path / "runs"), "--json", str(out),
        "--teacher-set", "finetune.epochs=5", "--teacher-name", "teacher", "--augment", "1",
    ]  # fmt: skip
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "distill_vs_hard_labels.py"), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [r["variant"] for r in result["rows"]] == [
        "teacher-init, KD", "teacher-init, hard only", "random-init, KD", "random-init, hard only", "random-init, KD + hidden + attention",
        "teacher-init, KD + augmentation x1", "teacher-init, hard only, same steps",
        "teacher-init, hard only + augmentation x1, source labels",
    ]  # fmt: skip
    steps = [r["steps"] for r in result["rows"]]
    assert len(set(steps[:5])) == 1  # the same budget for every loss
    # the augmented comparison: equal up to one partial batch per epoch (4 epochs of hard labels)
    assert max(steps[5:]) - min(steps[5:]) <= 4 and steps[5] > 1.8 * steps[0]
    assert all(0 <= r["test_accuracy"] <= 1 for r in result["rows"])
    assert "teacher-init, KD" in done.stdout and result["machine"]["packages"]["torch"]
    teacher = json.loads((tmp_path / "runs" / "teacher" / "01-finetune" / "edgepress.json").read_text())
    assert teacher["config"]["finetune"]["epochs"] == 5 and result["teacher_overrides"] == ["finetune.epochs=5"]


def test_prune_benchmark_measures_both_students_in_one_run(tmp_path, tiny_classifier, tiny_csv):
    recipe = tiny_recipe(tmp_path, tiny_classifier, tiny_csv).model_dump(mode="json")
    recipe["distill"] = {"learning_rate": 2e-3, "epochs": 2, "max_seq_length": 24, "student": {"num_layers": 1}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "result.json"
    args = [
        "--recipe", str(tmp_path / "recipe.yaml"), "--teacher", str(tiny_classifier), "--output-dir", str(tmp_path / "runs"),
        "--json", str(out), "--examples", "20", "--rounds", "2", "--set", "prune.learning_rate=2e-3", "--set", "prune.epochs=2",
    ]  # fmt: skip
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "prune_sst2.py"), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    unpruned, pruned = result["rows"]
    assert (unpruned["model"], pruned["model"]) == ("unpruned", "pruned")
    assert unpruned["heads_per_layer"] == [2] and pruned["heads_per_layer"] == [1] and pruned["ffn_per_layer"] == [32]
    assert pruned["parameters"] < unpruned["parameters"] and pruned["onnx_bytes"] < unpruned["onnx_bytes"]
    assert all(r["latency"]["1"]["runs"] == 40 for r in result["rows"])
    assert "pruned vs unpruned" in done.stdout


def test_gate_noise_benchmark_fails_the_slower_model(tmp_path, tiny_classifier, tiny_csv):
    from test_runner import tiny_model

    model = tmp_path / "model"
    shutil.copytree(tiny_classifier, model, ignore=shutil.ignore_patterns("*.safetensors"))
    tiny_model(model / "a.onnx")
    out = tmp_path / "result.json"
    args = [
        "--reference", str(model / "a.onnx"), "--model", str(model / "a.onnx"), "--slower", str(tiny_classifier),
        "--bench-args", f"--data {tiny_csv} --examples 8 --rounds 2 --threads 1 --batch-size 4 --max-seq-length 24",
        "--output-dir", str(tmp_path / "runs"), "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gate_noise.py"), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    gates = json.loads(out.read_text())["gates"]
    assert [(g["current"], g["reference"]) for g in gates] == [
        ("repeat 1", "ref"), ("repeat 1", None), ("repeat 2", "ref"), ("repeat 2", None), ("slower", "ref"), ("slower", None),
    ]  # fmt: skip
    # PyTorch's per-call overhead makes the torch model many times slower than a tiny ONNX graph
    assert [g["exit"] for g in gates if g["current"] == "slower"] == [1, 1]
    assert all(set(g["latency_changes"]) == {"latency 1T batch 1", "latency 1T batch 4 x 24"} for g in gates)
    assert "slower     by ref          1        1" in done.stdout