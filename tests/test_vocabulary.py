"""Vocabulary trimming: the tokenizer keeps its pieces on training texts, the model its outputs."""

import json
import string
from pathlib import Path

import pytest
import torch
from conftest import SPECIAL
from test_prune import prune_recipe
from typer.testing import CliRunner

from edgepress.cli.app import app
from edgepress.compress.pruning import vocabulary
from edgepress.errors import RecipeError, StageError
from edgepress.running.pipeline import run_recipe

WORDS = ["play", "##ing", "##ed", "##er", "game", "goal", "team", "foot", "##ball", "football", "vote", "party", "un", "##seen"]
TRAIN = ["playing football", "the team played a game", "goal!", "Players vote"]


def wordpiece(folder: Path):
    """A BERT WordPiece tokenizer whose vocabulary has words, subwords and every a-z letter (with and without ##)."""
    from transformers import BertTokenizerFast

    letters = list(string.ascii_lowercase) + ["!", "?"]
    vocab = SPECIAL + WORDS + letters + [f"##{c}" for c in letters] + ["the", "é"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)  # from its vocab.txt


def trimmed(tmp_path: Path, min_count: int = 1):
    tokenizer = wordpiece(tmp_path / "tok")
    plan = vocabulary.plan(tokenizer, vocabulary.token_counts(tokenizer, {"text": TRAIN}), min_count)
    return tokenizer, plan, vocabulary.trimmed_tokenizer(tokenizer, plan.keep)


def test_the_plan_keeps_seen_special_and_single_character_tokens(tmp_path):
    tokenizer, plan, new = trimmed(tmp_path)
    kept = set(new.get_vocab())
    assert set(SPECIAL) <= kept and {"play", "##ing", "football", "team", "##ed", "##er", "##s"} <= kept
    assert {"vote", "a", "##q", "é"} <= kept  # seen, or single characters
    assert not {"foot", "##ball", "party", "un", "##seen"} & kept
    assert plan.before == len(tokenizer) and plan.report(1)["after"] == len(new) == len(plan.keep)
    # ids are renumbered densely, in the old order
    assert sorted(new.get_vocab().values()) == list(range(len(new)))


def test_training_texts_give_the_same_token_strings(tmp_path):
    tokenizer, _, new = trimmed(tmp_path)
    assert vocabulary.check_same_tokens(tokenizer, new, TRAIN) == len(TRAIN)
    for text in TRAIN:
        assert new.tokenize(text) == tokenizer.tokenize(text)
        assert new(text)["input_ids"][0] == new.cls_token_id and new(text)["input_ids"][-1] == new.sep_token_id


def test_unseen_words_are_spelled_in_shorter_pieces_and_unknown_characters_are_unk(tmp_path):
    tokenizer, _, new = trimmed(tmp_path)
    assert tokenizer.tokenize("unseen") == ["un", "##seen"]
    assert new.tokenize("unseen") == ["u", "##n", "##s", "##e", "##e", "##n"]
    assert new.decode(new("unseen")["input_ids"], skip_special_tokens=True) == "unseen"
    # a character the original vocabulary cannot spell is [UNK] in both, and only that word
    assert tokenizer.tokenize("party ж") == ["party", "[UNK]"] and new.tokenize("party ж") == ["p", "##a", "##r", "##t", "##y", "[UNK]"]


def test_min_count_drops_rare_pieces(tmp_path):
    _, plan, new = trimmed(tmp_path, min_count=2)
    assert "football" not in new.get_vocab() and "play" in new.get_vocab()  # 'play' occurs 3 times
    assert plan.report(2)["seen_in_training"] < trimmed(tmp_path / "one")[1].seen
    assert new.tokenize("football") == ["f", "##o", "##o", "##t", "##b", "##a", "##l", "##l"]


def test_the_trimmed_tokenizer_saves_and_reloads_fast_and_slow(tmp_path):
    from transformers import AutoTokenizer, BertTokenizer

    _, _, new = trimmed(tmp_path)
    new.save_pretrained(tmp_path / "out")
    fast = AutoTokenizer.from_pretrained(tmp_path / "out")
    slow = BertTokenizer.from_pretrained(tmp_path / "out")
    for text in TRAIN + ["unseen words"]:
        assert fast(text)["input_ids"] == new(text)["input_ids"] == slow(text)["input_ids"]
    assert json.loads((tmp_path / "out" / "tokenizer.json").read_text())["model"]["vocab"] == new.get_vocab()


def test_sliced_embeddings_keep_the_model_outputs_and_from_pretrained_works(tmp_path):
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    tokenizer, plan, new = trimmed(tmp_path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=2)
    model = BertForSequenceClassification(config).eval()
    before = model(**tokenizer(TRAIN, padding=True, return_tensors="pt")).logits
    vocabulary.slice_embeddings(model, plan.keep)
    after = model(**new(TRAIN, padding=True, return_tensors="pt")).logits
    assert torch.equal(before, after)
    assert model.config.vocab_size == len(new) and model.config.pad_token_id == new.pad_token_id == 0
    model.save_pretrained(tmp_path / "m")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    assert reloaded.get_input_embeddings().weight.shape == (len(new), 32)
    assert torch.equal(reloaded(**new(TRAIN, padding=True, return_tensors="pt")).logits, after)


def test_a_language_model_head_and_a_bpe_tokenizer_are_refused(tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    with pytest.raises(RecipeError, match="language-model head"):
        vocabulary.slice_embeddings(BertForMaskedLM(BertConfig(vocab_size=30, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)), [0, 1])
    bpe = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[])))
    with pytest.raises(RecipeError, match="supports WordPiece.*this one is BPE.*trim to false"):
        vocabulary.plan(bpe, vocabulary.token_counts(bpe, {"text": ["ab"]}))


def test_the_prune_stage_trims_only_the_vocabulary(tmp_path, tiny_classifier, tiny_csv):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result = CliRunner().invoke(app, [
        "prune", "--model", str(tiny_classifier), "--data", str(tiny_csv), "--heads", "0", "--ffn", "0", "--trim-vocabulary",
        "--max-seq-length", "24", "--output-dir", str(tmp_path), "--name", "trim",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = tmp_path / "trim" / "01-prune"
    metrics = json.loads((folder / "edgepress.json").read_text())["metrics"]
    report = metrics["vocabulary"]
    assert metrics["steps"] == [] and metrics["teacher"] is None
    # the tiny vocabulary is word-level: only 'unseen' and [MASK]'s neighbours that no text uses can go
    assert report["after"] == report["before"] - 1 and report["parameters_before"] - report["parameters_after"] == 32
    assert report["training_texts_same_tokens"] == 420 and report["validation_score_after"] == report["validation_score_before"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    assert "unseen" not in tokenizer.get_vocab() and model.config.vocab_size == len(tokenizer) == report["after"]
    assert tokenizer.tokenize("goal unseen") == ["goal", "[UNK]"]


def test_trimming_that_costs_accuracy_fails_the_stage(tmp_path, tiny_classifier, tiny_csv):
    recipe = prune_recipe(tmp_path, tiny_classifier, tiny_csv, heads=0, ffn=0, vocabulary={"trim": True, "min_count": 10**6})
    with pytest.raises(StageError, match=r"vocabulary trimming cost [\d.]+ validation points .*lower prune.vocabulary.min_count"):
        run_recipe(recipe)
    assert not list((tmp_path / "runs").glob("*/01-prune/edgepress.json"))
