"""Text cleaning of the SlimPajama recipe, in plain Python and as a compiled kernel.

The recipe: normalise (Unicode NFC; or ftfy's `fix_text` with NFC, as the
reference's preprocessing/normalize_text.py does); for shingling, lowercase,
remove ASCII punctuation, collapse runs of whitespace to one space and strip.
"Whitespace" is what Python's `str.isspace` (and so the reference's
`re.sub(r"\\s+", " ", ...)`) means. A document is "too short" when its cleaned
text has fewer than `min_chars` characters, single spaces counted (the
reference's preprocessing/filter.py: `len(clean(doc)) < threshold`), or, with
the rule "content", when fewer remain once punctuation and all whitespace are
removed (the wording of the paper and the reference's README).

`clean_text` is the readable reference. `clean_batch` gives the same result for
a whole batch with a numba kernel over the UTF-8 bytes, in parallel, which
also computes the exact-dedup fingerprint. It lowercases with a table built
from `str.lower`; Python only handles the rare texts that are not NFC yet or
hold a capital sigma (whose lowercase depends on the next character).
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from dataclasses import dataclass

import ftfy
import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .hashing import FP_SEED_A, FP_SEED_B, fmix64, mix_step, mix_step_b

_DELETE_PUNCT = str.maketrans("", "", string.punctuation)
_WHITESPACE_RUN = re.compile(r"\s+")
# Code points for which str.isspace() is true (a test checks this list).
WHITESPACE = (
    0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0, 0x1680,
    *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000,
)  # fmt: skip


NORMALIZATIONS = ("nfc", "ftfy")
SHORT_COUNTS = ("cleaned", "content")


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def normalized(text: str, normalize: str = "nfc") -> str:
    """NFC, or ftfy's repairs (mojibake, HTML entities, ligatures, curly quotes, ...) then NFC."""
    if normalize == "ftfy":
        return ftfy.fix_text(text, normalization="NFC")
    return unicodedata.normalize("NFC", text)


def clean_text(text: str, normalize: str = "nfc") -> str:
    """The recipe's shingling string: normalised, lowercase, no ASCII punctuation, one space per run."""
    text = normalized(text, normalize).lower().translate(_DELETE_PUNCT)
    return _WHITESPACE_RUN.sub(" ", text.strip()).strip()


def content_chars(text: str, normalize: str = "nfc") -> int:
    """Characters left in the normalised text once ASCII punctuation and whitespace are removed."""
    text = normalized(text, normalize).translate(_DELETE_PUNCT)
    return len(text) - sum(1 for c in text if c.isspace())


def short_length(text: str, rule: str = "content", normalize: str = "nfc") -> int:
    """The length the short filter compares with `min_chars`: of its content
    characters ("content", the paper) or of the cleaned text ("cleaned", the
    reference's filter.py)."""
    check_choice("short_count", rule, SHORT_COUNTS)
    return len(clean_text(text, normalize)) if rule == "cleaned" else content_chars(text, normalize)


def shingle_set(text: str, ngram: int = 13, normalize: str = "nfc") -> set[str]:
    """Character n-grams of the cleaned text; a shorter text is one shingle, itself."""
    cleaned = clean_text(text, normalize)
    if len(cleaned) < ngram:
        return {cleaned}
    return {cleaned[i : i + ngram] for i in range(len(cleaned) - ngram + 1)}


@dataclass
class CleanBatch:
    """Cleaned code points of a batch, laid out at `starts` (one slot per input byte)."""

    codepoints: np.ndarray  # uint32
    starts: np.ndarray  # int64, where each document's cleaned text begins
    lengths: np.ndarray  # int64, cleaned length in code points
    content_chars: np.ndarray  # int64, for the short filter
    digest_lo: np.ndarray  # uint64, 128-bit fingerprint of the cleaned text
    digest_hi: np.ndarray  # uint64

    def short_lengths(self, rule: str = "content") -> np.ndarray:
        """Per document, what `short_length` gives for `rule`."""
        check_choice("short_count", rule, SHORT_COUNTS)
        return self.lengths if rule == "cleaned" else self.content_chars

    def text(self, i: int) -> str:
        """The cleaned text of document i (for tests and debugging)."""
        start, length = self.starts[i], self.lengths[i]
        return self.codepoints[start : start + length].tobytes().decode("utf-32-le")


def clean_batch(texts: pa.Array | pa.ChunkedArray) -> CleanBatch:
    """Clean every text of an Arrow string array; same results as `clean_text`."""
    return Cleaner()(texts)


class Cleaner:
    """`clean_batch` that reuses one output buffer: each result is valid until the
    next call. Fresh memory is costly to touch; a stream of batches needs one."""

    def __init__(self, normalize: str = "nfc") -> None:
        check_choice("normalize", normalize, NORMALIZATIONS)
        self.normalize = normalize
        self._buffer = np.empty(0, dtype=np.uint32)

    def __call__(self, texts: pa.Array | pa.ChunkedArray) -> CleanBatch:
        if isinstance(texts, pa.ChunkedArray):
            texts = texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
        if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
            texts = texts.cast(pa.large_string())
        if texts.null_count:
            raise ValueError("text column has null values")
        if self.normalize == "ftfy":  # pure Python, ~3 MB/s: the reason it is not the default
            texts = pa.array([normalized(t, "ftfy") for t in texts.to_pylist()], pa.large_string())
        data, starts, ends, extra = _utf8_views(texts)
        n = len(starts)
        if self._buffer.size < max(data.size, 1):
            self._buffer = np.empty(max(data.size, 1), dtype=np.uint32)
        out = self._buffer
        lengths = np.empty(n, dtype=np.int64)
        content = np.empty(n, dtype=np.int64)
        lo = np.empty(n, dtype=np.uint64)
        hi = np.empty(n, dtype=np.uint64)
        _clean_kernel(data, starts, ends, _lower_table(), out, lengths, content, lo, hi)
        content -= extra
        return CleanBatch(out, starts, lengths, content, lo, hi)


def _utf8_views(texts: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One UTF-8 buffer with per-document byte ranges.

    The kernel lowercases by table, so Python only touches non-ASCII texts that
    are not NFC yet (normalised here) or contain a capital sigma (lowercased
    here: the final-sigma rule depends on context). Returns (bytes, starts,
    ends, extra) where `extra` counts characters that `str.lower` added here
    (U+0130 becomes two), to be taken off the content count.
    """
    offsets_type = np.int64 if pa.types.is_large_string(texts.type) else np.int32
    n = len(texts)
    offsets = np.frombuffer(texts.buffers()[1], dtype=offsets_type)[
        texts.offset : texts.offset + n + 1
    ].astype(np.int64)
    raw = texts.buffers()[2]
    data = np.frombuffer(raw, dtype=np.uint8) if raw is not None else np.zeros(0, np.uint8)
    data = data[offsets[0] : offsets[-1]]  # a slice of a bigger array: only its own bytes
    starts, ends = offsets[:-1] - offsets[0], offsets[1:] - offsets[0]
    extra = np.zeros(n, dtype=np.int64)
    ascii_mask = pc.string_is_ascii(texts)
    if pc.all(ascii_mask).as_py() is not False:
        return data, starts, ends, extra
    pieces, position = [data], int(data.size)
    rows = np.flatnonzero(~ascii_mask.to_numpy(zero_copy_only=False))
    for i, text in zip(rows, texts.filter(pc.invert(ascii_mask)).to_pylist(), strict=True):
        fixed = text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)
        if "\u03a3" in fixed:
            lowered = fixed.lower()
            extra[i] = len(lowered) - len(fixed)
            fixed = lowered
        elif fixed is text:
            continue
        encoded = np.frombuffer(fixed.encode("utf-8"), dtype=np.uint8)
        starts[i], ends[i] = position, position + encoded.size
        position += encoded.size
        pieces.append(encoded)
    if len(pieces) == 1:
        return data, starts, ends, extra
    return np.concatenate(pieces), starts, ends, extra


@functools.cache
def _lower_table() -> np.ndarray:
    """`str.lower` of each code point up to the last with a lowercase form.

    U+0130 maps to itself: it is the one character whose lowercase is two
    (i + U+0307), which the kernel writes out. Lowercasing is idempotent, so
    texts already lowered in Python pass through unchanged.
    """
    size = 0x1E922  # one past the last code point with a lowercase mapping
    table = np.arange(size, dtype=np.int32)
    for c in range(0x80, size):
        low = chr(c).lower()
        if len(low) == 1 and low != chr(c):
            table[c] = ord(low)
    return table


def _ascii_table() -> np.ndarray:
    """For each ASCII byte: -1 punctuation, -2 whitespace, else its lowercase code."""
    table = np.empty(128, dtype=np.int64)
    for c in range(128):
        ch = chr(c)
        table[c] = -1 if ch in string.punctuation else -2 if ch.isspace() else ord(ch.lower())
    return table


_ASCII = _ascii_table()
_DROP, _SPACE = -1, -2


@nb.njit(cache=True, inline="always")
def _is_space(c: int) -> bool:
    if c <= 0x20:
        return c == 0x20 or (0x09 <= c <= 0x0D) or (0x1C <= c <= 0x1F)
    if c < 0x85:
        return False
    return (
        c == 0x85
        or c == 0xA0
        or c == 0x1680
        or (0x2000 <= c <= 0x200A)
        or c == 0x2028
        or c == 0x2029
        or c == 0x202F
        or c == 0x205F
        or c == 0x3000
    )


@nb.njit(cache=True, inline="always")
def _decode(data, i):
    """The code point starting at byte i of valid UTF-8, and the next position."""
    b0 = np.int64(data[i])
    if b0 < 0x80:
        return b0, i + 1
    if b0 < 0xE0:
        return ((b0 & 0x1F) << 6) | (np.int64(data[i + 1]) & 0x3F), i + 2
    if b0 < 0xF0:
        c = ((b0 & 0x0F) << 12) | ((np.int64(data[i + 1]) & 0x3F) << 6)
        return c | (np.int64(data[i + 2]) & 0x3F), i + 3
    c = ((b0 & 0x07) << 18) | ((np.int64(data[i + 1]) & 0x3F) << 12)
    c |= (np.int64(data[i + 2]) & 0x3F) << 6
    return c | (np.int64(data[i + 3]) & 0x3F), i + 4


@nb.njit(cache=True, inline="always")
def _emit(out, at, c, h1, h2):
    out[at] = c
    return mix_step(h1, np.uint64(c)), mix_step_b(h2, np.uint64(c))


@nb.njit(cache=True, parallel=True)
def _clean_kernel(data, starts, ends, lower, out, lengths, content, lo, hi):
    # Each document writes at its own byte offset: a code point takes at least
    # one byte (U+0130 takes two and becomes two), so the cleaned text always
    # fits and threads never overlap.
    for d in nb.prange(starts.size):
        i, end, o = starts[d], ends[d], starts[d]
        n, n_content, pending = 0, 0, False
        h1, h2 = FP_SEED_A, FP_SEED_B
        while i < end:
            c = _ASCII[data[i]] if data[i] < 128 else 0
            if c != 0:  # ASCII: one table lookup (NUL falls through, it is neither class)
                i += 1
            else:
                c, i = _decode(data, i)
                if _is_space(c):
                    c = _SPACE
                elif c < lower.size:
                    c = lower[c]
            if c < 0:
                if c == _SPACE:
                    pending = n > 0
                continue
            if pending:
                h1, h2 = _emit(out, o + n, 32, h1, h2)
                n += 1
                pending = False
            if c == 0x130:  # lowercases to "i" + combining dot above
                h1, h2 = _emit(out, o + n, 0x69, h1, h2)
                n += 1
                c = 0x307
            h1, h2 = _emit(out, o + n, c, h1, h2)
            n += 1
            n_content += 1
        lengths[d] = n
        content[d] = n_content
        lo[d] = fmix64(h1 ^ np.uint64(n))
        hi[d] = fmix64(h2 + np.uint64(n))
