"""Issue 30: transfer-set augmentation for token classification (Dai & Adel's four operations),
on hand-made sentences."""

import random

import pytest
from conftest import require_system_tool

from edgepress.compress.training import augment_tokens
from edgepress.compress.training.augment_tokens import Segment, Vocabulary, augment_sentences, perturb_sentence, segments
from edgepress.recipe.training import AugmentSection

WORDS = ["yesterday", "alice", "smith", "met", "bob", "in", "new", "york"]
TAGS = ["O", "B-PER", "I-PER", "O", "B-PER", "O", "B-LOC", "I-LOC"]
OFF = {"token_replacement": 0.0, "mention_replacement": 0.0, "shuffle": 0.0, "synonym": 0.0}


def test_segments_are_mentions_and_runs_of_outside_words():
    assert segments(TAGS) == [
        Segment(0, 1, None), Segment(1, 3, "PER"), Segment(3, 4, None), Segment(4, 5, "PER"), Segment(5, 6, None), Segment(6, 8, "LOC"),
    ]  # fmt: skip
    # B-X after I-X starts a new mention; a stray I-X starts one too (lenient IOB)
    assert segments(["B-PER", "I-PER", "B-PER", "O", "I-LOC"]) == [Segment(0, 2, "PER"), Segment(2, 3, "PER"), Segment(3, 4, None), Segment(4, 5, "LOC")]


def test_a_replaced_mention_keeps_its_type_and_a_well_formed_bio_span():
    vocabulary = Vocabulary({}, {"PER": [("carol",)], "LOC": [("rio", "de", "janeiro")]})
    cfg = AugmentSection(factor=1, **{**OFF, "mention_replacement": 1.0})
    words, tags = perturb_sentence(list(WORDS), list(TAGS), cfg, random.Random(0), vocabulary, {})
    assert words == ["yesterday", "carol", "met", "carol", "in", "rio", "de", "janeiro"]
    assert tags == ["O", "B-PER", "O", "B-PER", "O", "B-LOC", "I-LOC", "I-LOC"]
    assert [s.kind for s in segments(tags)] == [s.kind for s in segments(TAGS)]  # the same mentions, in order


def test_shuffling_never_crosses_an_entity_boundary():
    cfg = AugmentSection(factor=1, **{**OFF, "shuffle": 1.0})
    words = ["the", "old", "man", "alice", "mary", "smith", "went", "to", "rio", "de", "janeiro"]
    tags = ["O", "O", "O", "B-PER", "I-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "I-LOC"]
    changed = 0
    for seed in range(30):
        out, out_tags = perturb_sentence(list(words), list(tags), cfg, random.Random(seed), Vocabulary({}, {}), {})
        assert out_tags == tags
        for seg in segments(tags):
            assert sorted(out[seg.start : seg.end]) == sorted(words[seg.start : seg.end])
        changed += out != words
    assert changed >= 20  # it does shuffle


def test_label_wise_token_replacement_draws_words_of_the_same_tag():
    vocabulary = Vocabulary.of([WORDS, ["today", "carol", "jones", "saw", "rome"]], [TAGS, ["O", "B-PER", "I-PER", "O", "B-LOC"]])
    assert vocabulary.words_by_tag["I-PER"] == ["jones", "smith"] and ("new", "york") in vocabulary.mentions_by_type["LOC"]
    cfg = AugmentSection(factor=1, **{**OFF, "token_replacement": 1.0})
    words, tags = perturb_sentence(list(WORDS), list(TAGS), cfg, random.Random(1), vocabulary, {})
    assert tags == TAGS and words != WORDS
    assert all(word in vocabulary.words_by_tag[tag] for word, tag in zip(words, tags))


def test_augmentation_is_seeded_and_makes_factor_copies():
    cfg = AugmentSection(factor=3, synonym=0.0)
    sentences, tags = [WORDS, ["carol", "slept"]], [TAGS, ["B-PER", "O"]]
    first = augment_sentences(sentences, tags, cfg, seed=5)
    assert first == augment_sentences(sentences, tags, cfg, seed=5)
    new_words, new_tags, origins = first
    assert origins == [0, 1] * 3 and all(len(w) == len(t) for w, t in zip(new_words, new_tags))


def test_synonyms_keep_the_tag_when_wordnet_is_installed():
    require_system_tool(augment_tokens.wordnet_synonyms() != {}, "WordNet data", "wordnet-base")
    cfg = AugmentSection(factor=1, **{**OFF, "synonym": 1.0})
    words, tags = perturb_sentence(["the", "car", "stopped"], ["O", "O", "O"], cfg, random.Random(0), Vocabulary({}, {}), augment_tokens.wordnet_synonyms())
    assert tags == ["O", "O", "O"] and words[1] != "car" and words[1] in augment_tokens.wordnet_synonyms()["car"]


@pytest.mark.parametrize("field", ["deletion", "swap", "insertion"])
def test_text_edits_are_refused_for_token_classification(field):
    from edgepress.errors import RecipeError
    from edgepress.recipe.loading import validate_recipe

    with pytest.raises(RecipeError, match=f"distill.augment.{field} edits plain texts"):
        validate_recipe({"task": "token-classification", "distill": {"augment": {"factor": 1, field: 0.2}}})
    accepted = validate_recipe({"task": "token-classification", "distill": {"augment": {"factor": 1}}})
    assert accepted.distill.augment.factor == 1
    assert validate_recipe(accepted.model_dump(mode="json")) == accepted  # a resolved recipe lists every default: still valid


@pytest.mark.slow
def test_token_distillation_trains_on_augmented_sentences(tiny_ner_bert, tiny_conll, tmp_path):
    from conftest import tiny_recipe

    from edgepress.compress.training import distill
    from edgepress.recipe.loading import validate_recipe
    from edgepress.running.pipeline import run_recipe

    recipe = tiny_recipe(tmp_path, tiny_ner_bert, tiny_conll, epochs=6).model_dump(mode="json")
    recipe["task"] = "token-classification"
    recipe["stages"] = ["finetune", "distill"]
    recipe["data"]["max_train_samples"] = 80
    augment = {"factor": 2, "synonym": 0.0}
    recipe["distill"] = {"epochs": 4, "batch_size": 8, "learning_rate": 2e-3, "max_seq_length": 24, "student": {"num_layers": 1}, "augment": augment}
    _, student = run_recipe(validate_recipe(recipe))
    metrics = student.manifest["metrics"]
    assert metrics["student"]["transfer_set_size"] == 240 and metrics["test"]["f1"] >= 0.8
    # the copies' tags: ignored (the teacher's outputs are their targets), or the edits' own with labels: source
    train = {"text": [WORDS], "label": [[0, 1, 2, 0, 1, 0, 3, 4]]}
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    rows = distill.transfer_set(train, AugmentSection(factor=1, synonym=0.0), 0, names)
    assert rows["label"][1] == [-100] * len(rows["text"][1])
    rows = distill.transfer_set(train, AugmentSection(factor=1, synonym=0.0, labels="source", mention_replacement=1.0), 0, names)
    tags = [names[t] for t in rows["label"][1]]
    assert len(tags) == len(rows["text"][1]) and [g.kind for g in segments(tags)] == [g.kind for g in segments(TAGS)]
