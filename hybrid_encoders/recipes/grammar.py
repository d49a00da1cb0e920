"""A seeded English grammar for the synthetic speech corpus of ``egs/mini/asr1``.

Sentences cover the domains of a voice assistant: numbers, dates, times, commands and short statements. Every
sentence is produced as spoken words (numbers are spelled out), so the text handed to the synthesiser and the
reference transcript are the same word sequence; :func:`normalize_transcript` maps it to the LibriSpeech-style
reference form (upper case, no punctuation, single spaces).
"""

import random
import re
from typing import Callable, Dict, List, Sequence

UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
ORDINAL_UNITS = ("zeroth", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
                 "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
                 "eighteenth", "nineteenth")
ORDINAL_TENS = ("", "", "twentieth", "thirtieth")

MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
ROOMS = ("kitchen", "bedroom", "living room", "bathroom", "office", "garage", "hallway", "garden", "basement")
DEVICES = ("lights", "heater", "fan", "radio", "television", "oven", "dishwasher", "washing machine", "speaker")
COLOURS = ("red", "green", "blue", "yellow", "white", "black", "orange", "purple", "brown", "grey")
CITIES = ("paris", "london", "berlin", "madrid", "rome", "tokyo", "boston", "chicago", "sydney", "toronto", "dublin",
          "vienna", "oslo", "cairo", "lisbon")
WEATHER = ("sunny", "cloudy", "rainy", "windy", "foggy", "cold", "warm", "hot", "freezing", "stormy")
GENRES = ("jazz", "rock", "classical", "folk", "country", "blues", "pop", "reggae", "soul")
PEOPLE = ("anna", "peter", "maria", "john", "sarah", "david", "emma", "james", "linda", "robert", "susan", "michael",
          "laura", "thomas", "mother", "father", "the doctor", "my sister", "my brother", "the office")
OBJECTS = ("car", "house", "bridge", "train", "dog", "cat", "book", "table", "window", "garden", "river", "bicycle",
           "bus", "lamp", "chair", "boat", "tree", "shop", "school", "hospital")
ADJECTIVES = ("old", "new", "small", "large", "quiet", "busy", "bright", "dark", "famous", "empty", "clean", "heavy")
PLACES = ("near the station", "behind the church", "next to the park", "across the street", "in the city centre",
          "under the bridge", "by the river", "at the corner", "outside the school", "beside the market")
FOODS = ("bread", "milk", "eggs", "apples", "rice", "coffee", "tea", "cheese", "butter", "oranges", "potatoes",
         "tomatoes", "onions", "sugar", "chicken", "pasta")
UNITS_OF_MEASURE = ("degrees", "minutes", "hours", "percent", "kilometres", "dollars", "euros", "pounds", "metres")
VERBS_PAST = ("arrived", "left", "called", "stopped", "opened", "closed", "started", "finished", "returned", "waited")


def number_words(value: int) -> str:
    """Spell a cardinal number in English words.

    Args:
        value: integer in ``[0, 999999]``.

    Returns:
        Words joined by spaces, British style with "and" ("three hundred and forty two").
    """
    if not 0 <= value <= 999_999:
        raise ValueError(f"number_words: value must be in [0, 999999], got {value}")
    if value < 20:
        return UNITS[value]
    if value < 100:
        tens, unit = divmod(value, 10)
        return TENS[tens] + ("" if unit == 0 else " " + UNITS[unit])
    if value < 1000:
        hundreds, rest = divmod(value, 100)
        return UNITS[hundreds] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))
    thousands, rest = divmod(value, 1000)
    joiner = " and " if 0 < rest < 100 else " "
    return number_words(thousands) + " thousand" + ("" if rest == 0 else joiner + number_words(rest))


def ordinal_words(value: int) -> str:
    """Spell an ordinal day of the month ("twenty first") for ``value`` in ``[1, 31]``."""
    if not 1 <= value <= 31:
        raise ValueError(f"ordinal_words: value must be in [1, 31], got {value}")
    if value < 20:
        return ORDINAL_UNITS[value]
    tens, unit = divmod(value, 10)
    return ORDINAL_TENS[tens] if unit == 0 else TENS[tens] + " " + ORDINAL_UNITS[unit]


def plural(noun: str) -> str:
    """English plural of the regular nouns in :data:`OBJECTS` ("bus" -> "buses", "car" -> "cars")."""
    return noun + ("es" if noun.endswith(("s", "sh", "ch", "x")) else "s")


def digit_string(rng: random.Random, length: int) -> str:
    """A phone-number-like sequence of ``length`` digits read one by one ("five five one two")."""
    return " ".join(UNITS[rng.randrange(10)] for _ in range(length))


def time_words(rng: random.Random) -> str:
    """A clock time as spoken: "seven thirty", "half past four", "quarter to nine", "ten o'clock" style."""
    hour = rng.randint(1, 12)
    form = rng.randrange(5)
    if form == 0:
        return number_words(hour) + " o'clock"
    if form == 1:
        return "half past " + number_words(hour)
    if form == 2:
        return "quarter " + rng.choice(("past", "to")) + " " + number_words(hour)
    minute = rng.randint(1, 59)
    spoken_minute = ("oh " + number_words(minute)) if minute < 10 else number_words(minute)
    suffix = rng.choice(("", " in the morning", " in the evening", " at night"))
    return number_words(hour) + " " + spoken_minute + suffix


def date_words(rng: random.Random) -> str:
    """A date: "the fourth of june" or "june fourth", optionally with a weekday."""
    month = rng.randrange(12)
    day = rng.randint(1, 28)
    date = ("the " + ordinal_words(day) + " of " + MONTHS[month]) if rng.random() < 0.5 else (
        MONTHS[month] + " " + ordinal_words(day))
    if rng.random() < 0.3:
        date = WEEKDAYS[rng.randrange(7)] + " " + date
    return date


def _time_sentence(rng: random.Random) -> str:
    template = rng.randrange(5)
    when = time_words(rng)
    if template == 0:
        return "set an alarm for " + when
    if template == 1:
        return "wake me up at " + when
    if template == 2:
        return "the meeting starts at " + when
    if template == 3:
        return "the " + rng.choice(("train", "bus", "flight", "boat")) + " leaves at " + when
    return "remind me to call " + rng.choice(PEOPLE) + " at " + when


def _date_sentence(rng: random.Random) -> str:
    template = rng.randrange(4)
    when = date_words(rng)
    if template == 0:
        return "my birthday is on " + when
    if template == 1:
        return "book a table for " + number_words(rng.randint(2, 12)) + " people on " + when
    if template == 2:
        return "the concert in " + rng.choice(CITIES) + " is on " + when
    return "remind me on " + when + " to buy " + rng.choice(FOODS)


def _number_sentence(rng: random.Random) -> str:
    template = rng.randrange(5)
    if template == 0:
        return "call " + digit_string(rng, rng.randint(4, 7))
    if template == 1:
        return "the total is " + number_words(rng.randint(2, 9999)) + " " + rng.choice(("dollars", "euros", "pounds"))
    if template == 2:
        return "what is " + number_words(rng.randint(0, 99)) + " " + rng.choice(
            ("plus", "minus", "times")) + " " + number_words(rng.randint(0, 99))
    if template == 3:
        return "set the temperature to " + number_words(rng.randint(10, 30)) + " degrees"
    return "it is " + number_words(rng.randint(1, 500)) + " " + rng.choice(UNITS_OF_MEASURE) + " to " + rng.choice(
        CITIES)


def _command_sentence(rng: random.Random) -> str:
    template = rng.randrange(6)
    if template == 0:
        return "turn " + rng.choice(("on", "off")) + " the " + rng.choice(ROOMS) + " " + rng.choice(DEVICES)
    if template == 1:
        return "play some " + rng.choice(GENRES) + " music in the " + rng.choice(ROOMS)
    if template == 2:
        return rng.choice(("open", "close", "lock")) + " the " + rng.choice(("front", "back", "garage")) + " door"
    if template == 3:
        return "turn the volume " + rng.choice(("up", "down")) + " by " + number_words(rng.randint(1, 20))
    if template == 4:
        return "add " + number_words(rng.randint(1, 12)) + " " + rng.choice(FOODS) + " to my shopping list"
    return "send a message to " + rng.choice(PEOPLE) + " saying i will be " + rng.choice(
        ("late", "early", "home soon", "there at " + time_words(rng)))


def _statement_sentence(rng: random.Random) -> str:
    template = rng.randrange(5)
    if template == 0:
        return "the weather in " + rng.choice(CITIES) + " is " + rng.choice(WEATHER) + " " + rng.choice(
            ("today", "tomorrow", "this morning", "tonight"))
    if template == 1:
        return "the " + rng.choice(ADJECTIVES) + " " + rng.choice(COLOURS) + " " + rng.choice(OBJECTS) + " is " + \
            rng.choice(PLACES)
    if template == 2:
        return rng.choice(PEOPLE) + " " + rng.choice(VERBS_PAST) + " " + rng.choice(
            ("yesterday", "last night", "this morning", "an hour ago", "on " + WEEKDAYS[rng.randrange(7)]))
    if template == 3:
        return "there are " + number_words(rng.randint(2, 99)) + " " + rng.choice(ADJECTIVES) + " " + plural(
            rng.choice(OBJECTS)) + " " + rng.choice(PLACES)
    return "i would like " + rng.choice(("a cup of", "some", "more")) + " " + rng.choice(FOODS) + " please"


DOMAINS: Dict[str, Callable[[random.Random], str]] = {
    "time": _time_sentence,
    "date": _date_sentence,
    "number": _number_sentence,
    "command": _command_sentence,
    "statement": _statement_sentence,
}


def generate_sentences(count: int, seed: int) -> List[str]:
    """Draw ``count`` spoken-form sentences, each from a uniformly chosen domain.

    Args:
        count: number of sentences (>= 0).
        seed: seed of the private random generator; the same seed always gives the same list.

    Returns:
        Lower-case sentences of words separated by single spaces.
    """
    if count < 0:
        raise ValueError(f"generate_sentences: count must be >= 0, got {count}")
    rng = random.Random(seed)
    names = sorted(DOMAINS)
    return [DOMAINS[rng.choice(names)](rng) for _ in range(count)]


_NOT_WORD = re.compile(r"[^A-Z' ]+")


def normalize_transcript(text: str) -> str:
    """Reference form of a transcript: upper case, letters and apostrophes only, single spaces."""
    return " ".join(_NOT_WORD.sub(" ", text.upper()).split())


def vocabulary(sentences: Sequence[str]) -> List[str]:
    """Sorted distinct words of ``sentences`` after :func:`normalize_transcript`."""
    return sorted({word for sentence in sentences for word in normalize_transcript(sentence).split()})
