"""Issue 34: the adapt stage (masked-language-model training on unlabelled text before finetune)."""

import json
import math

import pytest
from conftest import build_tiny_bert, synthetic_rows, tagged_sentences, write_conll, write_rows

from edgepress.recipe.loading import validate_recipe
from edgepress.running.pipeline import run_recipe


def _recipe(tmp_path, model, data, stages, task="text-classification", **adapt):
    short = {"learning_rate": 2e-3, "max_seq_length": 24, "logging_steps": 5}
    return validate_recipe({
        "name": "tiny", "output_dir": str(tmp_path / "runs"), "stages": stages, "task": task,
        "model": {"name_or_path": str(model)}, "data": {"source": str(data)},
        "adapt": {**short, "epochs": 3, **adapt}, "finetune": {**short, "epochs": 6, "batch_size": 16},
    })  # fmt: skip


@pytest.mark.slow
def test_adapt_trains_a_new_tied_head_lowers_perplexity_and_feeds_finetune(tmp_path):
    from transformers import AutoModelForMaskedLM

    model = build_tiny_bert(tmp_path / "encoder")  # an encoder alone, like all-MiniLM-L6-v2: no MLM head
    data = write_rows(tmp_path / "topics.csv", synthetic_rows(300))
    domain = [r["text"] for r in synthetic_rows(1500, seed=7)]
    from edgepress.data.load import load_data

    evaluation_text = load_data(_recipe(tmp_path, model, data, ["finetune"]).data).test["text"][0]
    (tmp_path / "domain.txt").write_text("\n".join([*domain, evaluation_text]) + "\n")

    adapt, finetune = run_recipe(_recipe(tmp_path, model, data, ["adapt", "finetune"], source=str(tmp_path / "domain.txt")))

    metrics = adapt.manifest["metrics"]
    assert metrics["new_mlm_head"] is True
    assert metrics["perplexity"] < 0.9 * metrics["perplexity_before"], metrics
    texts = metrics["texts"]
    assert texts["evaluation_or_train"] >= 1  # the test text in the source never reaches the MLM
    assert texts["train"] + texts["held_out"] == texts["training_texts"] + texts["kept"]
    assert texts["held_out"] == round(0.05 * (texts["train"] + texts["held_out"]))
    masked_lm = AutoModelForMaskedLM.from_pretrained(adapt.folder)
    assert type(masked_lm).__name__ == "BertForMaskedLM"
    assert masked_lm.get_output_embeddings().weight.data_ptr() == masked_lm.get_input_embeddings().weight.data_ptr()
    assert finetune.manifest["input_model"] == str(adapt.folder)  # finetune starts from the adapted encoder
    assert finetune.manifest["metrics"]["test"]["accuracy"] > 0.5
    curves = json.loads((adapt.folder / "curves.json").read_text())["runs"]["adapt"]
    assert curves["steps"] and all("loss" in p and "learning_rate" in p for p in curves["steps"])
    assert [e["epoch"] for e in curves["epochs"]] == [1, 2, 3] and all("loss" in e["validation"] for e in curves["epochs"])
    first = curves["evaluations"][0]  # the held-out loss before training, as the manifest's perplexity_before
    assert first["step"] == 0 and math.exp(first["loss"]) == pytest.approx(metrics["perplexity_before"], rel=1e-3)
    assert len(curves["evaluations"]) == 4  # before, then once per epoch


def _tokenizer(tmp_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(build_tiny_bert(tmp_path / "wwm", extra_words=("london", "##ish", "alice", "met")))


@pytest.mark.parametrize("whole_words", [True, False])
def test_whole_word_masking_masks_every_piece_of_a_word(tmp_path, whole_words):
    from edgepress.compress.training.adapt import _Collator, encode, mlm_collator
    from edgepress.recipe.training import AdaptSection

    tokenizer = _tokenizer(tmp_path)
    rows = encode(["alice met londonish"] * 300, tokenizer, 16, words=False)
    london, ish = tokenizer.convert_tokens_to_ids(["london", "##ish"])
    position = rows[0]["input_ids"].index(london)
    assert rows[0]["input_ids"][position + 1] == ish  # one word of two pieces
    cfg = AdaptSection(mlm_probability=0.4, whole_word_masking=whole_words)
    batch = _Collator(mlm_collator(tokenizer, cfg, seed=0))([rows[i] for i in range(len(rows))])
    targets = batch["labels"][:, position : position + 2] != -100
    together = (targets[:, 0] == targets[:, 1]).all().item()
    assert targets.any()
    assert together == whole_words  # without whole-word masking some rows mask one piece alone


def test_whole_word_masking_on_pre_split_words(tmp_path):
    from edgepress.compress.training.adapt import _Collator, encode, mlm_collator
    from edgepress.recipe.training import AdaptSection

    tokenizer = _tokenizer(tmp_path)
    rows = encode([["alice", "met", "londonish"]] * 200, tokenizer, 16, words=True)
    london = tokenizer.convert_tokens_to_ids("london")
    position = rows[0]["input_ids"].index(london)
    batch = _Collator(mlm_collator(tokenizer, AdaptSection(mlm_probability=0.4, whole_word_masking=True), seed=1))([rows[i] for i in range(200)])
    targets = batch["labels"][:, position : position + 2] != -100
    assert targets.any() and (targets[:, 0] == targets[:, 1]).all()
    # "alice" and "met" are words of their own: masked apart from each other
    assert ((batch["labels"][:, 1] != -100) != (batch["labels"][:, 2] != -100)).any()


def test_held_out_texts_are_masked_once(tmp_path):
    from edgepress.compress.training.adapt import encode, hold_out, mask_once, mlm_collator
    from edgepress.recipe.training import AdaptSection

    texts = [r["text"] for r in synthetic_rows(400, seed=3)]
    train, held = hold_out(texts, 0.1, 1000, seed=0)
    assert len(held) == 40 and not set(train) & set(held) and sorted(train + held) == sorted(texts)
    assert len(hold_out(texts, 0.1, 25, seed=0)[1]) == 25  # max_validation_texts caps it
    tokenizer = _tokenizer(tmp_path)
    first, second = (mask_once(encode(held, tokenizer, 24, words=False), mlm_collator(tokenizer, AdaptSection(), seed=0)) for _ in range(2))
    assert first["labels"] == second["labels"] != []  # drawn with the recipe's seed: the same masks on every run
    assert any(label != -100 for row in first["labels"] for label in row)


@pytest.mark.slow
def test_adapt_on_tagged_sentences_then_token_finetune(tmp_path, tiny_ner_bert):
    folder = tmp_path / "ner"
    for name, count, seed in (("train", 120, 0), ("dev", 30, 1), ("test", 30, 2)):
        write_conll(folder / f"{name}.conll", tagged_sentences(count, seed))
    domain = tmp_path / "sentences.txt"
    domain.write_text("\n".join(" ".join(s["tokens"]) for s in tagged_sentences(300, seed=9)) + "\n")
    adapt, finetune = run_recipe(
        _recipe(tmp_path, tiny_ner_bert, folder, ["adapt", "finetune"], task="token-classification", source=str(domain), whole_word_masking=True)
    )
    assert adapt.manifest["metrics"]["texts"]["training_texts"] == 120
    assert adapt.manifest["metrics"]["perplexity"] < adapt.manifest["metrics"]["perplexity_before"]
    assert "f1" in finetune.manifest["metrics"]["test"]


def test_adapt_command_then_finetune_from_its_folder(tmp_path, tiny_bert, tiny_csv):
    from typer.testing import CliRunner

    from edgepress.cli.app import app

    runner = CliRunner(env={"COLUMNS": "200"})
    domain = tmp_path / "domain.txt"
    domain.write_text("\n".join(r["text"] for r in synthetic_rows(300, seed=11)) + "\n")
    common = ["--data", str(tiny_csv), "--max-seq-length", "24", "--epochs", "1", "--learning-rate", "2e-3", "--output-dir", str(tmp_path / "runs")]
    adapted = runner.invoke(app, ["adapt", "--model", str(tiny_bert), "--text", str(domain), "--whole-word-masking", *common])
    assert adapted.exit_code == 0, adapted.output
    folder = tmp_path / "runs" / "adapt" / "01-adapt"
    manifest = json.loads((folder / "edgepress.json").read_text())
    assert manifest["config"]["adapt"]["whole_word_masking"] is True and manifest["config"]["adapt"]["source"] == str(domain)
    assert "adapt: held-out perplexity" in adapted.output
    tuned = runner.invoke(app, ["finetune", "--model", str(folder), *common])
    assert tuned.exit_code == 0, tuned.output
    assert json.loads((tmp_path / "runs" / "finetune" / "01-finetune" / "edgepress.json").read_text())["input_model"] == str(folder)


def test_training_loss_projects_only_the_masked_tokens_and_equals_the_models_own(tmp_path):
    import torch
    from transformers import AutoModelForMaskedLM, TrainingArguments

    from edgepress.compress.training.adapt import _Collator, encode, masked_lm_trainer, mlm_collator
    from edgepress.recipe.training import AdaptSection

    folder = build_tiny_bert(tmp_path / "encoder")
    model = AutoModelForMaskedLM.from_pretrained(folder)
    tokenizer = _tokenizer(tmp_path)
    rows = encode([r["text"] for r in synthetic_rows(16, seed=4)], tokenizer, 24, words=False)
    batch = _Collator(mlm_collator(tokenizer, AdaptSection(), seed=0))([rows[i] for i in range(16)])
    masked = int((batch["labels"] != -100).sum())
    trainer = masked_lm_trainer()(model=model, args=TrainingArguments(output_dir=str(tmp_path / "t"), report_to="none", use_cpu=True))
    seen = []
    model.cls.register_forward_hook(lambda module, args, output: seen.append(args[0].shape[0]))
    with torch.no_grad():
        fast = trainer.compute_loss(model, dict(batch))
        by_count = trainer.compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(masked * 2))  # half a 2-batch accumulation
        full = model(**batch).loss
    assert seen[:2] == [masked, masked] and 0 < masked < batch["input_ids"].numel()  # the head saw the masked rows only
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
    if trainer.model_accepts_loss_kwargs:
        torch.testing.assert_close(by_count, full * masked / (masked * 2), rtol=1e-5, atol=1e-6)
