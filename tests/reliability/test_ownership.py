"""Writers remove only what they wrote: a folder that is not a curation output is
refused unless the user says --overwrite, and even then only curation's own
files are replaced; a re-run removes what the last run's manifest listed and
nothing else."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curation.cli import app
from curation.device import CPU
from curation.embeddings import HashedEncoder, cluster_embeddings, embed_dataset
from curation.errors import CurationError
from curation.selectors.budget import Budget
from curation.selectors.dedup import DedupConfig
from curation.selectors.diversity import KMQConfig
from curation.selectors.quality import QualityConfig
from curation.selectors.semdedup import SemDeDupConfig
from curation.stages import dedup_stage, quality_stage, select_stage, semdedup_stage
from curation.storage import Dataset, IngestConfig, InputSpec, ingest, write_dataset
from curation.storage.ingest import DOCUMENTS_SCHEMA
from curation.storage.shards import ShardReader, write_shards
from curation.storage.tokenizer import TokenizerConfig, load_tokenizer
from curation.subset import SubsetConfig, materialize_subset
from curation.train.run import train_on_shards
from tests.reliability.conftest import SHARDS
from tests.reliability.helpers import document_batches, train_config, tree, write_raw_corpus

pytestmark = pytest.mark.timeout(300)
runner = CliRunner()


def _parquet_bytes(texts: list[str]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table({"text": texts}), sink)
    return sink.getvalue()


def _user_files(texts: list[str]) -> dict[str, bytes]:
    """What a person may keep in a folder: the names the issue's probe lost, and
    names beside those our writers use (text/, shards/, documents/, metrics.jsonl)."""
    return {
        "_build/html/index.html": b"<html>mine</html>",
        "__init__.py": b"# mine\n",
        "__pycache__/mod.cpython-312.pyc": b"\x00mine",
        "_config.yml": b"title: mine\n",
        "text/my.parquet": _parquet_bytes(texts[:3]),
        "shards/weights.bin": b"\x01" * 64,
        "documents/_notes.md": b"mine",
        "metrics.jsonl": b'{"step": 3, "mine": true}\n',
    }


def _plant(folder, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory, documents):
    out = tmp_path_factory.mktemp("embeddings") / "emb"
    embed_dataset(documents, out, HashedEncoder(dim=16))
    cluster_embeddings(str(out), str(out.parent / "clusters"), 4, device=CPU)
    return out


def _subset() -> SubsetConfig:
    return SubsetConfig(budget=Budget(documents=60), shards=SHARDS, tokenizer=TokenizerConfig(vocab_size=512))


WRITERS = {
    "ingest": lambda c, out: ingest([InputSpec(str(c["raw"]), source="docs")], str(out)),
    "write_dataset": lambda c, out: write_dataset(
        out, document_batches(c["texts"], 2, 20), DOCUMENTS_SCHEMA, "documents"
    ),
    "embed_dataset": lambda c, out: embed_dataset(c["documents"], out, HashedEncoder(dim=16)),
    "cluster_embeddings": lambda c, out: cluster_embeddings(str(c["embeddings"]), str(out), 4, device=CPU),
    "dedup_stage": lambda c, out: dedup_stage(str(c["documents"]), str(out), DedupConfig(fuzzy=False)),
    "semdedup_stage": lambda c, out: semdedup_stage(
        str(c["documents"]), str(c["embeddings"]), str(c["clusters"]), str(out), SemDeDupConfig()
    ),
    "quality_stage": lambda c, out: quality_stage(str(c["documents"]), str(out), QualityConfig()),
    "quality_stage_scores_only": lambda c, out: quality_stage(
        str(c["documents"]), str(out), QualityConfig(filter=False)
    ),
    "select_stage": lambda c, out: select_stage(
        str(c["documents"]), str(c["clusters"]), str(out), KMQConfig(budget=50)
    ),
    "write_shards": lambda c, out: write_shards(c["documents"], out, load_tokenizer(c["tokenizer"]), SHARDS),
    "materialize_subset": lambda c, out: materialize_subset(
        c["documents"], out, _subset(), tokenizer=c["tokenizer"]
    ),
    "train_on_shards": lambda c, out: train_on_shards(
        str(c["shards"]), train_config(steps=2), out, device="cpu"
    ),
}  # fmt: skip


@pytest.fixture
def context(tmp_path, real_texts, documents, tokenizer_file, shards, embeddings):
    raw = write_raw_corpus(tmp_path / "raw", real_texts, files=1, per_file=30)
    return {
        "raw": raw,
        "texts": real_texts,
        "documents": documents,
        "tokenizer": str(tokenizer_file),
        "shards": shards,
        "embeddings": embeddings,
        "clusters": embeddings.parent / "clusters",
    }


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_writer_refuses_a_folder_curation_did_not_write(tmp_path, context, real_texts, writer):
    """`--out proj` where proj/ holds a person's files: every writer refuses before
    touching anything (it used to delete `_`-names, `text/*.parquet`,
    `shards/*.bin` and truncate metrics.jsonl)."""
    out = tmp_path / "proj"
    _plant(out, _user_files(real_texts))
    before = tree(out)
    with pytest.raises(CurationError, match="curation did not write"):
        WRITERS[writer](context, out)
    assert tree(out) == before


@pytest.mark.parametrize(
    "command",
    [
        lambda c, out: ["ingest", f"docs={c['raw']}", "--out", str(out)],
        lambda c, out: ["subset", str(c["documents"]), "--out", str(out), "--budget", "documents=60",
                        "--tokenizer", c["tokenizer"], "--seq-len", "33"],
        lambda c, out: ["dedup", str(c["documents"]), "--out", str(out), "--exact-only"],
    ],
    ids=["ingest", "subset", "dedup"],
)  # fmt: skip
def test_overwrite_writes_beside_a_persons_files_and_removes_none(tmp_path, context, real_texts, command):
    out = tmp_path / "proj"
    mine = _user_files(real_texts)
    _plant(out, mine)
    refused = runner.invoke(app, command(context, out))
    assert refused.exit_code == 2, refused.output
    assert "--overwrite" in refused.output and "Traceback" not in refused.output
    for attempt in ("--overwrite", None):  # then the folder is ours: a plain re-run works too
        result = runner.invoke(app, [*command(context, out), *([attempt] if attempt else [])])
        assert result.exit_code == 0, result.output
        after = tree(out)
        assert {name: after.get(name) for name in mine} == mine
    if (out / "index.json").exists():
        ShardReader(out, verify="open")
    else:
        Dataset.open(out).verify()


def test_a_rerun_removes_only_what_the_last_run_listed(tmp_path, real_texts):
    raw = write_raw_corpus(tmp_path / "raw", real_texts, files=2, per_file=40)
    out = tmp_path / "out"
    ingest([InputSpec(str(raw), source="docs")], str(out), IngestConfig(rows_per_file=25))
    assert (out / "part-00003.parquet").exists()
    mine = {
        "notes.txt": b"mine",
        "_mine/keep.md": b"mine",
        "part-00099.parquet": _parquet_bytes(real_texts[:2]),  # our naming, not our file
        "_quarantine/_notes.md": b"mine",
    }
    _plant(out, mine)
    report = ingest([InputSpec(str(raw / "part-000.jsonl"), source="docs")], str(out))
    after = tree(out)
    assert {name: after.get(name) for name in mine} == mine
    assert not (out / "part-00001.parquet").exists()  # the last run's parts went
    assert Dataset.open(out).rows == report.documents == 40


def test_a_stage_rerun_keeps_a_persons_files_in_its_folder(tmp_path, documents):
    out = tmp_path / "dedup"
    dedup_stage(str(documents), str(out), DedupConfig(fuzzy=False))
    mine = {"README.md": b"mine", "documents/_notes.md": b"mine", "_extra/x.parquet": b"not parquet"}
    _plant(out, mine)
    dedup_stage(str(documents), str(out), DedupConfig(fuzzy=False, min_chars=0))
    after = tree(out)
    assert {name: after.get(name) for name in mine} == mine


@pytest.mark.parametrize("filtering", [True, False], ids=["decides", "scores_only"])
def test_a_quality_rerun_commits_scores_and_plots_with_one_manifest(tmp_path, documents, filtering):
    out = tmp_path / "quality"
    quality_stage(str(documents), str(out), QualityConfig(filter=filtering))
    _plant(out, {"notes.md": b"mine"})
    report = quality_stage(str(documents), str(out), QualityConfig(filter=filtering))
    assert (out / "notes.md").read_bytes() == b"mine"
    folder = Dataset.open(out)
    folder.verify()
    listed = {f.path for f in folder.manifest.files} | {s.path for s in folder.manifest.sidecars}
    assert "scores.parquet" in listed
    assert not (out / "_pending.json").exists() and not list(out.glob(".*.tmp"))
    assert report.details["scores"].endswith("scores.parquet")
