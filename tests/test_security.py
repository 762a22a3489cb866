"""Issue 17, security: no secret from the environment reaches a manifest, a log or an artifact, and
no code path unpickles without ``weights_only``."""

import re
from pathlib import Path

from edgepress.recipe.loading import validate_recipe
from edgepress.running.pipeline import run_recipe

SRC = Path(__file__).resolve().parent.parent / "src" / "edgepress"
TOKEN = "hf_SecretTokenThatMustNeverBeWritten42"


def test_no_environment_secret_is_written_or_logged(tmp_path, tiny_classifier, tiny_csv, monkeypatch, caplog):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TOKEN)
    recipe = validate_recipe({
        "name": "secret", "output_dir": str(tmp_path / "runs"), "stages": ["export"],
        "model": {"name_or_path": str(tiny_classifier)}, "data": {"source": str(tiny_csv)},
        "export": {"max_seq_length": 24, "mobile": False},
    })  # fmt: skip
    with caplog.at_level("DEBUG"):
        (outcome,) = run_recipe(recipe)
    written = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert (outcome.folder / "edgepress.json") in written and len(written) > 5
    assert not [p.name for p in written if TOKEN.encode() in p.read_bytes()]
    assert TOKEN not in caplog.text


def test_nothing_unpickles_without_weights_only():
    """torch.load is the one unpickler a model path could reach; every call passes weights_only=True
    (and pickle itself is never imported)."""
    sources = {p: p.read_text() for p in SRC.rglob("*.py")}
    calls = [(p.name, m.group(0)) for p, text in sources.items() for m in re.finditer(r"torch\.load\([^)]*\)", text)]
    assert all("weights_only=True" in call for _, call in calls), calls
    assert not [p.name for p, text in sources.items() if re.search(r"^\s*(import pickle|from pickle|import dill|import joblib)", text, re.M)]
