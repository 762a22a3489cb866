"""The benchmark scripts run end to end on tiny models, so that they do not rot between releases."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
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


@pytest.mark.slow
def test_distill_ablation_runs_each_technique_alone_and_together(tmp_path, tiny_classifier, tiny_csv):
    """benchmarks/distill_ablation.py: one distillation per technique from the same teacher, and one
    with all of them; each row differs from the baseline in what it trained on, or how."""
    recipe = tiny_recipe(tmp_path, tiny_classifier, tiny_csv).model_dump(mode="json")
    recipe["data"]["max_train_samples"] = 150  # leaves rows out: the transfer text
    recipe["distill"] = {"learning_rate": 2e-3, "epochs": 1, "max_seq_length": 24, "student": {"num_layers": 1}, "augment": {"factor": 3}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "result.json"
    args = [
        "--recipe", str(tmp_path / "recipe.yaml"), "--data", str(tiny_csv), "--teacher", str(tiny_classifier),
        "--ensemble-seeds", "43", "--teacher-set", "finetune.epochs=2", "--set", "distill.loss.relation_heads=2", "--transfer-texts", "100",
        "--output-dir", str(tmp_path / "runs"), "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "distill_ablation.py"), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["baseline", "+ transfer", "+ augmentation", "+ staged", "+ ensemble", "together"]
    base = rows["baseline"]
    assert base["transfer"] is None and base["phases"] == 1 and base["teachers"] == 1  # the recipe's augmentation is turned off
    assert rows["+ transfer"]["transfer"]["kept"] == 100 and rows["+ transfer"]["rows"] == base["rows"] + 100
    assert rows["+ augmentation"]["rows"] == 2 * base["rows"]  # --augment 1, not the recipe's 3
    assert rows["+ staged"]["phases"] == 2 and rows["+ staged"]["rows"] == base["rows"]
    assert rows["+ ensemble"]["teachers"] == 2 and rows["+ ensemble"]["rows"] == base["rows"]
    together = rows["together"]
    assert (together["rows"], together["phases"], together["teachers"]) == (2 * base["rows"] + 100, 2, 2)
    assert all(0 <= r["test"] <= 1 and r["metric"] == "accuracy" for r in rows.values())
    assert "together" in done.stdout and (tmp_path / "runs" / "ablation-teacher-s43" / "01-finetune").is_dir()
    # it logs as the edgepress command does: the stages' lines (rich wraps them), not the libraries' bars
    assert "runningdistill" in "".join(done.stderr.split()) and "Loading weights" not in done.stderr, done.stderr[-2000:]
    assert "ablation-baseline-s42/distill/teacher outputs:" in done.stderr  # the teacher's pass is named like the training bars


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


def test_gate_noise_benchmark_counts_false_alarms_and_detections(tmp_path, tiny_classifier, tiny_csv):
    from test_runner import tiny_model

    model = tmp_path / "model"
    shutil.copytree(tiny_classifier, model, ignore=shutil.ignore_patterns("*.safetensors"))
    tiny_model(model / "a.onnx")
    out = tmp_path / "result.json"
    args = [
        "--reference", str(model / "a.onnx"), "--model", str(model / "a.onnx"), "--repeats", "1", "--baseline-runs", "2", "--slowdown", "3",
        "--bench-args", f"--data {tiny_csv} --examples 8 --rounds 4 --threads 1 --batch-size 4 --max-seq-length 24",
        "--ab-args", f"--data {tiny_csv} --examples 8 --rounds 5 --threads 1 --max-seq-length 24",
        "--output-dir", str(tmp_path / "runs"), "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gate_noise.py"), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    gates = result["gates"]
    # the two modes alternate: each benchmark gated against the stored baseline twice, then an A/B gate
    assert [(g["current"], g["reference"], g.get("mode", "stored")) for g in gates] == [
        row for kind in ("repeat", "slower")
        for row in [(f"{kind}-1", "ref", "stored"), (f"{kind}-1", None, "stored"), (f"ab-{kind}-1", None, "ab")]
    ]  # fmt: skip
    # a model made 4x slower on purpose fails every gate, stored (with and without the reference) and A/B
    assert [g["exit"] for g in gates if g["kind"] == "slower"] == [1] * 3
    assert set(result["counts"]) == {"repeat, by ref", "repeat, absolute", "slower, by ref", "slower, absolute", "repeat, absolute, A/B", "slower, absolute, A/B"}
    assert result["counts"]["slower, by ref"] == result["counts"]["slower, absolute"] == result["counts"]["slower, absolute, A/B"] == "1/1"
    assert all(set(g["latency_changes"]) == {"latency 1T batch 1", "latency 1T batch 4 x 24"} for g in gates if g["mode"] == "stored")
    ab = [g for g in gates if g["mode"] == "ab"]
    assert all(set(g["latency_changes"]) == {"latency 1T batch 1"} and len(g["latency_changes"]["latency 1T batch 1"]["ratios"]) == 5 for g in ab)
    # a 4x slower model regresses in the first measurement and in its confirmation
    assert all(g["latency_changes"]["latency 1T batch 1"]["attempts"] == ["regressed", "regressed"] for g in ab if g["kind"] == "slower")
    assert "slower model:" in done.stdout and "gates failed" in done.stdout and "A/B self-comparisons at 1T: 5 paired rounds" in done.stdout


def test_the_slowed_model_predicts_the_same_and_does_more_work(tmp_path, tiny_classifier):
    import numpy as np
    import onnx
    import onnxruntime as ort

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gate_noise import slow_down
    from test_runner import tiny_model

    source = tiny_model(tmp_path / "a.onnx")
    slowed = slow_down(source, tmp_path / "b.onnx", hidden=32, matmuls=5)
    matmuls = [sum(n.op_type == "MatMul" for n in onnx.load(str(p)).graph.node) for p in (source, slowed)]
    assert matmuls[1] - matmuls[0] == 6  # the widening MatMul and the chain of 5
    feeds = {"input_ids": np.arange(1, 25, dtype=np.int64).reshape(2, 12), "attention_mask": np.ones((2, 12), np.int64)}
    a, b = (ort.InferenceSession(str(p)).run(None, feeds)[0] for p in (source, slowed))
    assert a.shape == b.shape and np.array_equal(a, b)


def test_calibration_benchmark_compares_both_paddings(tmp_path, tiny_classifier, tiny_csv):
    recipe = tiny_recipe(tmp_path, tiny_classifier, tiny_csv).model_dump(mode="json")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "result.json"
    args = [
        "--recipe", str(tmp_path / "recipe.yaml"), "--model", str(tiny_classifier), "--output-dir", str(tmp_path / "runs"),
        "--json", str(out), "--methods", "minmax", "percentile", "--max-seq-length", "48", "--samples", "32",
    ]  # fmt: skip
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "calibration_lengths.py"), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["method"], r["padding"]) for r in rows] == [
        ("minmax", "max_length"), ("minmax", "longest"), ("percentile", "max_length"), ("percentile", "longest"),
    ]  # fmt: skip
    assert all(0 <= r["test"] <= 1 and "static" in r["described"] for r in rows)
    for padding in ("max_length", "longest"):
        manifest = json.loads((tmp_path / "runs" / f"bench-calibration-minmax-{padding}" / "01-quantize" / "edgepress.json").read_text())
        assert manifest["config"]["quantize"]["calibration_padding"] == padding
    assert "agrees w/ fp32" in done.stdout


def test_sst2_headline_benchmarks_edgepress_and_the_usual_path_in_one_run(tmp_path, tiny_bert):
    """benchmarks/sst2/run.py on a tiny SST-2-shaped folder: every model of the comparison in one bench
    run, the ratios computed from that run's numbers, and the dev table of the recipe's models."""
    from conftest import synthetic_rows, write_rows

    data = tmp_path / "sst2"
    for name, count, seed in (("train", 300, 0), ("dev", 60, 1), ("test", 40, 2)):
        rows = [{"sentence": r["text"], "label": r["label"]} for r in synthetic_rows(count, seed)]
        write_rows(data / f"{name}.tsv", rows)
    recipe = yaml.safe_load((ROOT / "benchmarks" / "sst2" / "recipe.yaml").read_text())
    recipe["model"]["name_or_path"] = str(tiny_bert)
    recipe["data"]["max_train_samples"] = None
    recipe["finetune"].update(learning_rate=2e-3, epochs=8, batch_size=16, freeze_embeddings=False)
    recipe["distill"].update(learning_rate=2e-3, epochs=2, student={"from_teacher": True, "num_layers": 1})
    recipe["prune"].update(learning_rate=2e-3, epochs=1, batch_size=16, heads=0.5, ffn=0.5, steps=1, importance={"samples": 64})
    recipe["quantize"]["tolerance"] = 0.5
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "sst2.json"
    args = [str(data), "--recipe", str(tmp_path / "recipe.yaml"), "--output-dir", str(tmp_path / "runs"),
            "--examples", "40", "--rounds", "2", "--json", str(out)]  # fmt: skip
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sst2" / "run.py"), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {r["model"]: r for r in result["rows"]}
    assert {"teacher torch fp32", "teacher ORT fp32", "usual path int8", "edgepress dynamic", "edgepress dynamic + tokenizer"} <= set(rows)
    chosen, usual = rows[result["chosen"]], rows["usual path int8"]
    # optimum's environment (transformers 4.57) opens edgepress's files as ORTModelForSequenceClassification
    opened = result["optimum_opens"]
    assert {"model.onnx", "model_optimized.onnx", "model_int8_dynamic.onnx"} <= set(opened)
    assert all(v["max_abs_diff"] < 1e-4 and len(v["labels"]) == 3 for v in opened.values())
    assert result["ratios"]["speedup_vs_usual"]["1"] == round(usual["p50_ms_batch1"]["1"] / chosen["p50_ms_batch1"]["1"], 2)
    assert result["ratios"]["size_ratio_vs_onnx"] == round(rows["teacher ORT fp32"]["bytes"] / chosen["bytes"], 2)
    assert rows["edgepress dynamic + tokenizer"]["sequences_per_s_batch32"]["1"] is None  # batch 1 only
    assert set(result["met"]) == {"accuracy", "speedup_vs_torch", "speedup_vs_usual", "size", "time"}
    assert [r["model"] for r in result["dev"]][:3] == ["01-finetune", "02-distill", "03-prune"]
    assert any(r["model"].startswith("  vocabulary ") for r in result["dev"])
    assert "against the targets" in done.stdout and "dev.tsv accuracy" in done.stdout


@pytest.mark.slow
def test_gpu_check_script_dry_run_on_the_cpu(tmp_path):
    """benchmarks/gpu/check.py with --device cpu and a tiny model: every step runs (so the script the
    GPU machine runs cannot rot), the training losses go down, and the CPU reload matches."""
    args = ["--device", "cpu", "--size", "tiny", "--examples", "400", "--max-words", "12", "--epochs", "6", "--learning-rate", "2e-3",
            "--bench-examples", "8", "--rounds", "1", "--out", str(tmp_path / "check")]  # fmt: skip
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu" / "check.py"), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "check" / "check.json").read_text())
    steps = report["steps"]
    assert list(steps) == ["model and data", "training stages", "cpu reload", "bench torch", "export and quantize", "fp16 onnx", "int8 threads"]
    assert all(step["status"] == "ok" for step in steps.values()), {k: v.get("error") for k, v in steps.items()}
    assert all(diff <= 1e-3 for diff in steps["cpu reload"]["max_abs_logit_diff"].values())
    curve = steps["training stages"]["stages"]["finetune"]["loss"]
    assert len(curve) >= 2 and curve[-1] < curve[0]
    assert steps["fp16 onnx"]["fp16_parity_cpu"] <= steps["fp16 onnx"]["tolerance"]
    assert "| int8 threads | ok |" in done.stdout


@pytest.mark.slow
def test_browser_benchmark_puts_the_browser_beside_the_cpu(tmp_path, browser_target, tiny_classifier, tiny_csv):
    """benchmarks/browser.py on a run whose student has a trimmed vocabulary (its own token ids)."""
    from edgepress.recipe.loading import validate_recipe
    from edgepress.running.pipeline import run_recipe

    training = {"learning_rate": 2e-3, "epochs": 1, "batch_size": 16, "max_seq_length": 24}
    run_recipe(validate_recipe({
        "name": "small", "output_dir": str(tmp_path / "runs"), "stages": ["finetune", "prune", "export"],
        "model": {"name_or_path": str(tiny_classifier)}, "data": {"source": str(tiny_csv)}, "finetune": training,
        "prune": {**training, "heads": 0.5, "ffn": 0.5, "vocabulary": {"trim": True}}, "export": {"max_seq_length": 24, "mobile": False},
    }))  # fmt: skip
    out = tmp_path / "result.json"
    args = [str(tmp_path / "runs" / "small"), "--output", str(tmp_path / "bench"), "--examples", "6", "--rounds", "1",
            "--max-seq-length", "24", "--threads", "1", "2", "--results", str(out)]  # fmt: skip
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "browser.py"), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    names = [r["name"] for r in result["rows"]]
    files = [f"{who} {kind}" for who in ("teacher", "student") for kind in ("fp32", "int8 dynamic", "int8 static")]
    assert names[:6] == files and all("transformers.js pipeline" in n for n in names[6:]) and len(names) == 10
    for row in result["rows"]:
        assert row["agreement"]["argmax"] == 1.0 and set(row["browser_p50_ms"]) == {"1", "2"}
        assert (row["cpu_p50_ms"] is None) == (row["runtime"] == "transformers.js")
    assert set(result["fastest_in_browser"]) == {"1", "2"} and result["environment"]["browser"]["cross_origin_isolated"] is True
    assert "fastest in the browser at 1 thread(s)" in done.stdout and "| teacher fp32 | onnxruntime-web |" in done.stdout


@pytest.mark.slow
def test_low_label_benchmark_runs_with_and_without_adapt_and_its_report_renders(tmp_path, tiny_bert):
    """benchmarks/sst2/low_label.py on a tiny SST-2-shaped folder: both runs, the adapt run's
    perplexity and wall time, and its report (with the training curves) rendered in Chromium."""
    from conftest import require_system_tool, synthetic_rows, write_rows

    from edgepress.web.target import find_chromium

    data = tmp_path / "sst2"
    for name, count, seed in (("train", 400, 0), ("dev", 60, 1), ("test", 40, 2)):
        write_rows(data / f"{name}.tsv", [{"sentence": r["text"], "label": r["label"]} for r in synthetic_rows(count, seed)])
    short = ["finetune.learning_rate=2e-3", "distill.learning_rate=2e-3", "prune.learning_rate=2e-3", "adapt.learning_rate=2e-3",
             "distill.epochs=1", "distill.student.num_layers=1", "prune.steps=1", "prune.importance.samples=64", "quantize.tolerance=0.5", "bench.examples=16"]  # fmt: skip
    out = tmp_path / "low.json"
    args = [str(data), "--labelled", "100", "--model", str(tiny_bert), "--output-dir", str(tmp_path / "runs"), "--json", str(out),
            *sum((["--set", s] for s in short), [])]  # fmt: skip
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sst2" / "low_label.py"), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    plain, adapted = json.loads(out.read_text())["rows"]
    assert (plain["adapt"], adapted["adapt"]) == (False, True) and "adapt" not in plain["stage_wall_s"]
    assert adapted["adapt_texts"]["training_texts"] == 100 and 290 <= adapted["adapt_texts"]["kept"] <= 300  # the other phrases, unlabelled
    assert adapted["adapt_perplexity"][1] < adapted["adapt_perplexity"][0]
    assert "int8 student test" in done.stdout
    report = Path(adapted["report"])
    assert "<h3>01-adapt</h3>" in report.read_text() and "<h3>02-finetune</h3>" in report.read_text()
    require_system_tool(find_chromium() is not None, "Chromium", "chromium")
    shot = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report_screenshot.py"), str(report), "--output", str(tmp_path / "r.png")],
                          capture_output=True, text=True)  # fmt: skip
    assert shot.returncode == 0, shot.stdout + shot.stderr
    assert "image 'training curves of 01-adapt': rendered" in shot.stdout and "0 others" in shot.stdout
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_adapt_speed_benchmark_times_both_losses_interleaved(tmp_path, tiny_bert, tiny_csv):
    out = tmp_path / "speed.json"
    args = [str(tiny_csv), "--model", str(tiny_bert), "--batch", "8", "--steps", "2", "--rounds", "2", "--max-seq-length", "24", "--json", str(out)]
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "adapt_speed.py"), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["median_step_s"]) == {"full vocabulary at every position", "masked positions only"}
    assert result["loss_difference"] < 1e-4 and result["speedup"] > 0
    assert "masked-only steps are" in done.stdout


def test_teacher_cache_size_benchmark_matches_the_real_cache(tmp_path, tiny_classifier, tiny_csv):
    out = tmp_path / "size.json"
    args = [str(tiny_csv), "--teacher", str(tiny_classifier), "--max-length", "24", "--hidden-layers", "0", "1",
            "--attention-layers", "1", "--relations", "--check", "40", "--json", str(out)]  # fmt: skip
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "teacher_cache_size.py"), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["check"]["stored_bytes"] == result["check"]["formula_bytes"] > 0 and "(equal)" in done.stdout
    assert result["check"]["peak_bytes"] > 0 and "peak memory" in done.stdout
    assert result["ratio"] > 1.5 and result["texts"] == 600  # synthetic texts are far shorter than 24 pieces
    assert sum(result["sizes"]["padded"].values()) == pytest.approx(result["ratio"] * sum(result["sizes"]["real tokens"].values()))
