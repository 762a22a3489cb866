import json
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from edgepress.cli.app import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_help_is_fast_and_imports_no_heavy_library():
    code = "import sys, edgepress.cli.app; heavy = {'torch', 'transformers', 'onnxruntime', 'datasets'} & set(sys.modules); print(sorted(heavy))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edgepress", "--help"], capture_output=True, check=True)
    assert time.perf_counter() - start < 3.0  # about 0.3 s on an idle 2-core machine; slack for a busy CI


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.startswith("edgepress ")


def test_recipe_show_prints_commented_defaults():
    result = invoke("recipe", "show")
    assert result.exit_code == 0
    assert "# Peak learning rate of AdamW.\n  learning_rate: 5.0e-05" in result.output
    plain = invoke("recipe", "show", "--plain", "--set", "finetune.epochs=1")
    assert "#" not in plain.output and "epochs: 1.0" in plain.output


def test_recipe_check_accepts_the_shipped_recipe_and_names_a_typo(tmp_path):
    assert invoke("recipe", "check", "recipes/bbc-news.yaml").exit_code == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune:\n  learning_rat: 1\n")
    result = invoke("recipe", "check", str(bad))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {bad}: finetune.learning_rat: unknown key (check the spelling; `edgepress recipe show` lists every key)"


def test_bad_input_is_one_line_without_traceback_and_debug_shows_it(tmp_path):
    result = invoke("finetune", "--data", str(tmp_path / "missing.csv"), "--model", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "missing.csv does not exist" in result.stderr
    debug = invoke("--debug", "finetune", "--data", str(tmp_path / "missing.csv"), "--model", str(tmp_path))
    assert debug.exit_code != 0 and type(debug.exception).__name__ == "DataError"


def test_pickle_only_model_names_the_flag(tmp_path, tiny_csv):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "m" / "pytorch_model.bin").write_bytes(b"not really")
    result = invoke("finetune", "--model", str(tmp_path / "m"), "--data", str(tiny_csv), "--output-dir", str(tmp_path / "runs"))
    assert result.exit_code == 1 and "--allow-pickle" in result.stderr
    assert not (tmp_path / "runs" / "finetune" / "01-finetune").exists()


def test_finetune_from_flags_then_rerun_says_up_to_date(tmp_path, tiny_bert, tiny_csv):
    args = [
        "finetune", "--model", str(tiny_bert), "--data", str(tiny_csv), "--output-dir", str(tmp_path / "runs"),
        "--epochs", "8", "--learning-rate", "2e-3", "--max-seq-length", "24",
    ]  # fmt: skip
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    assert "finetune: test accuracy" in first.stdout and "ran" in first.stdout
    accuracy = float(first.stdout.split("finetune: test accuracy ")[1].split("%")[0])
    assert accuracy >= 90
    second = invoke(*args)
    assert second.exit_code == 0
    assert "up to date" in second.stdout
    assert "skipped, up to date" in second.stderr
    assert (tmp_path / "runs" / "finetune" / "01-finetune" / "model.safetensors").is_file()


@pytest.mark.parametrize("flag, message", [("--epochs=-1", "finetune.epochs: Input should be greater than 0"), ("--batch-size=0", "finetune.batch_size")])
def test_bad_flag_values_are_recipe_errors(flag, message):
    result = invoke("finetune", flag)
    assert result.exit_code == 2 and message in result.stderr


def test_distill_command_runs_on_a_finetuned_teacher(tmp_path, tiny_bert, tiny_csv):
    common = ["--data", str(tiny_csv), "--output-dir", str(tmp_path / "runs"), "--epochs", "8", "--learning-rate", "2e-3", "--max-seq-length", "24"]
    assert invoke("finetune", "--model", str(tiny_bert), *common).exit_code == 0
    teacher = tmp_path / "runs" / "finetune" / "01-finetune"
    result = invoke("distill", "--teacher", str(teacher), "--layers", "1", "--temperature", "3", *common)
    assert result.exit_code == 0, result.output
    assert "distill: test accuracy" in result.stdout
    manifest = json.loads((tmp_path / "runs" / "distill" / "01-distill" / "edgepress.json").read_text())
    assert manifest["metrics"]["student"]["teacher_layers"] == [1]
    assert manifest["config"]["distill"]["loss"]["temperature"] == 3.0


def test_distill_command_rejects_a_bad_layer_list(tmp_path):
    result = invoke("distill", "--teacher", str(tmp_path), "--layers", "0,two")
    assert result.exit_code == 2 and "--layers '0,two' is not a comma-separated list" in result.stderr
