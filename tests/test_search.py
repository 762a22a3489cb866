"""The search space (issue 16, first part): paths checked against the recipe, domains validated as
recipe values, Optuna's draws turned into valid recipes."""

import optuna
import pytest

from edgepress.errors import EdgepressError, RecipeError
from edgepress.search.space import grid, grid_points, parse_space, suggest, trial_recipe

BASE = {"name": "s", "stages": ["distill", "prune"], "model": {"name_or_path": "m"}, "data": {"source": "d.csv"}}
SPACE = {
    "distill.student.num_layers": [1, 2, 3],
    "prune.heads": {"low": 0.0, "high": 0.5, "step": 0.25},
    "prune.vocabulary.trim": [True, False],
    "prune.steps": {"low": 1, "high": 3},
    "distill.learning_rate": {"low": 1e-5, "high": 1e-3, "log": True},
    "distill.loss": [{"hard_weight": 1.0, "soft_weight": 0.0}, {"hard_weight": 0.5, "soft_weight": 0.5, "temperature": 4.0}],
}


def trim_and_export(tmp_path, model, data, name: str) -> dict:
    """A raw recipe that runs in seconds on the tiny classifier: trim the vocabulary only, then export."""
    return {
        "name": name, "output_dir": str(tmp_path / "runs"), "stages": ["prune", "export"],
        "model": {"name_or_path": str(model)}, "data": {"source": str(data)},
        "prune": {"heads": 0, "ffn": 0, "vocabulary": {"trim": True}, "max_seq_length": 24},
        "export": {"max_seq_length": 24, "mobile": False},
    }  # fmt: skip


@pytest.mark.parametrize(
    "params, message",
    [
        ({"prune.head": [0.5]}, r"prune.head is not a recipe value \(prune.head unknown; known here: .*heads"),
        ({"distill.student.layer_count": [1]}, r"distill.student.layer_count unknown"),
        ({"prune.heads.low": [1]}, r"prune.heads.low unknown; known here: none: it is a value"),
        ({"stages": [["prune"]]}, "stages is set by the search itself"),
        ({"prune.heads": []}, "prune.heads: give at least one value"),
        ({"prune.heads": {"low": 0.5, "high": 0.25}}, r"prune.heads: low \(0.5\) must be below high"),
        ({"prune.heads": [0.5, 1.5]}, r"prune.heads = 1.5 is not a valid recipe value: .*less than 1"),
        ({"distill.learning_rate": {"low": 0.0, "high": 1e-3, "log": True}}, "log needs low > 0"),
    ],
)
def test_a_bad_space_is_one_error_that_names_the_path(params, message):
    with pytest.raises(RecipeError, match=message):
        parse_space(params, BASE)


def test_optuna_draws_become_valid_recipes_within_the_domains():
    space = parse_space(SPACE, BASE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        values = suggest(trial, space)
        recipe = trial_recipe(BASE, values)
        assert recipe.distill.student.num_layers in (1, 2, 3) and recipe.prune.heads in (0.0, 0.25, 0.5)
        assert 1e-5 <= recipe.distill.learning_rate <= 1e-3 and isinstance(recipe.distill.student.num_layers, int)
        assert isinstance(values["prune.steps"], int) and 1 <= recipe.prune.steps <= 3  # integer ends: integers
        assert recipe.distill.loss.temperature in (2.0, 4.0) and recipe.distill.loss.hard_weight in (1.0, 0.5)
        seen.add((recipe.prune.vocabulary.trim, recipe.distill.loss.temperature))
        study.tell(trial, 0.0)
    assert len(seen) == 4  # booleans and whole sections are drawn like any choice


def test_the_grid_is_every_combination():
    space = parse_space({k: v for k, v in SPACE.items() if k not in ("distill.learning_rate", "prune.steps")}, BASE)
    assert grid(space)["prune.heads"] == [0.0, 0.25, 0.5]
    points = grid_points(space)
    assert len(points) == 3 * 3 * 2 * 2 and len({repr(sorted(p.items(), key=str)) for p in points}) == len(points)
    with pytest.raises(RecipeError, match="grid sampler needs a step"):
        grid(parse_space({"distill.learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}}, BASE))


def test_a_combination_the_recipe_refuses_is_a_recipe_error():
    """Each value is valid alone; together, a budget and explicit fractions are refused by the prune section."""
    with pytest.raises(RecipeError, match="give heads/ffn fractions or a budget, not both"):
        trial_recipe(BASE, {"prune.heads": 0.25, "prune.budget": {"metric": "flops", "keep": 0.5}})


def test_recipes_that_share_a_prefix_of_stages_share_its_folders(tmp_path, tiny_classifier, tiny_csv):
    """Placed by fingerprint, a stage that an earlier recipe already produced with the same config and
    inputs is reused, not re-run; what differs after it runs (how a search's trials stay cheap)."""
    from edgepress.running.pipeline import run_recipe

    base = trim_and_export(tmp_path, tiny_classifier, tiny_csv, "search")
    store = tmp_path / "store"

    def place(index: int, stage: str, fingerprint: str):
        return store / f"{stage}-{fingerprint[:16]}"

    first = run_recipe(trial_recipe(base, {"export.optimize": True}), place=place)
    second = run_recipe(trial_recipe(base, {"export.optimize": False}), place=place)
    again = run_recipe(trial_recipe(base, {"export.optimize": True}), place=place)
    assert [o.skipped for o in first] == [False, False]
    assert [o.skipped for o in second] == [True, False] and second[0].folder == first[0].folder
    assert [o.skipped for o in again] == [True, True] and again[1].folder == first[1].folder
    assert second[1].folder != first[1].folder and (first[1].folder / "model_optimized.onnx").is_file()
    assert not (second[1].folder / "model_optimized.onnx").exists()
    assert sorted(p.name.split("-")[0] for p in store.iterdir()) == ["export", "export", "prune"]


def test_a_study_resumes_reuses_stages_and_keeps_the_feasible_front(tmp_path, tiny_classifier, tiny_csv):
    from edgepress.search.study import Plan, feasible_front, run_study

    base = trim_and_export(tmp_path, tiny_classifier, tiny_csv, "study")
    space = parse_space({"prune.vocabulary.min_count": [1, 10**6], "export.optimize": [True, False]}, base)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    grid_sampler = optuna.samplers.GridSampler(grid(space), seed=0)
    plan = Plan(objectives=("accuracy", "size_mb"), trials=2)
    first = run_study(base, space, plan, storage, sampler=grid_sampler)
    assert len(first.trials) == 2
    # "killed" after two trials: the same call with the full count runs only the two missing
    study = run_study(base, space, Plan(objectives=("accuracy", "size_mb"), trials=4), storage, sampler=grid_sampler)
    assert len(study.trials) == 4 and {tuple(sorted(t.params.items())) for t in study.trials} == {
        tuple(sorted(p.items())) for p in grid_points(space)
    }
    store = tmp_path / "runs" / "study" / "stages"
    # min_count 10**6 keeps no word: the stage fails (accuracy check), so that trial fails, the study goes on
    kinds = sorted(p.name.split("-")[0] for p in store.iterdir() if not p.name.startswith("."))
    assert kinds == ["export", "export", "prune"]
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 2 and all(t.params["prune.vocabulary.min_count"] == 10**6 for t in failed)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sum(t.user_attrs["reused_stages"] for t in complete) == 1  # the second export reused the prune
    # brute force over the completed trials: maximize accuracy, minimize size
    front = [t for t in complete if not any(o.values[0] >= t.values[0] and o.values[1] <= t.values[1] and o.values != t.values for o in complete)]
    assert {t.number for t in feasible_front(study)} == {t.number for t in front}
    limited = run_study(
        {**base, "name": "limited"}, space, Plan(objectives=("accuracy", "size_mb"), limits=(("size_mb", min(t.values[1] for t in complete) + 1e-9),), trials=4),
        storage, sampler=optuna.samplers.GridSampler(grid(space), seed=0),
    )  # fmt: skip
    assert [t.values[1] for t in feasible_front(limited)] == [min(t.values[1] for t in complete)]


def test_trial_latency_is_a_ratio_to_the_reference_recorded_with_the_study(tmp_path, tiny_classifier, tiny_csv):
    from edgepress.search.latency import ReferenceTimer
    from edgepress.search.study import Plan, run_study

    base = trim_and_export(tmp_path, tiny_classifier, tiny_csv, "timed")
    (reference,) = [o for o in run_raw(base) if o.stage == "export"]
    texts = ["goal w1 w2 team", "vote w3 party w4 w5 w6", "chip code w7"] * 4
    timer = ReferenceTimer(reference.folder / "model_optimized.onnx", texts, max_length=24, rounds=3)
    space = parse_space({"export.optimize": [True, False]}, base)
    storage = f"sqlite:///{tmp_path / 'timed.db'}"
    study = run_study(base, space, Plan(objectives=("accuracy", "latency_ms"), trials=2), storage, measure=timer)
    recorded = study.user_attrs["reference_ms"]
    assert recorded == timer.baseline_ms > 0
    assert all(0 < t.user_attrs["values"]["latency_ms"] < 100 * recorded for t in study.trials)
    assert all(t.user_attrs["values"]["latency_ratio"] == pytest.approx(t.user_attrs["values"]["latency_ms"] / recorded) for t in study.trials)
    # a resumed search (a new timer, a new process) takes the recorded baseline instead of measuring a new one
    again = ReferenceTimer(reference.folder / "model_optimized.onnx", texts, max_length=24, rounds=3)
    run_study(base, space, Plan(objectives=("accuracy", "latency_ms"), trials=2), storage, measure=again)
    assert again.baseline_ms == recorded
    with pytest.raises(EdgepressError, match="latency is measured on ONNX and OpenVINO files"):
        timer(tiny_classifier / "model.safetensors")


def run_raw(raw: dict):
    from edgepress.recipe.loading import validate_recipe
    from edgepress.running.pipeline import run_recipe

    return run_recipe(validate_recipe(raw))


def test_the_search_command_prints_the_front_writes_the_best_recipe_and_resumes(tmp_path, tiny_classifier, tiny_csv):
    import yaml
    from typer.testing import CliRunner

    from edgepress.cli.app import app

    raw = trim_and_export(tmp_path, tiny_classifier, tiny_csv, "cli")
    reference = run_raw({**raw, "name": "reference"})[-1].folder / "model_optimized.onnx"
    raw["search"] = {
        "space": {"export.optimize": [True, False]}, "objectives": ["accuracy", "latency_ms", "size_mb"],
        "sampler": "grid", "trials": 2, "reference": str(reference), "latency_texts": 8, "rounds": 2,
    }  # fmt: skip
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(raw))
    runner = CliRunner()
    result = runner.invoke(app, ["search", str(tmp_path / "search.yaml")])
    assert result.exit_code == 0, result.output
    assert "feasible Pareto-optimal of 2 trials" in result.output and "best under the limits: trial" in result.output
    assert "search trial 0" in result.output and "search trial 1" in result.output  # a live line per trial
    best = yaml.safe_load((tmp_path / "runs" / "cli" / "best.yaml").read_text())
    assert best["name"] == "cli-best" and "search" not in best and best["export"]["optimize"] in (True, False)
    again = runner.invoke(app, ["search", str(tmp_path / "search.yaml")])  # resumed: nothing left to run
    assert again.exit_code == 0 and "of 2 trials" in again.output and "search trial" not in again.output
    # a size limit no trial meets: one line that says what to do, exit 2
    limited = runner.invoke(app, ["search", str(tmp_path / "search.yaml"), "--set", "search.max_size_mb=0.001", "--set", "name=limited"])
    assert limited.exit_code == 2 and "no trial of 2 met the limits" in limited.output and "loosen them" in limited.output
    missing = runner.invoke(app, ["search", str(tmp_path / "search.yaml"), "--set", "search.reference=null"])
    assert missing.exit_code == 2 and "set search.reference to an ONNX file" in missing.output


def test_the_documented_search_example_is_a_valid_space_for_the_default_recipe():
    import re
    from pathlib import Path

    import yaml

    from edgepress.recipe.loading import validate_recipe

    root = Path(__file__).resolve().parent.parent
    block = re.search(r"```yaml\n(search:.*?)```", (root / "docs" / "search.md").read_text(), re.S).group(1)
    raw = {**yaml.safe_load((root / "recipes" / "bbc-news.yaml").read_text()), **yaml.safe_load(block)}
    with pytest.raises(RecipeError, match="remove bench from stages"):  # the default recipe ends with a report, not a model
        validate_recipe(raw)
    raw["stages"] = raw["stages"][:-1]
    recipe = validate_recipe(raw)
    assert recipe.search.limits() == (("latency_ms", 5.0),)
    assert set(parse_space(recipe.search.space, raw).params) == {"distill.student.num_layers", "prune.heads", "prune.vocabulary.trim"}


def test_the_teacher_alone_is_tuned_with_a_finetune_only_recipe(tmp_path, tiny_bert, tiny_csv):
    """Issue 34: `stages: [finetune]`: learning rate, batch size and epochs searched, the best by
    validation accuracy; latency, which needs a graph, is refused up front."""
    import yaml
    from typer.testing import CliRunner

    from edgepress.cli.app import app

    raw = {
        "name": "teacher", "output_dir": str(tmp_path / "runs"), "stages": ["finetune"],
        "model": {"name_or_path": str(tiny_bert)}, "data": {"source": str(tiny_csv)},
        "finetune": {"max_seq_length": 24, "epochs": 4, "batch_size": 16, "logging_steps": 50},
        "search": {"space": {"finetune.learning_rate": [1e-6, 2e-3], "finetune.batch_size": [16]}, "objectives": ["accuracy"],
                   "sampler": "grid", "trials": 2},
    }  # fmt: skip
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(raw))
    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(app, ["search", str(tmp_path / "teacher.yaml")])
    assert result.exit_code == 0, result.output
    best = yaml.safe_load((tmp_path / "runs" / "teacher" / "best.yaml").read_text())
    assert best["stages"] == ["finetune"] and best["finetune"]["learning_rate"] == 2e-3  # 1e-6 leaves the tiny model at chance
    folders = sorted((tmp_path / "runs" / "teacher" / "stages").glob("finetune-*"))
    assert len(folders) == 2 and all((f / "curves.json").is_file() for f in folders)
    assert "[I " not in result.output  # Optuna's own log lines stay out: edgepress prints one line per trial
    timed = runner.invoke(app, ["search", str(tmp_path / "teacher.yaml"), "--set", "search.objectives=[accuracy, latency_ms]",
                                "--set", f"search.reference={tmp_path / 'any.onnx'}"])  # fmt: skip
    assert timed.exit_code == 2 and "these stages end with finetune; add export (and quantize) to stages" in timed.output
