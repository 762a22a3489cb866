"""Vocabulary trimming on SST-2 and BBC News: how many tokens and embedding parameters stay, and
what changes for texts outside the training split.

    python benchmarks/vocabulary.py --sst2 ../shared/data/sst2

For each dataset and min_count: the WordPiece vocabulary of builtin:minilm-l6 before and after
(edgepress.compress.pruning.vocabulary, the prune stage's code), the embedding parameters (rows x hidden
size), whether every training text keeps its pieces, and on the test split the share of texts whose
pieces change and the change in token count. Prints a table; writes benchmarks/results/vocabulary.json.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

from edgepress.compress.pruning import vocabulary
from edgepress.data.load import load_data
from edgepress.models import resolve_source
from edgepress.recipe.sections import DataSection
from edgepress.running.runs import environment

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    from transformers import AutoConfig, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()  # tokenize() on whole articles warns about the model's 512-token limit
    args = parse_args()
    source = resolve_source("builtin:minilm-l6")
    tokenizer, hidden = AutoTokenizer.from_pretrained(source), AutoConfig.from_pretrained(source).hidden_size
    datasets = {"bbc-news": DataSection(source="builtin:bbc-news")}
    if args.sst2:
        datasets["sst2"] = DataSection(source=str(args.sst2), text_column="sentence")
    rows = []
    for name, section in datasets.items():
        data = load_data(section)
        train, test = list(data.train["text"]), list(data.test["text"])
        counts = vocabulary.token_counts(tokenizer, {"text": train})
        for min_count in args.min_count:
            rows.append(measure(name, tokenizer, hidden, counts, train, test, min_count))
    print(f"{'data':<9} {'min':>4} {'train texts':>11} {'seen ids':>8} {'kept':>6} {'of':>6} {'embedding params':>17} {'train same':>10} {'test changed':>12} {'test tokens':>11}")
    for r in rows:
        print(
            f"{r['data']:<9} {r['min_count']:>4} {r['train_texts']:>11,} {r['seen']:>8,} {r['after']:>6,} {r['before']:>6,} "
            f"{r['embedding_before']:>8,} -> {r['embedding_after']:<9,}{str(r['train_same_tokens']):>6} "
            f"{100 * r['test_texts_changed']:>11.1f}% {r['test_token_change']:>+10.2%}"
        )
    result = {"benchmark": "vocabulary", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": environment(), "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


def measure(name: str, tokenizer, hidden: int, counts, train: list[str], test: list[str], min_count: int) -> dict:
    plan = vocabulary.plan(tokenizer, counts, min_count)
    trimmed = vocabulary.trimmed_tokenizer(tokenizer, plan.keep)
    same = True
    if min_count == 1:
        vocabulary.check_same_tokens(tokenizer, trimmed, train)  # raises if a training text changed
    else:
        same = all(tokenizer.tokenize(t) == trimmed.tokenize(t) for t in train)
    before = [tokenizer.tokenize(t) for t in test]
    after = [trimmed.tokenize(t) for t in test]
    return {
        "data": name,
        "train_texts": len(train),
        **plan.report(min_count),
        "seen": plan.seen,
        "embedding_before": plan.before * hidden,
        "embedding_after": len(plan.keep) * hidden,
        "train_same_tokens": same,
        "test_texts_changed": sum(a != b for a, b in zip(before, after)) / len(test),
        "test_token_change": sum(map(len, after)) / sum(map(len, before)) - 1,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sst2", type=Path, help="the SST-2 folder (train.tsv, dev.tsv, test.tsv); BBC News only when absent")
    parser.add_argument("--min-count", type=int, nargs="+", default=[1, 2, 5])
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "vocabulary.json")
    return parser.parse_args()


if __name__ == "__main__":
    main()
