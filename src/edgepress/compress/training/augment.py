"""TinyBERT-style transfer-set augmentation: perturbed copies of the training texts.

Word-level edits (deletion, swap, insertion of a word drawn from the corpus), and synonym
replacement from WordNet where Debian's ``wordnet-base`` data is installed. The teacher labels the
new texts, so they need no human labels. Written here rather than taken from nlpaug (last release
2022) or textattack (an adversarial-attack framework with a large dependency tree): the edits are
a few lines, and nlpaug's synonym augmenter reads WordNet through nltk's downloader, which needs a
network edgepress does not assume; Debian's WordNet files are read directly instead.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from edgepress.recipe.training import AugmentSection

if TYPE_CHECKING:
    from edgepress.recipe.loading import Recipe

log = logging.getLogger(__name__)

WORDNET_DIR = Path("/usr/share/wordnet")


def augment_texts(texts: list[str], cfg: AugmentSection, seed: int) -> tuple[list[str], list[int]]:
    """``cfg.factor`` perturbed copies of each text, and for each copy the index of its original."""
    rng = random.Random(seed)
    vocabulary = _corpus_words(texts)
    synonyms = wordnet_synonyms() if cfg.synonym > 0 else {}
    if cfg.synonym > 0 and not synonyms:
        log.warning("synonym replacement skipped: no WordNet data in %s (apt-get install wordnet-base)", WORDNET_DIR)
    new_texts, origins = [], []
    for _ in range(cfg.factor):
        for index, text in enumerate(texts):
            new_texts.append(perturb(text.split(), cfg, rng, vocabulary, synonyms))
            origins.append(index)
    return new_texts, origins


def perturb(words: list[str], cfg: AugmentSection, rng: random.Random, vocabulary: list[str], synonyms: dict) -> str:
    out: list[str] = []
    for word in words:
        if rng.random() < cfg.deletion and len(words) > 1:
            continue
        key = word.lower().strip(".,;:!?\"'()")
        if synonyms and rng.random() < cfg.synonym and key in synonyms:
            word = rng.choice(synonyms[key])
        out.append(word)
        if vocabulary and rng.random() < cfg.insertion:
            out.append(rng.choice(vocabulary))
    for i in range(len(out)):
        if rng.random() < cfg.swap and len(out) > 1:
            j = rng.randrange(len(out))
            out[i], out[j] = out[j], out[i]
    return " ".join(out) if out else " ".join(words)


def _corpus_words(texts: list[str], limit: int = 5000) -> list[str]:
    """The corpus's most frequent words: insertions stay in the domain's vocabulary."""
    counts = Counter(word for text in texts for word in text.split())
    return [word for word, _ in counts.most_common(limit)]


def distill_facts(recipe: "Recipe") -> dict[str, str]:
    """The distill stage's environment facts (its registry hook): those of its augmentation, and the
    content of a local transfer-text source and ensemble teachers (editing them re-runs the stage)."""
    from edgepress.data.unlabelled import fingerprint

    facts = environment_facts(recipe.distill.augment)
    if recipe.distill.transfer.source:
        facts["transfer"] = fingerprint(recipe.distill.transfer.source)
    for index, teacher in enumerate(recipe.distill.ensemble):  # an ensemble teacher retrained in place re-runs the stage
        facts[f"ensemble.{index}"] = fingerprint(teacher)
    return facts


def environment_facts(cfg: AugmentSection, wordnet_dir: Path | None = None) -> dict[str, str]:
    """What of this machine changes the augmented texts: whether (and which) WordNet data files are
    installed, when synonyms are asked for. It goes into the distill stage's fingerprint, so that
    installing wordnet-base re-runs a distillation that was made without synonyms."""
    if not (cfg.factor and cfg.synonym > 0):
        return {}
    folder = wordnet_dir or WORDNET_DIR
    files = sorted(folder.glob("data.*")) if folder.is_dir() else []
    return {"wordnet": ",".join(f"{p.name}:{p.stat().st_size}" for p in files) or "absent"}


@lru_cache(maxsize=1)
def wordnet_synonyms() -> dict[str, list[str]]:
    """Single-word synonyms from WordNet's data files (``data.noun``, ``data.verb``, ...), if installed."""
    synonyms: dict[str, set[str]] = {}
    for part in ("noun", "verb", "adj", "adv"):
        path = WORDNET_DIR / f"data.{part}"
        if not path.is_file():
            continue
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.startswith("  "):
                continue  # the licence header
            fields = line.split()
            count = int(fields[3], 16)
            lemmas = [fields[4 + 2 * i].lower() for i in range(count)]
            words = [w.split("(")[0] for w in lemmas if "_" not in w]
            for word in words:
                synonyms.setdefault(word, set()).update(w for w in words if w != word)
    return {word: sorted(others) for word, others in synonyms.items() if others}
