import copy
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import assert_schema_valid
from edgepress.bench.gate import compare, junit
from edgepress.bench.report import SCHEMA
from edgepress.cli import app

runner = CliRunner()
BENCH = ["--examples", "16", "--rounds", "2", "--threads", "1", "--batch-size", "8", "--max-seq-length", "24"]


@pytest.fixture(scope="module")
def benched(tmp_path_factory, tiny_classifier, tiny_csv):
    """The tiny classifier's run folder plus an export stage, benchmarked with the command."""
    from edgepress.pipeline import run_recipe
    from edgepress.recipe import validate_recipe

    run = tiny_classifier.parent
    recipe = validate_recipe({
        "name": run.name, "output_dir": str(run.parent), "stages": ["finetune", "export"],
        "model": {"name_or_path": json.loads((tiny_classifier / "edgepress.json").read_text())["config"]["model"]["name_or_path"]},
        "data": {"source": str(tiny_csv)},
        "finetune": json.loads((tiny_classifier / "edgepress.json").read_text())["config"]["finetune"],
        "export": {"max_seq_length": 24, "mobile": False},
    })  # fmt: skip
    outcomes = run_recipe(recipe)
    assert outcomes[0].skipped  # the fixture's fine-tuning is reused, not repeated
    out = tmp_path_factory.mktemp("bench") / "out"
    result = runner.invoke(app, ["bench", "--run", str(run), "--data", str(tiny_csv), "--output", str(out), *BENCH])
    assert result.exit_code == 0, result.output
    return json.loads((out / "bench.json").read_text()), out, result.output


def test_every_artifact_is_measured_with_sane_statistics(benched):
    document, _, _ = benched
    assert document["schema"] == SCHEMA and document["examples"] == 16
    names = [a["name"] for a in document["artifacts"]]
    assert names == ["01-finetune torch", "02-export/model.onnx", "02-export/model_optimized.onnx"]
    for artifact in document["artifacts"]:
        one = artifact["latency"]["1"]["batch 1"]
        assert one["runs"] == 16 * 2 and len(one["round_p50_ms"]) == 2
        assert 0 < one["p50_ms"] <= one["p90_ms"] <= one["p99_ms"]
        assert artifact["latency"]["1"]["batch 8 x 24"]["runs"] == 2 * 2
        assert artifact["test"]["accuracy"] >= 0.95 and artifact["parameters"] > 10_000
    first = document["artifacts"][0]
    assert first["speedup"]["1"]["batch 1"] == 1.0 and first["size_ratio"] == 1.0
    assert document["environment"]["cores"] >= 1 and document["environment"]["packages"]["onnxruntime"]
    assert_schema_valid(document, "bench")


def test_the_schema_rejects_what_bench_never_writes(benched):
    import jsonschema

    for break_it in (
        lambda d: d["artifacts"][0]["latency"]["1"]["batch 1"].update(p50_ms=-1.0),
        lambda d: d["artifacts"][1].update(kind="tflite"),
        lambda d: d["environment"].update(target="tpu"),
        lambda d: d["artifacts"][2]["test"].update(accuracy=98.5),  # a percentage where a fraction belongs
    ):
        document = copy.deepcopy(benched[0])
        break_it(document)
        with pytest.raises(jsonschema.ValidationError):
            assert_schema_valid(document, "bench")


def test_report_has_a_row_per_artifact_and_a_plot(benched):
    document, out, printed = benched
    report = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for artifact in document["artifacts"]:
        assert f"| {artifact['name']} |" in report and f"| {artifact['name']} |" in printed
        assert f"<td>{artifact['name']}</td>" in page
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in page and "http" not in page.split("<body>")[1]  # self-contained


def test_html_escapes_names_from_data(benched, tmp_path):
    from edgepress.bench.plots import write_html
    from edgepress.bench.report import table

    document = copy.deepcopy(benched[0])
    document["artifacts"][0]["name"] = "<script>alert(1)</script>"
    write_html(document, table(document), None, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_pareto_front_keeps_only_undominated_points():
    from edgepress.bench.plots import pareto_front

    points = [(10.0, 98.0), (5.0, 97.0), (12.0, 97.5), (5.0, 96.0), (20.0, 98.5)]
    assert pareto_front(points) == [1, 0, 4]  # (12, 97.5) and (5, 96) are beaten by others


# --------------------------------------------------------------------------- the gate


def _scaled(document: dict, factor: float, only: str | None = None) -> dict:
    changed = copy.deepcopy(document)
    for artifact in changed["artifacts"]:
        if only and artifact["name"] != only:
            continue
        for cases in artifact["latency"].values():
            for stats in cases.values():
                stats["p50_ms"] *= factor
                stats["round_p50_ms"] = [v * factor for v in stats["round_p50_ms"]]
    return changed


def _gate(tmp_path: Path, baseline: dict, current: dict, *extra: str):
    (tmp_path / "base.json").write_text(json.dumps(baseline))
    (tmp_path / "cur.json").write_text(json.dumps(current))
    args = ["gate", "--baseline", str(tmp_path / "base.json"), "--current", str(tmp_path / "cur.json"), *extra]
    return runner.invoke(app, args)


def test_gate_passes_within_noise_and_fails_a_slower_model(benched, tmp_path):
    document, _, _ = benched
    assert _gate(tmp_path, document, _scaled(document, 1.05), "--max-latency-regression", "10%").exit_code == 0
    result = _gate(tmp_path, document, _scaled(document, 1.2, only="02-export/model.onnx"), "--junit", str(tmp_path / "j.xml"))
    assert result.exit_code == 1
    assert "regressed: 02-export/model.onnx: latency 1T batch 1" in result.output and "+20.0%; limit +10%" in result.output
    xml = (tmp_path / "j.xml").read_text()
    assert 'failures="2"' in xml and xml.count("<failure") == 2  # batch 1 and batch 8


def test_gate_fails_an_accuracy_drop_and_a_missing_artifact(benched, tmp_path):
    document, _, _ = benched
    current = copy.deepcopy(document)
    current["artifacts"][1]["test"]["accuracy"] -= 0.01
    del current["artifacts"][2]
    checks, _ = compare(document, current, 0.1, 0.5)
    failed = {(c.artifact, c.what) for c in checks if c.failed}
    assert failed == {("02-export/model.onnx", "accuracy"), ("02-export/model_optimized.onnx", "present")}


def test_another_machine_is_compared_through_a_reference_artifact(benched, tmp_path):
    document, _, _ = benched
    slower_machine = _scaled(document, 2.0)  # everything twice as slow: no artifact regressed
    slower_machine["environment"]["cpu"] = "another CPU"
    checks, reference = compare(document, slower_machine, 0.1, 0.5)
    assert reference == "01-finetune torch" and not any(c.failed for c in checks)
    assert all(c.note == "relative to 01-finetune torch" for c in checks if c.what.startswith("latency"))
    # on the same machine the same data is a 100% regression
    assert any(c.failed for c in compare(document, _scaled(document, 2.0), 0.1, 0.5)[0])


def test_junit_escapes_names():
    from edgepress.bench.gate import Check

    xml = junit([Check('<script>"x"</script>', "accuracy", 0.9, 0.8, -10.0, 0.5, True)])
    assert "<script>" not in xml and "&lt;script&gt;" in xml


def test_gate_input_errors_are_one_line(tmp_path, benched):
    (tmp_path / "bad.json").write_text('{"schema": "other"}')
    result = runner.invoke(app, ["gate", "--baseline", str(tmp_path / "bad.json"), "--current", str(tmp_path / "bad.json")])
    assert result.exit_code == 2 and "expected 'edgepress.bench/1'" in result.output and "Traceback" not in result.output
    result = _gate(tmp_path, benched[0], benched[0], "--max-latency-regression", "ten")
    assert result.exit_code == 2 and "not a percentage" in result.output


def test_bench_needs_something_to_measure(tmp_path):
    result = runner.invoke(app, ["bench", "--output", str(tmp_path / "o")])
    assert result.exit_code == 2 and "nothing to measure" in result.output
    result = runner.invoke(app, ["bench", "--model", f"x={tmp_path / 'missing.onnx'}"])
    assert result.exit_code != 0 and "does not exist" in result.output


def test_bench_stage_ends_a_recipe_with_its_reports(tmp_path, tiny_classifier, tiny_csv):
    from edgepress.pipeline import run_recipe
    from edgepress.recipe import validate_recipe

    recipe = validate_recipe({
        "name": "b", "output_dir": str(tmp_path / "runs"), "stages": ["export", "bench"],
        "model": {"name_or_path": str(tiny_classifier)}, "data": {"source": str(tiny_csv)},
        "export": {"max_seq_length": 24, "mobile": False},
        "bench": {"examples": 8, "rounds": 2, "threads": [1], "batch_sizes": [4], "max_seq_length": 24},
    })  # fmt: skip
    export, bench = run_recipe(recipe)
    assert bench.manifest["metrics"]["artifacts"] == 2  # model.onnx and model_optimized.onnx of 01-export
    assert {"bench.json", "report.md", "report.html", "pareto.png"} <= {p.name for p in bench.folder.iterdir()}
    assert set(bench.manifest["outputs"]) >= {"bench.json", "report.md"}


def test_stage_folders_of_an_earlier_recipe_are_not_measured(tmp_path):
    from edgepress.bench.artifacts import run_artifacts

    for folder, stage, onnx_file in (("01-export", "export", "model.onnx"), ("02-quantize", "quantize", "model_int8_dynamic.onnx")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "edgepress.json").write_text(json.dumps({"stage": stage, "metrics": {}}))
        (tmp_path / folder / onnx_file).write_bytes(b"")
    assert [a.name for a in run_artifacts(tmp_path)] == ["01-export/model.onnx", "02-quantize/model_int8_dynamic.onnx"]
    (tmp_path / "recipe.yaml").write_text("stages: [export]\n")  # the last recipe had no quantize stage
    assert [a.name for a in run_artifacts(tmp_path)] == ["01-export/model.onnx"]
