"""Training a student against cached teacher outputs: the ``Trainer`` with the distillation loss,
used by the distill stage and by prune's recoveries.

The loss terms are in losses.py; this module wires them to the Trainer (``compute_loss``), keeps
the projections that map the student's width to the teacher's, and logs each term's mean."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import Trainer

from edgepress.compress.training import losses, relations
from edgepress.compress.training.teacher_cache import TeacherOutputs
from edgepress.compress.training.trainer import early_stopping, train_resumable, train_summary, training_arguments
from edgepress.data.features import collator, tokenize_split
from edgepress.metrics import trainer_metrics_for
from edgepress.recipe.training import DistillLossSection

if TYPE_CHECKING:
    import datasets


class DistillationModule(nn.Module):
    """The student plus the projections that map its hidden states to the teacher's width.
    The projections exist only for training; the saved artifact is the student alone."""

    # compute_loss returns a batch mean: the Trainer must divide it by the accumulation steps itself
    accepts_loss_kwargs = False

    def __init__(self, student: nn.Module, projections: dict[int, nn.Module]):
        super().__init__()
        self.student = student
        self.projections = nn.ModuleDict({str(k): v for k, v in projections.items()})

    def forward(self, **inputs: Any) -> Any:
        return self.student(**inputs)


class DistillTrainer(Trainer):
    def __init__(self, *args: Any, teacher: TeacherOutputs, loss_cfg: DistillLossSection, mapping: dict[int, int], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.teacher = teacher
        self.loss_cfg = loss_cfg
        self.mapping = mapping
        self.term_sums: dict[str, float] = defaultdict(float)
        self.term_count = 0
        self.final_terms: dict[str, float] = {}
        # MiniLMv2: the student's last layer's queries, keys and values, kept by hooks on each forward
        self.capture = None
        if loss_cfg.relation_weight > 0:
            last = relations.layer_of(kwargs["model"].student, -1)
            relations.check_heads(loss_cfg.relation_heads, last, "student")
            self.capture = relations.Capture(last)

    def close(self) -> None:
        """Remove the hooks: the student trains on in another phase, or is saved."""
        if self.capture:
            self.capture.remove()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        idx = inputs.pop("idx", None)
        labels = inputs.pop("labels")
        training = model.training and idx is not None
        cfg = self.loss_cfg
        out = model(  # through the wrapper: under DDP its forward is what synchronizes gradients
            **inputs,
            output_hidden_states=training and cfg.hidden_weight > 0,
            output_attentions=training and cfg.attention_weight > 0,
        )
        hard = losses.hard_ce(out.logits, labels)
        if not training:  # evaluation: the validation split has labels, not teacher outputs
            return (hard, {"logits": out.logits}) if return_outputs else hard
        terms = self._terms(model, out, hard, idx, inputs["attention_mask"])
        weights = {"hard": cfg.hard_weight, "soft": cfg.soft_weight, "hidden": cfg.hidden_weight, "attention": cfg.attention_weight,
                   "relation": cfg.relation_weight}  # fmt: skip
        loss = sum(weights[name] * value for name, value in terms.items())
        self._record(terms)
        return (loss, {"logits": out.logits}) if return_outputs else loss

    def _terms(self, model, out, hard, idx, mask) -> dict[str, torch.Tensor]:
        cfg, teacher, seq = self.loss_cfg, self.teacher, mask.shape[1]
        idx = idx.cpu()
        terms = {"hard": hard}
        if cfg.soft_weight > 0:
            soft = teacher.logits[idx][:, :seq] if out.logits.dim() == 3 else teacher.logits[idx]  # tokens: cached to max length
            terms["soft"] = losses.soft_kl(out.logits, soft.to(out.logits.device), cfg.temperature, mask)
        if cfg.hidden_weight > 0:
            terms["hidden"] = sum(
                losses.hidden_mse(
                    getattr(model, "module", model).projections[str(s)](out.hidden_states[s + 1]),  # DDP wraps as .module
                    teacher.hidden[t].rows(idx, mask),
                    mask,
                )
                for s, t in self.mapping.items()
            ) / len(self.mapping)
        if cfg.attention_weight > 0:
            terms["attention"] = sum(
                losses.attention_kl(out.attentions[s], teacher.attentions[t].rows(idx, mask), mask)
                for s, t in self.mapping.items()
            ) / len(self.mapping)
        if cfg.relation_weight > 0:
            terms["relation"] = sum(
                losses.relation_kl(self.capture.outputs[kind], teacher.relations[kind].rows(idx, mask), cfg.relation_heads, mask)
                for kind in relations.KINDS
            ) / len(relations.KINDS)
        return terms

    def _record(self, terms: dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            self.term_sums[name] += float(value.detach())
        self.term_count += 1

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self.term_count:  # a training log: add each term's mean since the last one
            self.final_terms = {f"loss_{k}": round(v / self.term_count, 6) for k, v in self.term_sums.items()}
            logs.update(self.final_terms)
            self.term_sums.clear()
            self.term_count = 0
        super().log(logs, *args, **kwargs)


def transfer_dataset(rows: dict[str, list], tokenizer, max_length: int, label_all_pieces: bool = False) -> "datasets.Dataset":
    """Tokenized transfer set; ``idx`` is each row's position in the teacher cache."""
    import datasets

    split = datasets.Dataset.from_dict({**rows, "idx": list(range(len(rows["text"])))})
    return tokenize_split(split, tokenizer, max_length, label_all_pieces)


def projections_for(student: nn.Module, teacher_width: int, mapping: dict[int, int], needed: bool) -> dict[int, nn.Module]:
    """Linear maps from the student's hidden width to the teacher's, for the hidden-state loss."""
    if not needed:
        return {}
    width = student.config.hidden_size
    return {s: (nn.Linear(width, teacher_width) if width != teacher_width else nn.Identity()) for s in mapping}


def train_with_teacher(
    model, tokenizer, projections, rows, outputs: TeacherOutputs, mapping: dict[int, int], cfg, data, seed: int, work: Path,
    **arguments: Any,
) -> dict[str, Any]:
    """Train ``model`` on ``rows`` against the cached teacher ``outputs`` with ``cfg.loss``, picking the
    best evaluation on ``data.validation``. ``cfg`` is a training section with a ``loss`` (distill, prune)."""
    train = transfer_dataset(rows, tokenizer, cfg.max_seq_length, data.label_all_pieces)
    trainer = DistillTrainer(
        model=DistillationModule(model, projections),
        # the wrapper hides the student's signature: keep idx for compute_loss, and name the labels
        args=training_arguments(cfg, len(train), seed, work, remove_unused_columns=False, label_names=["labels"], **arguments),
        train_dataset=train,
        eval_dataset=tokenize_split(data.validation, tokenizer, cfg.max_seq_length),
        processing_class=tokenizer,
        data_collator=collator(tokenizer, train),
        compute_metrics=trainer_metrics_for(data),
        callbacks=early_stopping(cfg),
        teacher=outputs,
        loss_cfg=cfg.loss,
        mapping=mapping,
    )
    try:
        summary = train_summary(trainer, train_resumable(trainer, work), cfg)
    finally:
        trainer.close()
    return {**summary, **trainer.final_terms}
