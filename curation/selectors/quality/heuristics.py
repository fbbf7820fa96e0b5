"""Heuristic quality rules: Gopher quality, Gopher repetition (Rae et al. 2021,
Table A1) and C4 (Raffel et al. 2020), with the published thresholds as defaults.

One compiled kernel measures every signal of a batch of documents (in
parallel, on code points: see `text.py`); the rules are thresholds on those
signals, applied per source by a `RuleSet` (prose and code need different
rules). Where the papers are silent, the choices follow datatrove's filters;
where datatrove departs from a paper, the paper wins. The README lists both.

- Words are runs of non-whitespace (Python's `str.split()`), as in Dolma and
  RedPajama-V2 (datatrove uses spaCy tokens, which split off punctuation).
- Lines are `str.splitlines()` lines; repetition splits lines on runs of "\\n"
  and paragraphs on runs of two or more, after stripping, as datatrove does.
- Duplicate 5..10-gram fractions count the characters of every word covered by
  an n-gram that occurs more than once, each word once (the paper: "taking care
  not to count characters that occur in overlapping n-grams more than once"),
  over the characters of all words. datatrove counts only later copies and
  skips ahead after each.
- C4 follows the C4 reference code (TFDS c4_utils): a line is kept when it ends
  in . ? ! or " (not ...) and has at least 5 words; a document needs 3
  sentences in kept lines and is dropped for "lorem ipsum" or "{" in a kept
  line. Sentences are counted by end marks (C4 used NLTK's punkt); citations
  are removed only at the end of a line. Documents are kept or dropped whole:
  lines are never cut out of a text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba as nb
import numpy as np
import pyarrow as pa

from curation.selectors.dedup.hashing import fmix64
from curation.selectors.quality.text import ALPHA, LINE_BREAK, SPACE, char_classes, codepoints

TOP_NGRAMS = (2, 3, 4)
DUP_NGRAMS = (5, 6, 7, 8, 9, 10)
SIGNALS = (
    "gopher_words",
    "gopher_mean_word_length",
    "gopher_hash_ratio",
    "gopher_ellipsis_ratio",
    "gopher_bullet_lines",
    "gopher_ellipsis_lines",
    "gopher_alpha_words",
    "gopher_stop_words",
    "gopher_dup_para_frac",
    "gopher_dup_para_char_frac",
    "gopher_dup_line_frac",
    "gopher_dup_line_char_frac",
    *(f"gopher_top_{n}gram" for n in TOP_NGRAMS),
    *(f"gopher_dup_{n}gram" for n in DUP_NGRAMS),
    "c4_sentences",
    "c4_kept_lines",
    "c4_lorem_ipsum",
    "c4_curly_bracket",
)
_COLUMN = {name: i for i, name in enumerate(SIGNALS)}
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


@dataclass(frozen=True)
class Rule:
    """Drop a document when `signal` is below `minimum` or above `maximum`."""

    reason: str
    signal: str
    minimum: float | None = None
    maximum: float | None = None

    def fails(self, values: np.ndarray) -> np.ndarray:
        low = values < self.minimum if self.minimum is not None else False
        high = values > self.maximum if self.maximum is not None else False
        return np.asarray(low | high)


@dataclass(frozen=True)
class GopherQuality:
    """Gopher's quality filter (Table A1): keep 50..100,000 words of mean length
    3..10, at most 0.1 '#' and 0.1 ellipses per word, at most 90% of lines
    starting with a bullet and 30% ending in an ellipsis, at least 80% of words
    with a letter, and at least 2 of the stop words."""

    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3
    max_mean_word_length: float = 10
    max_hash_ratio: float = 0.1
    max_ellipsis_ratio: float = 0.1
    max_bullet_lines: float = 0.9
    max_ellipsis_lines: float = 0.3
    min_alpha_words: float = 0.8
    min_stop_words: int = 2

    def rules(self) -> list[Rule]:
        return [
            Rule("gopher_too_few_words", "gopher_words", minimum=self.min_words),
            Rule("gopher_too_many_words", "gopher_words", maximum=self.max_words),
            Rule("gopher_short_words", "gopher_mean_word_length", minimum=self.min_mean_word_length),
            Rule("gopher_long_words", "gopher_mean_word_length", maximum=self.max_mean_word_length),
            Rule("gopher_hash_ratio", "gopher_hash_ratio", maximum=self.max_hash_ratio),
            Rule("gopher_ellipsis_ratio", "gopher_ellipsis_ratio", maximum=self.max_ellipsis_ratio),
            Rule("gopher_bullet_lines", "gopher_bullet_lines", maximum=self.max_bullet_lines),
            Rule("gopher_ellipsis_lines", "gopher_ellipsis_lines", maximum=self.max_ellipsis_lines),
            Rule("gopher_alpha_words", "gopher_alpha_words", minimum=self.min_alpha_words),
            Rule("gopher_stop_words", "gopher_stop_words", minimum=self.min_stop_words),
        ]


@dataclass(frozen=True)
class GopherRepetition:
    """Gopher's repetition filter (Table A1): duplicate line and paragraph
    fractions, by count and by characters; the top 2/3/4-gram's character
    fraction; the characters in duplicated 5..10-grams."""

    max_dup_para_frac: float = 0.3
    max_dup_para_char_frac: float = 0.2
    max_dup_line_frac: float = 0.3
    max_dup_line_char_frac: float = 0.2
    max_top_ngram: tuple[float, ...] = (0.20, 0.18, 0.16)  # n = 2, 3, 4
    max_dup_ngram: tuple[float, ...] = (0.15, 0.14, 0.13, 0.12, 0.11, 0.10)  # n = 5..10

    def __post_init__(self):
        if len(self.max_top_ngram) != len(TOP_NGRAMS) or len(self.max_dup_ngram) != len(DUP_NGRAMS):
            raise ValueError("max_top_ngram needs 3 values (n = 2..4) and max_dup_ngram 6 (n = 5..10)")

    def rules(self) -> list[Rule]:
        limits = {
            "dup_para_frac": self.max_dup_para_frac,
            "dup_para_char_frac": self.max_dup_para_char_frac,
            "dup_line_frac": self.max_dup_line_frac,
            "dup_line_char_frac": self.max_dup_line_char_frac,
            **{f"top_{n}gram": v for n, v in zip(TOP_NGRAMS, self.max_top_ngram, strict=True)},
            **{f"dup_{n}gram": v for n, v in zip(DUP_NGRAMS, self.max_dup_ngram, strict=True)},
        }
        return [Rule(f"gopher_{name}", f"gopher_{name}", maximum=v) for name, v in limits.items()]


@dataclass(frozen=True)
class C4Rules:
    """C4's document rules: at least `min_sentences` in kept lines, no "lorem
    ipsum", no curly bracket (prose only: code is full of them)."""

    min_sentences: int = 3
    lorem_ipsum: bool = True
    curly_bracket: bool = True

    def rules(self) -> list[Rule]:
        rules = []
        if self.lorem_ipsum:
            rules.append(Rule("c4_lorem_ipsum", "c4_lorem_ipsum", maximum=0))
        if self.curly_bracket:
            rules.append(Rule("c4_curly_bracket", "c4_curly_bracket", maximum=0))
        return [*rules, Rule("c4_too_few_sentences", "c4_sentences", minimum=self.min_sentences)]


@dataclass(frozen=True)
class RuleSet:
    """Which rule groups apply to a source, with their thresholds (None: off)."""

    gopher_quality: GopherQuality | None = field(default_factory=GopherQuality)
    gopher_repetition: GopherRepetition | None = field(default_factory=GopherRepetition)
    c4: C4Rules | None = field(default_factory=C4Rules)

    def rules(self) -> list[Rule]:
        groups = (self.gopher_quality, self.gopher_repetition, self.c4)
        return [rule for group in groups if group is not None for rule in group.rules()]

    @classmethod
    def parse(cls, text: str) -> RuleSet:
        """A preset (prose, code, none) or groups joined by commas
        (gopher_quality, gopher_repetition, c4), each with default thresholds."""
        if text in PRESETS:
            return PRESETS[text]
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = sorted(set(names) - set(GROUPS))
        if unknown or not names:
            raise ValueError(
                f"rules {text!r}: use a preset ({', '.join(PRESETS)}) or groups from {', '.join(GROUPS)}"
            )
        return cls(**{g: (GROUPS[g]() if g in names else None) for g in GROUPS})


GROUPS = {"gopher_quality": GopherQuality, "gopher_repetition": GopherRepetition, "c4": C4Rules}
# Code: only the repetition rules, whose thresholds suit any text of words;
# Gopher's word and stop-word rules and C4's line rules are about prose.
PRESETS = {
    "prose": RuleSet(),
    "code": RuleSet(gopher_quality=None, c4=None),
    "none": RuleSet(gopher_quality=None, gopher_repetition=None, c4=None),
}


@dataclass(frozen=True)
class TextSettings:
    """How the signals are measured (the same for every source).

    stop_words: Gopher's stop words, matched as whole words, case-sensitive.
    bullets: a line starting with one of these (after whitespace) is a bullet line
        (the paper names no characters; datatrove's).
    c4_end_marks: a C4 line must end with one of these (C4's code; datatrove adds ').
    c4_min_words_per_line: C4 keeps lines with at least this many words (C4's 5;
        datatrove's default is 3).
    c4_max_word_length: C4 drops lines with a longer word.
    """

    stop_words: tuple[str, ...] = ("the", "be", "to", "of", "and", "that", "have", "with")
    bullets: tuple[str, ...] = ("•", "-")
    c4_end_marks: tuple[str, ...] = (".", "?", "!", '"')
    c4_min_words_per_line: int = 5
    c4_max_word_length: int = 1000

    def __post_init__(self):
        for name in ("stop_words", "bullets", "c4_end_marks"):
            if any(len(s) == 0 for s in getattr(self, name)):
                raise ValueError(f"{name}: empty strings are not allowed")
        if any(len(s) != 1 for s in (*self.bullets, *self.c4_end_marks)):
            raise ValueError("bullets and c4_end_marks are single characters")


def measure(texts: pa.Array | pa.ChunkedArray | list[str], settings: TextSettings | None = None):
    """Every signal of every text: a float64 array (texts, len(SIGNALS)); the
    columns are named by SIGNALS (see `signal`)."""
    settings = settings or TextSettings()
    data, offsets = codepoints(texts)
    out = np.zeros((len(offsets) - 1, len(SIGNALS)), dtype=np.float64)
    stop = np.sort(np.array([word_hash(w) for w in set(settings.stop_words)], dtype=np.uint64))
    _measure_kernel(
        data,
        offsets,
        char_classes(),
        stop,
        _points("".join(settings.bullets)),
        _points("".join(settings.c4_end_marks)),
        settings.c4_min_words_per_line,
        settings.c4_max_word_length,
        _PATTERNS,
        _CITATIONS,
        out,
    )
    return out


def signal(values: np.ndarray, name: str) -> np.ndarray:
    """One signal's column of `measure`'s output."""
    return values[:, _COLUMN[name]]


def first_failed(values: np.ndarray, rules: list[Rule]) -> np.ndarray:
    """The reason of the first rule each document fails, or "" (an object array)."""
    reasons = np.full(len(values), "", dtype=object)
    for rule in reversed(rules):  # the earliest failing rule writes last
        reasons[rule.fails(signal(values, rule.signal))] = rule.reason
    return reasons


def word_hash(word: str) -> np.uint64:
    cp = _points(word)
    return _span_hash(cp, 0, len(cp))


def _points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).copy()


def _pattern_rows(texts: tuple[str, ...]) -> np.ndarray:
    """One row per text: its length, then its code points."""
    rows = np.zeros((len(texts), max(map(len, texts)) + 1), dtype=np.uint32)
    for i, text in enumerate(texts):
        rows[i, 0] = len(text)
        rows[i, 1 : len(text) + 1] = [ord(c) for c in text]
    return rows


# Lower-case ASCII patterns searched in C4's kept lines: lorem ipsum, javascript, policies.
_PATTERNS = _pattern_rows(("lorem ipsum", "javascript", *_POLICY))
_CITATIONS = _pattern_rows(("edit", "citation needed"))  # C4 removes [n], [edit], [citation needed]
_LOREM, _JAVASCRIPT = 0, 1

_PRIME = np.uint64(0x100000001B3)
_BASIS = np.uint64(0xCBF29CE484222325)
_NGRAM_MUL = np.uint64(0x9E3779B97F4A7C15)
_DOT, _ELLIPSIS, _HASH, _NL, _CR = 0x2E, 0x2026, 0x23, 0x0A, 0x0D
_OPEN, _CLOSE, _CURLY = 0x5B, 0x5D, 0x7B


@nb.njit(cache=True)
def _span_hash(cp, start, end):
    """FNV-1a over code points, finalised, mixed with the length."""
    h = _BASIS
    for i in range(start, end):
        h = (h ^ np.uint64(cp[i])) * _PRIME
    return fmix64(h ^ np.uint64(end - start))


@nb.njit(cache=True)
def _dup_counts(hashes, lengths):
    """(pieces equal to an earlier piece, their characters)."""
    if hashes.size < 2:
        return 0, 0
    order = np.argsort(hashes)
    dups, chars = 0, 0
    for k in range(1, order.size):
        if hashes[order[k]] == hashes[order[k - 1]]:
            dups += 1
            chars += lengths[order[k]]
    return dups, chars


@nb.njit(cache=True)
def _ngram_hashes(whash, n):
    out = np.empty(whash.size - n + 1, dtype=np.uint64)
    for i in range(out.size):
        h = np.uint64(n)
        for j in range(n):
            h = fmix64(h * _NGRAM_MUL + whash[i + j])
        out[i] = h
    return out


@nb.njit(cache=True)
def _top_ngram_chars(whash, wlen, n):
    """Characters of the most frequent n-gram (words joined by one space) times
    its count; ties go to the n-gram seen first."""
    if whash.size < n:
        return 0
    grams = _ngram_hashes(whash, n)
    order = np.argsort(grams, kind="mergesort")  # stable: runs list positions in order
    best_count, best_first = 0, 0
    k = 0
    while k < order.size:
        run = k
        while run < order.size and grams[order[run]] == grams[order[k]]:
            run += 1
        count, first = run - k, order[k]
        if count > best_count or (count == best_count and first < best_first):
            best_count, best_first = count, first
        k = run
    chars = n - 1
    for j in range(n):
        chars += wlen[best_first + j]
    return chars * best_count


@nb.njit(cache=True)
def _dup_ngram_chars(whash, wlen, n):
    """Characters of the words covered by any n-gram that occurs more than once."""
    if whash.size < n:
        return 0
    grams = _ngram_hashes(whash, n)
    order = np.argsort(grams)
    cover = np.zeros(whash.size + 1, dtype=np.int64)
    k = 0
    while k < order.size:
        run = k
        while run < order.size and grams[order[run]] == grams[order[k]]:
            run += 1
        if run - k > 1:
            for r in range(k, run):
                cover[order[r]] += 1
                cover[order[r] + n] -= 1
        k = run
    chars, depth = 0, 0
    for i in range(whash.size):
        depth += cover[i]
        if depth > 0:
            chars += wlen[i]
    return chars


@nb.njit(cache=True)
def _starts_with(cp, start, end, chars):
    if start >= end:
        return False
    for c in chars:  # noqa: SIM110 - numba compiles no generator expressions
        if cp[start] == c:
            return True
    return False


@nb.njit(cache=True)
def _ends_with_dots(cp, start, end):
    """Ends with "..." or the ellipsis character."""
    if end > start and cp[end - 1] == _ELLIPSIS:
        return True
    return end - start >= 3 and cp[end - 1] == _DOT and cp[end - 2] == _DOT and cp[end - 3] == _DOT


@nb.njit(cache=True)
def _contains(cp, start, end, pattern):
    """Whether cp[start:end], ASCII letters lower-cased, contains the pattern row."""
    m = pattern[0]
    for i in range(start, end - m + 1):
        hit = True
        for j in range(m):
            c = cp[i + j]
            if 0x41 <= c <= 0x5A:
                c += 32
            if c != pattern[1 + j]:
                hit = False
                break
        if hit:
            return True
    return False


@nb.njit(cache=True)
def _strip(cp, start, end, cls):
    while start < end and cls[cp[start]] & SPACE:
        start += 1
    while end > start and cls[cp[end - 1]] & SPACE:
        end -= 1
    return start, end


@nb.njit(cache=True)
def _trailing_citation(cp, start, end, citations):
    """Where a final [n], [edit] or [citation needed] begins (end if none)."""
    if end - start < 2 or cp[end - 1] != _CLOSE:
        return end
    i = end - 2
    while i >= start and cp[i] != _OPEN:
        i -= 1
    if i < start:
        return end
    digits = True
    for k in range(i + 1, end - 1):
        digits = digits and 0x30 <= cp[k] <= 0x39
    if digits:
        return i
    for row in citations:
        if row[0] == end - 2 - i and np.all(cp[i + 1 : end - 1] == row[1 : 1 + row[0]]):
            return i
    return end


@nb.njit(cache=True)
def _sentences(cp, start, end, cls):
    """End-mark runs followed by whitespace, a closing quote or bracket, or the
    end of the line; at least one (a kept line ends with an end mark)."""
    count = 0
    for i in range(start, end):
        c = cp[i]
        if c != 0x2E and c != 0x21 and c != 0x3F:
            continue
        if i + 1 == end:
            count += 1
            continue
        nxt = cp[i + 1]
        if nxt == 0x2E or nxt == 0x21 or nxt == 0x3F:
            continue
        if cls[nxt] & SPACE or nxt == 0x22 or nxt == 0x27 or nxt == 0x29 or nxt == 0x201D or nxt == 0x2019:
            count += 1
    return max(count, 1)


@nb.njit(cache=True)
def _c4_line(cp, start, end, cls, end_marks, min_words, max_word, patterns, citations):
    """C4's verdict on one line: 0 dropped, 1 kept, 2 lorem ipsum, 3 curly bracket."""
    start, end = _strip(cp, start, end, cls)
    words, run = 0, 0
    for i in range(start, end + 1):
        if i == end or cls[cp[i]] & SPACE:
            if run > max_word:
                return 0
            if run > 0:
                words += 1
            run = 0
        else:
            run += 1
    stop = _trailing_citation(cp, start, end, citations)
    while stop < end:
        end = stop
        stop = _trailing_citation(cp, start, end, citations)
    if end == start or not _starts_with(cp, end - 1, end, end_marks):
        return 0
    if end - start >= 3 and cp[end - 1] == _DOT and cp[end - 2] == _DOT and cp[end - 3] == _DOT:
        return 0
    if words < min_words:
        return 0
    if _contains(cp, start, end, patterns[_LOREM]):
        return 2
    if _contains(cp, start, end, patterns[_JAVASCRIPT]):
        return 0
    for i in range(start, end):
        if cp[i] == _CURLY:
            return 3
    for p in range(2, patterns.shape[0]):
        if _contains(cp, start, end, patterns[p]):
            return 0
    return 1


@nb.njit(cache=True)
def _split_hashes(cp, start, end, min_breaks):
    """Hashes and lengths of the pieces of cp[start:end] between runs of at
    least `min_breaks` newlines (re.split on "\\n+" or "\\n{2,}")."""
    hashes = np.empty(end - start + 1, dtype=np.uint64)
    lengths = np.empty(end - start + 1, dtype=np.int64)
    n, piece, i = 0, start, start
    while i < end:
        if cp[i] != _NL:
            i += 1
            continue
        run = i
        while run < end and cp[run] == _NL:
            run += 1
        if run - i >= min_breaks:
            hashes[n], lengths[n] = _span_hash(cp, piece, i), i - piece
            n += 1
            piece = run
        i = run
    hashes[n], lengths[n] = _span_hash(cp, piece, end), end - piece
    return hashes[: n + 1], lengths[: n + 1]


@nb.njit(cache=True)
def _words(cp, start, end, cls, stop):
    """Per word: hash, length, has a letter; and how many distinct stop words occur."""
    n = 0
    inside = False
    for i in range(start, end):
        space = cls[cp[i]] & SPACE
        if not space and not inside:
            n += 1
        inside = not space
    whash = np.empty(n, dtype=np.uint64)
    wlen = np.empty(n, dtype=np.int64)
    walpha = np.zeros(n, dtype=np.bool_)
    seen = np.zeros(stop.size, dtype=np.bool_)
    w, i = 0, start
    while i < end:
        if cls[cp[i]] & SPACE:
            i += 1
            continue
        j = i
        while j < end and not cls[cp[j]] & SPACE:
            if cls[cp[j]] & ALPHA:
                walpha[w] = True
            j += 1
        whash[w], wlen[w] = _span_hash(cp, i, j), j - i
        k = np.searchsorted(stop, whash[w])
        if k < stop.size and stop[k] == whash[w]:
            seen[k] = True
        w += 1
        i = j
    return whash, wlen, walpha, seen.sum()


@nb.njit(cache=True)
def _lines(cp, start, end, cls, bullets, end_marks, min_words, max_word, patterns, citations, row):
    """Line signals, splitting as str.splitlines() does: bullet and ellipsis
    lines (Gopher) and C4's verdicts."""
    lines, bullet, dots, kept, sentences, lorem, curly = 0, 0, 0, 0, 0, 0, 0
    i = start
    while i < end:
        j = i
        while j < end and not cls[cp[j]] & LINE_BREAK:
            j += 1
        lines += 1
        a, b = _strip(cp, i, j, cls)
        if _starts_with(cp, a, b, bullets):
            bullet += 1
        if _ends_with_dots(cp, a, b):
            dots += 1
        verdict = _c4_line(cp, i, j, cls, end_marks, min_words, max_word, patterns, citations)
        if verdict == 1:
            kept += 1
            sentences += _sentences(cp, a, b, cls)
        elif verdict == 2:
            lorem = 1
        elif verdict == 3:
            curly = 1
        i = j + 2 if j + 1 < end and cp[j] == _CR and cp[j + 1] == _NL else j + 1
    row[4] = bullet / lines if lines else 0.0
    row[5] = dots / lines if lines else 0.0
    row[-4] = sentences
    row[-3] = kept / lines if lines else 0.0
    row[-2] = lorem
    row[-1] = curly


@nb.njit(cache=True, parallel=True)
def _measure_kernel(
    cp, offsets, cls, stop, bullets, end_marks, min_words, max_word, patterns, citations, out
):
    for d in nb.prange(offsets.size - 1):
        start, end = offsets[d], offsets[d + 1]
        size = end - start
        row = out[d]
        whash, wlen, walpha, stops = _words(cp, start, end, cls, stop)
        n_words, word_chars = whash.size, wlen.sum()
        marks, dots, i = 0, 0, start
        while i < end:
            c = cp[i]
            if c == _HASH:
                marks += 1
            elif c == _ELLIPSIS:
                dots += 1
            elif c == _DOT and i + 2 < end and cp[i + 1] == _DOT and cp[i + 2] == _DOT:
                dots += 1
                i += 2
            i += 1
        row[0] = n_words
        if n_words:
            row[1] = word_chars / n_words
            row[2] = marks / n_words
            row[3] = dots / n_words
            row[6] = walpha.sum() / n_words
        row[7] = stops
        _lines(cp, start, end, cls, bullets, end_marks, min_words, max_word, patterns, citations, row)
        a, b = _strip(cp, start, end, cls)
        para_hash, para_len = _split_hashes(cp, a, b, 2)
        dups, chars = _dup_counts(para_hash, para_len)
        row[8] = dups / para_hash.size
        row[9] = chars / size if size else 0.0
        line_hash, line_len = _split_hashes(cp, start, end, 1)
        dups, chars = _dup_counts(line_hash, line_len)
        row[10] = dups / line_hash.size
        row[11] = chars / size if size else 0.0
        for k in range(3):  # top 2-, 3-, 4-grams
            row[12 + k] = _top_ngram_chars(whash, wlen, k + 2) / size if size else 0.0
        for k in range(6):  # duplicated 5- to 10-grams
            row[15 + k] = _dup_ngram_chars(whash, wlen, k + 5) / word_chars if word_chars else 0.0
