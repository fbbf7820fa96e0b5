"""Crash and resume: a writer killed with SIGKILL halfway leaves nothing a reader
would take for data, and running it again gives exactly what an uninterrupted
run gives.

Each test starts the writer in a child process, lets it stop itself at a chosen
point in the middle of its work (`hang(marker)`), inspects the output folder
over and over while the child writes, SIGKILLs it, then re-runs the same call
and compares bytes with a run that was never interrupted.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from curation.embeddings import HashedEncoder, embed_dataset
from curation.errors import CurationError
from curation.storage import Dataset, IngestConfig, InputSpec, ingest, write_dataset
from curation.storage.ingest import DOCUMENTS_SCHEMA
from curation.storage.shards import ShardReader, write_shards
from curation.storage.tokenizer import load_tokenizer, token_dtype
from curation.train.checkpoint import latest_checkpoint
from curation.train.run import train_on_shards
from tests.reliability.conftest import SHARDS
from tests.reliability.helpers import (
    check_no_partial_file_visible,
    document_batches,
    kill_at_marker,
    start,
    temp_files,
    train_config,
    tree,
    write_raw_corpus,
)

pytestmark = pytest.mark.timeout(300)


def _assert_unfinished(out, final_glob: str, index: str = "manifest.json") -> None:
    """Right after the kill: no index, some finished files, one half-written temp
    file, and every final-named file whole."""
    assert not (out / index).exists()
    assert list(out.glob(final_glob)), "the kill came before any file was finished"
    assert temp_files(out), "the kill came between files, not inside one"


INGEST = """
from curation.storage import IngestConfig, InputSpec, ingest
raw, out, marker = sys.argv[1:4]

def on_file(name, done, total):
    if done == 12:  # 7,200 records read: four parts finished, the fifth half written
        hang(marker)

ingest([InputSpec(raw, source="docs")], out, IngestConfig(rows_per_file=1000), on_file=on_file)
"""


def test_ingest_killed_mid_part_then_rerun_gives_identical_bytes(tmp_path, real_texts):
    raw = write_raw_corpus(tmp_path / "raw", real_texts, files=24, per_file=600, bad_every=97)
    spec, config = [InputSpec(str(raw), source="docs")], IngestConfig(rows_per_file=1000)
    ingest(spec, str(tmp_path / "reference"), config)
    out, marker = tmp_path / "out", tmp_path / "marker"
    seen = []

    child = start(INGEST, raw, out, marker)
    kill_at_marker(child, marker, watch=lambda: seen.append(check_no_partial_file_visible(out)))

    assert max(seen) > 0  # the watcher saw finished parts while the child wrote
    _assert_unfinished(out, "part-*.parquet")
    check_no_partial_file_visible(out)
    with pytest.raises(CurationError, match=r"no manifest\.json"):
        Dataset.open(out)  # an interrupted write is never taken for a dataset

    report = ingest(spec, str(out), config)
    assert report.quarantined > 0 and report.records_read == 24 * 600
    assert tree(out) == tree(tmp_path / "reference")
    Dataset.open(out).verify()


WRITE_DATASET = """
from curation.storage import DOCUMENTS_SCHEMA, write_dataset
from tests.conftest import stdlib_docstrings
from tests.reliability.helpers import document_batches
out, marker = sys.argv[1:3]

def batches():
    for i, batch in enumerate(document_batches(stdlib_docstrings(), 20, 500)):
        if i == 9:
            hang(marker)
        yield batch

write_dataset(out, batches(), DOCUMENTS_SCHEMA, "documents", rows_per_file=700)
"""


def test_write_dataset_killed_mid_part_then_rerun_gives_identical_bytes(tmp_path, real_texts):
    def write(path):
        write_dataset(
            path, document_batches(real_texts, 20, 500), DOCUMENTS_SCHEMA, "documents", rows_per_file=700
        )

    write(tmp_path / "reference")
    out, marker = tmp_path / "out", tmp_path / "marker"
    child = start(WRITE_DATASET, out, marker)
    kill_at_marker(child, marker, watch=lambda: check_no_partial_file_visible(out))

    _assert_unfinished(out, "part-*.parquet")
    check_no_partial_file_visible(out)
    write(out)
    assert tree(out) == tree(tmp_path / "reference")


EMBED = """
from curation.embeddings import HashedEncoder, embed_dataset
documents, out, marker = sys.argv[1:4]
encoder = HashedEncoder(dim=32)
real, calls = encoder.encode, []

def encode(texts):
    calls.append(len(texts))
    if len(calls) == 6:  # parts 0 and 1 written, part 2 half encoded
        hang(marker)
    return real(texts)

encoder.encode = encode
embed_dataset(documents, out, encoder, batch_size=20, rows_per_part=40)
"""


def test_embed_killed_mid_job_resumes_and_matches_an_uninterrupted_run(tmp_path, documents):
    embed_dataset(documents, tmp_path / "reference", HashedEncoder(dim=32), batch_size=20, rows_per_part=40)
    out, marker = tmp_path / "out", tmp_path / "marker"
    child = start(EMBED, documents, out, marker)
    kill_at_marker(child, marker, watch=lambda: check_no_partial_file_visible(out))

    assert not (out / "manifest.json").exists()
    assert sorted(p.name for p in out.glob("part-*.parquet")) == ["part-00000.parquet", "part-00001.parquet"]
    report = embed_dataset(documents, out, HashedEncoder(dim=32), batch_size=20, rows_per_part=40)
    assert (report.parts_reused, report.encoded) == (2, 240 - 80)
    assert tree(out) == tree(tmp_path / "reference")
    Dataset.open(out).verify()


SHARDS_CHILD = """
import curation.storage.shards as shards
from curation.storage.tokenizer import load_tokenizer
from tests.reliability.conftest import SHARDS
documents, tokenizer, out, marker = sys.argv[1:5]
real = shards.tokenize_batches

def tokenize(*args, **kwargs):
    for i, item in enumerate(real(*args, **kwargs)):
        if i == 10:  # 160 documents packed: shards finished, others half written
            hang(marker)
        yield item

shards.tokenize_batches = tokenize
shards.write_shards(documents, out, load_tokenizer(tokenizer), SHARDS)
"""


def test_write_shards_killed_mid_shard_then_rerun_gives_identical_bytes(tmp_path, documents, tokenizer_file):
    tokenizer = load_tokenizer(str(tokenizer_file))
    row_bytes = SHARDS.seq_len * token_dtype(tokenizer).itemsize
    write_shards(documents, tmp_path / "reference", tokenizer, SHARDS)
    out, marker = tmp_path / "out", tmp_path / "marker"
    child = start(SHARDS_CHILD, documents, tokenizer_file, out, marker)
    kill_at_marker(child, marker, watch=lambda: check_no_partial_file_visible(out, row_bytes))

    _assert_unfinished(out, "shards/*/*.bin", index="index.json")
    check_no_partial_file_visible(out, row_bytes)
    with pytest.raises(CurationError, match=r"no index\.json"):
        ShardReader(out)
    write_shards(documents, out, tokenizer, SHARDS)
    assert tree(out) == tree(tmp_path / "reference")
    ShardReader(out, verify="open")


# ---------------------------------------------------------------- training

TRAIN = """
from curation.train.run import train_on_shards
from tests.reliability.helpers import train_config
shards, out, marker, where = sys.argv[1:5]
on_step = None
if where == "between-checkpoints":
    def on_step(step, loss):
        if step == 6:  # step-4 saved, 2 more steps logged
            hang(marker)
else:  # inside the step-8 save: model and optimizer written, state.json not yet
    import torch
    real = torch.save
    def save(obj, path, *args, **kwargs):
        real(obj, path, *args, **kwargs)
        if ".step-0000008." in str(path):
            hang(marker)
    torch.save = save
train_on_shards(shards, train_config(), out, device="cpu", resume=True, on_step=on_step)
"""


def _losses(folder) -> list[float]:
    return [json.loads(line)["loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _check_checkpoints(folder) -> None:
    """Every checkpoint under its final name is whole."""
    for step in sorted(folder.glob("checkpoints/step-*")):
        try:
            names = {p.name for p in step.iterdir()}
            assert names == {"model.safetensors", "optimizer.pt", "state.json"}, (step, names)
            json.loads((step / "state.json").read_text())
        except FileNotFoundError:
            continue  # pruned while we looked


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, shards):
    out = tmp_path_factory.mktemp("train") / "reference"
    train_on_shards(str(shards), train_config(), out, device="cpu")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("where", ["between-checkpoints", "inside-a-checkpoint-save"])
def test_training_killed_then_resumed_gives_the_uninterrupted_losses(tmp_path, shards, uninterrupted, where):
    out, marker = tmp_path / "run", tmp_path / "marker"
    child = start(TRAIN, shards, out, marker, where)
    kill_at_marker(child, marker, watch=lambda: _check_checkpoints(out))

    assert latest_checkpoint(out / "checkpoints").name == "step-0000004"
    logged = len(_losses(out))
    if where == "inside-a-checkpoint-save":
        assert logged == 8
        assert list((out / "checkpoints").glob(".step-0000008.*.tmp"))  # the half-written save
    else:
        assert logged == 6
    _check_checkpoints(out)

    result = train_on_shards(str(shards), train_config(), out, device="cpu", resume=True)
    assert result.steps == 12
    assert _losses(out) == _losses(uninterrupted)
    assert not list((out / "checkpoints").glob(".*"))  # the stale temp folder is gone
    last = latest_checkpoint(out / "checkpoints")
    assert last.name == "step-0000012"
    reference = latest_checkpoint(uninterrupted / "checkpoints")
    assert (last / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()


def test_losses_depend_on_the_seed_so_equal_losses_mean_an_exact_resume(tmp_path, shards, uninterrupted):
    """Sanity for the tests above: the losses differ between seeds, so equality
    after a resume says something."""
    other = train_on_shards(str(shards), train_config(seed=1, steps=4), tmp_path, device="cpu")
    assert other.steps == 4
    assert not np.allclose(_losses(tmp_path), _losses(uninterrupted)[:4])


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("model.safetensors", lambda data: b"\0garbage" * 8),
        ("model.safetensors", lambda data: data[: len(data) // 2]),
        ("optimizer.pt", lambda data: b"\0garbage" * 8),
        ("optimizer.pt", lambda data: data[: len(data) // 2]),
        ("state.json", lambda data: data[: len(data) // 2]),
        ("state.json", lambda data: b"{}"),
    ],
    ids=["model-garbage", "model-cut", "optimizer-garbage", "optimizer-cut", "state-cut", "state-empty"],
)
def test_a_damaged_checkpoint_is_refused_naming_it(tmp_path, shards, uninterrupted, name, damage):
    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out)
    latest = latest_checkpoint(out / "checkpoints")
    (latest / name).write_bytes(damage((latest / name).read_bytes()))
    # named as unreadable when loaded, or by checksum when the run's manifest says it finished
    with pytest.raises(
        CurationError, match=rf"{latest.name}(: checkpoint is unreadable|/{name}: (sha256|size))"
    ):
        train_on_shards(str(shards), train_config(), out, device="cpu", resume=True)


# ---------------------------------------------------------------- a stage's outputs commit together

STAGE = """
import os as _os
from curation.selectors.dedup import DedupConfig
from curation.selectors.diversity import KMQConfig
from curation.stages import dedup_stage, select_stage
documents, clusters, out, marker, kind, when, file = sys.argv[1:8]
real = _os.replace

def replace(source, target, *args, **kwargs):
    named = str(target).endswith("/" + file)
    if named and when == "before":  # the kill comes just before this file gets its name
        hang(marker)
    real(source, target, *args, **kwargs)
    if named and when == "after":
        hang(marker)

_os.replace = replace
if kind == "dedup":
    dedup_stage(documents, out, DedupConfig(fuzzy=False, min_chars=0))
else:
    select_stage(documents, clusters, out, KMQConfig(budget=40, seed=1))
"""


def _run_stage(kind, documents, clusters, out, first: bool):
    from curation.selectors.dedup import DedupConfig
    from curation.selectors.diversity import KMQConfig
    from curation.stages import dedup_stage, select_stage

    if kind == "dedup":  # run A keeps the long documents only, run B (the child's) all
        return dedup_stage(str(documents), str(out), DedupConfig(fuzzy=False, min_chars=200 if first else 0))
    return select_stage(
        str(documents), str(clusters), str(out), KMQConfig(budget=100 if first else 40, seed=1)
    )


@pytest.fixture(scope="module")
def clusters(tmp_path_factory, documents):
    from curation.device import CPU
    from curation.embeddings import cluster_embeddings

    folder = tmp_path_factory.mktemp("clustered")
    embed_dataset(documents, folder / "emb", HashedEncoder(dim=16))
    cluster_embeddings(str(folder / "emb"), str(folder / "clusters"), 4, device=CPU)
    return folder / "clusters"


def _kept(decisions) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(decisions.column("kept")).as_py())


@pytest.mark.parametrize(
    ("kind", "when", "file"),
    [("dedup", "after", "decisions.parquet"), ("select", "before", "kmq_state.json")],
    ids=["after-decisions-before-documents", "before-kmq-state"],
)
def test_a_stage_killed_between_its_outputs_never_mixes_two_runs(
    tmp_path, documents, clusters, kind, when, file
):
    """Run A finished into the folder; run B is killed after writing some of its
    outputs. What a reader can open is then all B or nothing, never B's decisions
    with A's documents (18,854 kept vs 7,618 rows in the probe) or A's kmq_state."""
    import pyarrow.parquet as pq

    from curation.selectors.diversity import KMQConfig
    from curation.stages import select_stage

    _run_stage(kind, documents, clusters, tmp_path / "reference", first=False)
    out, marker = tmp_path / "out", tmp_path / "marker"
    first = _run_stage(kind, documents, clusters, out, first=True)
    child = start(STAGE, documents, clusters, out, marker, kind, when, file)
    kill_at_marker(child, marker)

    decisions = pq.read_table(out / "decisions.parquet") if (out / "decisions.parquet").exists() else None
    try:
        kept_documents = Dataset.open(out / "documents").rows
    except CurationError:
        kept_documents = None
    if decisions is not None and kept_documents is not None:
        assert kept_documents == _kept(decisions), "decisions of one run, documents of another"
    assert decisions is None or _kept(decisions) != first.kept  # the kill came after B's decisions
    if kind == "select":  # refining from the folder would mix B's selection with A's state
        with pytest.raises(CurationError):
            select_stage(str(documents), str(clusters), str(tmp_path / "next"), KMQConfig(budget=20),
                         refine_from=str(out), scores=np.zeros(4))  # fmt: skip

    _run_stage(kind, documents, clusters, out, first=False)
    assert tree(out) == tree(tmp_path / "reference")


# ---------------------------------------------------------------- resume surprises


def test_training_into_a_folder_with_another_run_says_what_it_found(tmp_path, shards):
    """`train --steps 20` into a folder holding an 80-step run used to report
    "done" without training."""
    from typer.testing import CliRunner

    from curation.cli import app

    out = tmp_path / "run"
    train_on_shards(str(shards), train_config(steps=8, checkpoint_every=4), out, device="cpu")
    before = tree(out)
    manifest = Dataset.open(out).manifest  # the run lists all it holds, checkpoints included
    assert set(before) == {"manifest.json"} | {f.path for f in manifest.sidecars}
    assert "checkpoints/step-0000008/model.safetensors" in before
    info = CliRunner().invoke(app, ["info", str(out), "--verify"])
    assert info.exit_code == 0 and "checksums ok" in info.output, info.output
    with pytest.raises(CurationError, match=r"step 8.*--overwrite"):
        train_on_shards(str(shards), train_config(steps=4), out, device="cpu", resume=True)
    assert tree(out) == before
    again = train_on_shards(str(shards), train_config(steps=8, checkpoint_every=4), out, device="cpu")
    assert again.steps == 8 and tree(out) == before  # the same settings: found finished, nothing redone
    cli = CliRunner().invoke(app, ["train", str(shards), "--out", str(out), "--steps", "4", "--overwrite"])
    assert cli.exit_code == 0, cli.output
    assert len(_losses(out)) == 4 and latest_checkpoint(out / "checkpoints").name == "step-0000004"


def test_an_input_changing_under_a_stage_is_named(tmp_path, real_texts):
    from curation.selectors.dedup import DedupConfig
    from curation.stages import dedup_stage

    docs = tmp_path / "docs"
    write_dataset(docs, document_batches(real_texts, 2, 40), DOCUMENTS_SCHEMA, "documents")

    def progress(step, done):  # another writer replaces the input while the stage runs
        if not (tmp_path / "replaced").exists():
            (tmp_path / "replaced").touch()
            write_dataset(docs, document_batches(real_texts[::-1], 1, 30), DOCUMENTS_SCHEMA, "documents")

    with pytest.raises(CurationError, match=str(docs)):
        dedup_stage(str(docs), str(tmp_path / "out"), DedupConfig(fuzzy=False), progress)
