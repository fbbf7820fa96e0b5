"""Materialize a dataset subset: read the inputs, let `curation.selectors.subset`
choose the documents under a budget and a mixture, write the shards.

Inputs: a documents dataset, optional decision or selection tables (a
document is a candidate only if every table keeps it), a budget (documents,
tokens, or a fraction of the candidates) and a mixture config. Sizes count
tokens by default (the mixture's unit): `TokenCounts` counts them with the
tokenizer where a choice rests on them and estimates the rest. Output: a
shard set (index.json), its Parquet text copy, and subset.json, written last,
recording how the subset was made.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from curation import __version__
from curation.engine import Engine
from curation.errors import CurationError
from curation.selectors.budget import Budget
from curation.selectors.mixture import MixtureConfig
from curation.selectors.subset import choose, source_orders, subset_weights
from curation.storage.dataset import Dataset
from curation.storage.decisions import DECISIONS_FILE, align_by_id, read_id_table
from curation.storage.fs import Location, resolve, write_bytes_atomic
from curation.storage.lock import output_lock
from curation.storage.manifest import MANIFEST_NAME, sha256_of
from curation.storage.output import PENDING, clear_output
from curation.storage.shards import ShardConfig, tokenize_batches, write_shards_unlocked
from curation.storage.tokenizer import CHARS_PER_TOKEN, TokenizerConfig, load_tokenizer, train_tokenizer

SUBSET_FILE = "subset.json"
SCHEMA_VERSION = 1
SAMPLE_CHARS = 2_000_000  # per source: the characters counted exactly to estimate its tokens per character


@dataclass(frozen=True)
class SubsetConfig:
    """Fields: budget; mixture (default: the paper's Cooldown, T=5 then 1);
    seed (which documents inside each source); shards and tokenizer settings
    (the tokenizer is trained on the candidates unless a tokenizer file is given)."""

    budget: Budget
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    seed: int = 0
    shards: ShardConfig = field(default_factory=ShardConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.budget, Budget):
            raise ValueError(f"budget must be a Budget, got {self.budget!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")


@dataclass
class SubsetReport:
    output: str
    documents_in: int
    candidates: int
    selected: int
    tokens: int
    budget_unit: str
    budget_asked: int
    budget_achieved: int
    per_source: dict[str, int]
    per_source_tokens: dict[str, int]
    weights: dict[str, float]
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Selection:
    """One decision/selection table, lined up with the documents."""

    path: str
    kept: np.ndarray
    stages: list[str]
    missing: int  # documents the table does not mention (treated as not kept)


def materialize_subset(
    documents: str | Location,
    out: str | Location,
    config: SubsetConfig,
    selections: Sequence[str | Location] = (),
    tokenizer: str | Location | None = None,
    engine: Engine | None = None,
) -> SubsetReport:
    """Select a subset of `documents` and write its shards, text copy and subset.json to `out`."""
    start = time.perf_counter()
    dataset = Dataset.open(documents)
    folder = resolve(out)
    # Held across shards and subset.json, so two runs into one folder cannot mix.
    with output_lock(folder):
        return _materialize(dataset, folder, config, selections, tokenizer, start, engine)


def _materialize(dataset, folder, config, selections, tokenizer, start, engine) -> SubsetReport:
    clear_output(folder)  # subset.json and index.json first: a half-rewritten folder is never a subset
    names, codes = source_codes(dataset)
    tables = [read_selection(dataset, path) for path in selections]
    candidates = np.ones(dataset.rows, dtype=bool)
    for table in tables:
        candidates &= table.kept
    if not candidates.any():
        raise CurationError(
            f"{dataset.folder}: no documents are left to choose from after the selection tables"
        )
    if tokenizer is not None:
        tok = load_tokenizer(tokenizer)
    else:
        tok = train_tokenizer(dataset, config=config.tokenizer, keep=candidates)
    need_tokens = config.budget.unit == "tokens" or config.mixture.unit == "tokens"
    counts = TokenCounts(dataset, tok, config.shards.batch_documents) if need_tokens else None
    orders = source_orders(names, codes, candidates, config.seed)
    if counts is not None:
        counts.count_prefixes(orders, SAMPLE_CHARS)
    lengths = counts.lengths(codes, candidates) if counts is not None else None
    weights = subset_weights(names, codes, candidates, lengths, config.mixture)
    asked = config.budget.amount(int(candidates.sum()))
    w = [weights[name] for name in names]
    chosen = choose(codes, candidates, orders, w, config.budget, config.mixture.unit, counts)
    lengths = counts.lengths(codes, candidates) if counts is not None else None
    index = write_shards_unlocked(
        dataset, folder, tok, config.shards, chosen, {"subset": SUBSET_FILE}, engine
    )
    report = _report(folder, dataset, names, codes, candidates, chosen, index, weights, config, asked)
    manifest = _manifest(dataset, tables, config, tokenizer, index, report, names, codes, candidates, lengths)
    write_bytes_atomic(folder.join(SUBSET_FILE), orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    report.seconds = round(time.perf_counter() - start, 3)
    return report


def source_codes(dataset: Dataset) -> tuple[list[str], np.ndarray]:
    """Sorted source names and, per document, the position of its source in them."""
    names: set[str] = set()
    for batch in dataset.iter_batches(["source"], batch_size=65536):
        names.update(pc.unique(batch.column(0)).to_pylist())
    ordered = sorted(names)
    value_set = pa.array(ordered, pa.string())
    parts = [
        pc.index_in(batch.column(0), value_set=value_set).to_numpy()
        for batch in dataset.iter_batches(["source"], batch_size=65536)
    ]
    codes = np.concatenate(parts).astype(np.int32) if parts else np.empty(0, np.int32)
    return ordered, codes


def read_selection(dataset: Dataset, path: str | Location) -> _Selection:
    """A table with `id` and `kept` (a decision table), or only `id` (the ids to keep)."""
    loc = resolve(path)
    if loc.is_dir():
        table, loc = _stage_decisions(loc)
    else:
        table = read_id_table(loc, "decision or selection table")
    stages = sorted(set(table.column("stage").to_pylist())) if "stage" in table.column_names else []
    if "kept" in table.column_names:
        if table.column("kept").null_count:
            raise CurationError(f"{loc}: kept has {table.column('kept').null_count} null values")
        if not pa.types.is_boolean(table.column("kept").type):
            raise CurationError(f"{loc}: kept must be boolean, is {table.column('kept').type}")
    kept, missing = _kept_by_id(dataset, table, str(loc))
    return _Selection(str(loc), kept, stages, missing)


def _stage_decisions(folder: Location) -> tuple[pa.Table, Location]:
    """A stage folder's decisions, through its manifest (so checked and never a
    half-written run's); folders written before stage manifests have none."""
    if folder.join(MANIFEST_NAME).exists() or folder.join(PENDING).exists():
        return Dataset.open(folder).read_table(), folder.join(DECISIONS_FILE)
    loc = folder.join(DECISIONS_FILE)
    return read_id_table(loc, "decision or selection table"), loc


def _kept_by_id(dataset: Dataset, table: pa.Table, where: str) -> tuple[np.ndarray, int]:
    """Kept per document; `missing`: documents a decision table does not mention
    (an id-only table lists just what to keep, so it misses nothing)."""
    has_kept = "kept" in table.column_names
    if not has_kept:
        table = table.select(["id"]).append_column("kept", pa.array(np.ones(table.num_rows, dtype=bool)))
    kept = align_by_id(dataset.read_table(["id"]).column("id"), table, "kept", where)
    missing = int(kept.null_count()) if has_kept else 0
    return kept.fill_null(False).to_numpy().astype(bool), missing


class TokenCounts:
    """Tokens each document takes in the shards (its ids plus EOS): counted by
    the tokenizer where a decision needs the exact number, estimated elsewhere
    from its characters at its source's counted tokens per character.

    Counting every candidate cost 4x the shards themselves on long documents;
    the mixture's source sizes need only an estimate, and a tokens budget is
    filled with counted documents, so it is never exceeded."""

    def __init__(self, dataset: Dataset, tokenizer, batch_documents: int) -> None:
        self.dataset, self.tokenizer, self.batch_documents = dataset, tokenizer, batch_documents
        self.chars = dataset.read_table(["n_chars"]).column(0).to_numpy().astype(np.int64)
        self.counted = np.zeros(dataset.rows, dtype=np.int64)  # 0: not counted yet

    def count(self, rows: np.ndarray) -> None:
        """Count the documents at `rows` that are not counted yet (one pass over the dataset)."""
        mask = np.zeros(self.dataset.rows, dtype=bool)
        mask[rows] = True
        mask &= self.counted == 0
        todo, done = np.flatnonzero(mask), 0
        for _, tokens in tokenize_batches(self.dataset, self.tokenizer, self.batch_documents, mask):
            self.counted[todo[done : done + len(tokens)]] = [len(t) + 1 for t in tokens]
            done += len(tokens)

    def count_prefixes(self, orders: list[np.ndarray], chars: int) -> None:
        """Count each order's first documents up to `chars` characters (at least one)."""
        prefixes = [rows[: int(np.searchsorted(np.cumsum(self.chars[rows]), chars)) + 1] for rows in orders]
        self.count(np.concatenate(prefixes) if prefixes else np.empty(0, np.int64))

    def lengths(self, codes: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Counted lengths, estimates for the rest of the candidates; 0 elsewhere."""
        done = self.counted > 0
        sources = max(int(codes.max(initial=-1)) + 1, 1)
        tokens = np.bincount(codes[done], weights=self.counted[done] - 1, minlength=sources)
        chars = np.bincount(codes[done], weights=self.chars[done], minlength=sources)
        rate = np.divide(tokens, chars, out=np.full(sources, 1 / CHARS_PER_TOKEN), where=chars > 0)
        estimate = np.ceil(self.chars * rate[codes]).astype(np.int64) + 1
        return np.where(candidates, np.where(done, self.counted, estimate), 0)


def _report(folder, dataset, names, codes, candidates, chosen, index, weights, config, asked) -> SubsetReport:
    per_source = {
        n: int(c) for n, c in zip(names, np.bincount(codes[chosen], minlength=len(names)), strict=True)
    }
    per_tokens = {n: int(index["sources"].get(n, {}).get("tokens", 0)) for n in names}
    tokens = int(sum(per_tokens.values()))
    selected = int(chosen.sum())
    return SubsetReport(
        output=str(folder),
        documents_in=dataset.rows,
        candidates=int(candidates.sum()),
        selected=selected,
        tokens=tokens,
        budget_unit=config.budget.unit,
        budget_asked=asked,
        budget_achieved=tokens if config.budget.unit == "tokens" else selected,
        per_source=per_source,
        per_source_tokens=per_tokens,
        weights={n: round(w, 6) for n, w in weights.items()},
    )


def _manifest(dataset, tables, config, tokenizer, index, report, names, codes, candidates, lengths) -> dict:
    available = np.bincount(codes[candidates], minlength=len(names))
    sources = {}
    for position, name in enumerate(names):
        sources[name] = {
            "documents": int(np.sum(codes == position)),
            "candidates": int(available[position]),
            "selected": report.per_source[name],
            "tokens": report.per_source_tokens[name],
            "weight": report.weights[name],
            "share": _share(report, name),
        }
        if lengths is not None:
            sources[name]["candidate_tokens"] = int(lengths[candidates & (codes == position)].sum())
    return {
        "kind": "subset",
        "schema_version": SCHEMA_VERSION,
        "created_by": f"curation {__version__}",
        "documents": _provenance(dataset),
        "selections": [
            {"path": t.path, "stages": t.stages, "kept": int(t.kept.sum()), "missing": t.missing}
            for t in tables
        ],
        "config": _jsonable(asdict(config)),
        "tokenizer": {
            "given": str(tokenizer) if tokenizer is not None else None,
            "sha256": index["tokenizer"]["sha256"],
        },
        "budget": {
            "unit": report.budget_unit,
            "asked": report.budget_asked,
            "achieved": report.budget_achieved,
        },
        "totals": {
            "documents": report.documents_in,
            "candidates": report.candidates,
            "selected": report.selected,
            "tokens": report.tokens,
        },
        "sources": sources,
        "shards": "index.json",
        "text": index["text"]["folder"],
    }


def _share(report: SubsetReport, name: str) -> float:
    """The source's achieved share of the subset, in the budget's unit."""
    if report.budget_unit == "tokens":
        return round(report.per_source_tokens[name] / max(report.tokens, 1), 6)
    return round(report.per_source[name] / max(report.selected, 1), 6)


def _provenance(dataset: Dataset) -> dict[str, Any]:
    manifest_loc = dataset.folder.join(MANIFEST_NAME)
    return {
        "path": str(dataset.folder),
        "kind": dataset.manifest.kind,
        "rows": dataset.rows,
        "manifest_sha256": sha256_of(manifest_loc),
        "config": dataset.manifest.config,
    }


def _jsonable(value):
    # JSON has no infinity; T = inf (uniform) is written as the string "inf".
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
