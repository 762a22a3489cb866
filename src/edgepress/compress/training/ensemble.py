"""Teacher ensembles (``distill.ensemble``): the student learns the average of several teachers'
softened outputs, for example one model fine-tuned with different seeds, or different base models.

Each extra teacher's logits are computed once into the run's teacher cache, keyed by its own files'
hash, exactly as the main teacher's (the stage input) are. The hidden-state and attention terms
still read the main teacher alone: the teachers' layers need not match each other.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from edgepress.compress.training import teacher_cache
from edgepress.compress.training.teacher_cache import CacheRequest, TeacherOutputs
from edgepress.errors import StageError
from edgepress.models import load_classifier
from edgepress.running.runs import model_hash

if TYPE_CHECKING:
    from edgepress.recipe.training import DistillSection
    from edgepress.running.pipeline import StageContext

log = logging.getLogger(__name__)


def averaged(logits: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """Logits whose softmax at ``temperature`` is the mean of the teachers' softmaxes at it:
    T * log(mean_i softmax(z_i / T)). Rows and positions stay where they are."""
    probabilities = torch.stack([torch.softmax(z.float() / temperature, dim=-1) for z in logits]).mean(0)
    return temperature * probabilities.clamp_min(torch.finfo(torch.float32).tiny).log()


def with_ensemble(ctx: "StageContext", cfg: "DistillSection", main: TeacherOutputs, main_tokenizer, rows: dict[str, list]) -> TeacherOutputs:
    """``main`` with its logits replaced by the ensemble's average (the main teacher included)."""
    if not cfg.ensemble:
        return main
    others = [_logits(ctx, cfg, source, main_tokenizer, rows) for source in cfg.ensemble]
    log.info("distill: averaging the softened outputs of %d teachers", 1 + len(others))
    return replace(main, logits=averaged([main.logits, *others], cfg.loss.temperature))


def _logits(ctx: "StageContext", cfg: "DistillSection", source: str, main_tokenizer, rows: dict[str, list]) -> torch.Tensor:
    section = ctx.recipe.model.model_copy(update={"name_or_path": source})
    teacher, tokenizer = load_classifier(section, ctx.data.labels, require_head=True, task=ctx.data.task)
    if ctx.data.tokens and tokenizer.get_vocab() != main_tokenizer.get_vocab():
        raise StageError(
            f"distill.ensemble: {source} splits words into other pieces than the main teacher, and a token classifier's "
            "outputs are per piece; use teachers with the main teacher's tokenizer for token classification"
        )
    request = CacheRequest(teacher_hash=model_hash(source), max_length=cfg.max_seq_length, hidden_layers=(), attention_layers=())
    outputs = teacher_cache.teacher_outputs(teacher, tokenizer, rows, request, ctx.out_dir.parent / "cache", cfg.eval_batch_size)
    return outputs.logits
