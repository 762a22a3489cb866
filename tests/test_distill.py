import math
import random

import pytest
import torch
from conftest import build_tiny_bert, require_system_tool, tiny_recipe

from edgepress.compress.training import augment as augment_module
from edgepress.compress.training import distill, distill_trainer, losses, relations, teacher_cache
from edgepress.compress.training.augment import augment_texts
from edgepress.compress.training.students import build_student, check_compatible, evenly_spaced, layer_map
from edgepress.compress.training.teacher_cache import CacheRequest, run_teacher
from edgepress.errors import ModelError, RecipeError
from edgepress.models import load_classifier
from edgepress.recipe.loading import validate_recipe
from edgepress.recipe.sections import ModelSection
from edgepress.recipe.training import AugmentSection, DistillLossSection, StudentSection
from edgepress.running.pipeline import run_recipe

LABELS = ["politics", "sports", "tech"]
TEXTS = {"text": ["w1 goal w2 w3", "vote w4", "w5 w6 chip w7 w8 w9", "team w1"]}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    folder = build_tiny_bert(tmp_path_factory.mktemp("teacher") / "t", layers=4)
    return load_classifier(ModelSection(name_or_path=str(folder)), LABELS, attn_implementation="eager")


def distill_recipe(tmp_path, model, data, **distill_settings):
    base = tiny_recipe(tmp_path, model, data).model_dump(mode="json")
    base["stages"] = ["finetune", "distill"]
    settings = {"learning_rate": 2e-3, "epochs": 8, "batch_size": 16, "max_seq_length": 24, "warmup_ratio": 0.1, "logging_steps": 50}
    settings.update(distill_settings)
    base["distill"] = settings
    return validate_recipe(base)


def test_evenly_spaced_layers_follow_distilbert():
    assert evenly_spaced(6, 3) == [0, 2, 4]
    assert evenly_spaced(12, 6) == [0, 2, 4, 6, 8, 10]
    assert evenly_spaced(4, 1) == [0]


def test_layer_subset_student_copies_the_chosen_teacher_layers(teacher):
    model, tokenizer = teacher
    student = build_student(model, tokenizer, StudentSection(layers=[1, 3]), ModelSection())
    assert student.model.config.num_hidden_layers == 2 and student.teacher_layers == [1, 3]
    t, s = model.state_dict(), student.model.state_dict()
    for name in ("attention.self.query.weight", "intermediate.dense.weight", "output.LayerNorm.bias"):
        assert torch.equal(s[f"bert.encoder.layer.0.{name}"], t[f"bert.encoder.layer.1.{name}"])
        assert torch.equal(s[f"bert.encoder.layer.1.{name}"], t[f"bert.encoder.layer.3.{name}"])
    assert torch.equal(s["bert.embeddings.word_embeddings.weight"], t["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(s["classifier.weight"], t["classifier.weight"])


def test_narrower_student_is_sliced_from_the_teacher_and_random_one_is_not(teacher):
    model, tokenizer = teacher
    spec = StudentSection(num_layers=2, hidden_size=16, num_attention_heads=2, intermediate_size=32)
    student = build_student(model, tokenizer, spec, ModelSection())
    t, s = model.state_dict(), student.model.state_dict()
    assert s["bert.encoder.layer.1.intermediate.dense.weight"].shape == (32, 16)
    assert torch.equal(s["bert.encoder.layer.1.intermediate.dense.weight"], t["bert.encoder.layer.2.intermediate.dense.weight"][:32, :16])
    random_student = build_student(model, tokenizer, spec.model_copy(update={"from_teacher": False}), ModelSection())
    assert not torch.equal(random_student.model.state_dict()["bert.embeddings.word_embeddings.weight"], t["bert.embeddings.word_embeddings.weight"][:, :16])


def test_student_layers_beyond_the_teacher_are_a_recipe_error(teacher):
    with pytest.raises(RecipeError, match="names layer 7 but the teacher has 4 layers"):
        build_student(*teacher, StudentSection(layers=[0, 7]), ModelSection())


def test_default_layer_map_follows_kept_layers_or_is_uniform(teacher):
    model, tokenizer = teacher
    subset = build_student(model, tokenizer, StudentSection(layers=[1, 3]), ModelSection())
    assert layer_map(DistillLossSection(), subset, 2, 4) == {0: 1, 1: 3}
    other = subset.__class__(subset.model, subset.tokenizer, None)
    assert layer_map(DistillLossSection(), other, 2, 4) == {0: 1, 1: 3}  # TinyBERT: m * T / S
    with pytest.raises(RecipeError, match="maps student layer 0 to teacher layer 9"):
        layer_map(DistillLossSection(layer_map={0: 9}), subset, 2, 4)


@pytest.mark.parametrize("term", ["hard", "soft", "hidden", "attention"])
def test_each_loss_term_is_finite_and_decreases_on_a_fixed_batch(teacher, term):
    torch.manual_seed(0)
    model, tokenizer = teacher
    spec = StudentSection(num_layers=2, hidden_size=16, num_attention_heads=2, intermediate_size=32, from_teacher=False)
    student = build_student(model, tokenizer, spec, ModelSection(), attn_implementation="eager").model
    student.eval()  # no dropout: the same batch gives the same loss, so a decrease is the optimizer's doing
    request = CacheRequest("t", 16, hidden_layers=(1, 3), attention_layers=(1, 3))
    cached = run_teacher(model, tokenizer, TEXTS, request, batch_size=4)
    inputs = tokenizer(TEXTS["text"], padding=True, truncation=True, max_length=16, return_tensors="pt")
    mask, rows, labels = inputs["attention_mask"], torch.arange(4), torch.tensor([1, 0, 2, 1])
    projection = torch.nn.Linear(16, 32)
    optimizer = torch.optim.Adam(list(student.parameters()) + list(projection.parameters()), lr=1e-2)

    def value():
        out = student(**inputs, output_hidden_states=True, output_attentions=True)
        if term == "hard":
            return torch.nn.functional.cross_entropy(out.logits, labels)
        if term == "soft":
            return losses.soft_kl(out.logits, cached.logits, temperature=2.0)
        if term == "hidden":
            return losses.hidden_mse(projection(out.hidden_states[2]), cached.hidden[3].rows(rows, mask), mask)
        return losses.attention_kl(out.attentions[1], cached.attentions[3].rows(rows, mask), mask)

    history = []
    for _ in range(12):
        loss = value()
        history.append(float(loss))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(math.isfinite(v) for v in history)
    assert history[-1] < history[0] * 0.95, history


def test_loss_terms_are_zero_when_student_equals_teacher(teacher):
    model, tokenizer = teacher
    cached = run_teacher(model, tokenizer, TEXTS, CacheRequest("t", 16, (2,), (2,)), batch_size=4)
    inputs = tokenizer(TEXTS["text"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True, output_attentions=True)
    mask, rows = inputs["attention_mask"], torch.arange(4)
    assert float(losses.soft_kl(out.logits, cached.logits, 2.0)) == pytest.approx(0, abs=1e-5)
    assert float(losses.hidden_mse(out.hidden_states[3], cached.hidden[2].rows(rows, mask), mask)) < 1e-4
    assert float(losses.attention_kl(out.attentions[2], cached.attentions[2].rows(rows, mask), mask)) < 1e-3


def test_tokenizer_mismatch_with_an_intermediate_loss_is_a_recipe_error(teacher, tmp_path):
    model, tokenizer = teacher
    other = build_tiny_bert(tmp_path / "other")
    (other / "vocab.txt").write_text((other / "vocab.txt").read_text() + "extra\n")
    (other / "tokenizer.json").unlink()
    student = build_student(model, tokenizer, StudentSection(model=str(other)), ModelSection())
    check_compatible(model, tokenizer, student, DistillLossSection())  # logits only: fine
    with pytest.raises(RecipeError, match="only logit distillation is possible"):
        check_compatible(model, tokenizer, student, DistillLossSection(hidden_weight=1.0))


def test_attention_loss_needs_equal_head_counts(teacher):
    model, tokenizer = teacher
    student = build_student(model, tokenizer, StudentSection(num_layers=2, num_attention_heads=4), ModelSection())
    with pytest.raises(RecipeError, match="the student has 4 heads and the teacher 2"):
        check_compatible(model, tokenizer, student, DistillLossSection(attention_weight=1.0))


def test_idx_in_shuffled_padded_batches_points_at_the_row_the_teacher_saw(teacher):
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding

    _, tokenizer = teacher
    rows = {"text": [" ".join(f"w{(i + k) % 40}" for k in range(1 + i % 7)) for i in range(30)], "label": [i % 3 for i in range(30)]}
    dataset = distill_trainer.transfer_dataset(rows, tokenizer, max_length=16)
    loader = DataLoader(dataset, batch_size=8, shuffle=True, collate_fn=DataCollatorWithPadding(tokenizer))
    seen = []
    for batch in loader:
        for ids, mask, idx, label in zip(batch["input_ids"], batch["attention_mask"], batch["idx"], batch["labels"]):
            expected = tokenizer(rows["text"][int(idx)], truncation=True, max_length=16)["input_ids"]
            assert ids[mask.bool()].tolist() == expected and int(label) == rows["label"][int(idx)]
            seen.append(int(idx))
    assert sorted(seen) == list(range(30))


def test_augmentation_is_seeded_and_keeps_the_corpus_vocabulary():
    texts = [" ".join(random.Random(i).choices(["a", "b", "c", "d"], k=12)) for i in range(5)]
    cfg = AugmentSection(factor=2, synonym=0)
    first, origins = augment_texts(texts, cfg, seed=1)
    assert augment_texts(texts, cfg, seed=1)[0] == first and origins == [0, 1, 2, 3, 4] * 2
    assert first != texts * 2 and set(" ".join(first).split()) <= {"a", "b", "c", "d"}


def test_finetune_then_distill_end_to_end_with_cached_teacher(tiny_bert, tiny_csv, tmp_path, monkeypatch):
    from transformers import AutoModelForSequenceClassification

    calls = []
    monkeypatch.setattr(teacher_cache, "run_teacher", lambda *a, **k: calls.append(1) or run_teacher(*a, **k))
    teacher_forwards = []
    real_load = distill.load_classifier

    def spy_load(*args, **kwargs):  # counts every forward of the teacher during the stage
        model, tokenizer = real_load(*args, **kwargs)
        model.register_forward_hook(lambda *_: teacher_forwards.append(1))
        return model, tokenizer

    monkeypatch.setattr(distill, "load_classifier", spy_load)
    recipe = distill_recipe(tmp_path, tiny_bert, tiny_csv, student={"num_layers": 1}, loss={"hidden_weight": 1.0})
    teacher_outcome, student_outcome = run_recipe(recipe)
    metrics = student_outcome.manifest["metrics"]
    assert metrics["test"]["accuracy"] >= 0.9
    assert metrics["test_accuracy_retained"] == pytest.approx(metrics["test"]["accuracy"] / teacher_outcome.manifest["metrics"]["test"]["accuracy"], abs=1e-4)
    assert {"loss_hard", "loss_soft", "loss_hidden"} <= set(metrics["train"])
    assert metrics["student"]["layers"] == 1 and metrics["student"]["layer_map"] == {"0": 0}
    assert calls == [1] and len(teacher_forwards) == math.ceil(420 / 64)  # one pass over 420 rows, for 8 epochs
    reopened = AutoModelForSequenceClassification.from_pretrained(student_outcome.folder)
    assert reopened.config.num_hidden_layers == 1 and not any("projections" in k for k in reopened.state_dict())
    assert list((tmp_path / "runs" / "tiny" / "cache").glob("teacher-*.safetensors"))

    changed = distill_recipe(tmp_path, tiny_bert, tiny_csv, student={"num_layers": 1}, loss={"hidden_weight": 1.0}, learning_rate=1e-3)
    teacher_again, student_again = run_recipe(changed)
    assert teacher_again.skipped and not student_again.skipped
    assert calls == [1] and len(teacher_forwards) == math.ceil(420 / 64)  # the cache served the re-run


def test_augmented_copies_are_labelled_by_the_teacher_or_by_their_source():
    train = {"text": ["a good film", "a bad plot", "fine acting"], "label": [1, 0, 1]}
    cfg = AugmentSection(factor=2, synonym=0)
    rows = distill.transfer_set(train, cfg, seed=0)
    assert len(rows["text"]) == 9 and rows["label"] == [1, 0, 1] + [-1] * 6
    logits = torch.tensor([[0.0, 1.0]] * 3 + [[2.0, 0.0]] * 6)  # the teacher says class 0 for every copy
    assert distill.teacher_labels(rows["label"], logits) == [1, 0, 1] + [0] * 6  # originals keep their gold label
    source = distill.transfer_set(train, cfg.model_copy(update={"labels": "source"}), seed=0)
    assert source["text"] == rows["text"] and source["label"] == [1, 0, 1] * 3


def test_hard_label_baseline_skips_the_teacher_pass(tiny_bert, tiny_csv, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(teacher_cache, "run_teacher", lambda *a, **k: calls.append(1) or run_teacher(*a, **k))
    hard = {"hard_weight": 1.0, "soft_weight": 0.0}
    plain = {"factor": 1, "synonym": 0, "labels": "source"}
    recipe = distill_recipe(tmp_path, tiny_bert, tiny_csv, student={"num_layers": 1}, epochs=1, loss=hard, augment=plain)
    _, outcome = run_recipe(recipe)
    assert calls == [] and outcome.manifest["metrics"]["student"]["transfer_set_size"] == 840
    section = recipe.distill
    assert not distill.teacher_needed(section)
    assert distill.teacher_needed(section.model_copy(update={"augment": section.augment.model_copy(update={"labels": "teacher"})}))
    assert distill.teacher_needed(section.model_copy(update={"loss": section.loss.model_copy(update={"hidden_weight": 1.0})}))


def test_augmented_transfer_set_grows_by_the_factor(tiny_bert, tiny_csv, tmp_path):
    recipe = distill_recipe(tmp_path, tiny_bert, tiny_csv, student={"num_layers": 1}, epochs=1, augment={"factor": 1, "synonym": 0})
    _, outcome = run_recipe(recipe)
    assert outcome.manifest["metrics"]["student"]["transfer_set_size"] == 840


def test_distill_without_a_trained_teacher_says_to_finetune_first(tiny_bert, tiny_csv, tmp_path):
    recipe = distill_recipe(tmp_path, tiny_bert, tiny_csv).model_copy(update={"stages": ["distill"]})
    with pytest.raises(ModelError, match="run finetune first"):
        run_recipe(recipe)


def test_wordnet_synonyms_replace_words_when_installed():
    require_system_tool((augment_module.WORDNET_DIR / "data.noun").is_file(), "WordNet data", "wordnet-base")
    assert "automobile" in augment_module.wordnet_synonyms()["car"]
    (text,), _ = augment_texts(["car"], AugmentSection(factor=1, deletion=0, swap=0, insertion=0, synonym=1.0), seed=0)
    assert text != "car" and text in augment_module.wordnet_synonyms()["car"]


def test_gradient_accumulation_averages_rather_than_sums_the_loss(tiny_bert, tiny_csv, tmp_path):
    # 2 micro-batches of 8 must report (and step on) about the same loss as one batch of 16;
    # a Trainer that skipped the division by the accumulation steps would report about twice as much.
    losses_by_setting = []
    for batch, accumulation in ((16, 1), (8, 2)):
        recipe = distill_recipe(
            tmp_path / f"b{batch}", tiny_bert, tiny_csv, student={"num_layers": 1}, max_steps=2,
            batch_size=batch, gradient_accumulation_steps=accumulation, logging_steps=1,
        )  # fmt: skip
        _, outcome = run_recipe(recipe)
        losses_by_setting.append(outcome.manifest["metrics"]["train"]["loss"])
    assert 0.75 < losses_by_setting[1] / losses_by_setting[0] < 1.33, losses_by_setting


def test_a_student_not_smaller_than_its_teacher_is_refused_unless_asked(teacher):
    """--num-layers 7 with a 6-layer teacher once built a 7-layer 'student' from layers [0, 0, 1, 2, 3, 4, 5]."""
    model, tokenizer = teacher  # 4 layers, hidden 32
    with pytest.raises(RecipeError, match="num_layers is 5 but the teacher has 4 layers; a student is smaller than its teacher"):
        build_student(model, tokenizer, StudentSection(num_layers=5), ModelSection())
    with pytest.raises(RecipeError, match=r"the student \([\d,]+ parameters\) is not smaller than its teacher"):
        build_student(model, tokenizer, StudentSection(num_layers=4), ModelSection())
    with pytest.raises(RecipeError, match="is not smaller than its teacher"):
        build_student(model, tokenizer, StudentSection(num_layers=3, hidden_size=128, intermediate_size=512), ModelSection())
    larger = build_student(model, tokenizer, StudentSection(num_layers=5, allow_larger=True), ModelSection())
    assert larger.model.config.num_hidden_layers == 5
    assert build_student(model, tokenizer, StudentSection(num_layers=3), ModelSection()).model.num_parameters() < model.num_parameters()


@pytest.mark.slow
def test_staged_distillation_trains_a_random_student_without_collapse(tiny_classifier, tiny_csv, tmp_path):
    """Issue 30: the intermediate terms alone first (hidden states and attention under the layer
    map), then the prediction terms alone; a student with random weights still learns the task."""
    loss = {"hidden_weight": 1.0, "attention_weight": 1.0, "hard_weight": 0.5, "soft_weight": 0.5}
    recipe = distill_recipe(
        tmp_path, tiny_classifier, tiny_csv, student={"num_layers": 1, "from_teacher": False}, loss=loss, epochs=6, intermediate_epochs=3,
    ).model_copy(update={"stages": ["distill"]})  # fmt: skip
    (outcome,) = run_recipe(recipe)
    train = outcome.manifest["metrics"]["train"]
    first = train["intermediate_phase"]
    assert first["epochs"] == 3 and {"loss_hidden", "loss_attention"} <= set(first) and "loss_soft" not in first
    assert "loss_hidden" not in train and "loss_soft" in train and train["epochs"] == 6
    assert outcome.manifest["metrics"]["test"]["accuracy"] >= 0.9


def test_relations_compare_token_pairs_whatever_the_width(teacher):
    """MiniLMv2's relation term: L x L relations per relation head, so a 16-wide student is compared
    with a 32-wide teacher; padding positions carry nothing, as keys or as queries."""
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    states = torch.randn(2, 4, 32)
    related = losses.relations(states, 2, mask)
    assert related.shape == (2, 2, 4, 4) and torch.allclose(related.sum(-1), torch.ones(2, 2, 4))
    assert related[0, :, :, 3].abs().max() < 1e-6 and related[1, :, :, 2:].abs().max() < 1e-6
    assert float(losses.relation_kl(states.clone(), states, 2, mask)) == pytest.approx(0.0, abs=1e-6)
    student = torch.randn(2, 4, 16, requires_grad=True)
    loss = losses.relation_kl(student, states, 2, mask)
    loss.backward()
    assert float(loss) > 0.01 and torch.isfinite(student.grad).all()
    assert student.grad[0, 3].abs().sum() == 0 and student.grad[1, 2:].abs().sum() == 0
    moved = states.clone()
    moved[0, 3] += 5.0
    assert float(losses.relation_kl(student, moved, 2, mask)) == pytest.approx(float(loss))
    model, _ = teacher
    with pytest.raises(RecipeError, match="relation_heads is 3, which does not divide the teacher's 32-wide query vectors; .*e.g. 2"):
        relations.check_heads(3, relations.layer_of(model, -1), "teacher")


@pytest.mark.slow
def test_relation_distillation_teaches_a_student_of_another_width_and_head_count(tiny_classifier, tiny_csv, tmp_path):
    """Issue 30, MiniLMv2: a random 16-wide student with 4 heads (the teacher: 32 wide, 2 heads, so
    attention maps cannot be compared) learns the teacher's last-layer relations first, then the task."""
    loss = {"relation_weight": 1.0, "relation_heads": 2, "hard_weight": 0.5, "soft_weight": 0.5}
    student = {"num_layers": 1, "from_teacher": False, "hidden_size": 16, "num_attention_heads": 4, "intermediate_size": 32}
    recipe = distill_recipe(
        tmp_path, tiny_classifier, tiny_csv, student=student, loss=loss, epochs=12, intermediate_epochs=3, logging_steps=10,
    ).model_copy(update={"stages": ["distill"]})  # fmt: skip
    (outcome,) = run_recipe(recipe)
    train = outcome.manifest["metrics"]["train"]
    first = train["intermediate_phase"]
    curve = [value for _, value in first["loss_curve"]]
    assert "loss_relation" in first and "loss_hidden" not in first and "loss_relation" not in train
    assert len(curve) >= 5 and curve[-1] < 0.5 * curve[0]  # the student's last layer learns the teacher's relations
    assert outcome.manifest["metrics"]["test"]["accuracy"] >= 0.9


def test_staged_distillation_needs_both_kinds_of_terms():
    with pytest.raises(RecipeError, match="intermediate_epochs trains the hidden-state, attention and relation terms first, and their weights are 0"):
        validate_recipe({"distill": {"intermediate_epochs": 1}})
    with pytest.raises(RecipeError, match="followed by a phase on the hard and soft labels, and both weights are 0"):
        validate_recipe({"distill": {"intermediate_epochs": 1, "loss": {"hidden_weight": 1, "hard_weight": 0, "soft_weight": 0}}})


def test_an_ensemble_averages_the_teachers_softened_outputs():
    from edgepress.compress.training.ensemble import averaged

    first, second = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 2.0], [0.0, 3.0]])
    mixed = averaged([first, second], temperature=2.0)
    expected = (torch.softmax(first / 2, -1) + torch.softmax(second / 2, -1)) / 2
    assert torch.allclose(torch.softmax(mixed / 2, -1), expected, atol=1e-6)
    assert torch.allclose(torch.softmax(averaged([first], 2.0) / 2, -1), torch.softmax(first / 2, -1), atol=1e-6)  # one teacher: itself


@pytest.mark.slow
def test_distill_from_an_ensemble_caches_each_teacher_once(tiny_classifier, tiny_bert, tiny_csv, tmp_path):
    from safetensors.torch import load_file

    (second,) = run_recipe(tiny_recipe(tmp_path / "second", tiny_bert, tiny_csv, learning_rate=3e-3).model_copy(update={"seed": 7}))
    recipe = distill_recipe(tmp_path, tiny_classifier, tiny_csv, student={"num_layers": 1}, epochs=4, ensemble=[str(second.folder)])
    (outcome,) = run_recipe(recipe.model_copy(update={"stages": ["distill"]}))
    caches = sorted((tmp_path / "runs" / "tiny" / "cache").glob("teacher-*.safetensors"))
    assert len(caches) == 2 and all(load_file(str(c))["logits"].shape == (420, 3) for c in caches)  # one pass per teacher
    assert outcome.manifest["metrics"]["test"]["accuracy"] >= 0.9
    with pytest.raises(RecipeError, match="distill.ensemble"):
        validate_recipe({"distill": {"ensemble": "not-a-list"}})
