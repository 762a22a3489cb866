"""The recipe: one YAML file, parsed into pydantic models, one section per stage.

Every field has a default and a description; unknown keys are errors that name their path, so a
typo never silently falls back to a default. Command-line overrides (``--set a.b=value``) are
applied to the raw mapping *before* validation, so they are checked exactly like the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgepress.errors import RecipeError
from edgepress.stages import STAGES, check_stage_order


class Section(BaseModel):
    """Base for every recipe section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(Section):
    name_or_path: str = Field(
        "builtin:minilm-l6",
        description="Teacher to start from: a local folder, a Hub id, or builtin:minilm-l6.",
    )
    revision: Optional[str] = Field(
        None, description="Hub revision (branch, tag or commit); pin a commit for reproducible runs."
    )
    trust_remote_code: bool = Field(
        False, description="Run model code shipped with a Hub repo. Only turn on for repos you trust."
    )
    allow_pickle: bool = Field(
        False, description="Accept pickle weights (pytorch_model.bin). Pickle can execute code on load."
    )


class DataSection(Section):
    source: str = Field(
        "builtin:bbc-news",
        description="A csv/tsv/jsonl/parquet file, a folder with train/validation/test files, "
        "a Hub dataset id, or builtin:bbc-news.",
    )
    train_file: Optional[str] = Field(None, description="Explicit training file (overrides source).")
    validation_file: Optional[str] = Field(
        None, description="Explicit validation file; split off the training data when absent."
    )
    test_file: Optional[str] = Field(
        None, description="Explicit test file; split off the training data when absent."
    )
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = Field(
        "auto", description="File format; auto picks it from the file extension."
    )
    header: bool = Field(
        True, description="csv/tsv files have a header row. If false, name columns by position: '0', '1', ..."
    )
    text_column: str = Field("text", description="Column with the input text.")
    text_pair_column: Optional[str] = Field(
        None, description="Second text column for sentence-pair tasks (NLI, paraphrase)."
    )
    label_column: str = Field("label", description="Column with the label, as int or string.")
    hub_subset: Optional[str] = Field(None, description="Hub dataset configuration name, e.g. 'sst2' of 'glue'.")
    hub_revision: Optional[str] = Field(None, description="Hub dataset revision.")
    validation_size: float = Field(
        0.15, gt=0, lt=1, description="Fraction split off for validation when no validation split is given."
    )
    test_size: float = Field(
        0.15, gt=0, lt=1, description="Fraction split off for test when no test split is given."
    )
    split_seed: int = Field(42, description="Seed of the stratified train/validation/test split.")
    max_train_samples: Optional[int] = Field(
        None, gt=0, description="Use at most this many training examples (a seeded sample); for quick trials."
    )

    @model_validator(mode="after")
    def _sizes_leave_training_data(self) -> "DataSection":
        if self.validation_size + self.test_size >= 0.9:
            raise ValueError(
                f"validation_size + test_size = {self.validation_size + self.test_size:.2f} leaves "
                "too little training data; keep the sum below 0.9"
            )
        return self


class FinetuneSection(Section):
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
    metric_for_best_model: Literal["accuracy", "f1_macro"] = Field(
        "accuracy", description="Validation metric that picks the best epoch and drives early stopping."
    )
    early_stopping_patience: Optional[int] = Field(
        None, gt=0, description="Stop after this many evaluations without improvement; off when null."
    )
    early_stopping_threshold: float = Field(0.0, ge=0, description="Smallest improvement that counts.")
    freeze_embeddings: bool = Field(False, description="Keep the embedding layer fixed (faster, less memory).")
    freeze_layers: int = Field(0, ge=0, description="Keep the first N encoder layers fixed.")
    logging_steps: int = Field(10, gt=0, description="Log the training loss every N steps.")


class Recipe(Section):
    name: str = Field("bbc-news", description="Run name: artifacts go to <output_dir>/<name>/.")
    output_dir: str = Field("runs", description="Folder that holds the run folders.")
    seed: int = Field(42, description="Seed for model initialization and training order.")
    stages: list[str] = Field(["finetune"], description=f"Stages to run, in order. Known: {', '.join(STAGES)}.")
    model: ModelSection = Field(default_factory=ModelSection, description="The model to start from.")
    data: DataSection = Field(default_factory=DataSection, description="The dataset and its splits.")
    finetune: FinetuneSection = Field(default_factory=FinetuneSection, description="Teacher fine-tuning.")

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError("use letters, digits, '.', '_' and '-' only (it becomes a folder name)")
        return value

    @field_validator("stages")
    @classmethod
    def _stages_known_and_ordered(cls, value: list[str]) -> list[str]:
        check_stage_order(value)
        return value


# --------------------------------------------------------------------------- loading


def load_recipe(
    path: str | Path | None, overrides: list[str] | None = None, updates: dict[str, Any] | None = None
) -> Recipe:
    """Read a recipe file (or start from the defaults when ``path`` is None), then apply
    ``--set KEY=VALUE`` overrides and typed ``updates`` from command-line flags, in that order."""
    raw: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        raw = _read_yaml(Path(path))
    for item in overrides or []:
        apply_override(raw, item)
    for key, value in (updates or {}).items():
        set_path(raw, key, value)
    return validate_recipe(raw, where)


def validate_recipe(raw: dict[str, Any], where: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(f"{where}: {format_validation_error(exc)}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist; `edgepress recipe show > {path.name}` writes a starting point")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecipeError(f"recipe {path} is not valid YAML ({first_line}); fix the syntax") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path} must be a mapping of sections (model:, data:, ...), not {type(raw).__name__}")
    return raw


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply ``a.b.c=value`` to a nested mapping; the value is parsed as YAML (so 3, true, [a, b] work)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"override {item!r} is not KEY=VALUE; write e.g. --set finetune.epochs=1")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    set_path(raw, key.strip(), value)


def set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``raw["a"]["b"] = value`` for ``dotted = "a.b"``, creating sections on the way."""
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(f"cannot set {dotted}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value


def format_validation_error(exc: ValidationError) -> str:
    """Turn pydantic's report into one line per problem: path, value, and what is allowed."""
    problems = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            problems.append(f"{path}: unknown key (check the spelling; `edgepress recipe show` lists every key)")
            continue
        message = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        # a check across fields reports the whole section as its input: its message says enough
        problems.append(f"{path}: {message}" if isinstance(value, dict) else f"{path}: {message} (got {value!r})")
    return "; ".join(problems)


# --------------------------------------------------------------------------- writing


def recipe_to_yaml(recipe: Recipe, comments: bool = False) -> str:
    """The recipe as YAML; with ``comments`` every key is preceded by its description."""
    if not comments:
        return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
    return "".join(_commented(recipe, indent=0))


def _commented(section: BaseModel, indent: int) -> list[str]:
    lines: list[str] = []
    pad = " " * indent
    for name, field in type(section).model_fields.items():
        value = getattr(section, name)
        if field.description:
            lines.append(f"{pad}# {field.description}\n")
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:\n")
            lines.extend(_commented(value, indent + 2))
        else:
            dumped = yaml.safe_dump({name: value}, default_flow_style=True, width=1000).strip()
            lines.append(f"{pad}{dumped.removeprefix('{').removesuffix('}')}\n")
    return lines
