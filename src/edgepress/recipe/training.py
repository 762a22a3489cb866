"""The training stages' sections: adapt, finetune, distill (its student, loss terms, augmentation and
transfer text) and prune, over the options every Trainer-based stage shares."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from edgepress.recipe.sections import Section


class TrainingSection(Section):
    """Options every Trainer-based stage shares (finetune, distill, pruning recovery)."""

    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate of AdamW.")
    epochs: float = Field(3.0, gt=0, description="Training epochs (fractions allowed).")
    max_steps: Optional[int] = Field(None, gt=0, description="Stop after this many optimizer steps (overrides epochs).")
    batch_size: int = Field(16, gt=0, description="Training batch size per device.")
    eval_batch_size: int = Field(64, gt=0, description="Evaluation batch size.")
    gradient_accumulation_steps: int = Field(1, gt=0, description="Batches accumulated per optimizer step.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Fraction of steps spent warming the learning rate up.")
    lr_scheduler: Literal["linear", "cosine"] = Field("linear", description="Learning-rate decay after warm-up.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    max_seq_length: int = Field(128, gt=0, le=8192, description="Texts are truncated to this many tokens.")
    metric_for_best_model: Literal["accuracy", "f1_macro", "f1", "precision", "recall"] = Field(
        "accuracy",
        description="Validation metric that picks the best epoch and drives early stopping. Token classification: "
        "f1 (entity F1, its default), precision, recall or accuracy (of words).",
    )
    early_stopping_patience: Optional[int] = Field(
        None, gt=0, description="Stop after this many evaluations without improvement; off when null."
    )
    early_stopping_threshold: float = Field(0.0, ge=0, description="Smallest improvement that counts.")
    logging_steps: int = Field(10, gt=0, description="Log the training loss every N steps.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Mixed precision of the training steps (torch autocast): bf16 (GPUs since Ampere, CPUs with AMX) or fp16 (CUDA only)."
    )
    checkpoint_steps: int = Field(
        500, gt=0, description="Evaluate and checkpoint every N steps (and once an epoch): a killed run resumes from the last checkpoint."
    )


class FinetuneSection(TrainingSection):
    freeze_embeddings: bool = Field(False, description="Keep the embedding layer fixed (faster, less memory).")
    freeze_layers: int = Field(0, ge=0, description="Keep the first N encoder layers fixed.")


class StudentSection(Section):
    """The student: the teacher's architecture made smaller (fewer layers, optionally narrower),
    initialized from the teacher's weights or at random; or another pre-trained model."""

    from_teacher: bool = Field(
        True, description="Initialize from the teacher: kept layers are copied, narrower matrices sliced. False: random."
    )
    layers: Optional[list[int]] = Field(
        None, description="Teacher layers (0-based) the student keeps, e.g. [0, 2, 4]. Default: evenly spaced."
    )
    num_layers: Optional[int] = Field(3, gt=0, description="Student depth when layers is not given.")
    hidden_size: Optional[int] = Field(None, gt=0, description="Student width; default: the teacher's.")
    num_attention_heads: Optional[int] = Field(None, gt=0, description="Student heads; default: the teacher's.")
    intermediate_size: Optional[int] = Field(None, gt=0, description="Student FFN size; default: the teacher's.")
    model: Optional[str] = Field(
        None, description="Use this pre-trained model as the student instead (local folder, Hub id, builtin name)."
    )
    allow_larger: bool = Field(
        False, description="Build a student with as many parameters as the teacher or more (deeper or wider); off: that is an error."
    )

    @model_validator(mode="after")
    def _one_kind_of_student(self) -> "StudentSection":
        shaped = [n for n in ("layers", "hidden_size", "num_attention_heads", "intermediate_size") if getattr(self, n)]
        if self.model and shaped:
            raise ValueError(f"give either model or a shape ({', '.join(shaped)}), not both")
        if self.layers is not None:
            if not self.layers or sorted(set(self.layers)) != self.layers or min(self.layers) < 0:
                raise ValueError("layers must be distinct, increasing, non-negative teacher layer indices, e.g. [0, 2, 4]")
            if "num_layers" in self.model_fields_set and self.num_layers != len(self.layers):
                raise ValueError(f"num_layers is {self.num_layers} but layers lists {len(self.layers)}; give one of them")
        return self

    @property
    def depth(self) -> int:
        return len(self.layers) if self.layers else (self.num_layers or 3)


class DistillLossSection(Section):
    """Weights of the loss terms; a weight of 0 turns its term off."""

    hard_weight: float = Field(0.5, ge=0, description="Cross-entropy with the true labels.")
    soft_weight: float = Field(0.5, ge=0, description="KL divergence to the teacher's softened outputs, times T^2.")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature T of the soft-label term.")
    hidden_weight: float = Field(0.0, ge=0, description="MSE between mapped hidden states (TinyBERT).")
    attention_weight: float = Field(0.0, ge=0, description="KL between mapped attention distributions (MiniLM); needs equal head counts.")
    layer_map: Optional[dict[int, int]] = Field(
        None, description="Student layer -> teacher layer for the intermediate terms. Default: the kept layers, or uniform."
    )
    relation_weight: float = Field(
        0.0, ge=0,
        description="KL between self-attention relations (query-query, key-key, value-value) of the student's last layer and "
        "the teacher's relation_layer (MiniLMv2); any width and head count.",
    )  # fmt: skip
    relation_heads: int = Field(12, gt=0, description="Relation heads the queries, keys and values are split into (MiniLMv2: 12 for base-size teachers, 48 for large).")
    relation_layer: Optional[int] = Field(None, ge=0, description="The teacher layer whose relations the student learns. Default: the last.")

    @model_validator(mode="after")
    def _some_term_on(self) -> "DistillLossSection":
        if not any((self.hard_weight, self.soft_weight, self.hidden_weight, self.attention_weight, self.relation_weight)):
            raise ValueError("every loss weight is 0; give at least one term a positive weight")
        return self

    @property
    def needs_intermediate(self) -> bool:
        return self.hidden_weight > 0 or self.attention_weight > 0 or self.relation_weight > 0


class AugmentSection(Section):
    """TinyBERT-style transfer-set augmentation; the teacher labels the new examples (see ``labels``)."""

    factor: int = Field(0, ge=0, description="Augmented copies per training example; 0 turns augmentation off.")
    deletion: float = Field(0.1, ge=0, le=1, description="Probability of deleting each word.")
    swap: float = Field(0.1, ge=0, le=1, description="Probability of swapping each word with a random other one.")
    insertion: float = Field(0.1, ge=0, le=1, description="Probability of inserting a corpus word after each word.")
    synonym: float = Field(
        0.1, ge=0, le=1, description="Probability of replacing a word by a WordNet synonym (needs Debian's wordnet-base)."
    )
    token_replacement: float = Field(
        0.1, ge=0, le=1, description="Token classification: probability of replacing a word by a training word with the same tag."
    )
    mention_replacement: float = Field(
        0.3, ge=0, le=1, description="Token classification: probability of replacing an entity mention by a training mention of its type."
    )
    shuffle: float = Field(
        0.1, ge=0, le=1, description="Token classification: probability of shuffling the words within each segment (a mention, a run of O)."
    )
    labels: Literal["teacher", "source"] = Field(
        "teacher",
        description="Hard label of a copy: the teacher's prediction (TinyBERT), or the label of the text it was made "
        "from (plain augmentation without a teacher, e.g. to measure what the teacher adds).",
    )


class UnlabelledSource(Section):
    """Where unlabelled text comes from: the same format for distillation's transfer text and for
    adapt's masked-language-model corpus. Evaluation texts and repeats are always dropped."""

    source: Optional[str] = Field(
        None,
        description="A .txt file (one text per line; for token classification one sentence, words separated by spaces), "
        "a csv/tsv/jsonl/parquet file (see column), a folder of such files, or a Hub dataset id.",
    )
    column: str = Field("text", description="The column with the texts in a table or Hub dataset (words: a list or a string).")
    split: str = Field("train", description="The split of a Hub dataset to read.")
    unused_train: bool = Field(
        False, description="Add the training rows that data.max_train_samples leaves out, without their labels."
    )
    max_texts: int = Field(50_000, gt=0, description="At most this many texts (a seeded sample of what is read).")

    @property
    def on(self) -> bool:
        return bool(self.source) or self.unused_train


class TransferSection(UnlabelledSource):
    """Unlabelled text the teacher labels once into its cache, distilled on beside the training set
    (XtremeDistil's transfer set). Evaluation texts and repeats are dropped."""


class AdaptSection(TrainingSection, UnlabelledSource):
    """Masked-language-model training of the base encoder on unlabelled in-domain text, before
    finetune (domain- and task-adaptive pre-training). The training options are the MLM run's; the
    checkpoint with the lowest held-out loss is kept."""

    epochs: float = Field(1.0, gt=0, description="MLM epochs over the unlabelled texts (fractions allowed).")
    batch_size: int = Field(32, gt=0, description="Training batch size per device.")
    metric_for_best_model: Literal["loss"] = Field("loss", description="adapt keeps the checkpoint with the lowest held-out masked-LM loss.")
    training_texts: bool = Field(
        True, description="Also train on the training split's texts, without their labels (task-adaptive pre-training)."
    )
    mlm_probability: float = Field(0.15, gt=0, lt=1, description="Fraction of tokens (or words) masked in each text.")
    whole_word_masking: bool = Field(
        False, description="Mask every piece of a chosen word together, not single word pieces (needs a fast tokenizer)."
    )
    validation_fraction: float = Field(
        0.05, gt=0, lt=1, description="Share of the unlabelled texts held out to measure perplexity (masked once, with the seed)."
    )
    max_validation_texts: int = Field(2_000, gt=0, description="At most this many held-out texts.")


class DistillSection(TrainingSection):
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate of AdamW.")
    student: StudentSection = Field(default_factory=StudentSection, description="The student to train.")
    loss: DistillLossSection = Field(default_factory=DistillLossSection, description="The loss terms and weights.")
    augment: AugmentSection = Field(default_factory=AugmentSection, description="Transfer-set augmentation.")
    transfer: TransferSection = Field(default_factory=TransferSection, description="Unlabelled text the teacher labels.")
    ensemble: list[str] = Field(
        [], description="More fine-tuned teachers (model or run folders, Hub ids) for the same labels: the soft targets are the "
        "average of all teachers' softened outputs, the stage input's included. Hidden and attention terms read the stage input.",
    )
    intermediate_epochs: float = Field(
        0.0, ge=0,
        description="Staged distillation (TinyBERT, XtremeDistil): first train this many epochs on the hidden-state and "
        "attention terms alone, then `epochs` on the prediction terms (hard and soft labels) alone. 0: all terms together.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _staged_needs_intermediate_terms(self) -> "DistillSection":
        if self.intermediate_epochs > 0 and not self.loss.needs_intermediate:
            raise ValueError(
                "intermediate_epochs trains the hidden-state, attention and relation terms first, and their weights are 0; "
                "set distill.loss.hidden_weight (or attention_weight, relation_weight), or intermediate_epochs: 0"
            )
        if self.intermediate_epochs > 0 and not (self.loss.hard_weight or self.loss.soft_weight):
            raise ValueError("intermediate_epochs is followed by a phase on the hard and soft labels, and both weights are 0; give one a weight")
        return self


class PruneImportanceSection(Section):
    """How units are ranked before each cut; scores are computed on the current (already cut) model."""

    heads: Literal["gradient", "random"] = Field(
        "gradient", description="gradient: |dL/d head mask| (Michel et al., 2019); random: a baseline for ablations."
    )
    ffn: Literal["taylor", "magnitude", "random"] = Field(
        "taylor", description="taylor: |sum of w * dL/dw| per neuron; magnitude: ||w_in|| * ||w_out||; random: a baseline."
    )
    samples: int = Field(512, gt=0, description="Training examples the scores are computed on.")
    batch_size: int = Field(32, gt=0, description="Batch size of the scoring passes.")


class PruneBudgetSection(Section):
    """Instead of fractions: remove the least important heads and FFN neurons until the encoder fits a budget."""

    metric: Literal["params", "flops"] = Field("params", description="What the budget counts: encoder parameters, or FLOPs per token.")
    keep: float = Field(..., gt=0, lt=1, description="Fraction of the encoder's parameters (or FLOPs per token) to keep.")


class VocabularySection(Section):
    """Trim the vocabulary to the tokens the task uses: a step after the pruning steps (see the README)."""

    trim: bool = Field(False, description="Keep only tokens seen in the training texts, special tokens and single characters.")
    min_count: int = Field(
        1, ge=1, description="Keep a seen token only if it occurs this often; above 1, rare training words split into shorter pieces."
    )
    max_accuracy_drop: float = Field(
        1.0, ge=0, description="Largest validation-accuracy loss (points) the trimming may cost before the stage fails."
    )


class PruneSection(TrainingSection):
    """Structured pruning: heads, FFN neurons and whole layers are removed from the weight matrices,
    in steps, each followed by recovery through distillation. The training options are the recovery's."""

    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate of each recovery.")
    epochs: float = Field(1.0, gt=0, description="Recovery epochs after each pruning step.")
    heads: float = Field(0.5, ge=0, lt=1, description="Fraction of attention heads to remove.")
    head_scope: Literal["per_layer", "global"] = Field(
        "per_layer", description="per_layer: the same fraction from every layer; global: the least important anywhere."
    )
    min_heads_per_layer: int = Field(1, ge=1, description="Heads every layer keeps, whatever the scores.")
    ffn: float = Field(
        0.5, ge=0, lt=1, description="Fraction of FFN neurons to remove, the same number from every layer (see the README)."
    )
    drop_layers: list[int] = Field([], description="Encoder layers (0-based) to remove before the first step.")
    drop_least_important_layers: int = Field(
        0, ge=0, description="Also remove this many layers, those whose skipping costs the least accuracy."
    )
    budget: Optional[PruneBudgetSection] = Field(None, description="A parameter or FLOPs budget instead of heads/ffn fractions.")
    steps: int = Field(2, ge=1, le=20, description="Pruning steps; each removes an equal share and is followed by recovery.")
    importance: PruneImportanceSection = Field(default_factory=PruneImportanceSection, description="How units are ranked.")
    teacher: Optional[str] = Field(
        None,
        description="Recovery teacher: a model folder, 'input' (the unpruned input), or null: the teacher the input "
        "was distilled from (from its edgepress.json), else the input.",
    )
    loss: DistillLossSection = Field(default_factory=DistillLossSection, description="Recovery loss terms (as in distill).")
    transfer: TransferSection = Field(default_factory=TransferSection, description="Unlabelled text the recovery teacher labels (as in distill).")
    vocabulary: VocabularySection = Field(default_factory=VocabularySection, description="Vocabulary trimming, after the steps.")

    @property
    def structural(self) -> bool:
        """Whether heads, neurons or layers are removed (with recovery), not only the vocabulary."""
        return bool(self.budget is not None or self.heads or self.ffn or self.drop_layers or self.drop_least_important_layers)

    @model_validator(mode="after")
    def _one_way_to_size(self) -> "PruneSection":
        if self.budget is not None and {"heads", "ffn"} & self.model_fields_set:
            raise ValueError("give heads/ffn fractions or a budget, not both")
        if not (self.structural or self.vocabulary.trim):
            raise ValueError("nothing to prune: set heads, ffn, drop_layers, drop_least_important_layers, budget or vocabulary.trim")
        if self.drop_layers and (sorted(set(self.drop_layers)) != self.drop_layers or min(self.drop_layers) < 0):
            raise ValueError("drop_layers must be distinct, increasing, non-negative layer indices, e.g. [1]")
        if self.loss.attention_weight > 0 and (self.heads or self.budget):
            raise ValueError("attention distillation compares heads one to one, which pruned heads break; set loss.attention_weight to 0")
        if self.budget is not None and self.importance.ffn == "magnitude":
            raise ValueError("a budget compares heads with neurons by their estimated loss increase; use importance.ffn: taylor")
        return self
