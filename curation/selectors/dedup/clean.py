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
a whole batch with numba kernels over the UTF-8 bytes, in parallel: one
cleans, one computes the exact-dedup fingerprint of the cleaned text. The
cleaner lowercases with a table built from `str.lower` and marks each text
holding a code point that may not be NFC (a combining mark, a character NFC
replaces or composes with the one before) or a capital sigma (whose
lowercase depends on the next character). Python only looks at those texts:
it normalises and lowercases them, and the kernel cleans them again.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from dataclasses import dataclass

import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .hashing import FP_SEED_A, FP_SEED_B, fmix64, mix_step, mix_step_b

# xxHash64's primes and rotation for the fingerprint's lanes.
_P1 = np.uint64(0x9E3779B185EBCA87)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_S31, _S32, _S33 = np.uint64(31), np.uint64(32), np.uint64(33)
_LANES = 8

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
        import ftfy  # only when asked for

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
        data, starts, ends = _utf8_views(texts)
        n = len(starts)
        out = self._room(data.size)
        lengths = np.empty(n, dtype=np.int64)
        content = np.empty(n, dtype=np.int64)
        marked = np.zeros(n, dtype=np.bool_)
        lower, unsure = _unicode_tables(ascii_only=pc.all(pc.string_is_ascii(texts)).as_py() is not False)
        _clean_kernel(data, starts, ends, lower, unsure, out, lengths, content, marked)
        if marked.any():
            out = self._redo(data, np.flatnonzero(marked), starts, ends, lengths, content)
        lo = np.empty(n, dtype=np.uint64)
        hi = np.empty(n, dtype=np.uint64)
        _digest_kernel(out, starts, lengths, lo, hi)
        return CleanBatch(out, starts, lengths, content, lo, hi)

    def _room(self, size: int, keep: int = 0) -> np.ndarray:
        """The buffer, grown to at least `size` slots; its first `keep` slots are kept."""
        if self._buffer.size < max(size, 1):
            grown = np.empty(max(size, 1), dtype=np.uint32)
            grown[:keep] = self._buffer[:keep]
            self._buffer = grown
        return self._buffer

    def _redo(self, data: np.ndarray, rows: np.ndarray, starts, ends, lengths, content) -> np.ndarray:
        """Normalise and lowercase the marked texts in Python and clean those that
        changed again. A result goes back into its text's own slots when it fits
        (it nearly always does), else after the batch's. Returns the buffer."""
        pieces, positions, fixed_rows, extra = [], [0], [], []
        for i in rows:
            fixed, added = _fixed_text(data, int(starts[i]), int(ends[i]))
            if fixed is None:
                continue
            pieces.append(np.frombuffer(fixed, dtype=np.uint8))
            positions.append(positions[-1] + pieces[-1].size)
            fixed_rows.append(i)
            extra.append(added)
        if not pieces:
            return self._buffer
        redo = np.concatenate(pieces)
        bounds = np.array(positions, dtype=np.int64)
        k = len(fixed_rows)
        cleaned = np.empty(redo.size, dtype=np.uint32)
        sub_lengths, sub_content = np.empty(k, np.int64), np.empty(k, np.int64)
        lower, unsure = _unicode_tables(ascii_only=False)
        _clean_kernel(redo, bounds[:-1], bounds[1:], lower, unsure, cleaned, sub_lengths, sub_content,
                      np.zeros(k, dtype=np.bool_))  # fmt: skip
        out, used = self._buffer, data.size
        for j, i in enumerate(fixed_rows):
            length = int(sub_lengths[j])
            if length > ends[i] - starts[i]:
                out = self._room(used + length, keep=used)
                starts[i], used = used, used + length
            out[starts[i] : starts[i] + length] = cleaned[bounds[j] : bounds[j] + length]
            lengths[i] = length
            content[i] = sub_content[j] - extra[j]
        return out


def _fixed_text(data: np.ndarray, start: int, end: int) -> tuple[bytes | None, int]:
    """The UTF-8 of data[start:end] in NFC and, if it holds a capital sigma,
    lowercased by Python; None when it is NFC and has no sigma. Also how many
    characters lowercasing added (U+0130 becomes two; not content characters).

    Only the stretches around marked code points are decoded and normalised:
    a code point the table leaves unmarked neither composes with the one
    before it nor is reordered, so NFC never looks across it.
    """
    spans = _unsure_spans(data, start, end, _unsure_table())
    texts = [data[a:b].tobytes().decode("utf-8") for a, b in spans]
    sigma = any("\u03a3" in t for t in texts)
    if not sigma and all(unicodedata.is_normalized("NFC", t) for t in texts):
        return None, 0
    parts, position = [], start
    for (a, b), text in zip(spans, texts, strict=True):
        parts += [data[position:a].tobytes(), unicodedata.normalize("NFC", text).encode("utf-8")]
        position = b
    fixed = b"".join([*parts, data[position:end].tobytes()])
    if not sigma:
        return fixed, 0
    text = fixed.decode("utf-8")
    lowered = text.lower()
    return lowered.encode("utf-8"), len(lowered) - len(text)


@nb.njit(cache=True)
def _unsure_spans(data, start, end, unsure):
    """Byte ranges around the marked code points of data[start:end]: each runs
    from the last unmarked code point before a marked one to the first unmarked
    code point after it (exclusive); overlapping ranges are merged."""
    spans = [(start, start)]  # typed by its first element, dropped below
    anchor = start  # where the last unmarked code point starts
    open_at = -1  # start of the span being built, or -1
    i = start
    while i < end:
        here = i
        c, i = _decode(data, i)
        if c >= unsure.size or unsure[c] != 0:
            if open_at < 0:
                open_at = anchor
        else:
            if open_at >= 0:
                spans.append((open_at, here))
                open_at = -1
            anchor = here
    if open_at >= 0:
        spans.append((open_at, end))
    return spans[1:]


def _utf8_views(texts: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One UTF-8 buffer with per-document byte ranges (starts, ends), without copies."""
    offsets_type = np.int64 if pa.types.is_large_string(texts.type) else np.int32
    n = len(texts)
    offsets = np.frombuffer(texts.buffers()[1], dtype=offsets_type)[
        texts.offset : texts.offset + n + 1
    ].astype(np.int64)
    raw = texts.buffers()[2]
    data = np.frombuffer(raw, dtype=np.uint8) if raw is not None else np.zeros(0, np.uint8)
    data = data[offsets[0] : offsets[-1]]  # a slice of a bigger array: only its own bytes
    return data, offsets[:-1] - offsets[0], offsets[1:] - offsets[0]


def _unicode_tables(ascii_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """(lowercase table, not-surely-NFC table) for the kernel; tiny stand-ins when
    the batch is ASCII, so that a run on ASCII text never builds the real ones."""
    if ascii_only:
        return _ASCII_STANDIN
    return _lower_table(), _unsure_table()


@functools.cache
def _unsure_table() -> np.ndarray:
    """1 for each code point after which a text may not be NFC, or lowercases by context.

    A text whose code points are all 0 here is NFC: each is its own NFC form
    (NFC_Quick_Check is not No), has combining class 0 (no reordering) and
    is not the second half of a canonical pair (Quick_Check is not Maybe);
    that is the Unicode quick check answering Yes. Capital sigma is marked
    too: its lowercase depends on the next letter. Code points past the table
    (none of them is marked in Unicode 15) are treated as marked.
    """
    size = 0x30000
    chars = "".join(map(chr, range(size)))
    unsure = (np.fromiter(map(unicodedata.combining, chars), np.int32, count=size) != 0).astype(np.uint8)
    for c, decomposition in enumerate(map(unicodedata.decomposition, chars)):
        if not decomposition or decomposition.startswith("<"):
            continue  # NFC changes only characters with a canonical decomposition
        if unicodedata.normalize("NFC", chars[c]) != chars[c]:
            unsure[c] = 1
        parts = decomposition.split()
        if len(parts) == 2:
            unsure[int(parts[1], 16)] = 1  # may compose with the character before it
    unsure[0x1161:0x1176] = 1  # Hangul vowels and trailing consonants compose algorithmically
    unsure[0x11A8:0x11C3] = 1
    unsure[0x3A3] = 1
    return unsure


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
# Stand-ins for the Unicode tables when a batch is ASCII (the kernel never reads them then).
_ASCII_STANDIN = (np.arange(128, dtype=np.int32), np.zeros(128, dtype=np.uint8))


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
def _classify(c, lower, unsure):
    """(value, marked) of a non-ASCII code point: _SPACE, or its lowercase."""
    marked = c >= unsure.size or unsure[c] != 0
    if _is_space(c):
        return _SPACE, marked
    if c < lower.size:
        c = lower[c]
    return c, marked


@nb.njit(cache=True, parallel=True)
def _clean_kernel(data, starts, ends, lower, unsure, out, lengths, content, marked):
    # Each document writes at its own byte offset: a code point takes at least
    # one byte (U+0130 takes two and becomes two), so the cleaned text always
    # fits and threads never overlap. Every byte writes a slot and only kept
    # characters advance `n`: fewer branches, the slot past n is overwritten.
    for d in nb.prange(starts.size):
        o, end = starts[d], ends[d]
        n, n_content = 0, 0
        after_space = True  # a space is only written between kept characters
        mark = False
        i = o
        while i < end:
            b = data[i]
            if b < 128:
                c = _ASCII[b]
                i += 1
            else:
                c, i = _decode(data, i)
                c, unsure_here = _classify(c, lower, unsure)
                mark |= unsure_here
                if c == 0x130:  # lowercases to "i" + combining dot above
                    out[o + n] = 0x69  # not counted: the pair is one content character
                    n += 1
                    after_space = False
                    c = 0x307
            space = c == _SPACE
            keep = c >= 0
            write = keep | (space & ~after_space)  # bitwise: no branches
            out[o + n] = 32 if space else c
            n += write
            n_content += keep
            after_space = space | (after_space & ~write)
        if n > 0 and after_space:
            n -= 1  # a trailing space
        lengths[d] = n
        content[d] = n_content
        marked[d] = mark


@nb.njit(cache=True, parallel=True)
def _digest_kernel(codepoints, starts, lengths, lo, hi):
    """A 128-bit fingerprint of each cleaned text: eight independent lanes over
    pairs of code points (so the loop vectorises), folded with the length."""
    for d in nb.prange(starts.size):
        o, n = starts[d], lengths[d]
        lanes = np.empty(_LANES, dtype=np.uint64)
        for j in range(_LANES):
            lanes[j] = FP_SEED_A + np.uint64(j) * _P1
        blocks = n // (2 * _LANES)
        for block in range(blocks):
            at = o + 2 * _LANES * block
            for j in range(_LANES):
                x = np.uint64(codepoints[at + 2 * j]) | (np.uint64(codepoints[at + 2 * j + 1]) << _S32)
                v = lanes[j] + x * _P2
                lanes[j] = ((v << _S31) | (v >> _S33)) * _P1
        h1, h2 = FP_SEED_A, FP_SEED_B
        for i in range(o + 2 * _LANES * blocks, o + n):
            h1, h2 = mix_step(h1, np.uint64(codepoints[i])), mix_step_b(h2, np.uint64(codepoints[i]))
        for j in range(_LANES):
            h1, h2 = mix_step(h1, lanes[j]), mix_step_b(h2, lanes[j])
        lo[d] = fmix64(h1 ^ np.uint64(n))
        hi[d] = fmix64(h2 + np.uint64(n))
