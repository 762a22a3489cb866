"""Why can a static (QDQ) int8 model be slower at 2 threads than at 1? Batch-1 latency of ONNX files
at 1 and 2 threads under ONNX Runtime thread-pool settings, interleaved, with each graph's node counts.

    python benchmarks/int8_threads.py --folder runs/sst2-headline/05-quantize --data ../shared/data/sst2 \
        --text-column sentence

Times every model_int8_*.onnx of the folder (and --model files) on the first --examples test texts
at their real lengths, for: ONNX Runtime's defaults; spinning off
(session.intra_op.allow_spinning=0); and dynamic_block_base=4 (smaller work blocks). Prints p50 per
file, setting and thread count, and the 2-thread/1-thread ratio; writes benchmarks/results/int8_threads.json.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from common import write_result
from edgepress.bench.runner import feeds_for, open_session, statistics, time_interleaved

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {"default": {}, "no spinning": {"session.intra_op.allow_spinning": "0"}, "block base 4": {"session.dynamic_block_base": "4"}}


def main() -> None:
    args = parse_args()
    files = sorted(args.folder.glob("model_int8_*.onnx")) + args.model
    files = [f for f in files if not f.name.endswith("_with_tokenizer.onnx")]
    examples = test_examples(args)
    latency: dict[str, dict] = {}
    for threads in (1, 2):
        calls = {}
        for path in files:
            for setting, entries in SETTINGS.items():
                session = open_session(str(path), threads, config=entries)
                feeds = [feeds_for(session, e) for e in examples]
                calls[f"{path.name} | {setting}"] = [lambda s=session, f=f: s.run(None, f) for f in feeds]
        for name, times in time_interleaved(calls, args.rounds).items():
            latency.setdefault(name, {})[str(threads)] = statistics(times, args.rounds, len(times))["p50_ms"]
    print(f"{'file | setting':<52} {'p50 1T ms':>10} {'p50 2T ms':>10} {'2T / 1T':>8}")
    for name, by_threads in latency.items():
        print(f"{name:<52} {by_threads['1']:>10.3f} {by_threads['2']:>10.3f} {by_threads['2'] / by_threads['1']:>8.2f}")
    nodes = {path.name: node_counts(path) for path in files}
    for name, counts in nodes.items():
        top = ", ".join(f"{op} {n}" for op, n in counts.most_common(8))
        print(f"{name}: {sum(counts.values())} nodes ({top})")
    write_result(args.json, "int8_threads", {
        "examples": len(examples), "rounds": args.rounds, "settings": SETTINGS, "p50_ms": latency, "nodes": {k: dict(v) for k, v in nodes.items()},
    })  # fmt: skip


def test_examples(args: argparse.Namespace) -> list[dict[str, np.ndarray]]:
    from transformers import AutoTokenizer

    from edgepress.data.load import load_data
    from edgepress.recipe.sections import DataSection

    tokenizer = AutoTokenizer.from_pretrained(args.folder)
    texts = list(load_data(DataSection(source=str(args.data), text_column=args.text_column)).test["text"][: args.examples])
    return [dict(tokenizer([t], truncation=True, max_length=args.max_seq_length, return_tensors="np")) for t in texts]


def node_counts(path: Path) -> Counter:
    import onnx

    return Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True, help="a quantize stage folder (model_int8_*.onnx and the tokenizer)")
    parser.add_argument("--model", type=Path, action="append", default=[], help="another ONNX file with the same inputs (repeatable)")
    parser.add_argument("--data", default="builtin:bbc-news", help="data whose test texts are timed")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "int8_threads.json")
    return parser.parse_args()


if __name__ == "__main__":
    main()
