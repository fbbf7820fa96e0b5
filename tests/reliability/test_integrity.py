"""Stored data damaged on disk is refused, by checksum, never read as if whole.

Property: flip any bit of any file of a dataset or a shard set; opening and
verifying it then either raises CurationError, or reads back exactly the
original data (e.g. when the flip hit a key name that carries nothing)."""

from __future__ import annotations

import shutil

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.errors import CurationError, IntegrityError
from curation.storage import Dataset, write_dataset
from curation.storage.ingest import DOCUMENTS_SCHEMA
from curation.storage.shards import ShardReader
from tests.reliability.helpers import document_batches

FLIPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, real_texts):
    out = tmp_path_factory.mktemp("dataset") / "ds"
    write_dataset(out, document_batches(real_texts, 3, 40), DOCUMENTS_SCHEMA, "documents", rows_per_file=50)
    return out


def _files(folder) -> list:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _flip(source, target, pick: float, where: float, bit: int, only=None):
    shutil.copytree(source, target)
    files = [p for p in _files(target) if only is None or only(p.relative_to(target))]
    path = files[int(pick * len(files))]
    data = bytearray(path.read_bytes())
    data[int(where * len(data))] ^= 1 << bit
    path.write_bytes(bytes(data))
    return path.relative_to(target)


flip_args = (st.floats(0, 1, exclude_max=True), st.floats(0, 1, exclude_max=True), st.integers(0, 7))


@FLIPS
@given(*flip_args)
def test_a_flipped_bit_in_a_dataset_is_refused_or_harmless(tmp_path_factory, dataset, pick, where, bit):
    original = Dataset.open(dataset)
    target = tmp_path_factory.mktemp("flip") / "ds"
    _flip(dataset, target, pick, where, bit)
    try:
        damaged = Dataset.open(target)
        damaged.verify()
        table = damaged.read_table()
    except CurationError:
        return
    assert table.equals(original.read_table())
    assert damaged.manifest == original.manifest


@FLIPS
@given(*flip_args)
def test_a_flipped_bit_in_a_shard_set_is_refused_or_harmless(tmp_path_factory, shards, pick, where, bit):
    original = ShardReader(shards)
    # text/ is a plain Parquet copy for people and other tools; readers of shards
    # do not use it, and ShardReader does not check it
    target = tmp_path_factory.mktemp("flip") / "shards"
    _flip(shards, target, pick, where, bit, only=lambda rel: rel.parts[0] != "text")
    try:
        damaged = ShardReader(target, verify="open")
        damaged.tokenizer()
        rows = {s: damaged.get_many(s, np.arange(damaged.num_sequences(s))) for s in damaged.sources}
    except CurationError:
        return
    assert damaged.index == original.index
    for source, got in rows.items():
        np.testing.assert_array_equal(
            got, original.get_many(source, np.arange(original.num_sequences(source)))
        )


def test_manifests_and_indexes_carry_their_own_checksum(dataset, shards):
    for path in (dataset / "manifest.json", shards / "index.json"):
        body = orjson.loads(path.read_bytes())
        assert body["checksum"].startswith("sha256:")


@pytest.mark.parametrize("name", ["manifest.json", "index.json"])
def test_a_damaged_checksum_key_is_not_taken_for_an_old_unsealed_file(tmp_path, dataset, shards, name):
    """A flipped bit in the key itself ("checksum" -> "ciecksum", found by the
    property test above) left a file that looked written before checksums."""
    source = dataset if name == "manifest.json" else shards
    target = tmp_path / "copy"
    shutil.copytree(source, target)
    (target / name).write_bytes((target / name).read_bytes().replace(b'"checksum"', b'"ciecksum"'))
    with pytest.raises(CurationError, match=r"no checksum, and unknown keys \['ciecksum'\]"):
        Dataset.open(target) if name == "manifest.json" else ShardReader(target)


@pytest.mark.parametrize("path", ["../outside.parquet", "/etc/passwd", "a/../../b.parquet"])
def test_a_manifest_naming_a_file_outside_its_folder_is_refused(tmp_path, dataset, path):
    """Even an old manifest without a checksum cannot send readers outside the folder."""
    target = tmp_path / "ds"
    shutil.copytree(dataset, target)
    body = orjson.loads((target / "manifest.json").read_bytes())
    del body["checksum"]
    body["files"][0]["path"] = path
    (target / "manifest.json").write_bytes(orjson.dumps(body))
    with pytest.raises(IntegrityError, match="outside its folder"):
        Dataset.open(target)


def test_an_index_naming_a_shard_outside_its_folder_is_refused(tmp_path, shards):
    target = tmp_path / "shards"
    shutil.copytree(shards, target)
    body = orjson.loads((target / "index.json").read_bytes())
    del body["checksum"]
    source = next(iter(body["sources"].values()))
    source["shards"][0]["path"] = "../../elsewhere.bin"
    (target / "index.json").write_bytes(orjson.dumps(body))
    with pytest.raises(IntegrityError, match="outside its folder"):
        ShardReader(target)


def test_a_manifest_without_a_checksum_still_opens(tmp_path, dataset):
    """Datasets written before checksums existed stay readable."""
    target = tmp_path / "ds"
    shutil.copytree(dataset, target)
    body = orjson.loads((target / "manifest.json").read_bytes())
    del body["checksum"]
    (target / "manifest.json").write_bytes(orjson.dumps(body))
    Dataset.open(target).verify()


# ---------------------------------------------------------------- stages verify what they read


def _flip_at(path, fraction: float) -> None:
    data = bytearray(path.read_bytes())
    data[int(fraction * len(data))] ^= 0x04
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.7])
def test_a_stage_refuses_a_damaged_documents_part_naming_it(tmp_path, documents, fraction):
    """A flipped byte used to be read as data ("braced" read as "br%.ed", exit 0)
    or fail as a bare `OSError: ZSTD decompression failed` naming no file."""
    from curation.embeddings import HashedEncoder, embed_dataset

    target = tmp_path / "documents"
    shutil.copytree(documents, target)
    part = sorted(target.glob("part-*.parquet"))[0]
    _flip_at(part, fraction)
    with pytest.raises(IntegrityError, match=rf"{part.name}.*sha256") as raised:
        embed_dataset(target, tmp_path / "emb", HashedEncoder(dim=16))
    assert "\n" not in str(raised.value)


def test_clustering_refuses_a_damaged_embeddings_part(tmp_path, documents):
    from curation.device import CPU
    from curation.embeddings import HashedEncoder, cluster_embeddings, embed_dataset

    embed_dataset(documents, tmp_path / "emb", HashedEncoder(dim=16), rows_per_part=100)
    part = tmp_path / "emb" / "part-00001.parquet"
    _flip_at(part, 0.4)
    with pytest.raises(IntegrityError, match=rf"{part.name}.*sha256"):
        cluster_embeddings(str(tmp_path / "emb"), str(tmp_path / "clusters"), 4, device=CPU)


def _listed(folder) -> set[str]:
    manifest = Dataset.open(folder).manifest
    sidecars = getattr(manifest, "sidecars", [])  # files besides the parts
    return {f.path for f in manifest.files} | {f.path for f in sidecars} | {"manifest.json"}


def test_every_file_an_output_holds_is_in_its_manifest(tmp_path, documents):
    """`centroids.npy` was not in the clusters manifest, nor `_quarantine/` in the
    documents', so `info --verify` said ok over damaged files."""
    from curation.device import CPU
    from curation.embeddings import HashedEncoder, cluster_embeddings, embed_dataset
    from curation.selectors.diversity import KMQConfig
    from curation.stages import select_stage

    embed_dataset(documents, tmp_path / "emb", HashedEncoder(dim=16))
    cluster_embeddings(str(tmp_path / "emb"), str(tmp_path / "clusters"), 4, device=CPU)
    select_stage(str(documents), str(tmp_path / "clusters"), str(tmp_path / "sel"), KMQConfig(budget=50))
    for folder in (documents, tmp_path / "emb", tmp_path / "clusters", tmp_path / "sel"):
        held = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
        assert held == _listed(folder), folder.name
    centroids = tmp_path / "clusters" / "centroids.npy"
    _flip_at(centroids, 0.9)
    with pytest.raises(IntegrityError, match=r"centroids\.npy"):
        Dataset.open(tmp_path / "clusters").verify()
    from typer.testing import CliRunner

    from curation.cli import app

    ok = CliRunner().invoke(app, ["info", str(tmp_path / "sel"), "--verify"])
    assert ok.exit_code == 0 and "checksums ok" in ok.output, ok.output
    _flip_at(tmp_path / "sel" / "kmq_state.json", 0.5)
    damaged = CliRunner().invoke(app, ["info", str(tmp_path / "sel"), "--verify"])
    assert damaged.exit_code == 2 and "kmq_state.json" in damaged.output, damaged.output


def test_info_verifies_a_shard_set_naming_a_damaged_shard(tmp_path, shards):
    from typer.testing import CliRunner

    from curation.cli import app

    target = tmp_path / "shards"
    shutil.copytree(shards, target)
    ok = CliRunner().invoke(app, ["info", str(target), "--verify"])
    assert ok.exit_code == 0 and "checksums ok" in ok.output, ok.output
    shard = sorted(target.glob("shards/*/*.bin"))[0]
    _flip_at(shard, 0.5)
    damaged = CliRunner().invoke(app, ["info", str(target), "--verify"])
    assert damaged.exit_code == 2 and shard.name in damaged.output, damaged.output
