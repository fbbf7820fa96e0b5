"""One report per materialization: what the Dagster UI shows for an asset.

Numbers go into the metadata as numbers (Dagster charts them across
materializations), tables as tables (`MetadataValue.table`, drawn as tables),
and everything, plots included, into one Markdown page under `report`.
"""
# No `from __future__ import annotations` here, like the asset modules.

import math
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import MaterializeResult, MetadataValue, TableColumn, TableRecord, TableSchema

from curation.plots import markdown_image

CELL_CHARS = 120  # longer cells (quarantined snippets) are cut in the Markdown page


class Report:
    def __init__(self, title: str, description: str = ""):
        self.title, self.description = title, description
        self.metadata: dict[str, Any] = {}
        self._facts: list[tuple[str, str]] = []
        self._sections: list[str] = []

    def path(self, key: str, uri: str, label: str | None = None) -> None:
        self.metadata[key] = MetadataValue.path(uri)
        self._facts.append((label or key.replace("_", " "), f"`{uri}`"))

    def value(self, key: str, value: Any, label: str | None = None) -> None:
        """A number or a short text."""
        self.metadata[key] = value
        self._facts.append((label or key.replace("_", " "), cell(value)))

    def table(
        self,
        key: str,
        rows: Sequence[Mapping[str, Any]],
        title: str = "",
        columns: Sequence[str] = (),
    ) -> None:
        """Rows of the same keys, as a metadata table and a section of the page."""
        rows = [dict(r) for r in rows]
        columns = list(columns or (rows[0] if rows else ["none"]))
        self.metadata[key] = MetadataValue.table(
            records=[TableRecord(_plain(r)) for r in rows],
            schema=TableSchema(columns=[TableColumn(c, _kind(rows, c)) for c in columns]),
        )
        self._sections.append(f"#### {title or key.replace('_', ' ')}\n\n{markdown_table(rows, columns)}")

    def counts(self, key: str, counts: Mapping[str, Any], name: str, unit: str, title: str = "") -> None:
        """A {name: count} mapping as a two-column table."""
        self.table(key, [{name: k, unit: v} for k, v in counts.items()], title, (name, unit))

    def by_row(self, key: str, nested: Mapping[str, Mapping[str, Any]], name: str, title: str = "") -> None:
        """A {row name: {column: value}} mapping as a table."""
        self.table(key, [{name: k, **v} for k, v in nested.items()], title)

    def plot(self, png: bytes, title: str) -> None:
        self._sections.append(f"#### {title}\n\n{markdown_image(png, title)}")

    def note(self, markdown: str) -> None:
        self._sections.append(markdown)

    def markdown(self) -> str:
        head = f"### {self.title}\n\n" + (f"{self.description}\n\n" if self.description else "")
        facts = "\n".join(f"- **{label}**: {value}" for label, value in self._facts)
        return "\n\n".join(part for part in (head + facts, *self._sections) if part) + "\n"

    def result(self) -> MaterializeResult:
        return MaterializeResult(metadata={**self.metadata, "report": MetadataValue.md(self.markdown())})


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    if not rows:
        return "_none_"
    numeric = [all(_is_number(r.get(c)) for r in rows) for c in columns]
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def cell(value: Any) -> str:
    """A value as Markdown table text: grouped digits, short floats, escaped text."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if math.isfinite(value) else str(value)
    text = str(value).replace("\r", " ").replace("\n", " ")
    if len(text) > CELL_CHARS:
        text = text[: CELL_CHARS - 1] + "…"
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(rows: Sequence[Mapping[str, Any]], column: str) -> str:
    values = [r.get(column) for r in rows if r.get(column) is not None]
    if values and all(isinstance(v, bool) for v in values):
        return "bool"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int"
    if values and all(_is_number(v) for v in values):
        return "float"
    return "string"


def _plain(row: Mapping[str, Any]) -> dict[str, Any]:
    """Table records hold str, int, float and bool; anything else is shown as text."""
    return {k: v if isinstance(v, str | int | float | bool) or v is None else str(v) for k, v in row.items()}


def table_rows(value) -> list[dict[str, Any]]:
    """The rows of a table metadata value (for tests and readers)."""
    return [dict(record.data) for record in value.records]
