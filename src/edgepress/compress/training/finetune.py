"""Stage ``finetune``: fine-tune the teacher with the Transformers Trainer.

The Trainer (not a hand-written loop) is what makes ``accelerate launch`` and ``torchrun`` work
unchanged, and gives checkpointing, best-epoch selection and early stopping for free.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepress.compress.training.trainer import checkpoint_dir, early_stopping, train_resumable, train_summary, training_arguments
from edgepress.data.features import collator, tokenize_split
from edgepress.errors import StageError
from edgepress.metrics import evaluate_torch, trainer_metrics_for
from edgepress.models import encoder_parts, load_classifier, save_artifact

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from edgepress.running.pipeline import StageContext


def run_stage(ctx: "StageContext") -> dict[str, Any]:
    """Fine-tune ``ctx.input_model`` on the training split and write the best model to ``ctx.out_dir``."""
    from transformers import set_seed

    cfg = ctx.recipe.finetune
    set_seed(ctx.recipe.seed)
    model_cfg = ctx.recipe.model.model_copy(update={"name_or_path": ctx.input_model})
    model, tokenizer = load_classifier(model_cfg, ctx.data.labels, task=ctx.data.task)
    freeze(model, cfg.freeze_embeddings, cfg.freeze_layers)
    summary = _train(model, tokenizer, ctx, checkpoint_dir(ctx.out_dir, "finetune"))
    save_artifact(model, tokenizer, ctx.out_dir)
    return {
        **evaluate_torch(model, tokenizer, ctx.data, cfg.max_seq_length, batch_size=cfg.eval_batch_size),
        "train": summary,
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
    from transformers import Trainer

    cfg = ctx.recipe.finetune
    train = tokenize_split(ctx.data.train, tokenizer, cfg.max_seq_length, ctx.data.label_all_pieces)
    validation = tokenize_split(ctx.data.validation, tokenizer, cfg.max_seq_length)
    trainer = Trainer(
        model=model,
        args=training_arguments(cfg, len(train), ctx.recipe.seed, work),
        train_dataset=train,
        eval_dataset=validation,
        processing_class=tokenizer,
        data_collator=collator(tokenizer, train),
        compute_metrics=trainer_metrics_for(ctx.data),
        callbacks=early_stopping(cfg),
    )
    summary = train_summary(trainer, train_resumable(trainer, work), cfg)
    return {**summary, "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
