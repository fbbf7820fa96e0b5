"""Concurrency: two processes writing one output either take turns or the second
fails clearly; the folder never ends up a mix of both."""

from __future__ import annotations

import os
import textwrap

import pytest

from curation.embeddings import HashedEncoder, embed_dataset
from curation.errors import CurationError
from curation.selectors.budget import Budget
from curation.selectors.dedup import DedupConfig
from curation.stages import dedup_stage
from curation.storage import Dataset, IngestConfig, InputSpec, ingest, write_dataset
from curation.storage.fs import resolve
from curation.storage.ingest import DOCUMENTS_SCHEMA
from curation.storage.lock import output_lock
from curation.storage.shards import ShardConfig, ShardReader, write_shards
from curation.storage.tokenizer import TokenizerConfig, load_tokenizer
from curation.subset import SubsetConfig, materialize_subset
from tests.reliability.conftest import SHARDS
from tests.reliability.helpers import document_batches, run, start, stop, tree, write_raw_corpus

pytestmark = pytest.mark.timeout(300)

# Each stage twice: `before` writes a first output in this process, `child` is a
# second run with other inputs or settings (so a mix would show in the bytes).
STAGES = {
    "ingest": (
        lambda p: ingest([InputSpec(str(p.raw_a), source="docs")], str(p.out)),
        """
        from curation.storage import InputSpec, ingest
        ingest([InputSpec(ARGS["raw_b"], source="docs")], ARGS["out"])
        """,
    ),
    "write_dataset": (
        lambda p: write_dataset(p.out, document_batches(p.texts, 2, 50), DOCUMENTS_SCHEMA, "documents"),
        """
        from curation.storage import DOCUMENTS_SCHEMA, write_dataset
        from tests.conftest import stdlib_docstrings
        from tests.reliability.helpers import document_batches
        write_dataset(ARGS["out"], document_batches(stdlib_docstrings()[::-1], 3, 50), DOCUMENTS_SCHEMA, "x")
        """,
    ),
    "embed_dataset": (
        lambda p: embed_dataset(p.documents, p.out, HashedEncoder(dim=32)),
        """
        from curation.embeddings import HashedEncoder, embed_dataset
        embed_dataset(ARGS["documents"], ARGS["out"], HashedEncoder(dim=16))
        """,
    ),
    "write_shards": (
        lambda p: write_shards(p.documents, p.out, load_tokenizer(p.tokenizer), SHARDS),
        """
        from curation.storage.shards import ShardConfig, write_shards
        from curation.storage.tokenizer import load_tokenizer
        tokenizer = load_tokenizer(ARGS["tokenizer"])
        write_shards(ARGS["documents"], ARGS["out"], tokenizer, ShardConfig(seq_len=17))
        """,
    ),
    "materialize_subset": (
        lambda p: materialize_subset(p.documents, p.out, _subset(120), tokenizer=p.tokenizer),
        """
        from tests.reliability.test_concurrency import _subset
        from curation.subset import materialize_subset
        materialize_subset(ARGS["documents"], ARGS["out"], _subset(60), tokenizer=ARGS["tokenizer"])
        """,
    ),
    "dedup_stage": (
        lambda p: dedup_stage(str(p.documents), str(p.out), DedupConfig()),
        """
        from curation.selectors.dedup import DedupConfig
        from curation.stages import dedup_stage
        dedup_stage(ARGS["documents"], ARGS["out"], DedupConfig(min_chars=0, fuzzy=False))
        """,
    ),
}


def _subset(documents: int) -> SubsetConfig:
    return SubsetConfig(
        budget=Budget(documents=documents), shards=SHARDS, tokenizer=TokenizerConfig(vocab_size=512)
    )


class _Paths:
    def __init__(self, tmp_path, texts, documents, tokenizer):
        self.raw_a = write_raw_corpus(tmp_path / "raw_a", texts, files=2, per_file=100)
        self.raw_b = write_raw_corpus(tmp_path / "raw_b", texts[::-1], files=3, per_file=100)
        self.out, self.texts = tmp_path / "out", texts
        self.documents, self.tokenizer = documents, str(tokenizer)

    def args(self) -> str:
        names = ("raw_a", "raw_b", "out", "documents", "tokenizer")
        return repr({name: str(getattr(self, name)) for name in names})


STAGE_PARAMS = [pytest.param(name, id=name) for name in STAGES]


@pytest.mark.parametrize("stage", STAGE_PARAMS)
def test_a_second_writer_is_refused_and_changes_nothing(
    tmp_path, real_texts, documents, tokenizer_file, stage
):
    """This process holds the output folder, as a run still writing would; a second
    process running the stage into the same folder must fail, naming the holder,
    and leave the first output byte for byte as it was."""
    paths = _Paths(tmp_path, real_texts, documents, tokenizer_file)
    before_fn, child_code = STAGES[stage]
    before_fn(paths)
    before = tree(paths.out)
    with output_lock(resolve(paths.out)):
        second = run(f"ARGS = {paths.args()}\n" + textwrap.dedent(child_code))
    assert second.returncode != 0, second.stdout
    assert f"being written by pid {os.getpid()}" in second.stderr, second.stderr[-2000:]
    assert tree(paths.out) == before


def test_the_lock_is_released_so_writers_take_turns(tmp_path, real_texts, documents, tokenizer_file):
    paths = _Paths(tmp_path, real_texts, documents, tokenizer_file)
    with output_lock(resolve(paths.out)):
        pass
    done = run(f"ARGS = {paths.args()}\n" + textwrap.dedent(STAGES["ingest"][1]))
    assert done.returncode == 0, done.stderr
    ingest([InputSpec(str(paths.raw_a), source="docs")], str(tmp_path / "reference"))
    ingest([InputSpec(str(paths.raw_a), source="docs")], str(paths.out))  # after the child: turns
    assert tree(paths.out) == tree(tmp_path / "reference")


# ---------------------------------------------------------------- a real race

RACE = """
import pathlib
go, kind, out, source = sys.argv[1:5]
while not os.path.exists(go):
    time.sleep(0.001)
if kind == "ingest":
    from curation.storage import IngestConfig, InputSpec, ingest
    ingest([InputSpec(source, source="docs")], out, IngestConfig(rows_per_file=2000))
else:
    from curation.storage.shards import ShardConfig, write_shards
    from curation.storage.tokenizer import load_tokenizer
    documents, tokenizer, seq_len = source.split(",")
    write_shards(documents, out, load_tokenizer(tokenizer), ShardConfig(seq_len=int(seq_len)))
"""


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ingest", "write_shards"])
def test_two_racing_writers_leave_one_whole_output(tmp_path, real_texts, documents, tokenizer_file, kind):
    """Two processes start writing the same folder at the same moment, with
    different inputs. Each either finishes or fails naming the other; what is
    left is exactly one finished run's output, never parts of both."""
    if kind == "ingest":
        sources = [
            str(write_raw_corpus(tmp_path / name, real_texts[i::2], files=4, per_file=3000))
            for i, name in enumerate(("raw_a", "raw_b"))
        ]
    else:
        sources = [f"{documents},{tokenizer_file},{seq_len}" for seq_len in (17, 33)]
    references = []
    for i, source in enumerate(sources):
        reference = tmp_path / f"reference_{i}"
        _write(kind, source, reference)
        references.append(tree(reference))
    assert references[0] != references[1]

    go, out = tmp_path / "go", tmp_path / "out"
    children = [start(RACE, go, kind, out, source) for source in sources]
    go.write_text("go")
    results = []
    for child in children:
        try:
            _, err = child.communicate(timeout=240)
        finally:
            stop(child)
        results.append((child.returncode, err))

    finished = [i for i, (code, _) in enumerate(results) if code == 0]
    for code, err in results:
        assert code == 0 or "being written by" in err, err[-2000:]  # "pid N" or "another process"
    assert finished, results
    assert tree(out) in [references[i] for i in finished]
    if kind == "ingest":
        Dataset.open(out).verify()
    else:
        ShardReader(out, verify="open")


def _write(kind: str, source: str, out) -> None:
    if kind == "ingest":
        ingest([InputSpec(source, source="docs")], str(out), IngestConfig(rows_per_file=2000))
    else:
        documents, tokenizer, seq_len = source.split(",")
        write_shards(documents, out, load_tokenizer(tokenizer), ShardConfig(seq_len=int(seq_len)))


# ---------------------------------------------------------------- whole-run locks

# Each child reports "WORKED" as soon as it starts real work; a second writer must
# fail before that, not after computing everything (dedup used to lock only to
# write; cluster and train took no lock at all).
WHOLE_RUN = {
    "dedup_stage": """
        from curation.selectors.dedup import DedupConfig
        from curation.stages import dedup_stage
        dedup_stage(ARGS["documents"], ARGS["out"], DedupConfig(), progress=lambda *a: print("WORKED"))
        """,
    "cluster_embeddings": """
        import curation.embeddings.cluster as cluster
        real = cluster.fit_kmeans
        cluster.fit_kmeans = lambda *a, **k: print("WORKED") or real(*a, **k)
        cluster.cluster_embeddings(ARGS["embeddings"], ARGS["out"], 4)
        """,
    "train_on_shards": """
        from curation.train.run import train_on_shards
        from tests.reliability.helpers import train_config
        train_on_shards(ARGS["shards"], train_config(steps=2), ARGS["out"], device="cpu",
                        on_step=lambda *a: print("WORKED"))
        """,
}


def test_a_second_writer_fails_at_once_for_the_whole_run(tmp_path, documents, shards):
    """This process holds each output, as a run still working would; a second run
    of dedup, cluster and train (in parallel children) must each fail first."""
    from contextlib import ExitStack

    from curation.embeddings import HashedEncoder, embed_dataset

    embeddings = tmp_path / "emb"
    embed_dataset(documents, embeddings, HashedEncoder(dim=16))
    outs = {stage: tmp_path / stage for stage in WHOLE_RUN}
    with ExitStack() as held:
        for out in outs.values():
            held.enter_context(output_lock(resolve(out)))
        children = {}
        for stage, code in WHOLE_RUN.items():
            args = {"documents": str(documents), "embeddings": str(embeddings), "shards": str(shards)}
            args["out"] = str(outs[stage])
            children[stage] = start(f"ARGS = {args!r}\n" + textwrap.dedent(code))
        try:
            results = {stage: child.communicate(timeout=240) for stage, child in children.items()}
        finally:
            for child in children.values():
                stop(child)
    for stage, (stdout, stderr) in results.items():
        assert children[stage].returncode != 0, (stage, stdout)
        assert f"being written by pid {os.getpid()}" in stderr, (stage, stderr[-2000:])
        assert "WORKED" not in stdout, stage
        assert not outs[stage].exists() or not any(outs[stage].iterdir()), stage


def test_a_planted_lock_symlink_is_not_followed(tmp_path, real_texts):
    """`<out>.lock` planted as a symlink used to have its target truncated."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "out.lock").symlink_to(victim)
    with pytest.raises(CurationError, match="symbolic link"):
        write_dataset(tmp_path / "out", document_batches(real_texts, 1, 10), DOCUMENTS_SCHEMA, "documents")
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "out").exists()
