"""Stage ``adapt``: masked-language-model training of the base encoder on unlabelled in-domain
text, before ``finetune`` (domain- and task-adaptive pre-training, Gururangan et al. 2020: "Don't
stop pretraining"). Its artifact is a masked-LM folder (``AutoModelForMaskedLM.from_pretrained``);
``finetune`` puts a classification head on its encoder.

The texts: the recipe's source (the same format as distillation's transfer text), the training rows
``data.max_train_samples`` leaves out and, by default, the training texts themselves, never an
evaluation text. A slice is held out and masked once with the seed, so that the perplexity before
and after (and at every evaluation) is measured on the same masked tokens.

A sentence encoder without a masked-LM head (all-MiniLM-L6-v2 ships the encoder alone) gets a new
one, its output matrix tied to the input embeddings as BERT's own is: what is learned there is the
new head's dense layer and the encoder under it.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgepress.compress.training.monitor import quiet, write_curves
from edgepress.compress.training.trainer import checkpoint_dir, early_stopping, train_resumable, train_summary, training_arguments
from edgepress.compress.training.transfer import gather_unlabelled, pairs_of
from edgepress.errors import StageError
from edgepress.models import check_weights_are_safe, loading, resolve_source, save_artifact

if TYPE_CHECKING:
    from edgepress.data.load import SplitData
    from edgepress.recipe.loading import Recipe
    from edgepress.recipe.training import AdaptSection
    from edgepress.running.pipeline import StageContext

log = logging.getLogger(__name__)


def run_stage(ctx: "StageContext") -> dict[str, Any]:
    from transformers import set_seed

    cfg, seed = ctx.recipe.adapt, ctx.recipe.seed
    set_seed(seed)
    texts, counts = adapt_texts(cfg, ctx.data, seed)
    train_texts, held_out = hold_out(texts, cfg.validation_fraction, cfg.max_validation_texts, seed)
    model, tokenizer, new_head = load_masked_lm(ctx)
    masker = mlm_collator(tokenizer, cfg, seed)
    train = encode(train_texts, tokenizer, cfg.max_seq_length, ctx.data.tokens)
    validation = mask_once(encode(held_out, tokenizer, cfg.max_seq_length, ctx.data.tokens), masker)
    work = checkpoint_dir(ctx.out_dir, "adapt")
    trainer = masked_lm_trainer()(
        model=model,
        # the offsets whole-word masking reads are not arguments of the model: keep the columns
        args=training_arguments(cfg, len(train), seed, work, greater_is_better=False, remove_unused_columns=False),
        train_dataset=train,
        eval_dataset=validation,
        processing_class=tokenizer,
        data_collator=_Collator(masker),
        callbacks=early_stopping(cfg),
    )
    quiet(trainer)
    before = trainer.evaluate()["eval_loss"]
    summary = train_summary(trainer, train_resumable(trainer, work), cfg)
    # training starts a fresh log history: the evaluation before it joins the curves as step 0
    write_curves(work.parent.parent, work.name, [{"eval_loss": before, "step": 0, "epoch": 0.0}, *trainer.state.log_history])
    after = trainer.evaluate()["eval_loss"]
    save_artifact(model, tokenizer, ctx.out_dir)
    log.info("adapt: held-out perplexity %.2f -> %.2f over %d texts", math.exp(before), math.exp(after), len(held_out))
    return {
        "perplexity_before": round(math.exp(before), 4),
        "perplexity": round(math.exp(after), 4),
        "texts": {**counts, "train": len(train_texts), "held_out": len(held_out)},
        "new_mlm_head": new_head,
        "whole_word_masking": cfg.whole_word_masking,
        "train": summary,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def adapt_facts(recipe: "Recipe") -> dict[str, str]:
    """The content of a local source joins the fingerprint: editing the file re-runs the stage."""
    from edgepress.data.unlabelled import fingerprint

    return {"adapt_text": fingerprint(recipe.adapt.source)} if recipe.adapt.source else {}


def adapt_texts(cfg: "AdaptSection", data: "SplitData", seed: int) -> tuple[list[Any], dict[str, Any]]:
    """The training texts (when ``cfg.training_texts``) and the source's and left-out rows' new texts."""
    own = pairs_of(data.train.to_dict()) if cfg.training_texts else []  # the recipe refuses adapt with no text at all
    extra, counts = gather_unlabelled(cfg, data, seed, "adapt", already=own) if cfg.on else ([], {"sources": []})
    return own + extra, {**counts, "training_texts": len(own)}


def hold_out(texts: list[Any], fraction: float, limit: int, seed: int) -> tuple[list[Any], list[Any]]:
    """A seeded split into training texts and a held-out slice (at least one text each)."""
    if len(texts) < 2:
        raise StageError(f"adapt has {len(texts)} text; it needs at least 2 (one held out for perplexity): add text with adapt.source")
    order = random.Random(seed).sample(range(len(texts)), len(texts))
    n = min(limit, max(1, round(len(texts) * fraction)), len(texts) - 1)
    return [texts[i] for i in order[n:]], [texts[i] for i in order[:n]]


def load_masked_lm(ctx: "StageContext") -> tuple[Any, Any, bool]:
    """The input model with a masked-LM head, its tokenizer, and whether that head is new."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model_cfg = ctx.recipe.model
    source = resolve_source(ctx.input_model)
    check_weights_are_safe(source, model_cfg.allow_pickle)
    common = {"revision": model_cfg.revision, "trust_remote_code": model_cfg.trust_remote_code}
    with loading(ctx.input_model, source):
        model, info = AutoModelForMaskedLM.from_pretrained(
            source, output_loading_info=True, use_safetensors=None if model_cfg.allow_pickle else True, **common
        )
        tokenizer = AutoTokenizer.from_pretrained(source, **common)
    if tokenizer.mask_token is None:
        raise StageError(f"model {ctx.input_model}: its tokenizer has no mask token, so it cannot be trained as a masked LM; remove adapt from the stages")
    new_head = any(not key.startswith(model.base_model_prefix) for key in info["missing_keys"])
    if new_head:
        tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
        log.info("adapt: %s has no masked-LM head; a new one is trained%s", ctx.input_model, ", tied to the input embeddings" if tied else "")
    return model, tokenizer, new_head


def encode(texts: list[Any], tokenizer: Any, max_length: int, words: bool) -> "Any":
    """Token ids, the special-token mask and the offsets (whole-word masking reads them), unpadded."""
    from datasets import Dataset

    if texts and isinstance(texts[0], tuple):
        first, second = [t for t, _ in texts], [p for _, p in texts]
    else:
        first, second = texts, None
    encoded = tokenizer(
        first, second, truncation=True, max_length=max_length, is_split_into_words=words,
        return_special_tokens_mask=True, return_offsets_mapping=tokenizer.is_fast,
    )  # fmt: skip
    return Dataset.from_dict(dict(encoded))


def mlm_collator(tokenizer: Any, cfg: "AdaptSection", seed: int) -> Any:
    from transformers import DataCollatorForLanguageModeling

    if cfg.whole_word_masking and not tokenizer.is_fast:
        raise StageError("adapt.whole_word_masking reads word boundaries from a fast tokenizer, and this model's is slow; set it to false")
    replace = {"mask_replace_prob": 1.0, "random_replace_prob": 0.0} if cfg.whole_word_masking else {}  # what whole-word masking supports
    return DataCollatorForLanguageModeling(
        tokenizer, mlm_probability=cfg.mlm_probability, whole_word_mask=cfg.whole_word_masking, seed=seed, **replace
    )


def mask_once(split: Any, masker: Any, batch: int = 256) -> Any:
    """The held-out texts with their masks drawn once, so every evaluation scores the same tokens."""
    from datasets import Dataset

    kept = [c for c in ("input_ids", "token_type_ids") if c in split.column_names]
    rows: dict[str, list] = {**{c: [] for c in kept}, "attention_mask": [], "labels": []}
    for start in range(0, len(split), batch):
        features = [split[i] for i in range(start, min(start + batch, len(split)))]
        masked = masker(_pad_offsets(features))
        for i, feature in enumerate(features):
            n = len(feature["input_ids"])
            rows["input_ids"].append(masked["input_ids"][i, :n].tolist())
            if "token_type_ids" in rows:
                rows["token_type_ids"].append(feature["token_type_ids"])
            rows["attention_mask"].append([1] * n)
            rows["labels"].append(masked["labels"][i, :n].tolist())
    return Dataset.from_dict(rows)


def masked_lm_trainer() -> type:
    """A Trainer whose training loss scores the masked tokens only.

    A masked-LM head (``BertForMaskedLM.cls``) turns every position into logits over the whole
    vocabulary, and only the ~15% masked ones have a label: for a MiniLM-size encoder that vocabulary
    projection (30,522 x 384 per token) costs about as much as the six layers under it. Transformers'
    masked-LM models have no option to project the masked positions alone, so this does it: the
    encoder's hidden states, the head on the masked rows, cross-entropy, normalized exactly as the
    model's own loss would be (the same value, tested). Evaluation, several processes (the DDP wrapper
    must run its own forward) and heads it does not know (``cls``, ``lm_head``) use the model's forward."""
    import torch.nn.functional as F
    from transformers import Trainer

    class MaskedLMTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            head = getattr(model, "cls", None) or getattr(model, "lm_head", None)
            if return_outputs or head is None or model is not self.model:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs["labels"]
            hidden = model.base_model(**{k: v for k, v in inputs.items() if k != "labels"})[0]
            masked = labels != -100
            logits = head(hidden[masked]).float()
            if self.model_accepts_loss_kwargs and num_items_in_batch is not None:  # what the model's loss does then
                return F.cross_entropy(logits, labels[masked], reduction="sum") / num_items_in_batch
            return F.cross_entropy(logits, labels[masked]) if masked.any() else hidden.sum() * 0.0

    return MaskedLMTrainer


@dataclass
class _Collator:
    """Training batches are masked afresh; the held-out ones (masked once, with labels) only padded."""

    masker: Any

    def __post_init__(self) -> None:
        from transformers import DataCollatorForTokenClassification

        self.padder = DataCollatorForTokenClassification(self.masker.tokenizer)  # pads labels with -100

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if "labels" in features[0]:
            return self.padder(features)
        return self.masker(_pad_offsets(features))


def _pad_offsets(features: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tokenizer pads ids and masks but not the offsets whole-word masking reads: pad them with
    (0, 0), as special tokens' offsets are, to the batch's longest row (pads sit on the right)."""
    if "offset_mapping" not in features[0]:
        return features
    longest = max(len(f["input_ids"]) for f in features)
    return [{**f, "offset_mapping": list(f["offset_mapping"]) + [[0, 0]] * (longest - len(f["offset_mapping"]))} for f in features]
