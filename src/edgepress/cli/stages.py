"""One command per training stage (adapt, finetune, distill, prune): flags become recipe values, the
rest of the recipe keeps its defaults. The export and quantize commands are in deploy.py."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgepress.cli.common import ForceOption, SetOption, execute, given, origin_of, reported

RecipeOption = typer.Option(None, help="Start from this recipe instead of the defaults.")
NameOption = typer.Option(None, help="Run name (folder under the output directory).")
OutputOption = typer.Option(None, help="Where run folders go (default: runs).")
DataOption = typer.Option("builtin:bbc-news", help="Data file, folder, Hub id, or builtin:bbc-news.")
TextColumnOption = typer.Option(None, help="Text column (default: text).")
TextPairColumnOption = typer.Option(None, help="Second text column, for sentence pairs.")
LabelColumnOption = typer.Option(None, help="Label column (default: label).")
TaskOption = typer.Option(None, help="text-classification (default) or token-classification (tags per word: CoNLL, JSONL tokens/tags).")
EpochsOption = typer.Option(None, help="Training epochs.")
LearningRateOption = typer.Option(None, help="Peak learning rate.")
BatchSizeOption = typer.Option(None, help="Training batch size.")
MaxSeqLengthOption = typer.Option(None, help="Truncate texts to this many tokens.")
SeedOption = typer.Option(None, help="Random seed.")
AllowPickleOption = typer.Option(False, "--allow-pickle", help="Accept pickle weights (unsafe for untrusted files).")
TrustRemoteCodeOption = typer.Option(False, "--trust-remote-code", help="Run model code from the Hub repo.")


def _common_flags(stage: str, data: str, columns: tuple, training: tuple, seed: Optional[int]) -> dict:
    """Recipe keys for the options every stage command has: data columns and training settings."""
    text, pair, label = columns
    epochs, learning_rate, batch_size, max_seq_length = training
    return {
        "seed": seed, "data.source": data,
        "data.text_column": text, "data.text_pair_column": pair, "data.label_column": label,
        f"{stage}.epochs": epochs, f"{stage}.learning_rate": learning_rate,
        f"{stage}.batch_size": batch_size, f"{stage}.max_seq_length": max_seq_length,
    }  # fmt: skip


@reported
def adapt(
    model: str = typer.Option("builtin:minilm-l6", help="The encoder to adapt: local folder, Hub id, or builtin:minilm-l6."),
    text: Optional[str] = typer.Option(None, help="Unlabelled in-domain text: a .txt (one per line), csv/tsv/jsonl/parquet, folder, or Hub dataset."),
    data: str = DataOption,
    text_column: Optional[str] = TextColumnOption,
    label_column: Optional[str] = LabelColumnOption,
    task: Optional[str] = TaskOption,
    whole_word_masking: Optional[bool] = typer.Option(None, "--whole-word-masking/--token-masking", help="Mask whole words (default: pieces)."),
    training_texts: Optional[bool] = typer.Option(None, "--training-texts/--no-training-texts", help="Also train on --data's training texts (default on)."),
    epochs: Optional[float] = EpochsOption,
    learning_rate: Optional[float] = LearningRateOption,
    batch_size: Optional[int] = BatchSizeOption,
    max_seq_length: Optional[int] = MaxSeqLengthOption,
    seed: Optional[int] = SeedOption,
    recipe: Optional[Path] = RecipeOption,
    overrides: Optional[list[str]] = SetOption,
    name: Optional[str] = NameOption,
    output_dir: Optional[str] = OutputOption,
    force: bool = ForceOption,
) -> None:
    """Masked-language-model training of an encoder on unlabelled text (then: edgepress finetune --model RUN/01-adapt)."""
    from edgepress.recipe.loading import load_recipe

    flags = {
        "task": task, "stages": ["adapt"], "name": name if name is not None else (None if recipe else "adapt"), "output_dir": output_dir,
        "model.name_or_path": model, "adapt.source": text, "adapt.whole_word_masking": whole_word_masking,
        "adapt.training_texts": training_texts,
        **_common_flags("adapt", data, (text_column, None, label_column), (epochs, learning_rate, batch_size, max_seq_length), seed),
    }  # fmt: skip
    execute(load_recipe(recipe, overrides, given(flags)), force, origin_of(recipe, "adapt"))


@reported
def finetune(
    model: str = typer.Option("builtin:minilm-l6", help="Local folder, Hub id, or builtin:minilm-l6."),
    data: str = DataOption,
    text_column: Optional[str] = TextColumnOption,
    text_pair_column: Optional[str] = TextPairColumnOption,
    label_column: Optional[str] = LabelColumnOption,
    task: Optional[str] = TaskOption,
    no_header: bool = typer.Option(False, "--no-header", help="csv/tsv without a header row; columns are '0', '1', ..."),
    epochs: Optional[float] = EpochsOption,
    learning_rate: Optional[float] = LearningRateOption,
    batch_size: Optional[int] = BatchSizeOption,
    max_seq_length: Optional[int] = MaxSeqLengthOption,
    seed: Optional[int] = SeedOption,
    allow_pickle: bool = AllowPickleOption,
    trust_remote_code: bool = TrustRemoteCodeOption,
    recipe: Optional[Path] = RecipeOption,
    overrides: Optional[list[str]] = SetOption,
    name: Optional[str] = NameOption,
    output_dir: Optional[str] = OutputOption,
    force: bool = ForceOption,
) -> None:
    """Fine-tune a teacher from flags (the recipe's other sections keep their defaults)."""
    from edgepress.recipe.loading import load_recipe

    flags = {
        "task": task,
        "stages": ["finetune"], "name": name if name is not None else (None if recipe else "finetune"), "output_dir": output_dir,
        "model.name_or_path": model, "data.header": False if no_header else None,
        "model.allow_pickle": allow_pickle or None, "model.trust_remote_code": trust_remote_code or None,
        **_common_flags(
            "finetune", data, (text_column, text_pair_column, label_column),
            (epochs, learning_rate, batch_size, max_seq_length), seed,
        ),
    }  # fmt: skip
    execute(load_recipe(recipe, overrides, given(flags)), force, origin_of(recipe, "finetune"))


@reported
def distill(
    teacher: str = typer.Option(..., help="Fine-tuned teacher folder (e.g. runs/bbc-news/01-finetune) or Hub id."),
    data: str = DataOption,
    text_column: Optional[str] = TextColumnOption,
    text_pair_column: Optional[str] = TextPairColumnOption,
    label_column: Optional[str] = LabelColumnOption,
    task: Optional[str] = TaskOption,
    num_layers: Optional[int] = typer.Option(None, help="Student depth; evenly spaced teacher layers are kept."),
    layers: Optional[str] = typer.Option(None, help="Teacher layers the student keeps, e.g. 0,2,4."),
    student_model: Optional[str] = typer.Option(None, help="A pre-trained student instead of a teacher subset."),
    hard_weight: Optional[float] = typer.Option(None, help="Weight of the hard-label loss."),
    soft_weight: Optional[float] = typer.Option(None, help="Weight of the soft-label (KD) loss."),
    temperature: Optional[float] = typer.Option(None, help="Soft-label temperature."),
    hidden_weight: Optional[float] = typer.Option(None, help="Weight of the hidden-state MSE loss."),
    attention_weight: Optional[float] = typer.Option(None, help="Weight of the attention KL loss."),
    relation_weight: Optional[float] = typer.Option(None, help="Weight of the self-attention relation KL loss (MiniLMv2)."),
    intermediate_epochs: Optional[float] = typer.Option(None, help="Staged: epochs on the intermediate terms alone first."),
    augment: Optional[int] = typer.Option(None, help="Augmented copies per training example (0: off)."),
    epochs: Optional[float] = EpochsOption,
    learning_rate: Optional[float] = LearningRateOption,
    batch_size: Optional[int] = BatchSizeOption,
    max_seq_length: Optional[int] = MaxSeqLengthOption,
    seed: Optional[int] = SeedOption,
    recipe: Optional[Path] = RecipeOption,
    overrides: Optional[list[str]] = SetOption,
    name: Optional[str] = NameOption,
    output_dir: Optional[str] = OutputOption,
    force: bool = ForceOption,
) -> None:
    """Distill a fine-tuned teacher into a smaller student."""
    from edgepress.recipe.loading import load_recipe

    kept = _int_list(layers, "--layers")
    flags = {
        "task": task,
        "stages": ["distill"], "name": name if name is not None else (None if recipe else "distill"), "output_dir": output_dir,
        "model.name_or_path": teacher,
        "distill.student.num_layers": num_layers, "distill.student.layers": kept, "distill.student.model": student_model,
        "distill.loss.hard_weight": hard_weight, "distill.loss.soft_weight": soft_weight,
        "distill.loss.temperature": temperature, "distill.loss.hidden_weight": hidden_weight,
        "distill.loss.attention_weight": attention_weight, "distill.loss.relation_weight": relation_weight,
        "distill.intermediate_epochs": intermediate_epochs, "distill.augment.factor": augment,
        **_common_flags(
            "distill", data, (text_column, text_pair_column, label_column),
            (epochs, learning_rate, batch_size, max_seq_length), seed,
        ),
    }  # fmt: skip
    execute(load_recipe(recipe, overrides, given(flags)), force, origin_of(recipe, "distill"))


def _int_list(value: Optional[str], flag: str) -> Optional[list[int]]:
    from edgepress.errors import RecipeError

    try:
        return [int(x) for x in value.split(",")] if value else None
    except ValueError:
        raise RecipeError(f"{flag} {value!r} is not a comma-separated list of layer indices, e.g. 0,2,4") from None


@reported
def prune(
    model: str = typer.Option(..., help="Classifier folder (e.g. runs/bbc-news/02-distill) or Hub id."),
    data: str = DataOption,
    text_column: Optional[str] = TextColumnOption,
    text_pair_column: Optional[str] = TextPairColumnOption,
    label_column: Optional[str] = LabelColumnOption,
    task: Optional[str] = TaskOption,
    heads: Optional[float] = typer.Option(None, help="Fraction of attention heads to remove (default 0.5)."),
    ffn: Optional[float] = typer.Option(None, help="Fraction of FFN neurons to remove (default 0.5)."),
    head_scope: Optional[str] = typer.Option(None, help="per_layer or global."),
    drop_layers: Optional[str] = typer.Option(None, help="Layers to remove, e.g. 1,3."),
    drop_least_important_layers: Optional[int] = typer.Option(None, help="Remove this many least important layers."),
    keep_params: Optional[float] = typer.Option(None, help="Budget: keep this fraction of encoder parameters (instead of --heads/--ffn)."),
    keep_flops: Optional[float] = typer.Option(None, help="Budget: keep this fraction of encoder FLOPs per token."),
    steps: Optional[int] = typer.Option(None, help="Pruning steps, each followed by recovery (default 2)."),
    teacher: Optional[str] = typer.Option(None, help="Recovery teacher folder, or 'input' (default: the input's own teacher)."),
    trim_vocabulary: Optional[bool] = typer.Option(
        None, "--trim-vocabulary/--no-trim-vocabulary", help="Keep only tokens the training texts use (plus specials, single characters)."
    ),
    min_count: Optional[int] = typer.Option(None, help="With --trim-vocabulary: keep tokens seen at least this often."),
    epochs: Optional[float] = typer.Option(None, help="Recovery epochs per step."),
    learning_rate: Optional[float] = LearningRateOption,
    batch_size: Optional[int] = BatchSizeOption,
    max_seq_length: Optional[int] = MaxSeqLengthOption,
    seed: Optional[int] = SeedOption,
    allow_pickle: bool = AllowPickleOption,
    trust_remote_code: bool = TrustRemoteCodeOption,
    recipe: Optional[Path] = RecipeOption,
    overrides: Optional[list[str]] = SetOption,
    name: Optional[str] = NameOption,
    output_dir: Optional[str] = OutputOption,
    force: bool = ForceOption,
) -> None:
    """Remove attention heads, FFN neurons and layers, recovering accuracy by distillation."""
    from edgepress.errors import RecipeError
    from edgepress.recipe.loading import load_recipe

    if keep_params is not None and keep_flops is not None:
        raise RecipeError("give --keep-params or --keep-flops, not both")
    budget = {"metric": "params", "keep": keep_params} if keep_params is not None else None
    budget = {"metric": "flops", "keep": keep_flops} if keep_flops is not None else budget
    flags = {
        "task": task,
        "stages": ["prune"], "name": name if name is not None else (None if recipe else "prune"), "output_dir": output_dir,
        "model.name_or_path": model, "model.allow_pickle": allow_pickle or None,
        "model.trust_remote_code": trust_remote_code or None,
        "prune.heads": heads, "prune.ffn": ffn, "prune.head_scope": head_scope,
        "prune.drop_layers": _int_list(drop_layers, "--drop-layers"),
        "prune.drop_least_important_layers": drop_least_important_layers, "prune.budget": budget,
        "prune.steps": steps, "prune.teacher": teacher,
        "prune.vocabulary.trim": trim_vocabulary, "prune.vocabulary.min_count": min_count,
        **_common_flags(
            "prune", data, (text_column, text_pair_column, label_column),
            (epochs, learning_rate, batch_size, max_seq_length), seed,
        ),
    }  # fmt: skip
    execute(load_recipe(recipe, overrides, given(flags)), force, origin_of(recipe, "prune"))
