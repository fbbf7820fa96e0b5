"""Progress bars for the CLI (rich), kept out of library code."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

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
