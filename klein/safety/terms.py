"""The reviewed term list and how prompts are read against it (pure: no torch).

Prompts are normalised (NFKC, casefold, confusables, zero-width characters, leetspeak, spaced-out
letters) into word views, then matched against data/safety_terms.json: categories sexual, violence,
hate and self_harm with severities 1..3, a minors list, an allow list of harmless phrases and the
patterns of an age under 18. policy.py decides what a match means at each tolerance.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

TERMS_PATH = Path(__file__).resolve().parent / "data" / "safety_terms.json"


# --- normalisation ---------------------------------------------------------------------------------

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u00ad\u180e\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063"
                                    "\ufeff"))
# Cyrillic and Greek letters that look like Latin ones (the cheap part of Unicode's confusables).
_CONFUSABLES = str.maketrans("аеорсухіјѕԁɡһкмтвпԛԝαβεικνορτυχ", "aeopcyxijsdghkmtbnqwabeikvoptux")
_LEET_SYMBOLS = re.compile(r"(?<=[^\W_])[@$!|+]+(?=[^\W_])|(?<![^\W_])[@$](?=[^\W_])")
_SYMBOL_TABLE = str.maketrans("@$!|+", "asilt")
_DIGITS_I = str.maketrans("013457", "oieast")
_DIGITS_L = str.maketrans("013457", "oleast")
_SEPARATORS = re.compile(r"([\W_]+)")
_RUN3 = re.compile(r"(.)\1{2,}")
_RUNS = re.compile(r"(.)\1+")
_WORD = re.compile(r"\S+")
_SOFT_SEPARATOR = re.compile(r"[\s'\u2019_\u2010-]+")  # keep words in one phrase; anything else is a BARRIER
BARRIER = "|"


def normalise(text: str) -> str:
    """NFKC, casefold, and for non-ASCII text: zero-width characters, accents and confusables removed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKD", text.translate(_ZERO_WIDTH))
    return "".join(c for c in text if not unicodedata.combining(c)).translate(_CONFUSABLES)


def word_views(text: str) -> list[str]:
    """The normalised text as space-joined words with leetspeak folded: one view, two when a '1' may be i or l.

    Punctuation between words other than spaces, hyphens and apostrophes becomes a BARRIER word,
    so an allowed phrase cannot be assembled across a comma ("pussy, willow").
    """
    text = _LEET_SYMBOLS.sub(lambda m: m.group().translate(_SYMBOL_TABLE), normalise(text))
    words = _merge_single_letters(_SEPARATORS.split(text))
    views = [_join(words, _DIGITS_I)]
    if any("1" in w and not w.isdigit() for w, _ in words):
        views.append(_join(words, _DIGITS_L))
    return views


def _join(words: list[tuple[str, str]], digits: dict) -> str:
    joined: list[str] = []
    for index, (word, separator) in enumerate(words):
        if index and not _SOFT_SEPARATOR.fullmatch(separator):
            joined.append(BARRIER)
        joined.append(_fold_digits(word, digits))
    return " ".join(joined)


def _merge_single_letters(parts: list[str]) -> list[tuple[str, str]]:
    """Join one-character words spaced the same way: "n u d e", "n.u.d.e" become "nude"; "n u d e  t e e n" two words.

    `parts` alternates words and the separators between them (re.split with a capturing group).
    Returns each word with the separator before it.
    """
    words: list[list[str]] = []  # [word, separator before it]
    run_separator: str | None = None  # the separator inside the run being merged
    for index in range(0, len(parts), 2):
        word, separator = parts[index], parts[index - 1] if index else ""
        if len(word) == 1 and words and separator == run_separator:
            words[-1][0] += word
        elif len(word) == 1 and words and len(words[-1][0]) == 1 and run_separator is None:
            words[-1][0] += word
            run_separator = separator
        else:
            words.append([word, separator])
            run_separator = None
    return [(word, separator) for word, separator in words if word]


def _fold_digits(word: str, table: dict) -> str:
    # Numbers stay numbers ("rule 34", ages); only words mixing letters and digits are leetspeak.
    return word if word.isdigit() or word.isalpha() else word.translate(table)


# --- prompt matching -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """One matched term: its category ("minors" included), severity (0 for minors) and normalised form."""

    category: str
    severity: int
    term: str


@dataclass
class TermList:
    """The compiled term list: single words by lookup, phrases and the allow-list by regex."""

    words: dict[str, set[tuple[str, int]]] = field(default_factory=dict)
    squeezed: dict[str, str] = field(default_factory=dict)
    phrases: dict[str, set[tuple[str, int]]] = field(default_factory=dict)
    phrase_re: re.Pattern = re.compile(r"(?!)")
    allow_re: re.Pattern = re.compile(r"(?!)")
    allow_near_minors_re: re.Pattern = re.compile(r"(?!)")
    age_res: tuple[re.Pattern, ...] = ()

    def add(self, term: str, category: str, severity: int) -> None:
        """Add one term; it is normalised the way prompts are."""
        key = word_views(term)[0]
        target = self.phrases if " " in key else self.words
        target.setdefault(key, set()).add((category, severity))
        if " " not in key:
            self.squeezed[_RUNS.sub(r"\1", key)] = key

    def compile(self, allow: list[str], age_patterns: list[str], allow_near_minors: list[str] = ()) -> None:
        """Build the regexes once all terms are added."""
        self.phrase_re = _alternation(self.phrases, terms=True)
        self.allow_re = _alternation(word_views(phrase)[0] for phrase in allow)
        self.allow_near_minors_re = _alternation(word_views(phrase)[0] for phrase in allow_near_minors)
        self.age_res = tuple(re.compile(pattern) for pattern in age_patterns)

    def scan(self, prompt: str) -> tuple[list[Match], list[Match]]:
        """(matches, matches for the minors rule): every term of the list the prompt contains, as whole words.

        An allow-listed phrase hides only the terms that lie wholly inside it: "chicken breast" hides
        "breast", but "opposite sex scene" still matches "sex scene". For the minors rule only the few
        phrases of `allow_near_minors` hide anything, so "nude stockings" cannot hide "nude" next to "teen".
        """
        views = word_views(prompt)
        general, any_allowed = self._match(views, self.allow_re)
        if not any_allowed:
            return general, general  # no allowed phrase: both readings are the same
        return general, self._match(views, self.allow_near_minors_re)[0]

    def _match(self, views: list[str], allow_re: re.Pattern) -> tuple[list[Match], bool]:
        """The terms found in `views` with `allow_re`'s phrases hiding what lies inside them, and
        whether any such phrase was found."""
        found: set[Match] = set()
        any_allowed = False
        for view in views:
            allowed = [m.span(1) for m in allow_re.finditer(view)]
            any_allowed = any_allowed or bool(allowed)
            phrases = [m for m in self.phrase_re.finditer(view) if not _inside(m.span(1), allowed)]
            for m in phrases:
                term = m.group(1).replace(f" {BARRIER} ", " ")
                found.update(Match(category, severity, term) for category, severity in self.phrases[term])
            covered = allowed + [m.span(1) for m in phrases]
            for m in _WORD.finditer(view):
                key = None if _inside(m.span(), covered) else self._word_key(m.group())
                if key:
                    found.update(Match(category, severity, key) for category, severity in self.words[key])
        return sorted(found, key=lambda m: (-m.severity, m.category, m.term)), any_allowed

    def mentions_minor_age(self, prompt: str) -> bool:
        """An age under 18 written as a number ("12 year old", "aged 15", "16yo")."""
        text = normalise(prompt)
        return any(pattern.search(text) for pattern in self.age_res)

    def _word_key(self, word: str) -> str | None:
        if word in self.words:
            return word
        for suffix in ("es", "s"):  # plurals not listed
            if len(word) > 3 and word.endswith(suffix) and word[: -len(suffix)] in self.words:
                return word[: -len(suffix)]
        if _RUN3.search(word):  # stretched words: "nuuuude"
            return self.squeezed.get(_RUNS.sub(r"\1", word))
        return None


def _inside(span: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    return any(start <= span[0] and span[1] <= end for start, end in spans)


def _alternation(phrases, terms: bool = False) -> re.Pattern:
    """One regex for whole phrases, its match in group 1.

    Terms also match with punctuation between their words, and overlapping: each word can start a
    match, so "shooting up the school girl" finds "school girl" too.
    """
    alternatives = sorted({p for p in phrases if p}, key=len, reverse=True)
    if not alternatives:
        return re.compile(r"(?!)")
    gap = r" (?:\| )?" if terms else " "
    body = "|".join(gap.join(map(re.escape, phrase.split(" "))) for phrase in alternatives)
    if terms:
        return re.compile(r"(?<!\S)(?=((?:" + body + r"))(?!\S))")
    return re.compile(r"(?<!\S)((?:" + body + r"))(?!\S)")


@lru_cache(maxsize=4)
def load_terms(path: Path = TERMS_PATH) -> TermList:
    """Read and compile the term list (cached: one per file)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    terms = TermList()
    for category, by_severity in data["categories"].items():
        for severity, words in by_severity.items():
            for word in words:
                terms.add(word, category, int(severity))
    for word in data["minors"]:
        terms.add(word, "minors", 0)
    terms.compile(data.get("allow", []), data.get("minor_age_patterns", []), data.get("allow_near_minors", []))
    return terms
