"""The seeded sentence grammar of the synthetic corpus: breadth, disjoint splits, held-out structures and words."""

import random
import re

import pytest

from hybrid_encoders.recipes import grammar


@pytest.mark.parametrize("value, words", [
    (0, "zero"), (13, "thirteen"), (40, "forty"), (42, "forty two"), (100, "one hundred"),
    (342, "three hundred and forty two"), (1000, "one thousand"), (1005, "one thousand and five"),
    (2350, "two thousand three hundred and fifty"), (999999, "nine hundred and ninety nine thousand nine hundred and "
                                                            "ninety nine"),
])
def test_number_words(value, words):
    assert grammar.number_words(value) == words


@pytest.mark.parametrize("value, words", [(1, "first"), (3, "third"), (12, "twelfth"), (20, "twentieth"),
                                          (21, "twenty first"), (30, "thirtieth"), (31, "thirty first")])
def test_ordinal_words(value, words):
    assert grammar.ordinal_words(value) == words


@pytest.mark.parametrize("function, value", [(grammar.number_words, -1), (grammar.number_words, 10 ** 6),
                                             (grammar.ordinal_words, 0), (grammar.ordinal_words, 32)])
def test_out_of_range_numbers_are_rejected(function, value):
    with pytest.raises(ValueError, match="value must be in"):
        function(value)


SIZES = {"train": 1368, "dev": 90, "dev_other": 72, "test": 135, "test_other": 135}  # the default corpus


@pytest.fixture(scope="module")
def training_sample():
    """20,000 sentences of the training grammar (repeats possible)."""
    return grammar.generate_sentences(20000, seed=11)


@pytest.fixture(scope="module")
def held_out_sample():
    """``(structure, sentence)`` pairs of the held-out structures."""
    rng = random.Random(12)
    return [grammar.draw(rng, held_out=True) for _ in range(3000)]


def test_sentences_are_deterministic_and_cover_every_domain():
    first = grammar.generate_sentences(500, seed=3)
    assert first == grammar.generate_sentences(500, seed=3)
    assert first != grammar.generate_sentences(500, seed=4)
    assert any(s.startswith("set an alarm") for s in first)
    assert any(s.startswith("call ") for s in first)
    assert any(" of " in s and " birthday is on " in s for s in first)
    assert any(s.startswith("turn ") for s in first)
    assert any(s.startswith("the weather in") for s in first)


def test_training_grammar_is_wide(training_sample):
    words = grammar.vocabulary(training_sample)
    assert len(words) >= 1800
    assert all(word == word.upper() and " " not in word for word in words)
    lengths = [len(sentence.split()) for sentence in training_sample]
    assert min(lengths) == 1 and max(lengths) >= 20
    assert 7.0 <= sum(lengths) / len(lengths) <= 9.0
    rng = random.Random(0)
    assert {grammar.draw(rng)[0] for _ in range(5000)} == set(grammar.TRAIN_STRUCTURES)
    assert len(grammar.TRAIN_STRUCTURES) >= 32


@pytest.fixture(scope="module")
def composed_sample():
    """Sentences of the free-composition structure."""
    rng = random.Random(13)
    return [sentence for name, sentence in (grammar.draw(rng) for _ in range(20000)) if name == "composed"]


def test_free_composition_makes_about_a_quarter_of_the_sentences(composed_sample):
    assert 0.2 <= len(composed_sample) / 20000 <= 0.35


@pytest.mark.parametrize("form", [
    r"\b(does|do|did) not \w+", r"\b(will not|won't) \w+", r"\b(is|are|am) \w+ing\b", r"\b(was|were) \w+ing\b",
    r"\b(has|have) (already |just |never )?\w+", r"\bhad (just |already |never )?\w+",
    r"\b(can|could|should|must|might|may|would) have \w+", r"\b(wanted|tried|decided) to \w+",
    r"\b(is|are|was|were) \w+(ed|en)\b", r"\b(has|have) (just |never )?been \w+", r"\b(is|are) being \w+",
    r"\bwill be \w+", r"\bby \w+", r" (when|while|after|before|until|although|since) ",
])
def test_free_composition_covers_tense_aspect_voice_and_conjunctions(composed_sample, form):
    assert any(re.search(form, sentence) for sentence in composed_sample), form


def test_free_composition_agrees_with_its_subject(composed_sample):
    """Pronoun subjects take the verb forms of their person; plural passive subjects take plural auxiliaries."""
    wrong = re.compile(r"^(he|she) (do|have|are|am|were)\b|^(i|you|we|they) (does|has|is)\b|^i (are|were)\b|"
                       r"^(you|we|they) (am|was)\b|^some \w+ (is|was|has)\b")
    pronoun_subject = [sentence for sentence in composed_sample if sentence.split()[0] in ("he", "she", "i", "you")]
    assert len(pronoun_subject) >= 200 and sum(sentence.startswith("some ") for sentence in composed_sample) >= 50
    assert not [sentence for sentence in composed_sample if wrong.search(sentence)]


def test_splits_are_disjoint(training_sample):
    splits = grammar.generate_splits(SIZES, seed=0)
    assert {split: len(rows) for split, rows in splits.items()} == SIZES
    texts = {split: [sentence for _, sentence in rows] for split, rows in splits.items()}
    for split, sentences in texts.items():
        assert len(set(sentences)) == len(sentences), split
    names = sorted(texts)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            assert not set(texts[first]) & set(texts[second]), (first, second)
    for split in ("train", "dev", "test"):
        assert all(name in grammar.TRAIN_STRUCTURES for name, _ in splits[split])
    for split in grammar.HELD_OUT_SPLITS:
        assert {name for name, _ in splits[split]} <= set(grammar.HELD_OUT_STRUCTURES)


def test_splits_are_deterministic_under_the_seed():
    first = grammar.generate_splits(SIZES, seed=5)
    assert first == grammar.generate_splits(SIZES, seed=5)
    other = grammar.generate_splits(SIZES, seed=6)
    for split in SIZES:
        assert first[split] != other[split]
    # The evaluation sets do not depend on the size of the training set.
    bigger = grammar.generate_splits(dict(SIZES, train=3000), seed=5)
    for split in ("dev", "dev_other", "test", "test_other"):
        assert bigger[split] == first[split]


def test_held_out_structures_never_come_from_the_training_grammar(training_sample, held_out_sample):
    for name, structure in grammar.HELD_OUT_STRUCTURES.items():
        signature = re.compile(structure.signature)
        sentences = [sentence for drawn, sentence in held_out_sample if drawn == name]
        assert len(sentences) >= 100, name
        assert all(signature.search(sentence) for sentence in sentences), name
        assert not [sentence for sentence in training_sample if signature.search(sentence)], name


def test_held_out_words_only_in_held_out_structures(training_sample, held_out_sample):
    training_words = set(grammar.vocabulary(training_sample))
    held_out = {word.upper() for word in grammar.HELD_OUT_WORDS}
    assert len(held_out) >= 50 and not held_out & training_words
    tokens = [word for _, sentence in held_out_sample for word in grammar.normalize_transcript(sentence).split()]
    # "some words": held-out lexicon words plus the few new function words of the held-out structures (NEITHER,
    # NOR, UNLESS).
    assert 0.01 <= sum(token in held_out for token in tokens) / len(tokens) <= 0.05
    assert 0.03 <= sum(token not in training_words for token in tokens) / len(tokens) <= 0.08


def test_too_many_sentences_for_the_grammar_is_an_error(monkeypatch):
    monkeypatch.setattr(grammar, "TRAIN_STRUCTURES", {"short": grammar.TRAIN_STRUCTURES["short"]})
    with pytest.raises(ValueError, match="could not draw 60 distinct sentences for 'train'"):
        grammar.generate_splits({"train": 60}, seed=0)


@pytest.mark.parametrize("base, forms", [
    ("carry", ("carry", "carries", "carried", "carried", "carrying")),
    ("move", ("move", "moves", "moved", "moved", "moving")),
    ("wash", ("wash", "washes", "washed", "washed", "washing")),
    ("play", ("play", "plays", "played", "played", "playing")),
])
def test_regular_verb(base, forms):
    assert grammar.regular_verb(base) == forms


def test_normalize_transcript():
    assert grammar.normalize_transcript("  Ten o'clock,  please!\n") == "TEN O'CLOCK PLEASE"
    assert grammar.normalize_transcript("a-b") == "A B"


def test_plural():
    assert [grammar.plural(n) for n in ("bus", "car", "church", "box", "knife", "sheep", "city", "key")] == [
        "buses", "cars", "churches", "boxes", "knives", "sheep", "cities", "keys"]
