"""The SemDeDup stage regroups vectors by part through scratch files, runs a part at a time and
decides as the in-memory selector does."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import orjson
import pytest

from curation.device import CPU, Device, part_device
from curation.embeddings import HashedEncoder, KMeansConfig, cluster_embeddings, embed_dataset, load_clustered
from curation.engine import LocalEngine
from curation.selectors.semdedup import SemDeDup, SemDeDupConfig, plan_parts
from curation.stages import semdedup_stage
from curation.storage import InputSpec, ingest
from curation.storage.decisions import read_decisions
from tests.conftest import stdlib_docstrings


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    """Docstrings, each fifth one copied with a word dropped, embedded (hashed, store parts
    of 100 rows) and in 6 clusters."""
    root = tmp_path_factory.mktemp("semdedup")
    texts = stdlib_docstrings(300)
    copies = [" ".join(t.split()[1:]) for t in texts[::5]]
    (root / "docs.jsonl").write_bytes(b"".join(orjson.dumps({"text": t}) + b"\n" for t in texts + copies))
    ingest([InputSpec(str(root / "docs.jsonl"), source="docs")], str(root / "documents"))
    embed_dataset(str(root / "documents"), str(root / "embeddings"), HashedEncoder(), rows_per_part=100)
    cluster_embeddings(str(root / "embeddings"), str(root / "clusters"), 6, KMeansConfig(seed=0))
    return [str(root / name) for name in ("documents", "embeddings", "clusters")]


class Recording(LocalEngine):
    """The local engine, noting how many rows each SemDeDup part holds and
    which store parts the regrouping reads."""

    def __init__(self):
        super().__init__()
        self.part_rows: list[int] = []
        self.store_parts_read: list[int] = []

    def map(self, fn, items, **options):
        items = list(items)
        if fn.func.__name__ == "spread_rows":
            self.store_parts_read += [index for index, _, _ in items]
        else:
            self.part_rows += [sum(len(rows) for rows in groups) for _, groups in items]
        return super().map(fn, items, **options)


@pytest.mark.parametrize(
    "config", [SemDeDupConfig(epsilon=0.2), SemDeDupConfig(target_fraction=0.7, keep="random")]
)
def test_parts_decide_as_the_selector_on_all_vectors(clustered, tmp_path, config):
    documents, embeddings, clusters = clustered
    engine = Recording()
    semdedup_stage(
        documents, embeddings, clusters, str(tmp_path / "s"), config, engine=engine, rows_per_part=40
    )
    data = load_clustered(documents, clusters, embeddings)
    expected = (
        SemDeDup(config).fit(data.embeddings, data.cluster, data.distance).select(data.ids, data.sources)
    )
    got = read_decisions(tmp_path / "s" / "decisions.parquet")
    assert got.select(expected.column_names).equals(expected)
    assert 0 < sum(got.column("kept").to_pylist()) < got.num_rows  # some really go
    largest = int(np.bincount(data.cluster).max())
    # the vectors a worker holds at once: one part, never more than the cap or one cluster
    assert len(engine.part_rows) > 1 and max(engine.part_rows) <= max(40, largest)
    assert sum(engine.part_rows) == sum(n for n in np.bincount(data.cluster) if n > 1)
    # the store is read once, however many parts: each store part regrouped once
    assert len(engine.store_parts_read) == len(set(engine.store_parts_read)) > 1
    assert not list((tmp_path / "s").glob("._work*"))  # the scratch files are gone


def test_parts_pack_whole_clusters_up_to_the_cap():
    groups = [np.arange(a, b) for a, b in ((0, 3), (3, 10), (10, 30), (30, 31), (31, 35))]
    parts = plan_parts(groups, 10)
    assert [[len(g) for g in part] for part in parts] == [[3, 7], [20], [1, 4]]
    assert np.array_equal(np.concatenate([np.concatenate(p) for p in parts]), np.arange(35))
    assert plan_parts([], 10) == []


def test_parts_go_to_the_gpu_the_engine_hands_out():
    cuda = Device("cuda", index=1, autocast_dtype="bfloat16")
    assert part_device(cuda, 0, False) == (cuda, 0)  # no GPUs to hand out: this process's device
    assert part_device(cuda, 2, True) == (replace(cuda, index=0), 1)  # a task sees its GPU as cuda:0
    assert part_device(CPU, 2, True) == (CPU, 0)
    assert part_device(cuda, 0, True) == (CPU, 0)  # a cluster without GPUs: its workers' CPUs
