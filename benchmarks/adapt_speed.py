"""What projecting only the masked tokens saves in adapt's training steps (issue 34).

    python benchmarks/adapt_speed.py ../shared/data/sst2/train.tsv --column sentence

Times training steps (forward, backward, AdamW) of the masked-language model edgepress's adapt
stage trains, the same batches both ways, interleaved round by round: the model's own loss (logits
over the whole vocabulary at every position) and adapt's (the head on the masked positions only).
Prints the median step time of each and their ratio, and checks that both give the same loss on
the same batch; writes benchmarks/results/adapt_speed.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import write_result  # noqa: E402


def main() -> None:
    args = parse_args()
    import pandas as pd
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer, TrainingArguments

    from edgepress.compress.training.adapt import _Collator, encode, masked_lm_trainer, mlm_collator
    from edgepress.models import resolve_source
    from edgepress.recipe.training import AdaptSection

    torch.set_num_threads(args.threads)
    texts = pd.read_csv(args.texts, sep="\t" if args.texts.suffix == ".tsv" else ",")[args.column].astype(str).tolist()[: args.batch * args.steps]
    source = resolve_source(args.model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForMaskedLM.from_pretrained(source)
    rows = encode(texts, tokenizer, args.max_seq_length, words=False)
    collate = _Collator(mlm_collator(tokenizer, AdaptSection(whole_word_masking=True), seed=0))
    batches = [collate([rows[i] for i in range(s, s + args.batch)]) for s in range(0, len(rows) - args.batch + 1, args.batch)]
    trainer = masked_lm_trainer()(model=model, args=TrainingArguments(output_dir="/tmp/adapt-speed", report_to="none", use_cpu=True))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)  # tiny: the weights barely move between the two ways

    def step(batch: dict, masked_only: bool) -> float:
        start = time.perf_counter()
        loss = trainer.compute_loss(model, dict(batch)) if masked_only else model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - start

    with torch.no_grad():
        same = abs(float(trainer.compute_loss(model, dict(batches[0]))) - float(model(**batches[0]).loss))
    times = {"full vocabulary at every position": [], "masked positions only": []}
    for round_ in range(args.rounds):
        for batch in batches:
            order = [False, True] if round_ % 2 == 0 else [True, False]  # which way goes first alternates
            for masked_only in order:
                times["masked positions only" if masked_only else "full vocabulary at every position"].append(step(batch, masked_only))
    medians = {k: statistics.median(v) for k, v in times.items()}
    ratio = medians["full vocabulary at every position"] / medians["masked positions only"]
    for name, value in medians.items():
        print(f"{name:36s} median step {1000 * value:8.1f} ms  ({len(times[name])} steps)")
    print(f"masked-only steps are {ratio:.2f}x as fast; |loss difference| on one batch {same:.2e}")
    write_result(args.json, "adapt_speed", {"settings": vars(args) | {"texts": str(args.texts), "json": str(args.json)},
                                            "median_step_s": medians, "speedup": round(ratio, 3), "loss_difference": same})  # fmt: skip
    print(f"wrote {args.json}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("texts", type=Path, help="a csv/tsv file of texts")
    parser.add_argument("--column", default="text")
    parser.add_argument("--model", default="builtin:minilm-l6")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="batches per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "adapt_speed.json")
    args = parser.parse_args()
    if not args.texts.is_file():
        sys.exit(f"{args.texts} does not exist; give a csv/tsv file of texts (e.g. ../shared/data/sst2/train.tsv)")
    return args


if __name__ == "__main__":
    main()
