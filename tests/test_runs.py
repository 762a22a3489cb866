import json

import pytest

from edgepress.runs import RunFolder, current_manifest, file_hashes, fingerprint, tree_hash, write_manifest


def test_staging_moves_a_finished_folder_into_place(tmp_path):
    run = RunFolder(tmp_path / "run")
    final = run.stage_dir(1, "finetune")
    with run.staging(final) as partial:
        (partial / "model.bin").write_text("weights")
        assert not final.exists()
    assert (final / "model.bin").read_text() == "weights"
    assert [p.name for p in run.root.iterdir()] == ["01-finetune"]


def test_a_failing_stage_leaves_nothing_behind_and_keeps_the_old_artifact(tmp_path):
    run = RunFolder(tmp_path / "run")
    final = run.stage_dir(1, "finetune")
    with run.staging(final) as partial:
        (partial / "model.bin").write_text("old")
    with pytest.raises(RuntimeError):
        with run.staging(final) as partial:
            (partial / "model.bin").write_text("half")
            raise RuntimeError("crash mid-stage")
    assert (final / "model.bin").read_text() == "old"
    assert sorted(p.name for p in run.root.iterdir()) == ["01-finetune"]


def test_a_rerun_replaces_the_previous_artifact_whole(tmp_path):
    run = RunFolder(tmp_path / "run")
    final = run.stage_dir(2, "distill")
    with run.staging(final) as partial:
        (partial / "a").write_text("1")
    with run.staging(final) as partial:
        (partial / "b").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["b"]
    assert sorted(p.name for p in run.root.iterdir()) == ["02-distill"]


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
