"""Shared fixtures: a tiny BERT built from a config, and tiny synthetic datasets written to disk."""

from __future__ import annotations

import os

# Before torch is imported, here and in every edgepress process a test starts (they inherit it): the
# tiny models gain nothing from intra-op threads, and two processes at once (search workers, pytest
# workers) each spinning OpenMP threads on every core slowed a test from 21 s to 82-126 s. Tests that
# time threads set them explicitly (ONNX Runtime, OpenVINO and bench's torch.set_num_threads).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import json
import random
from pathlib import Path

import pytest

FILLER = [f"w{i}" for i in range(40)]
KEYWORDS = {"sports": ["goal", "match", "team"], "politics": ["vote", "party", "minister"], "tech": ["chip", "code", "phone"]}
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def require_system_tool(present: bool, what: str, package: str) -> None:
    """Skip a test for a missing Debian tool only where it cannot be installed (not root, or no apt);
    where `make test` could have installed it, a skip would hide an untested path, so fail instead."""
    import os
    import shutil

    if present:
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        pytest.fail(f"{what} is missing, and this machine could install it: run `make test-tools` (apt-get install {package}), which `make test` does")
    pytest.skip(f"{what} is not installed and this user cannot apt-get install {package}")


@pytest.fixture(scope="session")
def browser_target(request):
    """The browser target, set up once per session in .pytest_cache (npm ci of the pinned packages)."""
    import shutil

    from edgepress.web.target import find_chromium, setup

    require_system_tool(find_chromium() is not None, "Chromium", "chromium")
    require_system_tool(shutil.which("npm") is not None, "npm", "npm")
    root = request.config.cache.mkdir("browser") / "target"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGEPRESS_BROWSER_ROOT", str(root))  # what export.web and quantize.web copy lib/ from
        yield setup(root)


def assert_schema_valid(document: dict, name: str) -> None:
    """``document`` against the JSON Schema edgepress ships, ``bench`` or ``runner``."""
    from importlib.resources import files

    import jsonschema
    from referencing import Registry, Resource

    folder = files("edgepress.bench") / "schemas"
    schemas = {n: json.loads((folder / f"{n}.schema.json").read_text()) for n in ("bench", "runner")}
    registry = Registry().with_resources([(s["$id"], Resource.from_contents(s)) for s in schemas.values()])
    jsonschema.Draft202012Validator(schemas[name], registry=registry).validate(document)


def synthetic_rows(n: int, seed: int = 0, labels: tuple[str, ...] = ("sports", "politics", "tech")) -> list[dict]:
    """Texts of filler words with one class keyword: separable, so a tiny model learns it in a few steps."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = rng.choices(FILLER, k=rng.randint(4, 10))
        words.insert(rng.randrange(len(words) + 1), rng.choice(KEYWORDS[label]))
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_rows(path: Path, rows: list[dict], fmt: str | None = None, header: bool = True) -> Path:
    fmt = fmt or path.suffix.lstrip(".")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "parquet":
        import pandas as pd

        pd.DataFrame(rows).to_parquet(path)
    else:
        sep = "\t" if fmt == "tsv" else ","
        columns = list(rows[0])
        lines = [sep.join(columns)] if header else []
        lines += [sep.join(str(r[c]) for c in columns) for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def build_tiny_bert(folder: Path, num_labels: int | None = None, layers: int = 2, seed: int = 0, extra_words: tuple[str, ...] = ()) -> Path:
    """A 2-layer, hidden-32 BERT with a word-level vocabulary of the synthetic words, saved as safetensors."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    torch.manual_seed(seed)  # the same "pre-trained" weights in every test session
    folder.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + FILLER + [w for words in KEYWORDS.values() for w in words] + ["unseen"] + list(extra_words)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # from the folder's vocab.txt: Transformers 5's BertTokenizerFast(vocab_file=...) ignores the file
    tokenizer = BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    if num_labels:
        config.num_labels = num_labels
        model = BertForSequenceClassification(config)
    else:
        model = BertModel(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A tiny encoder without a classification head, like a pre-trained checkpoint."""
    return build_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    return write_rows(tmp_path_factory.mktemp("data") / "topics.csv", synthetic_rows(600))


def tiny_recipe(tmp_path: Path, model: Path, data: Path, **finetune) -> "object":
    """A recipe for the tiny model: short sequences, a learning rate a 32-wide model needs."""
    from edgepress.recipe.loading import validate_recipe

    settings = {"learning_rate": 2e-3, "epochs": 8, "batch_size": 16, "max_seq_length": 24, "warmup_ratio": 0.1, "logging_steps": 50}
    settings.update(finetune)
    return validate_recipe(
        {
            "name": "tiny",
            "output_dir": str(tmp_path / "runs"),
            "stages": ["finetune"],
            "model": {"name_or_path": str(model)},
            "data": {"source": str(data)},
            "finetune": settings,
        }
    )


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory, tiny_csv) -> Path:
    """The tiny BERT fine-tuned on the synthetic topics (100% accurate, logits with margins): the
    input of the export and compression tests. Built once per session."""
    from edgepress.running.pipeline import run_recipe

    root = tmp_path_factory.mktemp("classifier")
    (outcome,) = run_recipe(tiny_recipe(root, build_tiny_bert(root / "base"), tiny_csv))
    assert outcome.manifest["metrics"]["test"]["accuracy"] >= 0.95
    return outcome.folder


# --------------------------------------------------------------------------- a tiny token task

PEOPLE, SURNAMES, PLACES = ["alice", "bob", "carol"], ["smith", "jones"], ["paris", "rome", "london"]
# "londonish" splits into london + ##ish: a word of two pieces, tagged on its first piece
NER_WORDS = (*PEOPLE, *SURNAMES, *PLACES, "##ish", "in", "met")


def tagged_sentences(n: int, seed: int = 0) -> list[dict]:
    """Filler words with a person (B-PER, optional I-PER) and a place (B-LOC): the cue words decide
    the tags, so a tiny model learns them in a few steps."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        tokens = rng.choices(FILLER, k=rng.randint(2, 5))
        tags = ["O"] * len(tokens)
        person = [rng.choice(PEOPLE)] + ([rng.choice(SURNAMES)] if rng.random() < 0.5 else [])
        place = rng.choice(PLACES) + ("ish" if rng.random() < 0.3 else "")
        tokens += ["met", *person, "in", place]
        tags += ["O", "B-PER", *["I-PER"] * (len(person) - 1), "O", "B-LOC"]
        sentences.append({"tokens": tokens, "tags": tags})
    return sentences


def write_conll(path: Path, sentences: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    blocks = ["".join(f"{t}\t{g}\n" for t, g in zip(s["tokens"], s["tags"])) for s in sentences]
    path.write_text("\n".join(blocks), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_conll(tmp_path_factory) -> Path:
    """A folder with train.conll, dev.conll and test.conll of the tiny token task."""
    folder = tmp_path_factory.mktemp("ner")
    for name, count, seed in (("train", 300, 0), ("dev", 60, 1), ("test", 60, 2)):
        write_conll(folder / f"{name}.conll", tagged_sentences(count, seed))
    return folder


@pytest.fixture(scope="session")
def tiny_ner_bert(tmp_path_factory) -> Path:
    """The tiny BERT with the token task's words in its vocabulary."""
    return build_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-ner-bert", extra_words=NER_WORDS)
