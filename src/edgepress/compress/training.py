"""What every Trainer-based stage shares: arguments, early stopping, a summary of the run."""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from edgepress.sections import TrainingSection

if TYPE_CHECKING:
    from transformers import Trainer, TrainerCallback, TrainingArguments


def training_arguments(cfg: TrainingSection, train_size: int, seed: int, work: Path, **overrides: Any) -> "TrainingArguments":
    import torch
    from transformers import TrainingArguments

    steps_per_epoch = math.ceil(train_size / (cfg.batch_size * cfg.gradient_accumulation_steps))
    total_steps = cfg.max_steps or math.ceil(cfg.epochs * steps_per_epoch)
    # Evaluate (and checkpoint) once an epoch, and at least once in a run shorter than an epoch,
    # so that the best model can always be picked and early stopping always has a signal.
    every = max(1, min(steps_per_epoch, total_steps))
    return TrainingArguments(
        output_dir=str(work),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        warmup_ratio=cfg.warmup_ratio,
        lr_scheduler_type=cfg.lr_scheduler,
        weight_decay=cfg.weight_decay,
        eval_strategy="steps",
        eval_steps=every,
        save_strategy="steps",
        save_steps=every,
        save_total_limit=1,
        save_only_model=True,
        load_best_model_at_end=True,
        metric_for_best_model=cfg.metric_for_best_model,
        greater_is_better=True,
        logging_steps=cfg.logging_steps,
        report_to="none",
        seed=seed,
        data_seed=seed,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=False,
        **overrides,
    )


@contextlib.contextmanager
def scratch_dir(out_dir: Path) -> Iterator[Path]:
    """A folder for Trainer checkpoints beside the stage's output, removed afterwards: checkpoints
    are only needed to pick the best model, and must not end up in the artifact."""
    work = Path(tempfile.mkdtemp(prefix=".trainer-", dir=out_dir.parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


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
    }


def _checkpoint_step(path: str | None) -> int | None:
    if not path:
        return None
    return int(Path(path).name.rsplit("-", 1)[-1])
