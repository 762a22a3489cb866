"""The teacher cache keeps each text's real tokens only, and gives a batch back its own layout."""

import pytest
import torch
from conftest import build_tiny_bert

from edgepress.compress.training.packed import LengthMismatch, Packed, tokens_of
from edgepress.compress.training.teacher_cache import CacheRequest, run_teacher, teacher_outputs
from edgepress.models import load_classifier
from edgepress.recipe.sections import ModelSection

TEXTS = {"text": ["w1 goal w2 w3", "vote w4", "w5 w6 chip w7 w8 w9", "team w1", "w2"]}
REQUEST = CacheRequest("t", 16, hidden_layers=(1, 3), attention_layers=(2,), relation_layer=3)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    folder = build_tiny_bert(tmp_path_factory.mktemp("teacher") / "t", layers=4)
    return load_classifier(ModelSection(name_or_path=str(folder)), ["a", "b", "c"], attn_implementation="eager")


@pytest.fixture(scope="module")
def cached(teacher):
    model, tokenizer = teacher
    return run_teacher(model, tokenizer, TEXTS, REQUEST, batch_size=2)  # batches of 2: other padding than any batch below


def one_by_one(model, tokenizer, index: int):
    """The teacher on one text alone, unpadded: the reference for that text's cached rows."""
    inputs = tokenizer([TEXTS["text"][index]], return_tensors="pt")
    with torch.no_grad():
        return model(**inputs, output_hidden_states=True, output_attentions=True)


def test_only_real_tokens_are_stored(teacher, cached):
    _, tokenizer = teacher
    counts = [len(tokenizer(t)["input_ids"]) for t in TEXTS["text"]]
    width, heads = cached.hidden[1].values.shape[1], cached.attentions[2].heads
    assert cached.hidden[1].values.shape == (sum(counts), width) and cached.hidden[1].offsets.tolist()[-1] == sum(counts)
    assert cached.attentions[2].values.numel() == heads * sum(c * c for c in counts)
    assert set(cached.relations) == {"query", "key", "value"} and cached.relations["key"].values.shape[0] == sum(counts)
    assert sum(counts) * 3 < len(TEXTS["text"]) * 16  # under a third of what padding to max_length kept


def test_a_batch_gets_its_rows_at_its_own_real_positions(teacher, cached):
    """Rows 2 and 0, left-padded to 12: each text's states land where its mask is 1, zeros elsewhere."""
    model, tokenizer = teacher
    tokenizer.padding_side = "left"
    try:
        inputs = tokenizer([TEXTS["text"][2], TEXTS["text"][0]], padding="max_length", max_length=12, return_tensors="pt")
    finally:
        tokenizer.padding_side = "right"
    mask, idx = inputs["attention_mask"], torch.tensor([2, 0])
    hidden, maps = cached.hidden[3].rows(idx, mask), cached.attentions[2].rows(idx, mask)
    assert hidden.shape == (2, 12, hidden.shape[-1]) and maps.shape == (2, cached.attentions[2].heads, 12, 12)
    for b, i in enumerate(idx.tolist()):
        alone, where = one_by_one(model, tokenizer, i), mask[b].bool()
        torch.testing.assert_close(hidden[b][where].float(), alone.hidden_states[4][0], atol=2e-3, rtol=2e-3)
        assert hidden[b][~where].abs().sum() == 0
        torch.testing.assert_close(maps[b][:, where][:, :, where].float(), alone.attentions[2][0], atol=2e-3, rtol=2e-3)
        assert maps[b][:, ~where].abs().sum() == 0 and maps[b][:, :, ~where].abs().sum() == 0


def test_a_batch_with_other_token_counts_is_refused(cached):
    mask = torch.ones(2, 6, dtype=torch.long)  # rows 1 and 3 have 4 tokens each, not 6
    with pytest.raises(LengthMismatch, match="must use the teacher's tokenizer and max_seq_length"):
        cached.hidden[1].rows(torch.tensor([1, 3]), mask)


def test_the_cache_is_filled_in_place_at_its_final_size():
    packed = Packed.allocate(torch.tensor([2, 3, 1]), width=4)
    assert packed.values.shape == (6, 4) and packed.offsets.tolist() == [0, 2, 5, 6]
    rows = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    packed.put(0, tokens_of(rows, torch.tensor([[1, 1, 0], [1, 1, 1]])))  # texts 0 and 1, padded to 3
    packed.put(2, tokens_of(rows[:1, :1], torch.tensor([[1]])))
    assert torch.equal(packed.values.float(), torch.cat([rows[0, :2], rows[1], rows[0, :1]]))
    with pytest.raises(LengthMismatch, match="other token counts"):
        packed.put(1, tokens_of(rows[:1], torch.tensor([[1, 1, 0]])))  # text 1 has 3 tokens, not 2


def test_the_cache_file_round_trips(teacher, cached, tmp_path):
    model, tokenizer = teacher
    written = teacher_outputs(model, tokenizer, TEXTS, REQUEST, tmp_path, batch_size=2)
    loaded = teacher_outputs(model, tokenizer, TEXTS, REQUEST, tmp_path, batch_size=2)  # from the file
    assert len(list(tmp_path.glob("teacher-*.safetensors"))) == 1
    for name, tensor in cached.tensors().items():
        assert torch.equal(loaded.tensors()[name], tensor) and torch.equal(written.tensors()[name], tensor), name
    assert loaded.attentions[2].heads == cached.attentions[2].heads > 0 and loaded.hidden[1].heads == 0
