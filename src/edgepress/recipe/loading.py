"""The recipe: one YAML file, parsed into pydantic models, one section per stage.

Every field has a default and a description; unknown keys are errors that name their path, so a
typo never silently falls back to a default. Command-line overrides (``--set a.b=value``) are
applied to the raw mapping *before* validation, so they are checked exactly like the file.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from edgepress.errors import RecipeError
from edgepress.recipe.deploy import BenchSection, ExportSection, QuantizeSection
from edgepress.recipe.search import SearchSection
from edgepress.recipe.sections import DataSection, ModelSection, Section, TrackingSection
from edgepress.recipe.training import AdaptSection, DistillSection, FinetuneSection, PruneSection
from edgepress.recipe.stages import STAGES, check_stage_order


class Recipe(Section):
    name: str = Field("bbc-news", description="Run name: artifacts go to <output_dir>/<name>/.")
    output_dir: str = Field("runs", description="Folder that holds the run folders.")
    seed: int = Field(42, description="Seed for model initialization and training order.")
    task: Literal["text-classification", "token-classification"] = Field(
        "text-classification", description="One label per text, or one tag per word (named entities, sequence labelling)."
    )
    stages: list[str] = Field(["finetune"], description=f"Stages to run, in order. Known: {', '.join(STAGES)}.")
    model: ModelSection = Field(default_factory=ModelSection, description="The model to start from.")
    data: DataSection = Field(default_factory=DataSection, description="The dataset and its splits.")
    adapt: AdaptSection = Field(default_factory=AdaptSection, description="Masked-language-model training on unlabelled in-domain text.")
    finetune: FinetuneSection = Field(default_factory=FinetuneSection, description="Teacher fine-tuning.")
    distill: DistillSection = Field(default_factory=DistillSection, description="Distillation into a student.")
    prune: PruneSection = Field(default_factory=PruneSection, description="Structured pruning with recovery.")
    export: ExportSection = Field(default_factory=ExportSection, description="ONNX export and its checks.")
    quantize: QuantizeSection = Field(default_factory=QuantizeSection, description="int8 quantization of the ONNX model.")
    bench: BenchSection = Field(default_factory=BenchSection, description="Benchmark of every artifact of the run.")
    search: SearchSection = Field(default_factory=SearchSection, description="edgepress search: the values to vary and the goals.")
    tracking: TrackingSection = Field(default_factory=TrackingSection, description="Dashboards the training curves go to.")

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

    @model_validator(mode="before")
    @classmethod
    def _token_task_defaults(cls, raw: Any) -> Any:
        """Token classification picks the best epoch by entity F1 unless the recipe says otherwise."""
        if not isinstance(raw, dict) or raw.get("task") != "token-classification":
            return raw
        raw = dict(raw)
        for name in TRAINING_SECTIONS:
            section = raw.get(name, {})
            if isinstance(section, dict) and "metric_for_best_model" not in section:
                raw[name] = {**section, "metric_for_best_model": "f1"}
        return raw

    @model_validator(mode="after")
    def _search_ends_with_what_it_measures(self) -> "Recipe":
        if not self.search.space:
            return self
        last = self.stages[-1]
        if last == "bench":  # a trial's figures are its last artifact's: bench makes a report, not a model
            raise ValueError("search: a trial is scored on the artifact of its last stage, and bench makes none; "
                             "remove bench from stages (the search times each trial itself)")
        if self.search.timed and last not in ("export", "quantize"):
            raise ValueError(
                f"search: latency is timed on the ONNX or OpenVINO file a trial ends with, and these stages end with {last}; "
                "add export (and quantize) to stages, or search without latency_ms, max_latency_ms and max_latency_ratio"
            )
        return self

    @model_validator(mode="after")
    def _adapt_has_text(self) -> "Recipe":
        if "adapt" in self.stages and not (self.adapt.on or self.adapt.training_texts):
            raise ValueError("adapt has no text: set adapt.source (unlabelled in-domain text), adapt.unused_train, or adapt.training_texts: true")
        return self

    @model_validator(mode="after")
    def _options_fit_the_task(self) -> "Recipe":
        for problem in task_problems(self):
            raise ValueError(problem)
        return self


TRAINING_SECTIONS = ("finetune", "distill", "prune")
TOKEN_ONLY_METRICS = ("f1", "precision", "recall")


TEXT_EDITS = ("deletion", "swap", "insertion")  # distill.augment's operations on plain texts
TOKEN_EDITS = ("token_replacement", "mention_replacement", "shuffle")  # and on tagged sentences


def task_problems(recipe: Recipe) -> list[str]:
    """Options that the recipe's task cannot honour, each with its fix."""
    problems = []
    tokens = recipe.task == "token-classification"
    for name in TRAINING_SECTIONS:
        metric = getattr(recipe, name).metric_for_best_model
        if tokens and metric == "f1_macro":
            problems.append(f"{name}.metric_for_best_model: f1_macro is for text classification; use f1 (entity F1), precision, recall or accuracy")
        if not tokens and metric in TOKEN_ONLY_METRICS:
            problems.append(f"{name}.metric_for_best_model: {metric} is an entity metric of token classification; use accuracy or f1_macro")
    augment = recipe.distill.augment
    for field in TEXT_EDITS if tokens else TOKEN_EDITS:
        # set away from its default: a resolved recipe (a run's recipe.yaml) lists every default, and those stay unused
        if getattr(augment, field) != type(augment).model_fields[field].default:
            problems.append(
                f"distill.augment.{field} edits plain texts and would lose the word tags; remove it (token classification uses "
                "token_replacement, mention_replacement, shuffle and synonym)" if tokens else
                f"distill.augment.{field} edits tagged sentences (token classification); remove it, or use deletion, swap, insertion and synonym"
            )  # fmt: skip
    for name in ("export", "quantize"):
        if tokens and getattr(recipe, name).with_tokenizer:
            problems.append(f"{name}.with_tokenizer builds a text-in, label-out model; set it to false for token classification")
    return problems


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
        raw = read_yaml(Path(path))
    given: dict[str, str] = {}  # recipe path -> the command-line item that set it
    for item in overrides or []:
        given[apply_override(raw, item)] = f"--set {item}"
    for key, value in (updates or {}).items():
        set_path(raw, key, value)
        given[key] = "a command-line option"
    return validate_recipe(raw, where, given)


def validate_recipe(raw: dict[str, Any], where: str = "recipe", given: dict[str, str] | None = None) -> Recipe:
    """``where`` names the file (or "defaults"); ``given`` the recipe paths set on the command line,
    so that a problem with one of them is blamed on the command line, not on the file."""
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, where, given or {})) from None


def read_yaml(path: Path) -> dict[str, Any]:
    """A recipe file as a raw mapping (before validation); a clear error for a missing or malformed file."""
    if path.is_dir():
        raise RecipeError(f"recipe {path} is a folder, not a recipe file; give the YAML file (e.g. {path / 'recipe.yaml'})")
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist; `edgepress recipe show > {path.name}` writes a starting point")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe {path} is not valid YAML ({_yaml_problem(exc)}); fix the syntax") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path} must be a mapping of sections (model:, data:, ...), not {type(raw).__name__}")
    return raw


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: YAML says
    keys are unique, and PyYAML would silently keep the last (two finetune: blocks, say)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice (first on line {seen[key].line + 1}); keep one", key_node.start_mark
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping)


def _yaml_problem(exc: Exception) -> str:
    """What PyYAML found and where (1-based line and column), e.g. "line 2, column 18: expected ',' or ']'"."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def apply_override(raw: dict[str, Any], item: str) -> str:
    """Apply ``a.b.c=value`` to a nested mapping; the value is parsed as YAML (so 3, true, [a, b] work).
    Returns the path it set."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"override {item!r} is not KEY=VALUE; write e.g. --set finetune.epochs=1")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    set_path(raw, key.strip(), value)
    return key.strip()


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


def format_validation_error(exc: ValidationError, where: str = "recipe", given: dict[str, str] | None = None) -> str:
    """Pydantic's report as one line: per problem the path, what is wrong, the value, and where the
    value came from (the file, or the command line when a flag or --set gave it)."""
    problems: list[tuple[str, str]] = []  # (source, problem)
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        item = _given_by(path, given or {})
        problems.append(("command line" if item else where, f"{path}: {_problem(err, item)}"))
    sources = {source for source, _ in problems}
    if len(sources) == 1:
        return f"{sources.pop()}: " + "; ".join(problem for _, problem in problems)
    return "; ".join(f"{source}: {problem}" for source, problem in problems)


def _given_by(path: str, given: dict[str, str]) -> str:
    """The command-line item that set ``path``, a section above it, or (for a check across a
    section's fields) a key inside it; '' when the file did."""
    for key, item in given.items():
        if path == key or path.startswith(key + ".") or key.startswith(path + "."):
            return item
    return ""


def _problem(err: dict[str, Any], item: str) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key (check the spelling; `edgepress recipe show` lists every key)"
    message, value = err["msg"].removeprefix("Value error, "), err.get("input")
    if err["type"] in ("model_type", "model_attributes_type"):  # a value where a section belongs
        section = _section_named(err.get("ctx", {}).get("class_name", ""))
        keys = ", ".join(section.model_fields) if section else "its keys"
        return f"this is a section, not a value: give a mapping with {keys} (got {value!r})"
    if err["type"] == "list_type":
        fix = f"write --set {item.removeprefix('--set ').partition('=')[0]}=[{value}]" if item.startswith("--set ") else f"write [{value}]"
        return f"{message} (got {value!r}); {fix}"
    # a check across fields reports the whole section as its input: its message says enough
    return message if isinstance(value, dict) else f"{message} (got {value!r})"


def _section_named(name: str) -> type[BaseModel] | None:
    pending, seen = [Section], {}
    while pending:
        cls = pending.pop()
        seen[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return seen.get(name)


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
            lines.extend(_optional_section_keys(field.annotation, pad))
    return lines


def _optional_section_keys(annotation: Any, pad: str) -> list[str]:
    """For a section that is off by default (``budget: null``), its keys as comments: what a user
    can put there, with defaults and meanings, without turning it on."""
    section = next((a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    if section is None:
        return []
    lines = [f"{pad}#   keys, when set:\n"]
    for key, field in section.model_fields.items():
        default = "(required)" if field.is_required() else yaml.safe_dump(field.default, default_flow_style=True).strip().removesuffix("...").strip()
        lines.append(f"{pad}#     {key}: {default}  # {field.description}\n")
    return lines
