from pathlib import Path

import pytest
import yaml

from edgepress.errors import RecipeError
from edgepress.recipe.loading import Recipe, apply_override, load_recipe, recipe_to_yaml


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_name_the_builtin_model_and_data():
    recipe = load_recipe(None)
    assert recipe.model.name_or_path == "builtin:minilm-l6"
    assert recipe.data.source == "builtin:bbc-news"
    assert recipe.stages == ["finetune"]
    assert recipe.model.trust_remote_code is False and recipe.model.allow_pickle is False


def test_every_field_has_a_description():
    def walk(model_cls, prefix=""):
        for name, field in model_cls.model_fields.items():
            assert field.description, f"{prefix}{name} has no description"
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, Recipe.__mro__[1]):
                walk(annotation, f"{prefix}{name}.")

    walk(Recipe)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("finetune:\n  learning_rat: 0.1\n", "finetune.learning_rat: unknown key"),
        ("data:\n  text_colum: x\n", "data.text_colum: unknown key"),
        ("modle:\n  name_or_path: x\n", "modle: unknown key"),
        ("finetune:\n  learning_rate: -1\n", "finetune.learning_rate: Input should be greater than 0 (got -1)"),
        ("finetune:\n  lr_scheduler: step\n", "finetune.lr_scheduler: Input should be 'linear' or 'cosine' (got 'step')"),
        ("finetune:\n  epochs: three\n", "finetune.epochs: Input should be a valid number"),
        ("stages: [finetune, explode]\n", "stages: unknown stage 'explode'"),
        ("stages: [finetune, finetune]\n", "stages: a stage is listed twice"),
        ("stages: []\n", "stages: name at least one stage"),
        ("name: a/b\n", "name: use letters, digits"),
        ("data:\n  validation_size: 0.5\n  test_size: 0.45\n", "leaves too little training data"),
        ("data:\n  format: xlsx\n", "data.format: Input should be 'auto', 'csv', 'tsv', 'jsonl', 'parquet' or 'conll'"),
    ],
)
def test_bad_recipe_values_name_path_value_and_what_is_allowed(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("model: [unclosed\n", "is not valid YAML"),
        ("- a\n- b\n", "must be a mapping of sections"),
        ("finetune:\n  epochs: 1\nstages: [finetune]\nfinetune:\n  epochs: 3\n", r"line 4, column 1: 'finetune' is given twice \(first on line 1\)"),
        ("finetune:\n  epochs: 1\n  epochs: 2\n", r"line 3, column 3: 'epochs' is given twice \(first on line 2\)"),
    ],
)
def test_unreadable_recipes_fail_with_one_clear_error(tmp_path, text, expected):
    with pytest.raises(RecipeError, match=expected):
        load_recipe(write(tmp_path, text))


def test_missing_recipe_file_says_how_to_make_one(tmp_path):
    with pytest.raises(RecipeError, match="edgepress recipe show"):
        load_recipe(tmp_path / "nope.yaml")


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path):
    path = write(tmp_path, "finetune:\n  epochs: 3\n")
    recipe = load_recipe(path, ["finetune.epochs=1", "finetune.freeze_embeddings=true", "stages=[finetune]"])
    assert recipe.finetune.epochs == 1.0
    assert recipe.finetune.freeze_embeddings is True
    with pytest.raises(RecipeError, match="finetune.epoch: unknown key"):
        load_recipe(path, ["finetune.epoch=1"])


def test_typed_updates_apply_after_overrides():
    recipe = load_recipe(None, ["finetune.epochs=5"], {"finetune.epochs": 2.0, "data.source": "x.csv"})
    assert recipe.finetune.epochs == 2.0 and recipe.data.source == "x.csv"


@pytest.mark.parametrize("item", ["finetune.epochs", "=3", "seed.x=1"])
def test_malformed_overrides_are_errors(item):
    with pytest.raises(RecipeError):
        apply_override({"seed": 3}, item)


def test_shown_recipe_parses_back_to_the_defaults(tmp_path):
    shown = recipe_to_yaml(load_recipe(None), comments=True)
    assert "# Peak learning rate of AdamW." in shown
    assert load_recipe(write(tmp_path, shown)) == load_recipe(None)
    assert yaml.safe_load(recipe_to_yaml(load_recipe(None))) == load_recipe(None).model_dump(mode="json")


def test_shipped_recipes_are_valid():
    for path in (Path(__file__).parent.parent / "recipes").glob("*.yaml"):
        load_recipe(path)


# --------------------------------------------------------------------------- issue 27: messages that named the wrong source


def test_a_problem_given_on_the_command_line_is_blamed_on_the_command_line(tmp_path):
    path = write(tmp_path, "finetune:\n  epochs: 3\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path, None, {"name": "my run"})
    assert str(info.value).startswith("command line: name: use letters, digits") and str(path) not in str(info.value)
    with pytest.raises(RecipeError, match=r"^command line: bench: threads must list positive thread counts"):
        load_recipe(None, None, {"bench.threads": [0]})
    mixed = write(tmp_path, "finetune:\n  epochs: -1\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(mixed, ["seed=x"])
    assert f"{mixed}: finetune.epochs: Input should be greater than 0" in str(info.value)
    assert "command line: seed: Input should be a valid integer" in str(info.value)


def test_a_value_where_a_list_or_a_section_belongs_says_how_to_write_it(tmp_path):
    with pytest.raises(RecipeError, match=r"bench.batch_sizes: Input should be a valid list \(got 4\); write --set bench.batch_sizes=\[4\]"):
        load_recipe(None, ["bench.batch_sizes=4"])
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, "prune:\n  budget: 0.4\n"))
    assert "prune.budget: this is a section, not a value: give a mapping with metric, keep (got 0.4)" in str(info.value)
    assert "PruneBudgetSection" not in str(info.value)


def test_recipe_show_documents_the_keys_of_a_section_that_is_off():
    shown = recipe_to_yaml(load_recipe(None), comments=True)
    budget = shown[shown.index("  budget: null"):]
    assert "#     metric: params  # What the budget counts" in budget and "#     keep: (required)  # Fraction" in budget


def test_a_folder_given_as_the_recipe_is_named_as_a_folder(tmp_path):
    with pytest.raises(RecipeError, match="is a folder, not a recipe file"):
        load_recipe(tmp_path)
