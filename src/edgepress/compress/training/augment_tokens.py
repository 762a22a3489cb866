"""Transfer-set augmentation for token classification: the four operations of Dai & Adel (2020),
"An Analysis of Simple Data Augmentation for Named Entity Recognition":

- label-wise token replacement: a word becomes another training word with the same tag;
- synonym replacement: a word becomes a WordNet synonym (single words only, so its tag stands);
- mention replacement: an entity mention becomes another training mention of the same type, and
  the BIO tags are rewritten for its length;
- shuffling within segments: the words of each segment (a mention, or a run of ``O`` words) are
  shuffled among themselves, never across an entity boundary.

Each copy keeps the tags its edits imply; with ``augment.labels: teacher`` (the default) those tags
are not trained on: the teacher's per-piece outputs on the new sentence are the targets, so a
replaced word is tagged by the teacher rather than by a guess. Written here for the same reason as
the text edits (augment.py): a few lines each, and no maintained library implements them.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import NamedTuple, Optional

from edgepress.compress.training.augment import wordnet_synonyms
from edgepress.recipe.training import AugmentSection

OUTSIDE = "O"


class Segment(NamedTuple):
    start: int
    end: int  # exclusive
    kind: Optional[str]  # the entity type of a mention; None for a run of O words


def segments(tags: list[str]) -> list[Segment]:
    """A sentence's mentions (``B-X`` then ``I-X`` words; an ``I-X`` that does not continue an ``X``
    starts one, as lenient IOB readers do) and the runs of ``O`` words between them."""
    found: list[Segment] = []
    for i, tag in enumerate(tags):
        kind = None if tag == OUTSIDE else tag.split("-", 1)[-1]
        continues = found and found[-1].end == i and found[-1].kind == kind and (kind is None or tag.startswith("I-"))
        if continues:
            found[-1] = found[-1]._replace(end=i + 1)
        else:
            found.append(Segment(i, i + 1, kind))
    return found


class Vocabulary(NamedTuple):
    """What the replacements draw from: training words by tag, training mentions by type."""

    words_by_tag: dict[str, list[str]]
    mentions_by_type: dict[str, list[tuple[str, ...]]]

    @classmethod
    def of(cls, sentences: list[list[str]], tags: list[list[str]]) -> "Vocabulary":
        words: dict[str, set[str]] = defaultdict(set)
        mentions: dict[str, set[tuple[str, ...]]] = defaultdict(set)
        for sentence, sentence_tags in zip(sentences, tags):
            for word, tag in zip(sentence, sentence_tags):
                words[tag].add(word)
            for seg in segments(sentence_tags):
                if seg.kind is not None:
                    mentions[seg.kind].add(tuple(sentence[seg.start : seg.end]))
        return cls({t: sorted(w) for t, w in words.items()}, {k: sorted(m) for k, m in mentions.items()})


def augment_sentences(
    sentences: list[list[str]], tags: list[list[str]], cfg: AugmentSection, seed: int
) -> tuple[list[list[str]], list[list[str]], list[int]]:
    """``cfg.factor`` edited copies of each sentence, their tags, and each copy's original index."""
    rng = random.Random(seed)
    vocabulary = Vocabulary.of(sentences, tags)
    synonyms = wordnet_synonyms() if cfg.synonym > 0 else {}
    new_words, new_tags, origins = [], [], []
    for _ in range(cfg.factor):
        for index, (words, sentence_tags) in enumerate(zip(sentences, tags)):
            words_copy, tags_copy = perturb_sentence(list(words), list(sentence_tags), cfg, rng, vocabulary, synonyms)
            new_words.append(words_copy)
            new_tags.append(tags_copy)
            origins.append(index)
    return new_words, new_tags, origins


def perturb_sentence(
    words: list[str], tags: list[str], cfg: AugmentSection, rng: random.Random, vocabulary: Vocabulary, synonyms: dict
) -> tuple[list[str], list[str]]:
    words, tags = replace_mentions(words, tags, cfg.mention_replacement, rng, vocabulary)
    for i, tag in enumerate(tags):
        if rng.random() < cfg.token_replacement and vocabulary.words_by_tag.get(tag):
            words[i] = rng.choice(vocabulary.words_by_tag[tag])
        elif synonyms and rng.random() < cfg.synonym and words[i].lower() in synonyms:
            words[i] = rng.choice(synonyms[words[i].lower()])
    return shuffle_segments(words, tags, cfg.shuffle, rng), tags


def replace_mentions(
    words: list[str], tags: list[str], probability: float, rng: random.Random, vocabulary: Vocabulary
) -> tuple[list[str], list[str]]:
    new_words: list[str] = []
    new_tags: list[str] = []
    for seg in segments(tags):
        choices = vocabulary.mentions_by_type.get(seg.kind or "", [])
        if seg.kind is not None and choices and rng.random() < probability:
            mention = list(rng.choice(choices))
            new_words += mention
            new_tags += [f"B-{seg.kind}"] + [f"I-{seg.kind}"] * (len(mention) - 1)
        else:
            new_words += words[seg.start : seg.end]
            new_tags += tags[seg.start : seg.end]
    return new_words, new_tags


def shuffle_segments(words: list[str], tags: list[str], probability: float, rng: random.Random) -> list[str]:
    out = list(words)
    for seg in segments(tags):
        if seg.end - seg.start > 1 and rng.random() < probability:
            part = out[seg.start : seg.end]
            rng.shuffle(part)
            out[seg.start : seg.end] = part
    return out
