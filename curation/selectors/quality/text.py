"""Texts as code points for the compiled quality kernels.

A batch of texts becomes one uint32 array of Unicode code points plus offsets,
so a kernel indexes characters exactly as Python's `str` does (len, slicing)
without decoding UTF-8. Character classes come from a table built once from
Python's own `str.isalpha`, `str.isspace` and `str.splitlines`, so "word",
"whitespace" and "line" mean what they mean in Python.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa

ALPHA, SPACE, LINE_BREAK = np.uint8(1), np.uint8(2), np.uint8(4)
# The separators str.splitlines() splits on ("\r\n" counts as one).
LINE_BREAKS = (0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029)


def codepoints(texts: pa.Array | pa.ChunkedArray | list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(code points of all texts, one after another; offsets with n + 1 entries)."""
    strings = texts if isinstance(texts, list) else texts.to_pylist()
    lengths = np.fromiter((len(t) for t in strings), dtype=np.int64, count=len(strings))
    offsets = np.zeros(len(strings) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    joined = "".join(strings).encode("utf-32-le", "surrogatepass")
    return np.frombuffer(joined, dtype=np.uint32), offsets


@functools.cache
def char_classes() -> np.ndarray:
    """A class byte for every code point: ALPHA | SPACE | LINE_BREAK bits."""
    size = 0x110000
    alpha = np.fromiter((chr(c).isalpha() for c in range(size)), dtype=bool, count=size)
    space = np.zeros(size, dtype=bool)
    space[[c for c in range(0x3001) if chr(c).isspace()]] = True  # none above U+3000
    table = alpha.astype(np.uint8) * ALPHA + space.astype(np.uint8) * SPACE
    table[list(LINE_BREAKS)] |= LINE_BREAK
    return table
