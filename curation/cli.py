"""The `curation` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from curation.errors import CurationError
from curation.progress import file_bar
from curation.storage import Dataset, IngestConfig, IngestReport, InputSpec, ingest

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Curate training data: ingest, deduplicate, select, mix, shard, train.",
)
console = Console(stderr=True)


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


@app.command("ingest")
def ingest_command(
    inputs: Annotated[list[str], typer.Argument(help="Files or folders; SOURCE=PATH sets the source.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output documents dataset folder.")],
    source: Annotated[str | None, typer.Option(help="Source for inputs that name none.")] = None,
    text_field: Annotated[str, typer.Option(help="Field holding the text (dotted for nested).")] = "text",
    source_field: Annotated[str | None, typer.Option(help="Record field naming its source.")] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="jsonl|parquet|csv|txt; default: by extension.")
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="Stop at the first bad record instead of quarantining it.")
    ] = False,
    max_doc_bytes: Annotated[int, typer.Option(help="Larger documents are quarantined.")] = 8 << 20,
) -> None:
    """Read raw files into a documents dataset (Parquet + manifest), quarantining bad records."""
    try:
        config = IngestConfig(
            text_field=text_field,
            source_field=source_field,
            source=source,
            strict=strict,
            max_doc_bytes=max_doc_bytes,
        )
        specs = [_with_format(InputSpec.parse(i), fmt) for i in inputs]
        with file_bar(console, "ingest") as on_file:
            report = ingest(specs, str(out), config, on_file=on_file)
    except CurationError as exc:
        _fail(exc)
    print_ingest(report)


def _with_format(spec: InputSpec, fmt: str | None) -> InputSpec:
    if fmt is None:
        return spec
    if fmt not in ("jsonl", "parquet", "csv", "txt"):
        raise CurationError(f"--format {fmt!r}: use jsonl, parquet, csv or txt")
    return InputSpec(spec.path, spec.source, fmt, spec.text_field)


def print_ingest(report: IngestReport) -> None:
    table = Table(title="ingest", show_header=False)
    table.add_row("files", str(report.files))
    table.add_row("records read", f"{report.records_read:,}")
    table.add_row("documents", f"{report.documents:,}")
    table.add_row("quarantined", f"{report.quarantined:,}")
    for reason, n in report.by_reason.items():
        table.add_row(f"  {reason}", f"{n:,}")
    table.add_row("output", report.output)
    console.print(table)


@app.command("info")
def info_command(
    dataset: Annotated[str, typer.Argument(help="A dataset folder or URI.")],
    verify: Annotated[bool, typer.Option(help="Check every file's sha256.")] = False,
) -> None:
    """Show a dataset's manifest: kind, rows, files; optionally verify checksums."""
    try:
        data = Dataset.open(dataset)
        if verify:
            data.verify()
    except CurationError as exc:
        _fail(exc)
    manifest = data.manifest
    console.print(
        f"{dataset}: {manifest.kind}, {manifest.rows:,} rows in "
        f"{len(manifest.files)} files, {manifest.bytes:,} bytes" + (", checksums ok" if verify else "")
    )
    for key, value in manifest.extra.get("report", {}).items():
        console.print(f"  {key}: {value}")


@app.command("demo")
def demo_command(
    workdir: Annotated[Path, typer.Option(help="Where the demo writes everything.")] = Path("curation-demo"),
) -> None:
    """Run the whole pipeline on the bundled default corpus and print a summary."""
    from curation.demo import run_demo

    try:
        run_demo(workdir, console)
    except CurationError as exc:
        _fail(exc)


def main() -> None:  # pragma: no cover - entry point
    sys.exit(app())
