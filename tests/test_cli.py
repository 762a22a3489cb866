import json
import os
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


def test_bad_input_is_one_line_without_traceback_and_debug_shows_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output folder, runs/, is relative to it
    result = invoke("finetune", "--data", str(tmp_path / "missing.csv"), "--model", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "missing.csv does not exist" in result.stderr
    assert not (tmp_path / "runs").exists()  # no run folder, no lock file, no runs/ left by a run that made nothing
    debug = invoke("--debug", "finetune", "--data", str(tmp_path / "missing.csv"), "--model", str(tmp_path))
    assert debug.exit_code == 1 and "Traceback" in debug.stderr and "DataError" in debug.stderr


def test_debug_keeps_the_exit_code(tmp_path):
    """--debug adds the traceback; scripts still see 2 for a recipe error (it was 1, an uncaught exception)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune:\n  learning_rat: 1\n")
    done = subprocess.run([sys.executable, "-m", "edgepress", "--debug", "recipe", "check", str(bad)], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "unknown key" in done.stderr


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


# --------------------------------------------------------------------------- issue 27: run folders a new user met


def edgepress(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400"}  # the log is wrapped at the terminal width
    return subprocess.run([sys.executable, "-m", "edgepress", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env)


def test_a_run_of_another_recipe_does_not_replace_a_finished_run(tmp_path, tiny_bert, tiny_csv):
    """The README's workflow (recipe show > my.yaml, then run it) once replaced the demo's teacher in silence."""
    import yaml

    def recipe(file: str, epochs: int):
        body = {"name": "demo", "output_dir": str(tmp_path / "runs"), "stages": ["finetune"], "model": {"name_or_path": str(tiny_bert)},
                "data": {"source": str(tiny_csv)}, "finetune": {"epochs": epochs, "max_seq_length": 16}}  # fmt: skip
        (tmp_path / file).write_text(yaml.safe_dump(body))
        return tmp_path / file

    demo, mine = recipe("demo.yaml", 1), recipe("my.yaml", 2)
    weights = tmp_path / "runs" / "demo" / "01-finetune" / "model.safetensors"
    assert edgepress("run", demo).returncode == 0
    before = weights.read_bytes()
    refused = edgepress("run", mine)
    assert refused.returncode == 2, refused.stderr
    assert f"holds a finished run of {demo.resolve()}, and this run of {mine.resolve()} would replace its 01-finetune" in refused.stderr
    assert weights.read_bytes() == before
    assert edgepress("run", mine, "--name", "mine").returncode == 0  # the fix the message names
    iterated = edgepress("run", demo, "--set", "finetune.epochs=2")  # the same recipe, changed: replaced, as before
    assert iterated.returncode == 0, iterated.stderr
    assert weights.read_bytes() != before
    assert edgepress("run", mine, "--force").returncode == 0


def test_a_failed_first_run_leaves_no_folder_that_refuses_the_fixed_one(tmp_path, tiny_bert, tiny_csv):
    common = ["--output-dir", tmp_path / "runs", "--name", "first", "--max-seq-length", "16", "--epochs", "1"]
    wrong_model = edgepress("finetune", "--model", tmp_path / "no-such-model", "--data", tiny_csv, *common)
    assert wrong_model.returncode == 1 and "does not exist" in wrong_model.stderr
    assert not (tmp_path / "runs" / "first").exists()
    wrong_data = edgepress("finetune", "--model", tiny_bert, "--data", tmp_path / "missing.csv", *common)
    assert wrong_data.returncode == 1 and not (tmp_path / "runs" / "first").exists()
    fixed = edgepress("finetune", "--model", tiny_bert, "--data", tiny_csv, *common)
    assert fixed.returncode == 0, fixed.stderr
    assert (tmp_path / "runs" / "first" / "recipe.yaml").read_text().startswith("# edgepress run of edgepress finetune\n")


def test_an_empty_name_is_refused_not_replaced_by_the_default(tmp_path, tiny_csv):
    result = invoke("finetune", "--name", "", "--data", str(tiny_csv), "--output-dir", str(tmp_path / "runs"))
    assert result.exit_code == 2 and "command line: name:" in result.stderr and "(got '')" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_the_run_log_names_the_files_it_read(tmp_path, tiny_bert, tiny_csv):
    done = edgepress("finetune", "--model", tiny_bert, "--set", f"data.train_file={tiny_csv}", "--set", f"data.test_file={tiny_csv}",
                     "--output-dir", tmp_path / "runs", "--epochs", "1", "--max-seq-length", "16")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"data train {tiny_csv}, test {tiny_csv}:" in done.stderr.replace("\n", " ") and "builtin:bbc-news" not in done.stderr
