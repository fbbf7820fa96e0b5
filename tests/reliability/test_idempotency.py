"""Idempotency: re-running a finished stage with the same inputs and config does
no work, or writes the same bytes."""

from __future__ import annotations

import orjson

from curation.device import CPU
from curation.embeddings import HashedEncoder, cluster_embeddings, embed_dataset
from curation.selectors.budget import Budget
from curation.selectors.dedup import DedupConfig
from curation.selectors.diversity import KMQConfig
from curation.selectors.semdedup import SemDeDupConfig
from curation.stages import dedup_stage, select_stage, semdedup_stage
from curation.storage import IngestConfig, InputSpec, ingest
from curation.storage.tokenizer import TokenizerConfig
from curation.subset import SubsetConfig, materialize_subset
from tests.reliability.conftest import SHARDS
from tests.reliability.helpers import tree, write_raw_corpus


def _stamps(folder) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_ingest_twice_gives_identical_bytes(tmp_path, real_texts):
    raw = write_raw_corpus(tmp_path / "raw", real_texts, files=3, per_file=150, bad_every=40)
    spec, out = [InputSpec(str(raw), source="docs")], tmp_path / "out"
    first = ingest(spec, str(out), IngestConfig(rows_per_file=100))
    before = tree(out)
    second = ingest(spec, str(out), IngestConfig(rows_per_file=100))
    assert tree(out) == before
    assert first.quarantined > 0 and (first.documents, first.quarantined) == (
        second.documents,
        second.quarantined,
    )


def test_dedup_stage_twice_gives_identical_bytes(tmp_path, real_texts):
    # real text, each twice, so the stage drops something and the bytes say which
    raw = tmp_path / "raw.jsonl"
    raw.write_bytes(b"".join(orjson.dumps({"text": t}) + b"\n" for t in real_texts[:80] * 2))
    ingest([str(raw)], str(tmp_path / "docs"))
    config = DedupConfig(min_chars=50)
    first = dedup_stage(str(tmp_path / "docs"), str(tmp_path / "dedup"), config)
    before = tree(tmp_path / "dedup")
    second = dedup_stage(str(tmp_path / "docs"), str(tmp_path / "dedup"), config)
    assert tree(tmp_path / "dedup") == before
    assert sum(first.dropped_by_reason.values()) > 0
    assert first.dropped_by_reason == second.dropped_by_reason


def test_embed_dataset_twice_does_no_work(tmp_path, documents):
    out = tmp_path / "emb"
    first = embed_dataset(documents, out, HashedEncoder(dim=32), rows_per_part=64)
    before, stamps = tree(out), _stamps(out)
    calls = []
    encoder = HashedEncoder(dim=32)
    real = encoder.encode
    encoder.encode = lambda texts: calls.append(len(texts)) or real(texts)
    second = embed_dataset(documents, out, encoder, rows_per_part=64)
    assert first.encoded == 240
    assert (second.encoded, second.parts_reused, calls) == (0, first.parts, [])
    assert tree(out) == before and _stamps(out) == stamps  # not even rewritten


def test_semdedup_and_select_twice_give_identical_bytes(tmp_path, documents):
    embed_dataset(documents, tmp_path / "emb", HashedEncoder(dim=32))
    cluster_embeddings(str(tmp_path / "emb"), str(tmp_path / "clusters"), 6, device=CPU)
    outs = []
    for run in ("first", "second"):
        sem = semdedup_stage(
            str(documents), str(tmp_path / "emb"), str(tmp_path / "clusters"), str(tmp_path / "sem"),
            SemDeDupConfig(target_fraction=0.8), CPU,
        )  # fmt: skip
        sel = select_stage(
            str(tmp_path / "sem" / "documents"), str(tmp_path / "clusters"), str(tmp_path / "sel"),
            KMQConfig(budget=100, rounds=1),
        )  # fmt: skip
        assert sem.kept < 240 and sel.kept == 100, run
        outs.append((tree(tmp_path / "sem"), tree(tmp_path / "sel")))
    assert outs[0] == outs[1]


def test_materialize_subset_twice_gives_identical_bytes(tmp_path, documents, tokenizer_file):
    config = SubsetConfig(
        budget=Budget(documents=120), shards=SHARDS, tokenizer=TokenizerConfig(vocab_size=512)
    )
    out = tmp_path / "subset"
    first = materialize_subset(documents, out, config, tokenizer=str(tokenizer_file))
    before = tree(out)
    second = materialize_subset(documents, out, config, tokenizer=str(tokenizer_file))
    assert tree(out) == before
    assert first.selected == second.selected == 120
