"""`curation demo`: every stage that exists, on the bundled corpus, then a summary."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from curation import default_corpus
from curation.progress import file_bar
from curation.storage import ingest


def run_demo(workdir: Path, console: Console) -> dict:
    workdir = Path(workdir)
    console.print(f"[bold]curation demo[/] in {workdir}/")
    with console.status("building the default corpus from the Python standard library"):
        inputs = default_corpus.build(workdir / "raw")
    with file_bar(console, "ingest") as on_file:
        report = ingest(inputs, str(workdir / "documents"), on_file=on_file)
    summary = {"ingest": report.to_dict()}
    _print_summary(console, summary, workdir)
    return summary


def _print_summary(console: Console, summary: dict, workdir: Path) -> None:
    ingest_report = summary["ingest"]
    table = Table(title="summary")
    table.add_column("stage")
    table.add_column("in", justify="right")
    table.add_column("kept", justify="right")
    table.add_column("dropped (reason)")
    dropped = ", ".join(f"{n:,} {r}" for r, n in ingest_report["by_reason"].items()) or "-"
    table.add_row("ingest", f"{ingest_report['records_read']:,}", f"{ingest_report['documents']:,}", dropped)
    console.print(table)
    sources = ", ".join(f"{s} {n:,}" for s, n in ingest_report["by_source"].items())
    console.print(f"documents by source: {sources}")
    console.print(f"output: {workdir / 'documents'}")
