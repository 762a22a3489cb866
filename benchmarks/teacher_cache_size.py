"""How much memory the teacher cache of staged distillation takes, padded to max_seq_length against
real tokens only (the cache's layout since 2026-12-05).

    python benchmarks/teacher_cache_size.py ../shared/data/sst2/train.tsv --column sentence \
        --teacher runs/sst2-select/01-finetune --max-length 64 --hidden-layers 0 2 4 --relations --check 2000

Tokenizes every text of the file with the teacher's tokenizer, and prints the float16 bytes of the
hidden states (one tensor per layer), the relation layer's queries, keys and values, and attention
maps, both ways. ``--check N`` builds the real cache on the first N texts (the teacher runs) and
prints its tensors' bytes beside the formula's, so the printed sizes are the cache's, not a guess,
and how far the process's resident memory rose above its start while the cache was built (Linux).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from common import write_result

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    args = parse_args()
    from transformers import AutoConfig, AutoTokenizer

    texts = read_texts(args.data, args.column)
    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    config = AutoConfig.from_pretrained(args.teacher)
    lengths = np.array([len(ids) for ids in tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"]])
    sizes = {"padded": bytes_of(np.full_like(lengths, args.max_length), config, args), "real tokens": bytes_of(lengths, config, args)}
    print(f"{len(texts):,} texts, {lengths.mean():.1f} pieces on average (max_length {args.max_length}); "
          f"width {config.hidden_size}, {config.num_attention_heads} heads")  # fmt: skip
    print(f"{'layout':<12} {'hidden':>10} {'relations':>10} {'attention':>10} {'total':>10}")
    for layout, parts in sizes.items():
        print(f"{layout:<12} " + " ".join(f"{gb(v):>10}" for v in (*parts.values(), sum(parts.values()))))
    ratio = sum(sizes["padded"].values()) / sum(sizes["real tokens"].values())
    print(f"padded / real tokens: {ratio:.2f}x")
    checked = check(args, texts[: args.check], lengths[: args.check], config) if args.check else None
    write_result(args.json, "teacher_cache_size", {"texts": len(texts), "mean_pieces": float(lengths.mean()), "sizes": sizes,
                                                   "ratio": ratio, "check": checked, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}})  # fmt: skip


def bytes_of(lengths: np.ndarray, config, args: argparse.Namespace) -> dict[str, int]:
    """float16 bytes of each group of cached tensors for texts of these lengths."""
    tokens = int(lengths.sum())
    return {
        "hidden": 2 * tokens * config.hidden_size * len(args.hidden_layers),
        "relations": 2 * tokens * config.hidden_size * 3 if args.relations else 0,  # query, key, value of one layer
        "attention": 2 * int((lengths.astype(np.int64) ** 2).sum()) * config.num_attention_heads * len(args.attention_layers),
    }


def check(args: argparse.Namespace, texts: list[str], lengths: np.ndarray, config) -> dict:
    """The real cache's bytes on ``texts`` against the formula's."""
    from edgepress.compress.training.teacher_cache import CacheRequest, run_teacher
    from edgepress.models import load_classifier
    from edgepress.recipe.sections import ModelSection

    labels = [config.id2label[i] for i in range(config.num_labels)]
    teacher, tokenizer = load_classifier(ModelSection(name_or_path=str(args.teacher)), labels, attn_implementation="eager")
    request = CacheRequest("check", args.max_length, tuple(args.hidden_layers), tuple(args.attention_layers),
                           relation_layer=config.num_hidden_layers - 1 if args.relations else None)  # fmt: skip
    start, resident = time.perf_counter(), reset_peak_memory()
    outputs = run_teacher(teacher, tokenizer, {"text": texts}, request, batch_size=64)
    seconds, peak = time.perf_counter() - start, memory("VmHWM") - resident
    groups = (outputs.hidden, outputs.attentions, outputs.relations)
    stored = sum(p.values.numel() * p.values.element_size() for group in groups for p in group.values())
    expected = sum(bytes_of(lengths, config, args).values())
    print(f"check on {len(texts):,} texts: the cache holds {stored:,} bytes of float16 states; the formula says {expected:,} "
          f"({'equal' if stored == expected else 'DIFFERENT'}); teacher pass {seconds:.1f} s, "
          f"peak memory {gb(peak)} above its start ({peak / stored:.2f}x the cache)")  # fmt: skip
    return {"texts": len(texts), "stored_bytes": stored, "formula_bytes": expected, "teacher_seconds": round(seconds, 1), "peak_bytes": peak}


def reset_peak_memory() -> int:
    """Resets the kernel's peak resident size of this process (Linux: VmHWM) and returns the resident size now."""
    Path("/proc/self/clear_refs").write_text("5")
    return memory("VmRSS")


def memory(field: str) -> int:
    """A size from /proc/self/status, in bytes."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def gb(value: int) -> str:
    return f"{value / 1e9:.2f} GB"


def read_texts(path: Path, column: str) -> list[str]:
    with path.open(newline="") as handle:
        return [row[column] for row in csv.DictReader(handle, delimiter="\t" if path.suffix == ".tsv" else ",", quoting=csv.QUOTE_NONE)]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="a .tsv or .csv file of texts")
    parser.add_argument("--column", default="text")
    parser.add_argument("--teacher", type=Path, required=True, help="the teacher's folder (its tokenizer and config)")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--hidden-layers", type=int, nargs="*", default=[0, 2, 4], help="teacher layers whose hidden states are cached")
    parser.add_argument("--attention-layers", type=int, nargs="*", default=[], help="teacher layers whose attention maps are cached")
    parser.add_argument("--relations", action="store_true", help="also the last layer's queries, keys and values (MiniLMv2)")
    parser.add_argument("--check", type=int, default=0, help="build the real cache on this many texts and compare")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "teacher_cache_size.json")
    return parser.parse_args()


if __name__ == "__main__":
    main()
