"""Progress bars for the CLI (rich), kept out of library code."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@contextmanager
def file_bar(console: Console, label: str) -> Iterator[Callable[[str, int, int], None]]:
    """A bar advanced by ingest's `on_file(file, done, total)` callback.

    It appears with the first file, so an argument error shows no empty bar.
    """
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[file]}", style="dim"),
    )
    progress = Progress(*columns, console=console)
    task = None

    def advance(file: str, done: int, total: int) -> None:
        nonlocal task
        if task is None:
            progress.start()
            task = progress.add_task(label, total=total, file="")
        progress.update(task, completed=done, file=file[-50:])

    try:
        yield advance
    finally:
        progress.stop()


COMPILE_NOTICE = "compiling kernels for this machine (the first run only: numba keeps them on disk) ..."


def compile_notice(console: Console):
    """A context that prints COMPILE_NOTICE once if numba compiles a kernel in it.

    Kernels are compiled on first use and then loaded from numba's on-disk
    cache, so the line shows on a fresh install (or after an upgrade) and
    explains a slow first run. Without numba loaded it does nothing (and
    does not load it)."""
    if "numba" not in sys.modules:
        return nullcontext()
    from numba.core import event

    class Notice(event.Listener):
        said = False

        def on_start(self, event) -> None:
            if not self.said:
                self.said = True
                console.print(COMPILE_NOTICE, highlight=False)

        def on_end(self, event) -> None:
            pass

    return event.install_listener("numba:compile", Notice())


@contextmanager
def stage_bar(console: Console, total: int) -> Iterator[Callable[[str, int], None]]:
    """A bar per named step, advanced by `progress(step, done)` callbacks."""
    columns = (
        TextColumn("[bold]{task.description:>10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    tasks: dict[str, int] = {}
    with Progress(*columns, console=console) as progress, compile_notice(console):

        def advance(step: str, done: int) -> None:
            if step not in tasks:
                tasks[step] = progress.add_task(step, total=total if total else None)
            progress.update(tasks[step], completed=done)

        yield advance


@contextmanager
def loss_bar(console: Console, steps: int) -> Iterator[Callable[[int, float], None]]:
    """A bar over training steps that shows the latest loss."""
    columns = (
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("train", total=steps, loss="-")

        def advance(step: int, loss: float) -> None:
            progress.update(task, completed=step, loss=f"{loss:.3f}")

        yield advance


@contextmanager
def count_bar(console: Console, label: str) -> Iterator[Callable[[int, int], None]]:
    """A bar advanced by `progress(done, total)` callbacks."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress, compile_notice(console):
        task = progress.add_task(label, total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield advance
