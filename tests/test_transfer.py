"""Issue 30: unlabelled transfer text for distillation (``distill.transfer``)."""

import dataclasses
import json

import pytest
from conftest import synthetic_rows, tagged_sentences, tiny_recipe, write_rows
from safetensors.torch import load_file

from edgepress.data.unlabelled import fingerprint, read_unlabelled, select
from edgepress.errors import DataError
from edgepress.recipe.loading import validate_recipe
from edgepress.running.pipeline import run_recipe


def test_select_drops_evaluation_texts_and_repeats_then_samples_to_the_limit():
    texts = ["A good film", "a  GOOD film", "the test text", "fresh one", "fresh two", "fresh three"]
    kept, counts = select(texts, exclude=["The test text"], limit=2, seed=0)
    assert counts == {"read": 6, "evaluation_or_train": 1, "repeated": 1, "over_limit": 2, "kept": 2}
    assert len(kept) == 2 and set(kept) <= {"A good film", "fresh one", "fresh two", "fresh three"}
    assert select(texts, ["The test text"], 2, seed=0)[0] == kept  # seeded
    words, counts = select([["alice", "met"], ["Alice", "met"], ["bob"]], exclude=[["bob"]], limit=10, seed=0)
    assert words == [["alice", "met"]] and counts["repeated"] == 1 and counts["evaluation_or_train"] == 1


def test_sources_are_text_files_tables_folders_and_dataset_folders(tmp_path):
    lines = tmp_path / "texts.txt"
    lines.write_text("first text\n\nsecond text here\n", encoding="utf-8")
    assert read_unlabelled(str(lines), "text", words=False)[0] == ["first text", "second text here"]
    assert read_unlabelled(str(lines), "text", words=True)[0] == [["first", "text"], ["second", "text", "here"]]
    table = write_rows(tmp_path / "folder" / "more.jsonl", [{"body": "third text", "tokens": ["a", "b"]}])
    write_rows(tmp_path / "folder" / "rest.csv", [{"body": "fourth text"}])
    assert read_unlabelled(str(table.parent), "body", words=False)[0] == ["third text", "fourth text"]
    assert read_unlabelled(str(table), "tokens", words=True)[0] == [["a", "b"]]  # a list column is the words
    # a dataset-repo folder (data files in a subfolder) goes through datasets.load_dataset, as a Hub id does
    repo = tmp_path / "repo"
    write_rows(repo / "data" / "train.parquet", [{"sentence": "from the hub"}, {"sentence": "and more"}])
    assert read_unlabelled(str(repo), "sentence", words=False, split="train")[0] == ["from the hub", "and more"]
    with pytest.raises(DataError, match=r"could not load unlabelled text .*\(split test\)"):
        read_unlabelled(str(repo), "sentence", words=False, split="test")
    before = fingerprint(str(lines))
    lines.write_text("first text, edited\n", encoding="utf-8")
    assert fingerprint(str(lines)) != before  # a changed file re-runs the distill stage


def _teacher_rows(run_folder) -> int:
    (cache,) = (run_folder / "cache").glob("teacher-*.safetensors")
    return load_file(str(cache))["logits"].shape[0]


@pytest.mark.slow
def test_distill_adds_transfer_text_and_left_out_training_rows(tiny_classifier, tiny_csv, tmp_path):
    recipe = tiny_recipe(tmp_path, tiny_classifier, tiny_csv).model_dump(mode="json")
    fresh = [r["text"] for r in synthetic_rows(80, seed=9)]
    # 80 new texts, 10 of them twice
    (tmp_path / "unlabelled.txt").write_text("\n".join(fresh + fresh[:10]) + "\n", encoding="utf-8")
    recipe["data"]["max_train_samples"] = 60
    recipe["stages"] = ["distill"]
    transfer = {"source": str(tmp_path / "unlabelled.txt"), "unused_train": True}
    recipe["distill"] = {"epochs": 4, "batch_size": 16, "learning_rate": 2e-3, "max_seq_length": 24, "student": {"num_layers": 1}, "transfer": transfer}
    (student,) = run_recipe(validate_recipe(recipe))
    metrics = student.manifest["metrics"]
    stats = metrics["transfer"]
    left_out = 600 - 90 - 90 - 60  # test and validation (15% each) split off first, then 60 of the other 420 kept
    assert stats["read"] == 90 + left_out and stats["repeated"] >= 10 and stats["kept"] <= 80 + left_out
    assert stats["kept"] + stats["repeated"] + stats["evaluation_or_train"] == stats["read"]
    assert metrics["student"]["transfer_set_size"] == 60 + stats["kept"]
    assert _teacher_rows(tmp_path / "runs" / "tiny") == 60 + stats["kept"]  # the teacher labelled each transfer text once
    assert metrics["test"]["accuracy"] >= 0.9


def test_evaluation_texts_in_the_transfer_source_are_dropped(tiny_classifier, tiny_csv, tmp_path):
    from edgepress.data.load import load_data

    recipe = tiny_recipe(tmp_path, tiny_classifier, tiny_csv).model_dump(mode="json")
    data = load_data(validate_recipe(recipe).data)
    evaluation = list(data.validation["text"]) + list(data.test["text"])
    (tmp_path / "leak.txt").write_text("\n".join(evaluation + ["w1 goal brand new"]) + "\n", encoding="utf-8")
    recipe["stages"] = ["distill"]
    recipe["distill"] = {"epochs": 1, "max_seq_length": 24, "student": {"num_layers": 1}, "transfer": {"source": str(tmp_path / "leak.txt")}}
    (outcome,) = run_recipe(validate_recipe(recipe))
    stats = outcome.manifest["metrics"]["transfer"]
    assert stats["kept"] == 1 and stats["evaluation_or_train"] == len(evaluation)  # every copy of an evaluation text


@pytest.mark.slow
def test_token_distillation_learns_from_unlabelled_sentences(tiny_ner_bert, tiny_conll, tmp_path):
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(" ".join(s["tokens"]) for s in tagged_sentences(120, seed=7)) + "\n", encoding="utf-8")
    recipe = tiny_recipe(tmp_path, tiny_ner_bert, tiny_conll, epochs=6).model_dump(mode="json")
    recipe["task"] = "token-classification"
    recipe["data"]["max_train_samples"] = 40
    recipe["stages"] = ["finetune", "distill"]
    transfer = {"source": str(sentences), "max_texts": 100}
    recipe["distill"] = {"epochs": 6, "batch_size": 8, "learning_rate": 2e-3, "max_seq_length": 24, "student": {"num_layers": 1}, "transfer": transfer}
    _, student = run_recipe(validate_recipe(recipe))
    metrics = student.manifest["metrics"]
    assert metrics["transfer"]["kept"] == 100 and metrics["student"]["transfer_set_size"] == 140
    losses = [loss for _, loss in metrics["train"]["loss_curve"]]  # [step, loss] per logging step
    assert losses and all(loss == loss for loss in losses)  # no NaN from batches of untagged sentences
    assert metrics["test"]["f1"] >= 0.8
    assert json.loads((student.folder / "config.json").read_text())["num_hidden_layers"] == 1


@pytest.mark.slow
def test_prune_recoveries_train_on_transfer_text_too(tiny_classifier, tiny_csv, tmp_path):
    fresh = [r["text"] for r in synthetic_rows(50, seed=11)]
    (tmp_path / "more.txt").write_text("\n".join(fresh) + "\n", encoding="utf-8")
    recipe = tiny_recipe(tmp_path, tiny_classifier, tiny_csv).model_dump(mode="json")
    recipe["stages"] = ["prune"]
    recipe["prune"] = {"heads": 0.5, "ffn": 0.5, "steps": 1, "epochs": 1, "max_seq_length": 24, "teacher": "input",
                       "transfer": {"source": str(tmp_path / "more.txt")}}  # fmt: skip
    (outcome,) = run_recipe(validate_recipe(recipe))
    stats = outcome.manifest["metrics"]["steps"][0]["transfer"]
    assert stats["read"] == 50 and stats["kept"] + stats["repeated"] + stats["evaluation_or_train"] == 50
    assert _teacher_rows(tmp_path / "runs" / "tiny") == 420 + stats["kept"]  # the recovery teacher labelled them once
    missing = recipe | {"prune": recipe["prune"] | {"transfer": {"source": str(tmp_path / "none.txt")}}, "name": "missing"}
    with pytest.raises(DataError, match="check prune.transfer.source"):
        run_recipe(validate_recipe(missing))


def test_sentence_pairs_take_left_out_rows_and_refuse_a_source_of_single_texts():
    import datasets

    from edgepress.compress.training.transfer import add_transfer
    from edgepress.data.load import SplitData
    from edgepress.errors import StageError
    from edgepress.recipe.training import TransferSection

    split = lambda texts, pairs: datasets.Dataset.from_dict({"text": texts, "text_pair": pairs, "label": [0] * len(texts)})  # noqa: E731
    data = SplitData(
        train=split(["a b"], ["c"]), validation=split(["dev one"], ["dev two"]), test=split(["t"], ["u"]), labels=["x", "y"],
        fingerprint="f", left_out={"text": ["a", "dev one", "new", "new"], "text_pair": ["b c", "dev two", "pair", "pair"]},
    )  # fmt: skip
    rows = {"text": ["a b"], "text_pair": ["c"], "label": [0]}
    extended, stats = add_transfer(rows, TransferSection(unused_train=True), data, seed=0)
    # ("a", "b c") is not ("a b", "c"); the validation pair and the repeat are dropped
    assert extended["text"] == ["a b", "a", "new"] and extended["text_pair"] == ["c", "b c", "pair"] and extended["label"] == [0, -1, -1]
    assert stats["evaluation_or_train"] == 1 and stats["repeated"] == 1
    with pytest.raises(StageError, match="distill.transfer.source holds single texts, and this data's examples are sentence pairs"):
        add_transfer(rows, TransferSection(source="x.txt"), data, seed=0)
    # a recipe with unused_train on data that max_train_samples does not cut runs as without it
    whole = dataclasses.replace(data, left_out={})
    assert add_transfer(rows, TransferSection(unused_train=True), whole, seed=0) == (rows, {"sources": [], "read": 0, "kept": 0})
