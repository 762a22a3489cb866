"""Stage ``finetune``: fine-tune the teacher with the Transformers Trainer.

The Trainer (not a hand-written loop) is what makes ``accelerate launch`` and ``torchrun`` work
unchanged, and gives checkpointing, best-epoch selection and early stopping for free.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepress.errors import StageError
from edgepress.features import tokenize_split
from edgepress.metrics import evaluate_torch, trainer_metrics
from edgepress.models import encoder_parts, load_classifier, save_artifact
from edgepress.recipe import FinetuneSection

if TYPE_CHECKING:
    from transformers import PreTrainedModel, TrainingArguments

    from edgepress.pipeline import StageContext


def run_stage(ctx: "StageContext") -> dict[str, Any]:
    """Fine-tune ``ctx.input_model`` on the training split and write the best model to ``ctx.out_dir``."""
    from transformers import set_seed

    cfg = ctx.recipe.finetune
    set_seed(ctx.recipe.seed)
    model_cfg = ctx.recipe.model.model_copy(update={"name_or_path": ctx.input_model})
    model, tokenizer = load_classifier(model_cfg, ctx.data.labels)
    freeze(model, cfg.freeze_embeddings, cfg.freeze_layers)
    work = Path(tempfile.mkdtemp(prefix=".trainer-", dir=ctx.out_dir.parent))
    try:
        train_summary = _train(model, tokenizer, ctx, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save_artifact(model, tokenizer, ctx.out_dir)
    return {
        **evaluate_torch(model, tokenizer, ctx.data, cfg.max_seq_length, batch_size=cfg.eval_batch_size),
        "train": train_summary,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def freeze(model: "PreTrainedModel", embeddings: bool, first_layers: int) -> None:
    """Stop gradients into the embeddings and/or the first N encoder layers."""
    if not embeddings and first_layers == 0:
        return
    embedding_module, layers = encoder_parts(model)
    if first_layers > len(layers):
        raise StageError(f"finetune.freeze_layers is {first_layers} but the model has {len(layers)} layers; use at most {len(layers)}")
    frozen = ([embedding_module] if embeddings else []) + layers[:first_layers]
    for module in frozen:
        module.requires_grad_(False)


def _train(model: "PreTrainedModel", tokenizer, ctx: "StageContext", work: Path) -> dict[str, Any]:
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer

    cfg = ctx.recipe.finetune
    train = tokenize_split(ctx.data.train, tokenizer, cfg.max_seq_length)
    validation = tokenize_split(ctx.data.validation, tokenizer, cfg.max_seq_length)
    callbacks = []
    if cfg.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(cfg.early_stopping_patience, cfg.early_stopping_threshold))
    trainer = Trainer(
        model=model,
        args=training_arguments(cfg, len(train), ctx.recipe.seed, work),
        train_dataset=train,
        eval_dataset=validation,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=trainer_metrics,
        callbacks=callbacks,
    )
    result = trainer.train()
    state = trainer.state
    return {
        "loss": round(result.training_loss, 6),
        "steps": state.global_step,
        "epochs": round(state.epoch or 0.0, 3),
        f"best_validation_{cfg.metric_for_best_model}": state.best_metric,
        "best_step": _checkpoint_step(state.best_model_checkpoint),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def training_arguments(cfg: FinetuneSection, train_size: int, seed: int, work: Path) -> "TrainingArguments":
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
    )


def _checkpoint_step(path: str | None) -> int | None:
    if not path:
        return None
    return int(Path(path).name.rsplit("-", 1)[-1])
