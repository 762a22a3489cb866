"""The arm64-emulated benchmark target: set-up, agreement with x86, and what refuses emulated numbers.

The end-to-end test needs Debian's qemu-user-static and network access to Debian's and PyPI's
package servers (the set-up downloads an arm64 Python and the aarch64 wheels, ~210 MB, kept in
.pytest_cache between runs); it is skipped where qemu is not installed.
"""

import json
import os

import pytest
from conftest import assert_schema_valid, require_system_tool
from typer.testing import CliRunner

from edgepress.bench.emulator import find_qemu
from edgepress.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def emulator(request):
    require_system_tool(find_qemu() is not None, "qemu-aarch64", "qemu-user-static")
    from edgepress.bench.emulator import setup

    return setup(request.config.cache.mkdir("arm64-emulated") / "target")


@pytest.fixture(scope="module")
def quantized_run(tmp_path_factory, tiny_classifier, tiny_csv):
    from edgepress.recipe.loading import validate_recipe
    from edgepress.running.pipeline import run_recipe

    runs = tmp_path_factory.mktemp("emulated")
    outcomes = run_recipe(validate_recipe({
        "name": "arm", "output_dir": str(runs), "stages": ["export", "quantize"],
        "model": {"name_or_path": str(tiny_classifier)}, "data": {"source": str(tiny_csv)},
        "export": {"max_seq_length": 24, "mobile": False}, "quantize": {"max_seq_length": 24, "calibration_samples": 64},
    }))  # fmt: skip
    return outcomes[-1].folder.parent


@pytest.mark.slow
def test_every_onnx_model_predicts_the_same_on_emulated_arm64(emulator, quantized_run, tiny_csv, tmp_path):
    out = tmp_path / "bench"
    result = runner.invoke(app, [
        "bench", "--run", str(quantized_run), "--data", str(tiny_csv), "--target", "arm64-emulated",
        "--emulator-root", str(emulator.root), "--examples", "8", "--max-seq-length", "24", "--output", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads((out / "bench.json").read_text())
    assert_schema_valid(document, "bench")
    assert document["environment"]["emulated"] is True and document["environment"]["device"]["machine"] == "aarch64"
    assert "asimddp" in document["environment"]["device"]["isa"]  # the fake Neoverse-N1 identity reached ORT's kernel choice
    names = [a["name"] for a in document["artifacts"]]
    assert names == [
        "01-export/model.onnx", "01-export/model_optimized.onnx",
        "02-quantize/model_int8_dynamic.onnx", "02-quantize/model_int8_static.onnx",
    ]  # fmt: skip
    for artifact in document["artifacts"]:
        assert artifact["emulated"] is True and artifact["agreement"]["examples"] == 8
        assert artifact["agreement"]["argmax"] == 1.0
        assert artifact["agreement"]["max_abs_diff"] < (1e-4 if "int8" not in artifact["name"] else 5e-2)
        assert list(artifact["latency"]) == ["1"] and artifact["latency"]["1"]["batch 1"]["runs"] == 8
    assert document["settings"]["threads"] == [1] and document["settings"]["cases"] == ["batch 1"]
    report = (out / "report.md").read_text()
    assert "**Emulated: arm64 kernels under qemu" in report and "predicted class 100.0% the same" in report
    assert "<strong>Emulated: arm64 kernels" in (out / "report.html").read_text()
    # emulated latencies never reach a gate
    gated = runner.invoke(app, ["gate", "--baseline", str(out / "bench.json"), "--current", str(out / "bench.json")])
    assert gated.exit_code == 2 and "emulated latencies" in gated.output


def test_predictions_that_differ_on_arm_fail_the_benchmark():
    from edgepress.bench.targets import check_agreement
    from edgepress.errors import StageError

    rows = [{"name": "a.onnx", "agreement": {"argmax": 1.0}}, {"name": "b.onnx", "agreement": {"argmax": 0.2}}]
    with pytest.raises(StageError, match=r"differ from this machine's: b\.onnx 20\.0% agree \(bench\.min_agreement is 99%\)"):
        check_agreement(rows, 0.99)
    check_agreement(rows[:1], 0.99)


def test_agreement_counts_classes_and_the_largest_difference():
    import numpy as np

    from edgepress.bench.targets import agreement

    native = {"m.0": np.array([[0.1, 0.9]]), "m.1": np.array([[0.8, 0.2]])}
    emulated = {"m.0": np.array([[0.1, 0.9]]), "m.1": np.array([[0.4, 0.6]])}
    assert agreement(native, emulated, "m", 2) == {"argmax": 0.5, "max_abs_diff": pytest.approx(0.4), "examples": 2}


def test_an_emulated_target_that_was_not_set_up_says_how(tmp_path, tiny_classifier, tiny_csv):
    result = runner.invoke(app, [
        "bench", "--model", f"m={tiny_classifier}", "--data", str(tiny_csv), "--target", "arm64-emulated",
        "--emulator-root", str(tmp_path / "none"), "--output", str(tmp_path / "o"),
    ])  # fmt: skip
    assert result.exit_code == 1 and "edgepress targets setup arm64-emulated" in result.output
    assert not (tmp_path / "o").exists()


def test_setup_without_qemu_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu-aarch64 on it
    result = runner.invoke(app, ["targets", "setup", "arm64-emulated", "--dir", str(tmp_path / "t")])
    assert result.exit_code == 1 and "apt-get install qemu-user-static" in result.output
    assert not (tmp_path / "t").exists() and not os.path.exists(tmp_path / "t.partial")
    other = runner.invoke(app, ["targets", "setup", "riscv"])
    assert other.exit_code == 1 and "arm64-emulated and browser need one" in other.output
