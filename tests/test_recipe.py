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
