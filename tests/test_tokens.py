"""Token classification's pieces: tag alignment, reading predictions back per word, seqeval figures,
the data readers, the distillation losses per token, and the recipe checks of the task."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tagged_sentences, write_conll

from edgepress.compress.training import losses
from edgepress.data.load import load_data
from edgepress.errors import DataError, RecipeError
from edgepress.recipe.loading import validate_recipe
from edgepress.recipe.sections import DataSection
from edgepress.tasks.tagging import IGNORE, encode_labelled, entity_metrics, first_piece_logits, score_words, stack, word_predictions

TOKENS = "token-classification"


@pytest.fixture(scope="module")
def tokenizer(tiny_ner_bert):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_ner_bert)


# --------------------------------------------------------------------------- alignment


def test_a_word_of_two_pieces_is_tagged_on_its_first_piece(tokenizer):
    rows = {"text": [["alice", "met", "londonish"]], "label": [[1, 0, 2]]}
    encoded = encode_labelled(tokenizer, rows, max_length=16)
    pieces = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    assert pieces == ["[CLS]", "alice", "met", "london", "##ish", "[SEP]"]
    assert encoded["labels"][0] == [IGNORE, 1, 0, 2, IGNORE, IGNORE]
    every = encode_labelled(tokenizer, rows, max_length=16, label_all_pieces=True)
    assert every["labels"][0] == [IGNORE, 1, 0, 2, 2, IGNORE]


def test_padding_pads_the_labels_with_the_ignored_label(tokenizer):
    rows = {"text": [["alice"], ["bob", "met", "carol", "in", "rome"]], "label": [[1], [1, 0, 1, 0, 2]]}
    encoded = encode_labelled(tokenizer, rows, max_length=16, padding=True)
    assert [len(x) for x in encoded["labels"]] == [7, 7]
    assert encoded["labels"][0] == [IGNORE, 1] + [IGNORE] * 5


def test_words_past_the_truncation_limit_get_no_logits_and_count_as_outside(tokenizer):
    # 5 pieces fit: [CLS] alice met london [SEP]; "##ish" and the word "w1" are cut
    rows = {"text": [["alice", "met", "londonish", "w1"]], "label": [[1, 0, 2, 0]]}
    encoded = tokenizer(rows["text"], is_split_into_words=True, truncation=True, max_length=5)
    assert encoded.word_ids(0) == [None, 0, 1, 2, None]
    logits = np.zeros((1, 5, 3), dtype=np.float32)
    logits[0, 1, 1] = logits[0, 2, 0] = logits[0, 3, 2] = 5.0
    (words,) = first_piece_logits(encoded, logits, [4])
    assert np.isnan(words[3]).all() and not np.isnan(words[:3]).any()  # the cut-off word, and only it
    predicted = word_predictions(stack([words]))
    assert predicted.tolist() == [[1, 0, 2, -1]]  # "londonish" kept its first piece, so its tag
    names = ["O", "B-PER", "B-LOC"]
    assert score_words([[1, 0, 2, 2]], predicted, names)["recall"] == pytest.approx(2 / 3)  # the cut B-LOC is missed


def test_stack_pads_sentences_of_different_lengths_with_nan():
    stacked = stack([np.ones((2, 3)), np.ones((4, 3))])
    assert stacked.shape == (2, 4, 3) and np.isnan(stacked[0, 2:]).all() and not np.isnan(stacked[1]).any()
    assert word_predictions(stacked)[0].tolist() == [0, 0, -1, -1]


# --------------------------------------------------------------------------- metrics


def test_entity_figures_match_a_hand_count():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "O"]]
    predicted = [["B-PER", "I-PER", "O", "O"], ["B-LOC", "B-PER"]]
    # entities: true PER, LOC, LOC; predicted PER (right), LOC (right), PER (wrong) -> 2 of 3 each way
    figures = entity_metrics(true, predicted)
    assert figures["precision"] == pytest.approx(2 / 3) and figures["recall"] == pytest.approx(2 / 3)
    assert figures["f1"] == pytest.approx(2 / 3) and figures["accuracy"] == pytest.approx(4 / 6)


def test_strict_matching_refuses_an_entity_that_starts_with_i():
    true, predicted = [["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]]
    assert entity_metrics(true, predicted, strict=True)["f1"] == 0.0
    assert entity_metrics(true, predicted, strict=False)["f1"] == 1.0  # conlleval reads I- after O as a start


# --------------------------------------------------------------------------- losses


def test_token_losses_skip_padding_and_ignored_labels():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    kl = losses.soft_kl(student, teacher, 2.0, mask)
    changed = student.clone()
    changed[0, 3] += 10
    changed[1, 2:] -= 10  # padding positions only
    assert losses.soft_kl(changed, teacher, 2.0, mask) == pytest.approx(float(kl))
    assert float(kl) > 0
    labels = torch.tensor([[0, IGNORE, 2, IGNORE], [1, 1, IGNORE, IGNORE]])
    ce = losses.hard_ce(student, labels)
    assert losses.hard_ce(changed, labels) == pytest.approx(float(ce))
    picked = torch.nn.functional.cross_entropy(student[labels != IGNORE], labels[labels != IGNORE])
    assert float(ce) == pytest.approx(float(picked))


# --------------------------------------------------------------------------- data


def test_conll_folder_keeps_sentences_and_sorts_tags(tmp_path):
    for name, count, seed in (("train", 30, 0), ("dev", 6, 1), ("test", 6, 2)):
        write_conll(tmp_path / f"{name}.conll", tagged_sentences(count, seed))
    data = load_data(DataSection(source=str(tmp_path)), TOKENS)
    assert data.tokens and data.labels == ["B-LOC", "B-PER", "I-PER", "O"]
    assert (len(data.train), len(data.validation), len(data.test)) == (30, 6, 6)
    first = tagged_sentences(30, 0)[0]
    assert data.train[0]["text"] == first["tokens"] and [data.labels[i] for i in data.train[0]["label"]] == first["tags"]


def test_a_folder_of_conll_files_named_txt_reads_with_data_format(tmp_path):
    """Public NER corpora often ship train.txt/dev.txt/test.txt; they once went to the Hub loader as plain text."""
    for name, count, seed in (("train", 30, 0), ("dev", 6, 1), ("test", 6, 2)):
        write_conll(tmp_path / f"{name}.txt", tagged_sentences(count, seed))
    data = load_data(DataSection(source=str(tmp_path), format="conll"), TOKENS)
    assert (len(data.train), len(data.validation), len(data.test)) == (30, 6, 6)
    assert data.labels == ["B-LOC", "B-PER", "I-PER", "O"]
    with pytest.raises(DataError, match=r"cannot tell the format of .*train.txt from its extension; set data.format \(e.g. conll"):
        load_data(DataSection(source=str(tmp_path)), TOKENS)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="has no train file to read as conll"):
        load_data(DataSection(source=str(empty), format="conll"), TOKENS)


def test_conll_by_format_setting_and_lenient_matching(tmp_path):
    path = write_conll(tmp_path / "train.txt", tagged_sentences(20, 0))
    data = load_data(DataSection(source=str(path), format="conll", entity_matching="lenient"), TOKENS)
    assert len(data.train) + len(data.validation) + len(data.test) == 20 and not data.strict_entities
    assert load_data(DataSection(source=str(write_conll(tmp_path / "t.bio", tagged_sentences(20, 0)))), TOKENS).strict_entities


def test_conll_2003_columns_and_docstart(tmp_path):
    text = "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\n" * 4
    path = tmp_path / "train.conll"
    path.write_text(text)
    data = load_data(DataSection(source=str(path)), TOKENS)  # the tag is the last column by default
    assert set(data.labels) == {"B-ORG", "B-PER", "I-PER", "O"}
    chunks = load_data(DataSection(source=str(path), conll_tag_column=2), TOKENS)
    assert set(chunks.labels) == {"B-NP", "B-VP", "I-NP"}


def test_jsonl_and_parquet_rows_with_token_and_tag_lists(tmp_path):
    import pandas as pd

    rows = tagged_sentences(40, 3)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from_jsonl = load_data(DataSection(source=str(tmp_path / "train.jsonl")), TOKENS)
    renamed = [{"words": r["tokens"], "ner": r["tags"]} for r in rows]
    pd.DataFrame(renamed).to_parquet(tmp_path / "train.parquet")
    section = DataSection(source=str(tmp_path / "train.parquet"), tokens_column="words", tags_column="ner")
    from_parquet = load_data(section, TOKENS)
    assert from_jsonl.fingerprint == from_parquet.fingerprint  # the same sentences, split the same way


def test_hub_style_dataset_keeps_the_classlabel_order(tmp_path):
    import datasets

    names = ["O", "B-PER", "I-PER", "B-LOC"]  # not sorted: the dataset's own ids
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")), "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    rows = tagged_sentences(40, 4)
    folder = tmp_path / "hub-folder"
    for split, part in (("train", rows[:24]), ("validation", rows[24:32]), ("test", rows[32:])):
        ds = datasets.Dataset.from_dict({"tokens": [r["tokens"] for r in part], "ner_tags": [[names.index(t) for t in r["tags"]] for r in part]}, features=features)
        (folder / "data").mkdir(parents=True, exist_ok=True)
        ds.to_parquet(folder / "data" / f"{split}-00000-of-00001.parquet")
    data = load_data(DataSection(source=str(folder)), TOKENS)
    assert data.labels == names
    assert [names[i] for i in data.train[0]["label"]] == rows[0]["tags"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("alice\tB-PER\nmet\n", "line 2 has 1 column(s)"),
        ("alice\tB-PER\nbob\tPERSON\n", "line 2 has the tag 'PERSON', which is not O, B-<type> or I-<type>"),
        ("-DOCSTART- -X- -X- O\n\n", "has no sentences"),
    ],
)
def test_bad_conll_files_name_the_line(tmp_path, content, message):
    path = tmp_path / "bad.conll"
    path.write_text(content)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_data(DataSection(source=str(path)), TOKENS)


@pytest.mark.parametrize(
    "record, message",
    [
        ({"tokens": ["a", "b"], "tags": ["O"]}, "data row 2 has 2 tokens but 1 tags"),
        ({"tokens": "a b", "tags": ["O", "O"]}, "data row 2: the tokens are a str, not a list"),
        ({"tokens": ["a", " "], "tags": ["O", "O"]}, "data row 2: token 2 is empty"),
        ({"tokens": [], "tags": []}, "data row 2 has no tokens"),
        ({"words": ["a"], "tags": ["O"]}, "data row 2 has no tokens; each row needs a list of tokens"),
    ],
)
def test_bad_jsonl_rows_name_the_row(tmp_path, record, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"tokens": ["alice", "met"], "tags": ["B-PER", "O"]}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError, match=message):
        load_data(DataSection(source=str(path)), TOKENS)


def test_a_file_without_the_tokens_column_names_the_setting(tmp_path):
    path = tmp_path / "words.jsonl"
    path.write_text(json.dumps({"words": ["alice", "met"], "tags": ["B-PER", "O"]}) + "\n")
    with pytest.raises(DataError, match="has no column 'tokens' for the tokens; its columns are 'words', 'tags'; set data.tokens_column"):
        load_data(DataSection(source=str(path)), TOKENS)


def test_a_validation_tag_the_training_data_lacks_names_its_line(tmp_path):
    write_conll(tmp_path / "train.conll", tagged_sentences(20, 0))
    (tmp_path / "dev.conll").write_text("\n\nalice\tB-PER\nacme\tB-ORG\n")
    with pytest.raises(DataError, match=r"dev.conll: line 4 has the tag 'B-ORG', which the training data never has"):
        load_data(DataSection(source=str(tmp_path)), TOKENS)


def test_token_data_needs_the_task_and_the_task_needs_token_data(tmp_path, tiny_csv):
    conll = write_conll(tmp_path / "train.conll", tagged_sentences(20, 0))
    with pytest.raises(DataError, match="set task: token-classification"):
        load_data(DataSection(source=str(conll)))
    with pytest.raises(DataError, match="token classification reads CoNLL"):
        load_data(DataSection(source=str(tiny_csv)), TOKENS)
    with pytest.raises(DataError, match="text-classification corpus"):
        load_data(DataSection(source="builtin:bbc-news"), TOKENS)


# --------------------------------------------------------------------------- recipe


def test_the_token_task_selects_by_entity_f1_unless_told_otherwise():
    recipe = validate_recipe({"task": TOKENS, "prune": {"metric_for_best_model": "accuracy"}})
    assert (recipe.finetune.metric_for_best_model, recipe.distill.metric_for_best_model) == ("f1", "f1")
    assert recipe.prune.metric_for_best_model == "accuracy"
    assert validate_recipe({}).finetune.metric_for_best_model == "accuracy"


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"task": TOKENS, "finetune": {"metric_for_best_model": "f1_macro"}}, "finetune.metric_for_best_model: f1_macro is for text classification"),
        ({"finetune": {"metric_for_best_model": "f1"}}, "f1 is an entity metric of token classification"),
        ({"task": TOKENS, "distill": {"augment": {"factor": 1, "swap": 0.2}}}, "distill.augment.swap edits plain texts and would lose the word tags"),
        ({"distill": {"augment": {"factor": 1, "shuffle": 0.2}}}, "distill.augment.shuffle edits tagged sentences"),
        ({"task": TOKENS, "export": {"with_tokenizer": True}}, "export.with_tokenizer builds a text-in, label-out model"),
        ({"task": "ner"}, "task: Input should be 'text-classification' or 'token-classification'"),
    ],
)
def test_options_the_task_cannot_honour_are_refused(raw, message):
    with pytest.raises(RecipeError, match=message):
        validate_recipe(raw)


def test_search_objectives_and_limits_must_be_the_tasks_metrics(tmp_path):
    from edgepress.search.command import run_search

    recipe = tmp_path / "ner-search.yaml"
    recipe.write_text(f"task: {TOKENS}\noutput_dir: {tmp_path}\nsearch:\n  objectives: [f1_macro]\n  space:\n    prune.heads: [0.25, 0.5]\n")
    with pytest.raises(RecipeError, match="search f1_macro does not apply to task: token-classification; use f1"):
        run_search(recipe, [], None, None, None)
    recipe.write_text(f"output_dir: {tmp_path}\nsearch:\n  objectives: [accuracy]\n  min_f1: 0.5\n  space:\n    prune.heads: [0.25, 0.5]\n")
    with pytest.raises(RecipeError, match="search min_f1 does not apply to task: text-classification"):
        run_search(recipe, [], None, None, None)


@pytest.mark.slow
def test_search_tunes_a_token_classifier_on_entity_f1(tmp_path, tiny_ner_bert, tiny_conll):
    """Issue 30: edgepress search for token classification, entity F1 as the objective and the limit."""
    import yaml

    from edgepress.search.command import run_search

    recipe = {
        "name": "ner-search", "task": TOKENS, "output_dir": str(tmp_path / "runs"), "stages": ["finetune"],
        "model": {"name_or_path": str(tiny_ner_bert)}, "data": {"source": str(tiny_conll)},
        "finetune": {"epochs": 4, "batch_size": 16, "max_seq_length": 24, "logging_steps": 50},
        "search": {"objectives": ["f1", "size_mb"], "min_f1": 0.5, "sampler": "grid",
                   "space": {"finetune.learning_rate": [2e-3, 1e-7]}},
    }  # fmt: skip
    path = tmp_path / "ner-search.yaml"
    path.write_text(yaml.safe_dump(recipe))
    best = run_search(path, [], None, None, None)
    report = json.loads((tmp_path / "runs" / "ner-search" / "search.json").read_text())
    values = {t["params"]["finetune.learning_rate"]: t["values"] for t in report["trials"]}
    assert values[2e-3]["f1"] >= 0.8 and values[1e-7]["f1"] < 0.5  # a learning rate that learns nothing misses the floor
    assert [t["feasible"] for t in report["trials"] if t["params"]["finetune.learning_rate"] == 1e-7] == [False]
    assert report["limits"] == {"min_f1": 0.5} and report["front"][0]["test"]["f1"] >= 0.8
    assert yaml.safe_load(best.read_text())["finetune"]["learning_rate"] == 2e-3
