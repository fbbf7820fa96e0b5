"""Accounting end to end: every record read ends in exactly one place, the
quarantine, one stage's drops (with its reason), or the final selection."""

from __future__ import annotations

import unicodedata
from collections import Counter

import orjson
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation import default_corpus
from curation.demo import KEEP_SEMANTIC, SELECT_FRACTION
from curation.device import CPU
from curation.embeddings import EmbeddingStore, HashedEncoder, cluster_embeddings, embed_dataset
from curation.errors import CurationError
from curation.selectors.budget import Budget
from curation.selectors.dedup import DedupConfig
from curation.selectors.dedup.clean import clean_text, short_length
from curation.selectors.diversity import KMQConfig
from curation.selectors.semdedup import SemDeDupConfig
from curation.stages import dedup_stage, default_k, select_stage, semdedup_stage
from curation.storage import Dataset, IngestConfig, ingest, open_quarantine
from curation.storage.shards import ShardConfig
from curation.storage.tokenizer import TokenizerConfig
from curation.subset import SubsetConfig, materialize_subset
from tests.conftest import stdlib_docstrings


def _rows(path, columns=None) -> list[dict]:
    return Dataset.open(path).read_table(columns).to_pylist()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_record_of_the_bundled_corpus_is_accounted_for(tmp_path):
    """The demo's chain on the bundled corpus (hashed encoder, no training):
    read = quarantined + dropped by (stage, reason) + kept, from the reports and
    again from the tables on disk, overall and per source, id by id."""
    work = tmp_path
    inputs = default_corpus.build(work / "raw")
    ingested = ingest(inputs, str(work / "documents"))
    dedup = dedup_stage(str(work / "documents"), str(work / "dedup"), DedupConfig())
    deduped = str(work / "dedup" / "documents")
    embed_dataset(deduped, str(work / "embeddings"), HashedEncoder())
    rows = EmbeddingStore.open(work / "embeddings").rows
    cluster_embeddings(str(work / "embeddings"), str(work / "clusters"), default_k(rows), device=CPU)
    semantic = semdedup_stage(
        deduped, str(work / "embeddings"), str(work / "clusters"), str(work / "semdedup"),
        SemDeDupConfig(target_fraction=KEEP_SEMANTIC), CPU,
    )  # fmt: skip
    selected = select_stage(
        str(work / "semdedup" / "documents"), str(work / "clusters"), str(work / "select"),
        KMQConfig(budget=max(1, round(SELECT_FRACTION * semantic.kept))),
    )  # fmt: skip
    stages = [(dedup, work / "dedup", work / "documents"), (semantic, work / "semdedup", deduped),
              (selected, work / "select", work / "semdedup" / "documents")]  # fmt: skip

    # the reports' line, as the demo prints it
    dropped = sum(sum(s.dropped_by_reason.values()) for s, _, _ in stages)
    assert ingested.records_read == ingested.quarantined + dropped + selected.kept
    assert ingested.quarantined > 0 and all(sum(s.dropped_by_reason.values()) > 0 for s, _, _ in stages)

    # the same from the tables on disk, id by id
    quarantine = open_quarantine(work / "documents").read_table().to_pylist()
    documents = _rows(work / "documents", ["id", "source"])
    ids = [d["id"] for d in documents]
    assert len(quarantine) == ingested.quarantined and len(set(ids)) == len(ids) == ingested.documents
    assert Counter(q["reason"] for q in quarantine) == Counter(ingested.by_reason)
    fate: dict[str, tuple[str, str]] = {}
    for report, folder, stage_input in stages:
        decisions = pq.read_table(folder / "decisions.parquet").to_pylist()
        assert [d["id"] for d in decisions] == [d["id"] for d in _rows(stage_input, ["id"])]  # one each
        drops = Counter((d["stage"], d["reason"]) for d in decisions if not d["kept"])
        assert Counter({reason: n for (_, reason), n in drops.items()}) == Counter(report.dropped_by_reason)
        for d in decisions:
            if not d["kept"]:
                assert d["id"] not in fate, f"{d['id']} dropped twice"
                fate[d["id"]] = (d["stage"], d["reason"])
        kept = [d["id"] for d in decisions if d["kept"]]
        assert kept == [d["id"] for d in _rows(folder / "documents", ["id"])]
    final = [d["id"] for d in _rows(work / "select" / "documents", ["id"])]
    assert not set(final) & set(fate)
    assert set(final) | set(fate) == set(ids)
    assert ingested.records_read == len(quarantine) + len(fate) + len(final)

    # per source: ingested = dropped + kept, and quarantine names its source
    source_of = {d["id"]: d["source"] for d in documents}
    per_source = Counter(source_of.values())
    accounted = Counter(source_of[i] for i in fate) + Counter(source_of[i] for i in final)
    assert per_source == accounted
    assert {q["source"] for q in quarantine} <= {spec.source for spec in inputs}

    # the shards made from the selection hold exactly the kept documents
    subset = materialize_subset(
        str(work / "select" / "documents"), str(work / "shards"),
        SubsetConfig(budget=Budget(fraction=1.0), shards=ShardConfig(seq_len=129),
                     tokenizer=TokenizerConfig(vocab_size=1024)),
    )  # fmt: skip
    in_shards = [r["id"] for r in pq.read_table(work / "shards" / "text").select(["id"]).to_pylist()]
    assert subset.selected == len(final) and sorted(in_shards) == sorted(final)


# ---------------------------------------------------------------- property

POOL = [t for t in stdlib_docstrings(limit=120) if len(t) > 120][:30]
ACCENTED = "Crème brûlée à la café, naïve façade; Ångström över Zürich. " * 3
whitespace_only = st.sampled_from(["", " ", "\n\t ", "\u3000", "\u2028 \u00a0"])
odd_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=300)
texts = st.one_of(
    st.sampled_from(POOL),  # drawn twice = an exact duplicate
    st.builds(lambda t, w: f"{t} {w}", st.sampled_from(POOL), st.sampled_from(["yes", "also", "!"])),
    st.builds(lambda t: t.upper(), st.sampled_from(POOL)),  # same cleaned text
    st.sampled_from([ACCENTED, unicodedata.normalize("NFD", ACCENTED)]),  # NFC == NFD after cleaning
    whitespace_only,
    odd_text,
    st.builds(lambda t, u: t + u, st.sampled_from(POOL), odd_text),
)
records = st.one_of(
    texts.map(lambda t: orjson.dumps({"text": t})),
    texts.map(lambda t: orjson.dumps({"text": t, "meta": {"lang": "xx", "n": [1, 2]}})),
    st.sampled_from(
        [b'{"text": 7}', b'{"body": "no text"}', b"[1, 2]", b'{"text": "cut', b'{"text": "\xff"}']
    ),
)


@pytest.mark.timeout(300)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(corpus=st.lists(records, min_size=1, max_size=60), split=st.integers(0, 60))
def test_ingest_and_dedup_account_for_generated_corpora(tmp_path_factory, corpus, split):
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "raw").mkdir()
    (folder / "raw" / "a.jsonl").write_bytes(b"".join(line + b"\n" for line in corpus[:split]))
    (folder / "raw" / "b.jsonl").write_bytes(b"".join(line + b"\n" for line in corpus[split:]))
    report = ingest([str(folder / "raw")], str(folder / "documents"), IngestConfig())
    assert report.records_read == len(corpus) == report.documents + report.quarantined
    assert report.quarantined == open_quarantine(folder / "documents").rows

    config = DedupConfig(min_chars=50)
    stage = dedup_stage(str(folder / "documents"), str(folder / "dedup"), config)
    documents = _rows(folder / "documents")
    decisions = pq.read_table(folder / "dedup" / "decisions.parquet").to_pylist()
    assert [d["id"] for d in decisions] == [d["id"] for d in documents]
    assert stage.docs_in == stage.kept + sum(stage.dropped_by_reason.values()) == report.documents
    kept_docs = [doc for doc, d in zip(documents, decisions, strict=True) if d["kept"]]
    assert [d["id"] for d in kept_docs] == [d["id"] for d in _rows(folder / "dedup" / "documents", ["id"])]

    # what the decisions say matches the recipe, checked against its readable reference
    for doc, d in zip(documents, decisions, strict=True):
        assert (d["reason"] == "too_short") == (short_length(doc["text"]) < config.min_chars), doc
    cleaned = [clean_text(doc["text"]) for doc in kept_docs]
    assert len(set(cleaned)) == len(cleaned), "two kept documents have the same cleaned text"
    kept_in = Counter(d["cluster"] for d in decisions if d["kept"])
    for d in decisions:
        if d["reason"] in ("exact_duplicate", "near_duplicate"):
            assert kept_in[d["cluster"]] == 1, d  # its group keeps exactly one


def test_the_same_input_given_twice_is_refused_not_read_twice(tmp_path):
    """Ids are unique: naming one file twice used to ingest it twice under the same ids."""
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"text": "only once"}\n')
    with pytest.raises(CurationError, match="given more than once"):
        ingest([str(path), str(path)], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
