"""Issue 19: `edgepress run` under `torchrun --nproc_per_node 2` (gloo, CPU): the Trainer trains
data-parallel, only the main process writes, and the result matches one process with the same
global batch.

The comparison is exact up to float summation order only when both runs see the same batches, so
each batch is the whole training split (one process: 420 rows; two: 210 each) and dropout is off:
the all-reduced gradient is then the one-process gradient, summed in another order."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import build_tiny_bert, synthetic_rows, write_rows
from safetensors.torch import load_file

TORCHRUN = Path(sys.executable).parent / "torchrun"
ACCELERATE = Path(sys.executable).parent / "accelerate"


def recipe(root: Path, model: Path, data: Path, name: str, batch: int) -> Path:
    training = {"learning_rate": 1e-2, "batch_size": batch, "max_seq_length": 24, "warmup_ratio": 0.0, "logging_steps": 1}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "output_dir": str(root / "runs"), "stages": ["finetune", "distill", "prune", "export"],
        "model": {"name_or_path": str(model)}, "data": {"source": str(data)},
        "finetune": {**training, "epochs": 5}, "distill": {**training, "epochs": 3, "student": {"num_layers": 1}},
        "prune": {**training, "epochs": 2, "heads": 0.5, "ffn": 0.5, "steps": 1}, "export": {"max_seq_length": 24, "mobile": False},
    }))  # fmt: skip
    return path


@pytest.mark.slow
def test_two_processes_train_like_one_and_only_the_main_one_writes(tmp_path):
    model = build_tiny_bert(tmp_path / "base", seed=3)
    config = json.loads((model / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # the ranks' dropout masks would differ
    (model / "config.json").write_text(json.dumps(config))
    data = write_rows(tmp_path / "topics.csv", synthetic_rows(600))  # 420 training rows
    one = subprocess.run([sys.executable, "-m", "edgepress", "run", str(recipe(tmp_path, model, data, "one", 420))], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([str(TORCHRUN), "--nproc_per_node", "2", "-m", "edgepress", "run", str(recipe(tmp_path, model, data, "two", 210))],
                         capture_output=True, text=True)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    run = tmp_path / "runs" / "two"
    assert sorted(p.name for p in run.iterdir()) == ["01-finetune", "02-distill", "03-prune", "04-export", "cache", "recipe.yaml"]
    assert len(list((run / "cache").iterdir())) == 1  # the teacher's outputs computed once, not once per process
    assert "".join(two.stderr.split()).count("runningfinetune") == 1  # the main process reports; the other is quiet
    assert two.stdout.count("export: test accuracy") == 1  # one summary table
    for stage, atol in (("01-finetune", 1e-4), ("02-distill", 5e-3), ("03-prune", 5e-3)):
        a, b = (json.loads((tmp_path / "runs" / r / stage / "edgepress.json").read_text())["metrics"] for r in ("one", "two"))
        if "train" in a:
            assert a["train"]["steps"] == b["train"]["steps"], stage  # the same global batch: the same number of steps
        assert a["validation"] == b["validation"] and a["test"] == b["test"], stage
        weights = [load_file(str(tmp_path / "runs" / r / stage / "model.safetensors")) for r in ("one", "two")]
        diff = max(float((weights[0][k] - weights[1][k]).abs().max()) for k in weights[0])
        # float order in the all-reduce; Adam's step divides by sqrt(v), which magnifies it where gradients are near zero
        assert diff < atol, (stage, diff)


@pytest.mark.slow
def test_accelerate_launch_starts_the_same_two_processes(tmp_path):
    """`accelerate launch --multi_gpu` is accelerate's multi-process launcher (torch.distributed.run
    underneath); with no GPU, edgepress picks gloo. Its plain `--cpu --num_processes N` starts one
    process unless MPI is set up (accelerate's simple launcher), so the README names --multi_gpu."""
    model = build_tiny_bert(tmp_path / "base", seed=3)
    config = json.loads((model / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (model / "config.json").write_text(json.dumps(config))
    data = write_rows(tmp_path / "topics.csv", synthetic_rows(600))
    finetune_only = {"stages": ["finetune"]}
    one, two = (recipe(tmp_path, model, data, name, batch) for name, batch in (("one", 420), ("two", 210)))
    for path in (one, two):
        path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **finetune_only}))
    single = subprocess.run([sys.executable, "-m", "edgepress", "run", str(one)], capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]
    launched = subprocess.run([str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                               "-m", "edgepress", "run", str(two)], capture_output=True, text=True)  # fmt: skip
    assert launched.returncode == 0, launched.stderr[-3000:]
    a, b = (json.loads((tmp_path / "runs" / r / "01-finetune" / "edgepress.json").read_text())["metrics"] for r in ("one", "two"))
    assert a["train"]["steps"] == b["train"]["steps"] == 5  # 2 x 210 rows: one global batch an epoch, as with one process
    weights = [load_file(str(tmp_path / "runs" / r / "01-finetune" / "model.safetensors")) for r in ("one", "two")]
    assert max(float((weights[0][k] - weights[1][k]).abs().max()) for k in weights[0]) < 1e-4


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_from_its_checkpoint(tmp_path):
    """SIGKILL every process of a torchrun fine-tuning after a few checkpoints; torchrun again resumes
    from the last one (each rank its own RNG state) and ends with the uninterrupted run's weights."""
    model = build_tiny_bert(tmp_path / "base", seed=3)
    data = write_rows(tmp_path / "topics.csv", synthetic_rows(600))
    paths = {}
    for name in ("whole", "killed"):
        path = recipe(tmp_path, model, data, name, 210)
        raw = yaml.safe_load(path.read_text())
        raw.update(stages=["finetune"], finetune={**raw["finetune"], "epochs": 150, "checkpoint_steps": 10})
        path.write_text(yaml.safe_dump(raw))
        paths[name] = path
    command = [str(TORCHRUN), "--nproc_per_node", "2", "-m", "edgepress", "run"]
    whole = subprocess.run([*command, str(paths["whole"])], capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr[-3000:]
    checkpoints = tmp_path / "runs" / "killed"
    first = subprocess.Popen([*command, str(paths["killed"])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(list(checkpoints.glob(".01-finetune.partial-*/.checkpoints/finetune/checkpoint-*/trainer_state.json"))) < 1:
        assert first.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.02)
    time.sleep(0.3)  # a few more steps: the kill lands mid-training
    # torchrun starts its workers in sessions of their own: kill every process of this run, as a lost machine would
    subprocess.run(["pkill", "-KILL", "-f", str(paths["killed"])], check=False)
    first.wait()
    assert not (checkpoints / "01-finetune").exists()
    again = subprocess.run([*command, str(paths["killed"])], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming training from checkpoint-" in " ".join(again.stderr.split())
    a, b = (load_file(str(tmp_path / "runs" / r / "01-finetune" / "model.safetensors")) for r in ("whole", "killed"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6
