"""Issue 17: runs killed with SIGKILL resume (inside training stages, from their checkpoints), end
with the same model as an uninterrupted run, never leave a half-written artifact where it would be
read, and two runs on one folder never mix (the run lock)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edgepress.running.runs import MANIFEST, file_hashes

TRAINING = {"learning_rate": 2e-3, "batch_size": 16, "max_seq_length": 24, "warmup_ratio": 0.1, "logging_steps": 50, "checkpoint_steps": 10}


def chain(tmp_path: Path, model: Path, data: Path, name: str) -> Path:
    """finetune -> distill -> prune (two recoveries) -> export -> quantize on the tiny BERT, written as YAML."""
    recipe = {
        "name": name, "output_dir": str(tmp_path / "runs"), "seed": 7,
        "stages": ["finetune", "distill", "prune", "export", "quantize"],
        "model": {"name_or_path": str(model)}, "data": {"source": str(data)},
        "finetune": {**TRAINING, "epochs": 6},
        "distill": {**TRAINING, "epochs": 4, "student": {"num_layers": 1}},
        "prune": {**TRAINING, "epochs": 2, "heads": 0.5, "ffn": 0.5, "steps": 2},
        "export": {"max_seq_length": 24, "mobile": False},
        "quantize": {"max_seq_length": 24, "static": True, "calibration_samples": 32},
    }  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def start(recipe: Path, *extra: str, log: Path | None = None) -> subprocess.Popen:
    """``edgepress run`` in its own process group; its output to ``log`` (a pipe nobody reads could fill and stall it)."""
    out = log.open("w") if log else subprocess.PIPE
    return subprocess.Popen(
        [sys.executable, "-m", "edgepress", "run", str(recipe), *extra],
        stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip


def kill_when(process: subprocess.Popen, ready, what: str, timeout: float = 240) -> None:
    """SIGKILL the run as soon as ``ready()`` holds (polled every 20 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before {what}")
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    pytest.fail(f"timed out waiting for {what}")


def checkpoints(run: Path, stage: str, name: str) -> list[Path]:
    return sorted(run.glob(f".*-{stage}.partial-*/.checkpoints/{name}/checkpoint-*/trainer_state.json"))


def latest_step(run: Path, stage: str, name: str) -> int:
    return max((int(p.parent.name.rsplit("-", 1)[-1]) for p in checkpoints(run, stage, name)), default=0)


def partial(run: Path, stage: str, file: str = "") -> bool:
    return any(p for p in run.glob(f".*-{stage}.partial-*/{file}") if p.exists())


def manifest(run: Path, stage_folder: str) -> bool:
    return (run / stage_folder / MANIFEST).is_file()


# Where each kill lands: (what, condition on the run folder). Consecutive: each re-run resumes the
# previous one's state and is killed at the next point; the last re-run completes.
KILL_POINTS = [
    ("finetune, before its first checkpoint", lambda run: partial(run, "finetune")),
    ("finetune, after its first checkpoint", lambda run: len(checkpoints(run, "finetune", "finetune")) >= 1),
    ("finetune, after a later checkpoint", lambda run: latest_step(run, "finetune", "finetune") >= 40),
    ("between finetune and distill", lambda run: manifest(run, "01-finetune")),
    ("distill, after a checkpoint", lambda run: len(checkpoints(run, "distill", "distill")) >= 1),
    ("prune, in the first recovery", lambda run: len(checkpoints(run, "prune", "recovery-1")) >= 1),
    ("prune, in the second recovery", lambda run: len(checkpoints(run, "prune", "recovery-2")) >= 1),
    ("export, once model.onnx is being written", lambda run: partial(run, "export", "model.onnx")),
    ("export, writing the fused graph", lambda run: partial(run, "export", "model_optimized.onnx")),
    ("quantize, during the search", lambda run: partial(run, "quantize", "*.onnx") or partial(run, "quantize", "tmp*")),
    ("quantize, with the dynamic model kept", lambda run: partial(run, "quantize", "model_int8_dynamic.onnx")),
]


@pytest.mark.slow
def test_a_run_killed_at_eleven_points_resumes_each_time_and_ends_like_an_uninterrupted_run(tmp_path, tiny_bert, tiny_csv):
    reference = subprocess.run([sys.executable, "-m", "edgepress", "run", str(chain(tmp_path, tiny_bert, tiny_csv, "whole"))],
                               capture_output=True, text=True)  # fmt: skip
    assert reference.returncode == 0, reference.stdout[-2000:] + reference.stderr[-2000:]
    recipe = chain(tmp_path, tiny_bert, tiny_csv, "killed")
    run = tmp_path / "runs" / "killed"
    logs, landed = [], []
    for number, (what, ready) in enumerate(KILL_POINTS):
        logs.append(tmp_path / f"killed-{number}.log")
        process = start(recipe, log=logs[-1])
        kill_when(process, lambda: ready(run), what)
        landed.append(what)
        # what a later stage or a user reads is never half-written: every stage folder in place is complete
        for folder in run.glob("0*-*"):
            recorded = json.loads((folder / MANIFEST).read_text())
            assert file_hashes(folder) == recorded["outputs"], f"{folder.name} after the kill {what!r}"
    final = start(recipe)
    output, _ = final.communicate(timeout=600)
    assert final.returncode == 0, output[-3000:]
    assert len(landed) == len(KILL_POINTS) >= 10
    said = "".join(output.split()) + "".join("".join(log.read_text().split()) for log in logs)
    # training resumed from checkpoints (a restart from step 0 would end with the same weights too)
    resumed = said.count("resumingtrainingfromcheckpoint-")
    assert resumed >= 6, f"training resumed {resumed} times"  # finetune twice, distill, recovery 1 twice, recovery 2
    assert "leftbyaninterruptedrun" in said
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []  # no partial folder or leftover
    whole = tmp_path / "runs" / "whole"
    for stage in ("01-finetune", "02-distill", "03-prune"):
        a, b = (json.loads((r / stage / MANIFEST).read_text())["metrics"] for r in (whole, run))
        assert a["validation"] == b["validation"] and a["test"] == b["test"], stage
    # the same weights, to the bit: the Trainer restores optimizer, scheduler, RNG and data order
    for stage in ("01-finetune", "02-distill", "03-prune"):
        assert file_hashes(whole / stage)["model.safetensors"] == file_hashes(run / stage)["model.safetensors"], stage
    for name in ("model.onnx", "model_optimized.onnx"):
        assert file_hashes(whole / "04-export")[name] == file_hashes(run / "04-export")[name], name
    for name in ("model_int8_dynamic.onnx", "model_int8_static.onnx"):
        assert file_hashes(whole / "05-quantize")[name] == file_hashes(run / "05-quantize")[name], name


def test_a_second_run_on_the_same_folder_is_refused_naming_the_holder_and_a_killed_holder_is_taken_over(tmp_path, tiny_classifier, tiny_csv):
    recipe = tmp_path / "slow.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "locked", "output_dir": str(tmp_path / "runs"), "stages": ["prune"],
        "model": {"name_or_path": str(tiny_classifier)}, "data": {"source": str(tiny_csv)},
        "prune": {**TRAINING, "epochs": 20, "heads": 0.5, "ffn": 0.5, "steps": 1},
    }))  # fmt: skip
    run = tmp_path / "runs" / "locked"
    first = start(recipe)
    holder = {}

    def holding() -> bool:
        try:
            holder.update(json.loads((run.parent / ".locked.lock.json").read_text()))
            return True
        except (OSError, ValueError):
            return False

    deadline = time.monotonic() + 120
    while not holding() and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    assert holder.get("pid") == first.pid
    second = start(recipe)
    output, _ = second.communicate(timeout=120)
    assert second.returncode == 1 and "Traceback" not in output
    assert f"run folder {run} is in use by pid {first.pid} on {holder['host']} (started {holder['started']})" in output
    assert "--name" in output
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    third = start(recipe, "--set", "prune.epochs=1")  # a short run: what matters is that it gets the folder
    output, _ = third.communicate(timeout=300)
    assert third.returncode == 0, output[-2000:]
    assert f"takingoverrunfolder{run}frompid{first.pid}" in "".join(output.split())  # the log wraps anywhere
    assert not (run.parent / ".locked.lock.json").exists() and (run / "01-prune" / MANIFEST).is_file()
