"""What every Trainer-based stage shares: arguments, checkpoints and resume, early stopping, a
summary of the run (and, through monitor.py, its progress line, curves and dashboards).

Checkpoints (weights as safetensors, optimizer, scheduler and RNG state) go inside the stage's
partial folder, ``.checkpoints/<name>/``, every ``checkpoint_steps`` steps (and once an epoch). A
killed run leaves that folder behind; the next run of the same stage (same fingerprint, so the same
partial folder) resumes from the last checkpoint. The folder is removed before the artifact is
hashed (``runs.drop_checkpoints``), so checkpoints never end up in an artifact."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepress import distributed
from edgepress.compress.training.monitor import monitored, run_name
from edgepress.errors import StageError
from edgepress.recipe.training import TrainingSection
from edgepress.running.runs import CHECKPOINTS

if TYPE_CHECKING:
    from transformers import Trainer, TrainerCallback, TrainingArguments

log = logging.getLogger(__name__)


def training_arguments(cfg: TrainingSection, train_size: int, seed: int, work: Path, **overrides: Any) -> "TrainingArguments":
    import torch
    from transformers import TrainingArguments

    # the global batch: per-device batch x processes (torchrun / accelerate launch) x accumulation
    steps_per_epoch = math.ceil(train_size / (cfg.batch_size * distributed.world_size() * cfg.gradient_accumulation_steps))
    total_steps = cfg.max_steps or math.ceil(cfg.epochs * steps_per_epoch)
    # Evaluate and checkpoint every checkpoint_steps, at least once an epoch and once a run, so that
    # the best model can always be picked, early stopping has a signal, and a kill loses little.
    every = max(1, min(steps_per_epoch, total_steps, cfg.checkpoint_steps))
    if cfg.precision == "fp16" and not torch.cuda.is_available():
        raise StageError("precision fp16 trains with CUDA's fp16 autocast, and PyTorch sees no CUDA device; use precision: bf16 or fp32")
    arguments = dict(
        output_dir=str(work),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        # steps, not warmup_ratio: Transformers 5 dropped that argument (its warmup_steps takes a
        # ratio below 1); ceil(steps x ratio) is how both versions turn a ratio into steps
        warmup_steps=math.ceil(total_steps * cfg.warmup_ratio),
        lr_scheduler_type=cfg.lr_scheduler,
        weight_decay=cfg.weight_decay,
        eval_strategy="steps",
        eval_steps=every,
        save_strategy="steps",
        save_steps=every,
        save_total_limit=1,
        save_only_model=False,  # optimizer, scheduler and RNG state too: what resuming needs
        load_best_model_at_end=True,
        metric_for_best_model=cfg.metric_for_best_model,
        greater_is_better=True,
        logging_steps=cfg.logging_steps,
        report_to="none",  # the dashboards of tracking.report_to are added by monitor.monitored, named per run
        run_name=run_name(work),
        bf16=cfg.precision == "bf16",
        fp16=cfg.precision == "fp16",
        seed=seed,
        data_seed=seed,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=False,
        ddp_backend=distributed.backend(),  # gloo on CPU under torchrun; None alone
        # Transformers 5 multiplies the loss by the process count when the model's forward takes
        # **kwargs, expecting a loss summed over tokens and divided by the global count; BERT's heads
        # and edgepress's distillation losses are local means, so that would double the gradients
        # under two processes (and change what gradient clipping does): DDP's mean is the right one.
        average_tokens_across_devices=False,
        use_cpu=distributed.on_cpu(),
    )
    return TrainingArguments(**{**arguments, **overrides})


def checkpoint_dir(out_dir: Path, name: str) -> Path:
    """Where one training run of a stage checkpoints (``name``: one per run, e.g. ``recovery-2``)."""
    work = out_dir / CHECKPOINTS / name
    work.mkdir(parents=True, exist_ok=True)
    return work


def train_resumable(trainer: "Trainer", work: Path) -> Any:
    """``trainer.train()``, from the last checkpoint in ``work`` when an interrupted run left one."""
    last = last_checkpoint(work)
    if last:
        log.info("resuming training from %s, left by an interrupted run", last.name)
        if distributed.on_cpu():
            _accept_indexed_cpu_locations()
    with monitored(trainer, work):
        return trainer.train(resume_from_checkpoint=str(last) if last else None)


def _accept_indexed_cpu_locations() -> None:
    """Several CPU processes: the Trainer loads the optimizer with ``map_location=args.device``, which
    accelerate sets to ``cpu:<rank>``, a location ``torch.load`` does not know ("don't know how to
    restore data location ... (tagged with cpu:0)"). Teach it that ``cpu:N`` is the CPU."""
    import torch.serialization

    def on_cpu(storage, location: str):
        return storage if location.startswith("cpu:") else None  # None: the next handler decides

    global _cpu_index_registered
    if not _cpu_index_registered:
        torch.serialization.register_package(11, lambda obj: None, on_cpu)  # after "cpu" (10), before the devices
        _cpu_index_registered = True


_cpu_index_registered = False


def last_checkpoint(work: Path) -> Path | None:
    """The newest complete checkpoint. The Trainer writes ``trainer_state.json`` last, so a folder
    without it was being saved when the run was killed: it is removed, not resumed from."""
    complete = []
    for folder in work.glob("checkpoint-*"):
        if (folder / "trainer_state.json").is_file():
            complete.append(folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            log.info("removed %s, a checkpoint an interrupted run had not finished writing", folder.name)
    return max(complete, key=lambda f: int(f.name.rsplit("-", 1)[-1]), default=None)


def early_stopping(cfg: TrainingSection) -> list["TrainerCallback"]:
    from transformers import EarlyStoppingCallback

    if not cfg.early_stopping_patience:
        return []
    return [EarlyStoppingCallback(cfg.early_stopping_patience, cfg.early_stopping_threshold)]


def train_summary(trainer: "Trainer", result: Any, cfg: TrainingSection) -> dict[str, Any]:
    state = trainer.state
    return {
        "loss": round(result.training_loss, 6),
        "steps": state.global_step,
        "epochs": round(state.epoch or 0.0, 3),
        f"best_validation_{cfg.metric_for_best_model}": state.best_metric,
        "best_step": _checkpoint_step(state.best_model_checkpoint),
        "loss_curve": [[h["step"], round(h["loss"], 5)] for h in state.log_history if "loss" in h],  # [step, loss] per logging step
    }


def _checkpoint_step(path: str | None) -> int | None:
    if not path:
        return None
    return int(Path(path).name.rsplit("-", 1)[-1])
