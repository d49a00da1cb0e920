"""The seeded sentence grammar of the synthetic corpus."""

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


def test_sentences_are_deterministic_and_cover_every_domain():
    first = grammar.generate_sentences(500, seed=3)
    assert first == grammar.generate_sentences(500, seed=3)
    assert first != grammar.generate_sentences(500, seed=4)
    assert any(s.startswith("set an alarm") for s in first)
    assert any(s.startswith("call ") for s in first)
    assert any(" of " in s and s.startswith("my birthday") for s in first)
    assert any(s.startswith("turn ") for s in first)
    assert any(s.startswith("the weather in") for s in first)


def test_vocabulary_is_a_few_hundred_words():
    words = grammar.vocabulary(grammar.generate_sentences(3000, seed=0))
    assert 250 <= len(words) <= 450
    assert all(word == word.upper() and " " not in word for word in words)


def test_normalize_transcript():
    assert grammar.normalize_transcript("  Ten o'clock,  please!\n") == "TEN O'CLOCK PLEASE"
    assert grammar.normalize_transcript("a-b") == "A B"


def test_plural():
    assert [grammar.plural(n) for n in ("bus", "car", "church", "box")] == ["buses", "cars", "churches", "boxes"]
