"""The one-line notice when numba compiles a kernel under a progress bar."""

from __future__ import annotations

import io

import numba
from rich.console import Console

from curation.progress import COMPILE_NOTICE, compile_notice


def test_compiling_a_kernel_prints_the_notice_once_and_loading_does_not():
    out = io.StringIO()
    console = Console(file=out, width=200)

    @numba.njit(cache=False)
    def add(a, b):
        return a + b

    @numba.njit(cache=False)
    def twice(a):
        return 2 * a

    with compile_notice(console):
        assert add(1, 2) == 3
        assert twice(4) == 8  # a second compile in the same context: still one line
    assert out.getvalue().count(COMPILE_NOTICE) == 1
    with compile_notice(console):
        assert add(5, 6) == 11  # already compiled for ints: nothing to say
    assert out.getvalue().count(COMPILE_NOTICE) == 1
