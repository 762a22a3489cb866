import json
from pathlib import Path

import pytest

from edgepress.running.runs import RunFolder, current_manifest, file_hashes, fingerprint, tree_hash, write_manifest


def test_staging_moves_a_finished_folder_into_place(tmp_path):
    run = RunFolder(tmp_path / "run")
    final = run.stage_dir(1, "finetune")
    with run.staging(final, "f1" * 8) as partial:
        (partial / "model.bin").write_text("weights")
        assert not final.exists()
    assert (final / "model.bin").read_text() == "weights"
    assert [p.name for p in run.root.iterdir()] == ["01-finetune"]


def test_a_failing_stage_leaves_nothing_behind_and_keeps_the_old_artifact(tmp_path):
    run = RunFolder(tmp_path / "run")
    final = run.stage_dir(1, "finetune")
    with run.staging(final, "f1" * 8) as partial:
        (partial / "model.bin").write_text("old")
    with pytest.raises(RuntimeError):
        with run.staging(final, "f1" * 8) as partial:
            (partial / "model.bin").write_text("half")
            raise RuntimeError("crash mid-stage")
    assert (final / "model.bin").read_text() == "old"
    assert sorted(p.name for p in run.root.iterdir()) == ["01-finetune"]


def test_a_rerun_replaces_the_previous_artifact_whole(tmp_path):
    run = RunFolder(tmp_path / "run")
    final = run.stage_dir(2, "distill")
    with run.staging(final, "f1" * 8) as partial:
        (partial / "a").write_text("1")
    with run.staging(final, "f1" * 8) as partial:
        (partial / "b").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["b"]
    assert sorted(p.name for p in run.root.iterdir()) == ["02-distill"]


def test_a_killed_stage_leaves_its_partial_folder_and_the_next_run_resumes_from_its_checkpoints_only(tmp_path):
    from edgepress.running.runs import CHECKPOINTS, drop_checkpoints, remove_leftovers

    run = RunFolder(tmp_path / "run")
    final = run.stage_dir(1, "finetune")
    key = "ab" * 32
    # what SIGKILL leaves: this stage's partial folder (checkpoints, a half-written file), another
    # fingerprint's partial folder, a retired folder, an old-style Trainer scratch folder
    left = final.parent / f".{final.name}.partial-{key[:16]}"
    (left / CHECKPOINTS / "finetune" / "checkpoint-20").mkdir(parents=True)
    (left / CHECKPOINTS / "finetune" / "checkpoint-20" / "model.safetensors").write_text("w")
    (left / "model.safetensors").write_text("half-writ")
    for name in (f".{final.name}.partial-0123456789abcdef", f".{final.name}.old-1a2b3c4d", ".trainer-x1y2"):
        (final.parent / name).mkdir()
    with run.staging(final, key) as partial:
        assert partial == left and sorted(p.name for p in partial.iterdir()) == [CHECKPOINTS]  # the half-written file is gone
        assert (partial / CHECKPOINTS / "finetune" / "checkpoint-20" / "model.safetensors").read_text() == "w"
        (partial / "model.safetensors").write_text("whole")
        drop_checkpoints(partial)
    assert sorted(p.name for p in run.root.iterdir()) == ["01-finetune"]  # every leftover removed
    assert sorted(p.name for p in final.iterdir()) == ["model.safetensors"]
    assert remove_leftovers(final) == []


def test_a_failed_rename_keeps_the_previous_artifact_and_removes_the_partial_folder(tmp_path, monkeypatch):
    """``_swap_into_place`` runs inside the guard: a rename that fails (a full or read-only disk)
    neither leaks the partial folder nor loses the artifact already in place."""
    run = RunFolder(tmp_path / "run")
    final = run.stage_dir(1, "export")
    with run.staging(final, "k" * 16) as partial:
        (partial / "model.onnx").write_text("old")
    real = Path.rename

    def failing(self, target):
        if ".partial-" in self.name:
            raise OSError(28, "No space left on device")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(OSError, match="No space left"):
        with run.staging(final, "j" * 16) as partial:
            (partial / "model.onnx").write_text("new")
    monkeypatch.undo()
    assert (final / "model.onnx").read_text() == "old" and sorted(p.name for p in run.root.iterdir()) == ["01-export"]


def test_manifest_is_current_only_for_same_fingerprint_and_untouched_outputs(tmp_path):
    folder = tmp_path / "01-finetune"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"abc")
    expected = fingerprint("finetune", {"lr": 1}, {"data": "d"})
    write_manifest(folder, {"fingerprint": expected, "outputs": file_hashes(folder)})
    assert current_manifest(folder, expected) is not None
    assert current_manifest(folder, fingerprint("finetune", {"lr": 2}, {"data": "d"})) is None
    (folder / "model.safetensors").write_bytes(b"tampered")
    assert current_manifest(folder, expected) is None


def test_fingerprint_depends_on_stage_config_and_inputs():
    base = fingerprint("finetune", {"lr": 1}, {"model": "m", "data": "d"})
    assert base == fingerprint("finetune", {"lr": 1}, {"data": "d", "model": "m"})
    assert base != fingerprint("distill", {"lr": 1}, {"model": "m", "data": "d"})
    assert base != fingerprint("finetune", {"lr": 1}, {"model": "m2", "data": "d"})


def test_file_hashes_skip_the_manifest_and_tree_hash_is_order_free(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("b")
    (tmp_path / "edgepress.json").write_text(json.dumps({"x": 1}))
    hashes = file_hashes(tmp_path)
    assert sorted(hashes) == ["a.txt", "sub/b.txt"]
    assert tree_hash(hashes) == tree_hash(dict(reversed(list(hashes.items()))))


def test_fingerprint_sees_a_change_of_edgepress_source_code(tmp_path):
    """An editable install keeps its version string through a fix; the source hash does not."""
    import shutil

    import edgepress
    from edgepress.running.runs import code_hash

    package = Path(edgepress.__file__).parent
    copy = tmp_path / "edgepress"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = code_hash(copy)
    assert before == code_hash(package)  # the installed package's own hash, from its files
    assert fingerprint("export", {}, {"data": "d"}) == fingerprint("export", {}, {"data": "d"}, code=before)
    with (copy / "export" / "parity.py").open("a") as handle:
        handle.write("\n# a fix\n")
    code_hash.cache_clear()
    after = code_hash(copy)
    assert after != before
    assert fingerprint("export", {}, {"data": "d"}, code=after) != fingerprint("export", {}, {"data": "d"}, code=before)


def test_distill_fingerprint_sees_whether_wordnet_is_installed(tmp_path):
    from edgepress.compress.training.augment import environment_facts
    from edgepress.recipe.training import AugmentSection

    synonyms = AugmentSection(factor=2, synonym=0.1)
    absent = environment_facts(synonyms, tmp_path / "none")
    (tmp_path / "wn").mkdir()
    (tmp_path / "wn" / "data.noun").write_text("  licence\n")
    present = environment_facts(synonyms, tmp_path / "wn")
    assert absent == {"wordnet": "absent"} and present == {"wordnet": "data.noun:10"}
    assert fingerprint("distill", {}, {"data": "d", **absent}) != fingerprint("distill", {}, {"data": "d", **present})
    # without synonyms (or without augmentation) WordNet cannot change the output, so it is no input
    assert environment_facts(AugmentSection(factor=2, synonym=0.0), tmp_path / "wn") == {}
    assert environment_facts(AugmentSection(factor=0), tmp_path / "wn") == {}
