"""Every runtime and precision of one run's student, timed in one interleaved bench run.

    python benchmarks/runtimes.py runs/sst2-tf5 --data ../shared/data/sst2 --text-column sentence

1. `edgepress quantize --backend openvino` on the run's export folder (the run's own quantize stage
   is left as it is; the OpenVINO files go to <output>/openvino-run/), unless the run already has
   them (quantize.backend included openvino) or --openvino names a folder with them.
2. `edgepress bench --model ...` of the fused fp32 ONNX file, ONNX Runtime's dynamic and static int8
   files, the fp32 IR (in f32, and in bf16 where the CPU has it) and NNCF's int8 IR: batch 1 at real
   lengths and batch 32 x 128, 1 thread and all cores, interleaved rounds. The report names the
   fastest within 1% of the fp32 graph's test accuracy.

Prints bench's table and writes <output>/bench.json and benchmarks/results/runtimes.json (with the
CPU flags that matter: AVX2, AVX-512 VNNI, AVX-512 BF16, AMX).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import edgepress, stage_folder

HERE = Path(__file__).resolve().parent


def main() -> None:
    args = parse_args()
    run = args.run.resolve()
    export, quantize = stage_folder(run, "export"), stage_folder(run, "quantize")
    source = str(Path(args.data).resolve()) if Path(args.data).exists() else args.data  # a path, or builtin:bbc-news
    data = ["--data", source] + (["--text-column", args.text_column] if args.text_column else [])
    openvino = args.openvino or quantize / "openvino"
    if not (openvino / "openvino_model_int8.xml").is_file():
        edgepress("quantize", "--model", str(export), *data, "--backend", "openvino", "--name", "openvino-run",
                  "--output-dir", str(args.output), "--force")  # fmt: skip
        openvino = args.output / "openvino-run" / "01-quantize" / "openvino"
    models = {
        "ORT fp32 (fused)": export / "model_optimized.onnx",
        "ORT int8 dynamic": quantize / "model_int8_dynamic.onnx",
        "ORT int8 static": quantize / "model_int8_static.onnx",
        "OpenVINO fp32 IR": openvino / "openvino_model.xml",
        "OpenVINO NNCF int8": openvino / "openvino_model_int8.xml",
    }
    named = [f"--model={name}={path}" for name, path in models.items() if path.is_file()]
    edgepress("bench", *named, *data, "--batch-size", "32", "--max-seq-length", str(args.max_seq_length),
              "--examples", str(args.examples), "--rounds", str(args.rounds),
              "--output", str(args.output / "bench"))  # fmt: skip
    document = json.loads((args.output / "bench" / "bench.json").read_text())
    print((args.output / "bench" / "report.md").read_text())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"run": str(run), "models": {k: str(v) for k, v in models.items()}, "bench": document}, indent=2) + "\n")
    print(f"wrote {args.json}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder with export and quantize stages (e.g. runs/bbc-news)")
    parser.add_argument("--data", required=True, help="the run's data, a path or builtin:bbc-news (its test split is scored)")
    parser.add_argument("--text-column", default=None)
    parser.add_argument("--output", type=Path, default=Path("runs/runtimes"))
    parser.add_argument("--openvino", type=Path, help="a folder with the OpenVINO files of this run's export (default: made here)")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-seq-length", type=int, default=128, help="the padded batch's length (within the model's positions)")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "runtimes.json")
    return parser.parse_args()


if __name__ == "__main__":
    main()
