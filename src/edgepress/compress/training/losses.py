"""Distillation loss terms, as plain functions of tensors.

Shapes: logits [B, C] (token classification: [B, L, C]); hidden states, queries, keys and values
[B, L, H]; attention probabilities [B, heads, L, L]; mask [B, L] with 1 on real tokens. Padding
positions never contribute.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def hard_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the true labels; per token for [B, L, C] logits, skipping label -100."""
    if logits.dim() == 3:
        if not (labels != -100).any():  # a batch of transfer sentences only: no tag to learn from (and no NaN)
            return logits.sum() * 0.0
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    return F.cross_entropy(logits, labels)


def soft_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened distributions, times T^2 so that its gradient
    scale does not shrink as T grows (Hinton et al., 2015). Per token for [B, L, C] logits: the
    mean over the real tokens (``mask``), every piece of a word included."""
    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.to(student_logits.dtype) / temperature, dim=-1)
    if student_logits.dim() == 2:
        return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * temperature**2
    per_token = F.kl_div(log_student, log_teacher, reduction="none", log_target=True).sum(-1)  # [B, L]
    weights = mask.to(per_token.dtype)
    return (per_token * weights).sum() / weights.sum().clamp_min(1.0) * temperature**2


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real tokens' hidden vectors (TinyBERT)."""
    weights = mask.unsqueeze(-1).to(student.dtype)
    squared = (student - teacher.to(student.dtype)).pow(2) * weights
    return squared.sum() / (weights.sum() * student.shape[-1]).clamp_min(1.0)


def attention_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of each head's attention distribution, averaged over real query rows
    (MiniLM). Key positions that are padding carry zero probability in both, so they add nothing."""
    teacher = teacher.to(student.dtype)
    eps = torch.finfo(student.dtype).tiny
    per_row = (teacher * (teacher.clamp_min(eps).log() - student.clamp_min(eps).log())).sum(-1)  # [B, heads, L]
    rows = mask.unsqueeze(1).to(student.dtype).expand_as(per_row)
    return (per_row * rows).sum() / rows.sum().clamp_min(1.0)


def relation_kl(student: torch.Tensor, teacher: torch.Tensor, heads: int, mask: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of self-attention relations (MiniLMv2): queries (or keys, or values)
    split into ``heads`` relation heads, and each token's softmax of scaled dot products with every
    real token. The relations are L x L whatever the widths, so student and teacher may differ in
    hidden size and head count; ``heads`` must divide both widths."""
    return attention_kl(relations(student, heads, mask), relations(teacher.to(student.dtype), heads, mask), mask)


def relations(states: torch.Tensor, heads: int, mask: torch.Tensor) -> torch.Tensor:
    """softmax(X_r X_r^T / sqrt(d_r)) per relation head r: [B, L, H] -> [B, heads, L, L]; padding keys get 0."""
    batch, length, width = states.shape
    per_head = states.view(batch, length, heads, width // heads).transpose(1, 2)  # [B, R, L, d]
    scores = per_head @ per_head.transpose(-1, -2) / math.sqrt(width // heads)
    scores = scores.masked_fill(~mask.bool()[:, None, None, :], torch.finfo(scores.dtype).min)
    return scores.softmax(-1)
