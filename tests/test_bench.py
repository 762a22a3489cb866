import copy
import json
from pathlib import Path

import pytest
from conftest import assert_schema_valid
from typer.testing import CliRunner

from edgepress.bench.gate import Limits, compare, junit
from edgepress.bench.report import SCHEMA
from edgepress.cli.app import app

runner = CliRunner()
BENCH = ["--examples", "16", "--rounds", "4", "--threads", "1", "--batch-size", "8", "--max-seq-length", "24"]


@pytest.fixture(scope="module")
def benched(tmp_path_factory, tiny_classifier, tiny_csv):
    """The tiny classifier's run folder plus an export stage, benchmarked with the command."""
    from edgepress.recipe.loading import validate_recipe
    from edgepress.running.pipeline import run_recipe

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
        assert one["runs"] == 16 * 4 and len(one["round_p50_ms"]) == 4
        assert 0 < one["p50_ms"] <= one["p90_ms"] <= one["p99_ms"]
        assert artifact["latency"]["1"]["batch 8 x 24"]["runs"] == 2 * 4
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

STEADY = [1.0, 1.02, 0.98, 1.01]  # per-round medians relative to the first: a quiet machine


def _steady(document: dict) -> dict:
    """The document with fixed round medians (the measured ones scatter, which these tests must not depend on)."""
    steady = copy.deepcopy(document)
    for artifact in steady["artifacts"]:
        for cases in artifact["latency"].values():
            for stats in cases.values():
                stats["round_p50_ms"] = [stats["p50_ms"] * f for f in STEADY]
    return steady


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
    return runner.invoke(app, args, env={"COLUMNS": "250"})  # one table row a line


def _limits(**kwargs) -> Limits:
    return Limits(**{"latency": 0.1, "accuracy_points": 0.5, **kwargs})


def test_gate_passes_within_noise_and_fails_a_slower_model(benched, tmp_path):
    document = _steady(benched[0])
    assert _gate(tmp_path, document, _scaled(document, 1.05), "--max-latency-regression", "10%").exit_code == 0
    result = _gate(tmp_path, document, _scaled(document, 1.2, only="02-export/model.onnx"), "--junit", str(tmp_path / "j.xml"))
    assert result.exit_code == 1
    assert "regressed: 02-export/model.onnx: latency 1T batch 1" in result.output and "+20.0%; limit +10%" in result.output
    assert "rank test p=0.014" in result.output  # 4 rounds against 4, all slower: 1 / C(8, 4)
    xml = (tmp_path / "j.xml").read_text()
    assert 'failures="2"' in xml and xml.count("<failure") == 2  # batch 1 and batch 8


def test_a_slow_median_inside_the_rounds_noise_is_not_a_regression(benched):
    document = _steady(benched[0])
    scattered = copy.deepcopy(document)
    for artifact in scattered["artifacts"]:
        for cases in artifact["latency"].values():
            for stats in cases.values():  # median +15%, but two rounds faster than the baseline's slowest
                stats["round_p50_ms"] = [stats["p50_ms"] * f for f in (0.97, 1.3, 1.0, 1.4)]
    result = compare(document, scattered, _limits())
    latency = [c for c in result.checks if c.what.startswith("latency")]
    assert latency and all(c.change > 0.1 and c.p_value > 0.05 and c.status == "ok" for c in latency)
    # the same +15% with every round slower is a regression
    assert all(c.status == "regressed" for c in compare(document, _scaled(document, 1.15), _limits()).checks if c.what.startswith("latency"))


def test_a_benchmark_that_shares_no_case_with_the_baseline_fails_the_gate(benched, tmp_path):
    """The issue's example: baseline at 1 and 2 threads with batch 8 x 128, current at 1 and 16 threads on a
    16-core machine with batch 8 x 64 and a model 3x slower. Nothing can be compared, which must not pass."""
    baseline = _steady(benched[0])
    current = _scaled(baseline, 3.0)
    for document, threads, length, cores in ((baseline, ["1", "2"], 128, 2), (current, ["1", "16"], 64, 16)):
        document["environment"]["cores"] = cores
        document["settings"].update(threads=[int(t) for t in threads], max_seq_length=length, cases=["batch 1", f"batch 8 x {length}"])
        for artifact in document["artifacts"]:
            one = artifact["latency"]["1"]
            cases = {"batch 1": one["batch 1"], f"batch 8 x {length}": one["batch 8 x 24"]}
            artifact["latency"] = {t: copy.deepcopy(cases) for t in threads}
    result = _gate(tmp_path, baseline, current)
    assert result.exit_code == 1 and "gate passed" not in result.output
    assert "not compared: 02-export/model.onnx: latency 2T batch 1: not comparable: thread count 2 not in the current benchmark" in result.output
    assert "sequence length: baseline max 128 tokens, current 64" in result.output
    assert "baseline ran on 2 cores and the current benchmark on 16" in result.output
    allowed = _gate(tmp_path, baseline, current, "--allow-missing")
    assert allowed.exit_code == 1 and "no latency check could be compared" in allowed.output


def test_another_core_count_is_compared_on_the_thread_counts_both_have(benched, tmp_path):
    baseline = _steady(benched[0])
    current = copy.deepcopy(baseline)
    current["environment"]["cores"] = 16
    for artifact in current["artifacts"]:
        artifact["latency"]["16"] = artifact["latency"].pop("1")
    baseline["settings"]["threads"], current["settings"]["threads"] = [1, 2], [1, 16]
    for artifact in baseline["artifacts"]:
        artifact["latency"]["2"] = copy.deepcopy(artifact["latency"]["1"])
    for artifact in current["artifacts"]:
        artifact["latency"]["1"] = copy.deepcopy(artifact["latency"]["16"])
    result = compare(baseline, current, _limits(), reference="01-finetune torch")
    statuses = {c.what: c.status for c in result.checks if c.artifact == "02-export/model.onnx"}
    assert statuses["latency 1T batch 1"] == "ok" and statuses["latency 2T batch 1"] == "not comparable"
    assert result.notes[0].endswith("latency is compared on the thread counts both have (1)")
    assert _gate(tmp_path, baseline, current, "--reference", "01-finetune torch").exit_code == 1
    passed = _gate(tmp_path, baseline, current, "--reference", "01-finetune torch", "--allow-missing")
    assert passed.exit_code == 0 and "not comparable (allowed)" in passed.output


def test_a_case_the_reference_lacks_is_not_comparable_never_nan(benched):
    baseline = _steady(benched[0])
    current = _scaled(baseline, 3.0, only="02-export/model.onnx")
    del current["artifacts"][0]["latency"]["1"]["batch 8 x 24"]  # the reference lost a case
    result = compare(baseline, current, _limits(), reference="01-finetune torch")
    check = next(c for c in result.checks if c.artifact == "02-export/model.onnx" and c.what == "latency 1T batch 8 x 24")
    assert check.status == "not comparable" and check.failed and check.change is None
    assert "reference '01-finetune torch' has no 1T batch 8 x 24 in the current benchmark" in check.note
    assert all(c.change == c.change for c in result.checks if c.change is not None)  # no nan anywhere


def test_too_few_rounds_cannot_be_compared(benched):
    baseline = _steady(benched[0])
    current = copy.deepcopy(baseline)
    for artifact in current["artifacts"]:
        for cases in artifact["latency"].values():
            for stats in cases.values():
                stats["round_p50_ms"] = stats["round_p50_ms"][:3]
    checks = [c for c in compare(baseline, current, _limits()).checks if c.what.startswith("latency ")]
    assert checks and all(c.status == "not comparable" and "--rounds 4 or more" in c.note for c in checks)


def test_pooled_baselines_count_the_run_to_run_spread_as_noise(benched, tmp_path):
    """One baseline run that happened to be fast makes a normal run look 15% slower; pooled with
    two other runs of the same state, that spread is noise, and the gate passes."""
    quick = _scaled(_steady(benched[0]), 0.87)
    usual = _steady(benched[0])
    for path, document in (("a.json", quick), ("b.json", usual), ("c.json", _scaled(usual, 1.04)), ("cur.json", usual)):
        (tmp_path / path).write_text(json.dumps(document))
    one = runner.invoke(app, ["gate", "--baseline", str(tmp_path / "a.json"), "--current", str(tmp_path / "cur.json")])
    assert one.exit_code == 1 and "regressed:" in one.output
    pooled = [a for name in ("a", "b", "c") for a in ("--baseline", str(tmp_path / f"{name}.json"))]
    result = runner.invoke(app, ["gate", *pooled, "--current", str(tmp_path / "cur.json")])
    assert result.exit_code == 0, result.output
    # the pooled rounds are every file's, in file order, for every artifact alike
    from edgepress.bench.gate import pool_baselines

    merged = pool_baselines([quick, usual], ["a", "b"])
    rounds = merged["artifacts"][1]["latency"]["1"]["batch 1"]["round_p50_ms"]
    assert rounds == quick["artifacts"][1]["latency"]["1"]["batch 1"]["round_p50_ms"] + usual["artifacts"][1]["latency"]["1"]["batch 1"]["round_p50_ms"]
    # a slower model still fails against the pooled baseline
    (tmp_path / "slow.json").write_text(json.dumps(_scaled(usual, 1.25, only="02-export/model.onnx")))
    assert runner.invoke(app, ["gate", *pooled, "--current", str(tmp_path / "slow.json")]).exit_code == 1
    # baselines benched unlike each other cannot be pooled
    other = copy.deepcopy(usual)
    other["settings"]["max_seq_length"] = 64
    (tmp_path / "other.json").write_text(json.dumps(other))
    bad = runner.invoke(app, ["gate", "--baseline", str(tmp_path / "b.json"), "--baseline", str(tmp_path / "other.json"), "--current", str(tmp_path / "cur.json")])
    assert bad.exit_code == 2 and "max_seq_length differ" in bad.output


def test_gate_fails_an_accuracy_drop_a_missing_artifact_and_an_unmeasured_accuracy(benched, tmp_path):
    document = _steady(benched[0])
    current = copy.deepcopy(document)
    current["artifacts"][1]["test"]["accuracy"] -= 0.01
    current["artifacts"][0]["test"] = {}  # bench did not measure it
    del current["artifacts"][2]
    result = compare(document, current, _limits())
    failed = {(c.artifact, c.what, c.status) for c in result.failed}
    assert failed == {
        ("02-export/model.onnx", "accuracy", "regressed"),
        ("02-export/model_optimized.onnx", "present", "not comparable"),
        ("01-finetune torch", "accuracy", "not comparable"),
    }
    assert {(c.artifact, c.what) for c in compare(document, current, _limits(allow_missing=True)).failed} == {("02-export/model.onnx", "accuracy")}


def test_another_machine_is_compared_through_a_reference_artifact(benched, tmp_path):
    document = _steady(benched[0])
    slower_machine = _scaled(document, 2.0)  # everything twice as slow: no artifact regressed
    slower_machine["environment"]["cpu"] = "another CPU"
    result = compare(document, slower_machine, _limits())
    assert result.reference == "01-finetune torch" and not result.failed
    assert all(c.note == "relative to 01-finetune torch" for c in result.checks if c.what.startswith("latency"))
    assert "different machines" in result.notes[-1]
    # on the same machine the same data is a 100% regression
    assert compare(document, _scaled(document, 2.0), _limits()).failed


def test_junit_escapes_names():
    from edgepress.bench.gate import Check

    xml = junit([Check('<script>"x"</script>', "accuracy", 0.9, 0.8, -10.0, 0.5, "regressed")])
    assert "<script>" not in xml and "&lt;script&gt;" in xml


def test_gate_input_errors_are_one_line(tmp_path, benched):
    (tmp_path / "bad.json").write_text('{"schema": "other"}')
    result = runner.invoke(app, ["gate", "--baseline", str(tmp_path / "bad.json"), "--current", str(tmp_path / "bad.json")])
    assert result.exit_code == 2 and "expected 'edgepress.bench/1'" in result.output and "Traceback" not in result.output
    for bad in (["--max-latency-regression", "ten"], ["--max-latency-regression", "nan"], ["--significance", "1.5"]):
        result = _gate(tmp_path, benched[0], benched[0], *bad)
        assert result.exit_code == 2 and ("not a percentage" in result.output or "between 0 and 1" in result.output)


def test_bench_needs_something_to_measure(tmp_path):
    result = runner.invoke(app, ["bench", "--output", str(tmp_path / "o")])
    assert result.exit_code == 2 and "nothing to measure" in result.output
    result = runner.invoke(app, ["bench", "--model", f"x={tmp_path / 'missing.onnx'}"])
    assert result.exit_code != 0 and "does not exist" in result.output


def test_bench_refuses_to_score_a_model_trained_for_other_labels(tmp_path, tiny_classifier, tiny_csv):
    """Labels renamed in the data: the model's ids no longer mean the data's labels, so its accuracy would be wrong."""
    rows = [line.replace(",sports", ",athletics") for line in tiny_csv.read_text().splitlines()]
    renamed = tmp_path / "renamed.csv"
    renamed.write_text("\n".join(rows) + "\n")
    args = ["bench", "--model", f"m={tiny_classifier}", "--data", str(renamed), "--output", str(tmp_path / "o"), *BENCH]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "labels" in result.output and "(politics, sports, tech)" in result.output and "(athletics, politics, tech)" in result.output
    assert not (tmp_path / "o" / "bench.json").exists()


def test_bench_stage_ends_a_recipe_with_its_reports(tmp_path, tiny_classifier, tiny_csv):
    from edgepress.recipe.loading import validate_recipe
    from edgepress.running.pipeline import run_recipe

    recipe = validate_recipe({
        "name": "b", "output_dir": str(tmp_path / "runs"), "stages": ["finetune", "export", "bench"],
        "model": {"name_or_path": str(tiny_classifier)}, "data": {"source": str(tiny_csv)},
        "finetune": {"max_seq_length": 24, "epochs": 1, "logging_steps": 5},
        "export": {"max_seq_length": 24, "mobile": False},
        "bench": {"examples": 8, "rounds": 2, "threads": [1], "batch_sizes": [4], "max_seq_length": 24, "torch": False},
    })  # fmt: skip
    finetune, export, bench = run_recipe(recipe)
    assert bench.manifest["metrics"]["artifacts"] == 2  # model.onnx and model_optimized.onnx of 02-export
    assert {"bench.json", "report.md", "report.html", "pareto.png"} <= {p.name for p in bench.folder.iterdir()}
    assert set(bench.manifest["outputs"]) >= {"bench.json", "report.md"}
    page = (bench.folder / "report.html").read_text()
    # the fine-tuning's curves, inlined; the recommended artifact named and its row marked
    assert "<h2>Training</h2><h3>01-finetune</h3>" in page and 'alt="training curves of 01-finetune" src="data:image/png;base64,' in page
    assert "Recommended on this target (cpu): #" in page and page.count("<tr class='recommended'>") == 1


def test_stage_folders_of_an_earlier_recipe_are_not_measured(tmp_path):
    from edgepress.bench.artifacts import run_artifacts

    for folder, stage, onnx_file in (("01-export", "export", "model.onnx"), ("02-quantize", "quantize", "model_int8_dynamic.onnx")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "edgepress.json").write_text(json.dumps({"stage": stage, "metrics": {}}))
        (tmp_path / folder / onnx_file).write_bytes(b"")
    assert [a.name for a in run_artifacts(tmp_path)] == ["01-export/model.onnx", "02-quantize/model_int8_dynamic.onnx"]
    (tmp_path / "recipe.yaml").write_text("stages: [export]\n")  # the last recipe had no quantize stage
    assert [a.name for a in run_artifacts(tmp_path)] == ["01-export/model.onnx"]


# --------------------------------------------------------------------------- issue 27: what a new user tripped over


def test_a_gate_that_compared_no_artifact_fails_even_with_allow_missing(benched, tmp_path):
    baseline = _steady(benched[0])
    current = copy.deepcopy(baseline)
    current["artifacts"] = [{**current["artifacts"][1], "name": "m"}]  # a bench of one model named m
    result = _gate(tmp_path, baseline, current, "--allow-missing")
    assert result.exit_code == 1, result.output
    assert "no artifact of the baseline (01-finetune torch, 02-export/model.onnx, 02-export/model_optimized.onnx)" in result.output
    assert "gate passed" not in result.output


def test_gate_limits_must_be_non_negative_and_a_bare_number_above_one_is_refused(benched, tmp_path):
    document = _steady(benched[0])
    negative = _gate(tmp_path, document, document, "--max-accuracy-drop", "-1")
    assert negative.exit_code == 2 and "--max-accuracy-drop -1 must be 0 or more points" in negative.output
    bare = _gate(tmp_path, document, document, "--max-latency-regression", "10")
    assert bare.exit_code == 2 and "--max-latency-regression 10 would mean 1000%; write 10% (or 0.1 as a fraction)" in bare.output
    for fine in ("10%", "0.1", "1"):
        assert _gate(tmp_path, document, document, "--max-latency-regression", fine).exit_code == 0


def test_gate_table_has_units_and_never_prints_minus_zero(benched, tmp_path):
    baseline = _steady(benched[0])
    current = copy.deepcopy(baseline)
    current["artifacts"][1]["test"]["accuracy"] -= 1e-9  # the same accuracy, give or take a rounding error
    result = _gate(tmp_path, baseline, current)
    assert result.exit_code == 0, result.output
    assert "-0.00 pt" not in result.output and "+0.00 pt" in result.output
    latency_row = next(line for line in result.output.splitlines() if "latency 1T batch 1" in line and "model.onnx" in line)
    assert latency_row.count(" ms") >= 2  # baseline and current p50 carry their unit
    across = copy.deepcopy(current)
    across["environment"]["cpu"] = "another CPU"  # compared relative to a reference: a ratio, not ms
    ratio = _gate(tmp_path, baseline, across)
    assert ratio.exit_code == 0 and "x ref" in ratio.output and " ms" not in ratio.output


def test_gate_junit_goes_into_a_folder_it_makes_and_the_result_is_printed(benched, tmp_path):
    document = _steady(benched[0])
    report = tmp_path / "reports" / "ci" / "gate.xml"
    result = _gate(tmp_path, document, document, "--junit", str(report))
    assert result.exit_code == 0 and "gate passed" in result.output
    assert report.read_text().startswith('<testsuite name="edgepress gate"')
    (tmp_path / "a-file").write_text("x")
    unwritable = _gate(tmp_path, document, document, "--junit", str(tmp_path / "a-file" / "gate.xml"))
    assert unwritable.exit_code == 1 and "edgepress gate" in unwritable.output  # the table came first
    assert "check that the path is a folder you can write (--junit)" in unwritable.output and "--output-dir" not in unwritable.output


def test_bench_says_every_file_it_wrote_and_counts_in_words(benched):
    from edgepress.cli.bench import _count

    last = benched[2].strip().splitlines()[-1]
    assert last.startswith("wrote ") and all(name in last for name in ("bench.json", "report.md", "report.html", "pareto.png"))
    assert last.endswith("(3 artifacts)") and _count(1, "artifact") == "1 artifact"


def test_bench_run_of_a_stage_folder_names_the_run_folder(tiny_classifier):
    result = runner.invoke(app, ["bench", "--run", str(tiny_classifier)])
    assert result.exit_code == 2
    assert f"is the folder of one finetune stage, not a run folder; pass the run folder ({tiny_classifier.parent})" in result.output


def test_fastest_is_the_quickest_row_within_the_tolerance_of_the_fp32_graph():
    from edgepress.bench.report import fastest

    def row(name, kind, precision, accuracy, p50):
        return {"name": name, "kind": kind, "precision": precision, "test": {"accuracy": accuracy},
                "latency": {"1": {"batch 1": {"p50_ms": p50}}, "2": {"batch 1": {"p50_ms": p50 / 2}}}}  # fmt: skip

    rows = [
        row("teacher", "torch", "fp32", 0.95, 20.0),  # more accurate, but not the deployed graph
        row("model.onnx", "onnx", "fp32", 0.90, 5.0),
        row("int8 close", "onnx", "int8", 0.895, 2.0),  # 0.56% below: within 1%
        row("int8 far", "openvino", "int8", 0.85, 1.0),  # fastest, but 5.6% below
    ]
    chosen = fastest(rows, 0.01)
    assert chosen["reference"] == "model.onnx"
    assert chosen["by_threads"] == {"1": {"batch 1": "int8 close"}, "2": {"batch 1": "int8 close"}}
    assert fastest(rows, 0.1)["by_threads"]["1"]["batch 1"] == "int8 far"
    assert fastest([{**r, "test": {}} for r in rows], 0.01)["by_threads"] == {}


def _crowded_document() -> dict:
    """Seven artifacts, five of them within 3-8 ms and 0.3 points: the demo's crowded corner."""
    points = [(31.0, 0.985, 90e6), (12.0, 0.985, 40e6), (7.9, 0.984, 40e6), (7.6, 0.984, 38e6), (3.4, 0.983, 11e6),
              (3.1, 0.982, 11e6), (3.0, 0.982, 10e6)]  # fmt: skip
    artifacts = [
        {"name": f"0{i}-stage/model_{i}.onnx", "test": {"accuracy": acc}, "bytes": size,
         "latency": {"2": {"batch 1": {"p50_ms": ms}}}} for i, (ms, acc, size) in enumerate(points, start=1)
    ]  # fmt: skip
    return {"settings": {"threads": [2]}, "environment": {"target": "cpu"}, "artifacts": artifacts,
            "fastest": {"reference": artifacts[0]["name"], "tolerance": 0.01, "by_threads": {"2": {"batch 1": artifacts[6]["name"]}}}}  # fmt: skip


def test_pareto_plot_numbers_its_markers_without_overlap_and_rings_the_recommended():
    from edgepress.bench.plots import pareto_figure

    figure = pareto_figure(_crowded_document())
    axes = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    labels = [t for t in axes.texts]
    assert sorted(t.get_text() for t in labels) == [str(i) for i in range(1, 8)]  # numbers: the rows of the table
    boxes = [t.get_window_extent(renderer) for t in labels]
    overlapping = [(labels[i].get_text(), labels[j].get_text()) for i in range(len(boxes)) for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]
    assert overlapping == []
    assert "recommended: 7" in [t.get_text() for t in axes.get_legend().get_texts()]


def test_models_named_on_the_command_line_are_scored_at_the_deployment_batch(benched, tmp_path, tiny_classifier, tiny_csv):
    """The exported classifier plus a term that depends on the other texts of the batch (as dynamic
    int8's outputs do, in small part): one text at a time that term is 0 and the model is exact; in
    batches of 64 it swamps the logits. bench scores such files at bench.deployment_batch_size (1 unless set)."""
    import shutil

    import onnx
    from onnx import TensorProto, helper

    from edgepress.bench.artifacts import Artifact
    from edgepress.bench.stage import measure_missing_accuracy
    from edgepress.data.load import load_data
    from edgepress.recipe.deploy import BenchSection
    from edgepress.recipe.sections import DataSection

    folder = tmp_path / "model"
    shutil.copytree(next(tiny_classifier.parent.glob("*-export")), folder)  # the benched run's export: graph, tokenizer, labels
    model = onnx.load(str(folder / "model.onnx"))
    graph = model.graph
    for node in graph.node:  # the classifier's logits become "clean"; "logits" is clean + 100 x (text score - batch mean)
        node.output[:] = ["clean" if name == "logits" else name for name in node.output]
    graph.node.extend([
        helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["ids", "axis1"], ["score"], keepdims=1),  # [b, 1]
        helper.make_node("ReduceMean", ["score", "axis0"], ["mean"], keepdims=1),  # [1, 1]: the batch's mean
        helper.make_node("Sub", ["score", "mean"], ["diff"]),
        helper.make_node("Mul", ["diff", "direction"], ["noise"]),
        helper.make_node("Add", ["clean", "noise"], ["logits"]),
    ])  # fmt: skip
    graph.initializer.extend([helper.make_tensor("axis1", TensorProto.INT64, [1], [1]), helper.make_tensor("axis0", TensorProto.INT64, [1], [0]),
                              helper.make_tensor("direction", TensorProto.FLOAT, [1, 3], [100.0, -100.0, 0.0])])  # fmt: skip
    onnx.save(model, str(folder / "batchy.onnx"))
    data = load_data(DataSection(source=str(tiny_csv)))
    scores = {}
    for size in (BenchSection().scoring_batch_size, BenchSection(deployment_batch_size=0).scoring_batch_size):
        artifact = Artifact("batchy", "onnx", folder / "batchy.onnx", folder)
        measure_missing_accuracy([artifact], data, 24, size)
        scores[size] = artifact.test["accuracy"]
    assert scores[1] == 1.0 and scores[64] < 0.8, scores
