import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgepress import encoders
from edgepress.cli.app import app
from edgepress.compress.pruning import importance, surgery
from edgepress.compress.pruning.plan import Baseline, plan_budget, plan_fractions
from edgepress.errors import RecipeError, StageError
from edgepress.export.runtime import feeds, open_session
from edgepress.models import from_pretrained
from edgepress.recipe.loading import validate_recipe
from edgepress.recipe.training import PruneSection
from edgepress.running.pipeline import run_recipe

runner = CliRunner()
TEXTS = ["goal w1 w2 team", "vote w3 party w4 w5 w6", "chip code w7"]


def bert_from_config(heads: int = 4, layers: int = 2, seed: int = 0, init: float = 0.02):
    """A random 32-wide BERT classifier: pruning mechanics need shapes, not training."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=64, max_position_embeddings=64, num_labels=3, initializer_range=init,
    )  # fmt: skip
    return BertForSequenceClassification(config).eval()


def random_batches(n: int = 4, size: int = 8, length: int = 12, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "input_ids": torch.randint(5, 60, (size, length), generator=g),
            "attention_mask": torch.ones(size, length, dtype=torch.long),
            "labels": torch.randint(0, 3, (size,), generator=g),
        }
        for _ in range(n)
    ]


def prune_recipe(tmp_path: Path, model: Path, data: Path, stages=("prune",), **prune):
    settings = {"learning_rate": 2e-3, "epochs": 2, "batch_size": 16, "max_seq_length": 24, "logging_steps": 50, **prune}
    return validate_recipe({
        "name": "prune", "output_dir": str(tmp_path / "runs"), "stages": list(stages),
        "model": {"name_or_path": str(model)}, "data": {"source": str(data)},
        "prune": settings, "export": {"max_seq_length": 24, "mobile": False},
    })  # fmt: skip


@pytest.fixture(scope="module")
def pruned(tmp_path_factory, tiny_classifier, tiny_csv):
    """The tiny fine-tuned classifier pruned by half in two steps, then exported."""
    tmp = tmp_path_factory.mktemp("prune")
    return run_recipe(prune_recipe(tmp, tiny_classifier, tiny_csv, stages=("prune", "export"), ffn=0.5, heads=0.5))


# --------------------------------------------------------------------------- the stage


def test_half_the_heads_and_neurons_are_physically_gone(pruned):
    from transformers import AutoModelForSequenceClassification

    outcome = pruned[0]
    metrics = outcome.manifest["metrics"]
    assert metrics["before"]["heads_per_layer"] == [2, 2] and metrics["after"]["heads_per_layer"] == [1, 1]
    assert metrics["before"]["ffn_per_layer"] == [64, 64] and metrics["after"]["ffn_per_layer"] == [32, 32]
    config = json.loads((outcome.folder / "config.json").read_text())
    assert config["intermediate_size"] == 32
    assert {int(k): len(v) for k, v in config["pruned_heads"].items()} == {0: 1, 1: 1}
    # smaller matrices, right output shape; Transformers 5 builds one head count for every layer, so
    # a head-pruned folder opens with edgepress's from_pretrained (see README, Run folders)
    model = from_pretrained(AutoModelForSequenceClassification, outcome.folder).eval()
    layer = model.bert.encoder.layer[0]
    assert tuple(layer.attention.self.query.weight.shape) == (16, 32)  # 1 head of 16 left of 2
    assert tuple(layer.attention.output.dense.weight.shape) == (32, 16)
    assert tuple(layer.intermediate.dense.weight.shape) == (32, 32)
    assert tuple(layer.output.dense.weight.shape) == (32, 32)
    assert sum(p.numel() for p in model.parameters()) == metrics["after"]["parameters"] < metrics["before"]["parameters"]
    from transformers import AutoTokenizer

    inputs = AutoTokenizer.from_pretrained(outcome.folder)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert tuple(model(**inputs).logits.shape) == (3, 3)


def test_steps_recover_and_the_manifest_reports_each(pruned):
    metrics = pruned[0].manifest["metrics"]
    assert [s["step"] for s in metrics["steps"]] == [1, 2]
    assert [s["heads_per_layer"] for s in metrics["steps"]] == [[1, 1], [1, 1]]  # round(0.5 * 0.5 * 2) = 1 head at step 1
    assert [s["ffn_per_layer"] for s in metrics["steps"]] == [[48, 48], [32, 32]]
    for step in metrics["steps"]:
        assert 0 <= step["validation_score_after_cut"] <= 1 and step["recovery"]["steps"] > 0
    assert metrics["test"]["accuracy"] >= 0.9
    assert metrics["encoder_flops_ratio"] < 0.55
    assert metrics["test_accuracy_change_points"] == pytest.approx(100 * (metrics["test"]["accuracy"] - metrics["input_test"]["accuracy"]), abs=0.01)


def test_pruned_model_exports_with_onnx_runtime_matching_torch(pruned, tiny_csv):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    export = pruned[1]
    files = export.manifest["metrics"]["files"]
    assert files["model.onnx"]["parity"]["passed"] and files["model_optimized.onnx"]["parity"]["passed"]
    assert files["model_optimized.onnx"]["attention_fused_layers"] == 2
    tokenizer = AutoTokenizer.from_pretrained(export.folder)
    model = from_pretrained(AutoModelForSequenceClassification, pruned[0].folder).eval()
    encoded = tokenizer(TEXTS, padding=True, return_tensors="np")
    session = open_session(export.folder / "model_optimized.onnx")
    onnx_logits = session.run(["logits"], feeds(session, encoded))[0]
    with torch.no_grad():
        torch_logits = model(**{k: torch.from_numpy(v) for k, v in encoded.items()}).logits.numpy()
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)


# --------------------------------------------------------------------------- importance


def test_a_head_zeroed_by_hand_scores_lowest():
    model = bert_from_config(heads=4)
    value = model.bert.encoder.layer[1].attention.self.value
    with torch.no_grad():  # head 2 of layer 1 now outputs zeros: removing it changes nothing
        value.weight[16:24] = 0
        value.bias[16:24] = 0
    scores = importance.gradient_scores(model, random_batches())
    assert float(scores.heads[1][2]) == 0.0
    assert all(float(s) > 0 for layer in scores.heads for i, s in enumerate(layer) if (layer is not scores.heads[1] or i != 2))
    assert int(torch.cat(scores.heads).argmin()) == 4 + 2


def test_neuron_score_is_the_taylor_sum_of_w_times_grad():
    """The mask gradient equals sum(w * dL/dw) over the down-projection column that reads the neuron."""
    model = bert_from_config()
    batch = random_batches(n=1)
    scores = importance.gradient_scores(model, batch)
    model.zero_grad()
    model(**batch[0]).loss.backward()
    down = model.bert.encoder.layer[0].output.dense
    taylor = (down.weight * down.weight.grad).sum(dim=0).abs()
    torch.testing.assert_close(scores.neurons[0], taylor, rtol=1e-4, atol=1e-7)


def test_skipping_a_layer_that_does_nothing_costs_nothing():
    model = bert_from_config(layers=3, init=0.5)  # large weights: the other layers change the logits
    layer = model.bert.encoder.layer[1]
    with torch.no_grad():  # residual only: attention and FFN outputs are zero before each LayerNorm...
        for linear in (layer.attention.output.dense, layer.output.dense):
            linear.weight.zero_()
            linear.bias.zero_()
        for norm in (layer.attention.output.LayerNorm, layer.output.LayerNorm):
            norm.weight.fill_(1.0)
            norm.bias.zero_()
    # ...and the input of layer 1 is already layer-normalized, so the layer is (nearly) the identity
    scores = importance.layer_scores(model, random_batches())
    assert scores[1]["accuracy_drop"] == 0 and abs(scores[1]["loss_increase"]) < 1e-4
    assert min(abs(s["loss_increase"]) for i, s in enumerate(scores) if i != 1) > 1e-3


# --------------------------------------------------------------------------- surgery and plans


def test_global_scope_keeps_a_floor_per_layer_and_exports(tmp_path):
    model = bert_from_config(heads=4)
    scores = importance.Scores([torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([5.0, 6, 7, 8])], [torch.rand(64)] * 2)
    cfg = PruneSection(heads=0.5, ffn=0.0, head_scope="global", steps=1, min_heads_per_layer=1)
    views = encoders.layers(model)
    cut = plan_fractions(scores, views, Baseline([4, 4], 64, {}), cfg, 1)
    assert cut.heads == {0: [0, 1, 2], 1: [0]}  # 4 of 8 heads; layer 0 keeps its floor of 1
    surgery.remove_heads(model, cut.heads)
    assert [v.num_heads for v in encoders.layers(model)] == [1, 3]
    assert encoders.original_heads(model, 0) == [3] and encoders.original_heads(model, 1) == [1, 2, 3]
    # a second cut names current positions; the model translates them to original head numbers
    surgery.remove_heads(model, {1: [0]})
    assert model.config.pruned_heads[1] and sorted(model.config.pruned_heads[1]) == [0, 1]
    _reloads_and_exports(model, tmp_path)


def test_cutting_heads_equals_masking_them_and_survives_save_reload_export(tmp_path):
    """Layers left with 2, 3 and 4 heads: the same logits as the unpruned model with those heads'
    outputs masked (their columns of the output projection zeroed), then the same after a reload."""
    import copy

    model = bert_from_config(heads=4, layers=3, init=0.2)
    cut = {0: [0, 2], 1: [3]}
    masked = copy.deepcopy(model)
    size = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        for layer, heads in cut.items():
            for head in heads:
                masked.bert.encoder.layer[layer].attention.output.dense.weight[:, head * size : (head + 1) * size] = 0
    surgery.remove_heads(model, cut)
    assert [v.num_heads for v in encoders.layers(model)] == [2, 3, 4]
    assert tuple(model.bert.encoder.layer[0].attention.self.key.weight.shape) == (16, 32)
    assert {int(k): v for k, v in model.config.pruned_heads.items()} == {0: [0, 2], 1: [3]}
    batch = {k: v for k, v in random_batches(n=1)[0].items() if k != "labels"}
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, masked(**batch).logits, atol=1e-5, rtol=0)
    _reloads_and_exports(model, tmp_path)


def test_dropping_a_layer_rekeys_pruned_heads(tmp_path):
    model = bert_from_config(heads=4, layers=3)
    surgery.remove_heads(model, {2: [1]})
    kept = surgery.drop_layers(model, [0])
    assert kept == [1, 2] and model.config.num_hidden_layers == 2
    assert {int(k): v for k, v in model.config.pruned_heads.items()} == {1: [1]}
    surgery.remove_neurons(model, {0: list(range(10)), 1: list(range(20, 30))})
    assert model.config.intermediate_size == 54
    _reloads_and_exports(model, tmp_path)


def test_uneven_ffn_sizes_are_refused():
    model = bert_from_config()
    with pytest.raises(ValueError, match="FFN sizes would differ"):
        surgery.remove_neurons(model, {0: [1, 2], 1: [3]})


def test_a_parameter_budget_is_met_from_the_least_important_units():
    model = bert_from_config(heads=4)
    views = encoders.layers(model)
    before = surgery.encoder_cost(model, "params", 24)
    cfg = PruneSection(budget={"metric": "params", "keep": 0.6}, steps=1)
    scores = importance.gradient_scores(model, random_batches())
    cut = plan_budget(scores, views, cfg, before, 0.6 * before, 24)
    surgery.remove_heads(model, cut.heads)
    surgery.remove_neurons(model, cut.neurons)
    after = surgery.encoder_cost(model, "params", 24)
    assert after <= 0.6 * before
    # greedy: the budget is not overshot by more than the largest single unit (one row of neurons here)
    assert after > 0.6 * before - max(surgery.head_cost(views[0], "params", 24), 2 * surgery.neuron_cost(views[0], "params"))


def test_an_unreachable_budget_says_how_to_fix_it():
    model = bert_from_config(heads=2)
    cfg = PruneSection(budget={"metric": "flops", "keep": 0.01}, steps=1)
    scores = importance.gradient_scores(model, random_batches(n=1))
    cost = surgery.encoder_cost(model, "flops", 24)
    with pytest.raises(StageError, match="cannot be met.*raise keep"):
        plan_budget(scores, encoders.layers(model), cfg, cost, 0.01 * cost, 24)


def _reloads_and_exports(model, tmp_path: Path) -> None:
    """Save, reload (same logits), export with torch.onnx, compare with ONNX Runtime. Reloaded with
    edgepress's from_pretrained, which replays config.pruned_heads where Transformers (5) does not."""
    from transformers import AutoModelForSequenceClassification

    model.save_pretrained(tmp_path / "m")
    reloaded = from_pretrained(AutoModelForSequenceClassification, tmp_path / "m").eval()
    batch = {k: v for k, v in random_batches(n=1)[0].items() if k != "labels"}
    with torch.no_grad():
        expected = model(**batch).logits
        torch.testing.assert_close(reloaded(**batch).logits, expected)
    path = tmp_path / "m.onnx"
    torch.onnx.export(
        reloaded, (batch["input_ids"], batch["attention_mask"]), str(path), input_names=["input_ids", "attention_mask"],
        output_names=["logits"], dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}}, dynamo=False,
    )  # fmt: skip
    got = open_session(path).run(["logits"], {k: v.numpy() for k, v in batch.items()})[0]
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)


# --------------------------------------------------------------------------- recipe and command line


@pytest.mark.parametrize(
    "prune, message",
    [
        ({"heads": 0, "ffn": 0}, "nothing to prune"),
        ({"heads": 0.5, "budget": {"metric": "params", "keep": 0.5}}, "not both"),
        ({"loss": {"attention_weight": 1.0}}, "attention distillation"),
        ({"budget": {"keep": 0.5}, "importance": {"ffn": "magnitude"}}, "importance.ffn: taylor"),
        ({"drop_layers": [2, 1]}, "distinct, increasing"),
    ],
)
def test_recipe_errors_name_the_fix(prune, message):
    with pytest.raises(RecipeError, match=message):
        validate_recipe({"stages": ["prune"], "prune": prune})


def test_prune_command_on_a_folder_and_its_errors(tmp_path, tiny_classifier, tiny_csv):
    common = ["prune", "--model", str(tiny_classifier), "--data", str(tiny_csv), "--output-dir", str(tmp_path / "runs")]
    result = runner.invoke(app, [*common, "--drop-layers", "5"])
    assert result.exit_code != 0 and "names layer 5 but the model has 2 layers" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "runs" / "prune" / "01-prune").exists()
    result = runner.invoke(app, [*common, "--keep-params", "0.5", "--keep-flops", "0.5"])
    assert result.exit_code != 0 and "not both" in result.output
    result = runner.invoke(app, [
        *common, "--heads", "0", "--ffn", "0.25", "--steps", "1", "--epochs", "1", "--max-seq-length", "24",
        "--learning-rate", "2e-3", "--drop-least-important-layers", "1",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "runs" / "prune" / "01-prune" / "edgepress.json").read_text())
    metrics = manifest["metrics"]
    assert metrics["after"]["layers"] == 1 and len(metrics["dropped_layers"]["skip_scores"]) == 2
    assert metrics["after"]["ffn_per_layer"] == [48] and metrics["after"]["heads_per_layer"] == [2]
    assert metrics["teacher"] == str(tiny_classifier)  # a fine-tuned input teaches itself


def test_a_recorded_teacher_that_is_gone_is_a_clear_error(tmp_path, tiny_classifier, tiny_csv):
    import shutil

    student = tmp_path / "student"
    shutil.copytree(tiny_classifier, student)
    manifest = json.loads((student / "edgepress.json").read_text())
    manifest.update(stage="distill", input_model=str(tmp_path / "gone" / "01-finetune"))
    (student / "edgepress.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["prune", "--model", str(student), "--data", str(tiny_csv), "--output-dir", str(tmp_path / "runs")])
    assert result.exit_code != 0 and "no longer exists; set prune.teacher" in result.output
