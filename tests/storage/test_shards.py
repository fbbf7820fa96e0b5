"""Token shards: packing, one set per source, checksums on read, index last, Parquet copy, loader."""

from __future__ import annotations

import json
import shutil

import numpy as np
import orjson
import polars as pl
import pyarrow.parquet as pq
import pytest

import curation.storage.shards as shards_module
from curation.errors import CurationError, IntegrityError
from curation.selectors.mixture import Mixture, MixtureConfig
from curation.selectors.rs2 import RS2Config
from curation.selectors.sampler import MixtureSampler
from curation.storage.dataset import Dataset
from curation.storage.shards import INDEX_FILE, ShardConfig, ShardReader, write_shards
from curation.storage.tokenizer import TokenizerConfig, eos_id, train_tokenizer
from curation.train.loader import ShardLoader, open_loader
from tests.storage.shard_helpers import write_documents

CONFIG = ShardConfig(seq_len=64, sequences_per_shard=50)


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    return write_documents(tmp_path_factory.mktemp("shards"), {"big": 300, "mid": 80, "small": 12})


@pytest.fixture(scope="module")
def tokenizer(documents):
    return train_tokenizer(documents, config=TokenizerConfig(vocab_size=600))


@pytest.fixture(scope="module")
def built(documents, tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("set") / "shards"
    index = write_shards(documents, out, tokenizer, CONFIG)
    return out, index


@pytest.fixture
def copy_of(built, tmp_path):
    """A private copy of the built set, for tests that damage it."""
    target = tmp_path / "shards"
    shutil.copytree(built[0], target)
    return target


def expected_streams(documents, tokenizer):
    """Each source's documents encoded independently and joined with EOS, in input order."""
    table = Dataset.open(documents).read_table(["source", "text"])
    streams: dict[str, list[int]] = {}
    for source, text in zip(
        table.column("source").to_pylist(), table.column("text").to_pylist(), strict=True
    ):
        streams.setdefault(source, []).extend([*tokenizer.encode(text).ids, eos_id(tokenizer)])
    return streams


def test_each_source_is_its_documents_packed_with_eos(built, documents, tokenizer):
    out, index = built
    reader = ShardReader(out)
    streams = expected_streams(documents, tokenizer)
    assert reader.sources == sorted(streams)
    for source, stream in streams.items():
        rows = reader.get_many(source, np.arange(reader.num_sequences(source)))
        flat = rows.ravel().tolist()
        padding = index["sources"][source]["padding"]
        assert flat[: len(flat) - padding] == stream
        assert flat[len(flat) - padding :] == [eos_id(tokenizer)] * padding
        assert 0 <= padding < CONFIG.seq_len
        assert index["sources"][source]["tokens"] == len(stream)
        assert reader.num_sequences(source) == -(-len(stream) // CONFIG.seq_len)


def test_index_counts_add_up(built, documents):
    _, index = built
    dataset = Dataset.open(documents)
    by_source = dataset.read_table(["source"]).column("source").value_counts().to_pylist()
    for item in by_source:
        entry = index["sources"][item["values"]]
        assert entry["documents"] == item["counts"]
        assert sum(s["source_counts"][item["values"]] for s in entry["shards"]) == item["counts"]
        assert sum(s["sequences"] for s in entry["shards"]) == entry["sequences"]
        assert entry["sequences"] * CONFIG.seq_len == entry["tokens"] + entry["padding"]
    assert index["totals"]["documents"] == dataset.rows
    assert index["dtype"] == "uint16" and index["seq_len"] == CONFIG.seq_len
    assert index["schema_version"] == shards_module.SCHEMA_VERSION
    assert len(index["tokenizer"]["sha256"]) == 64


def test_big_sources_roll_over_into_several_shards_and_reads_cross_them(built):
    out, index = built
    shards = index["sources"]["big"]["shards"]
    assert len(shards) > 2 and all(s["sequences"] <= CONFIG.sequences_per_shard for s in shards)
    reader = ShardReader(out)
    raw = np.concatenate(
        [np.fromfile(out / s["path"], dtype=np.uint16).reshape(-1, CONFIG.seq_len) for s in shards]
    )
    picks = np.array([0, 49, 50, 51, len(raw) - 1, 99, 100, 3])
    np.testing.assert_array_equal(reader.get_many("big", picks), raw[picks])
    for i in picks:
        np.testing.assert_array_equal(reader.get("big", int(i)), raw[i])
    assert all((out / s["path"]).stat().st_size == s["sequences"] * CONFIG.seq_len * 2 for s in shards)


def test_read_batch_in_any_order_matches_single_reads(built):
    reader = ShardReader(built[0])
    sources = ["small", "big", "mid"]
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 3, size=40)
    indices = np.array([rng.integers(0, reader.num_sequences(sources[i])) for i in ids])
    rows = reader.read_batch(sources, ids, indices)
    for row, i, index in zip(rows, ids, indices, strict=True):
        np.testing.assert_array_equal(row, reader.get(sources[i], int(index)))
    with pytest.raises(IndexError):
        reader.read_batch(sources, np.array([0]), np.array([reader.num_sequences("small")]))


def test_a_corrupted_shard_is_refused_naming_the_file(copy_of, built):
    shard = built[1]["sources"]["mid"]["shards"][0]["path"]
    data = bytearray((copy_of / shard).read_bytes())
    data[100] ^= 0xFF  # same size, different bytes
    (copy_of / shard).write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=rf"{shard}: sha256 differs from index\.json"):
        ShardReader(copy_of)
    lazy = ShardReader(copy_of, verify="lazy")  # opens; checks each shard on first read
    assert lazy.get("small", 0).shape == (CONFIG.seq_len,)
    with pytest.raises(IntegrityError, match=rf"{shard}: sha256 differs"):
        lazy.get("mid", 0)


def test_a_truncated_or_missing_shard_is_refused_even_without_checksums(copy_of, built):
    shard = built[1]["sources"]["big"]["shards"][1]["path"]
    with open(copy_of / shard, "r+b") as handle:
        handle.truncate(10)
    with pytest.raises(IntegrityError, match=rf"{shard}: size 10 bytes"):
        ShardReader(copy_of, verify="none")
    (copy_of / shard).unlink()
    with pytest.raises(IntegrityError, match=rf"{shard}: listed in index\.json but missing"):
        ShardReader(copy_of, verify="none")


def test_no_index_means_no_shard_set(copy_of):
    (copy_of / INDEX_FILE).unlink()
    with pytest.raises(CurationError, match=r"no index\.json, so not a finished shard set"):
        ShardReader(copy_of)
    (copy_of / INDEX_FILE).write_text("{}")
    with pytest.raises(IntegrityError, match=r"index\.json: index is unreadable or incomplete"):
        ShardReader(copy_of)


def test_a_newer_index_version_is_refused(copy_of):
    index = json.loads((copy_of / INDEX_FILE).read_text())
    index["schema_version"] = shards_module.SCHEMA_VERSION + 1
    (copy_of / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CurationError, match="newer than this curation understands"):
        ShardReader(copy_of)


def test_index_is_written_last(documents, tokenizer, tmp_path, monkeypatch):
    seen = {}
    real = shards_module.write_bytes_atomic

    def spy(loc, data):
        if loc.path.endswith(INDEX_FILE):
            index = orjson.loads(data)
            seen["missing"] = [
                s["path"]
                for source in index["sources"].values()
                for s in source["shards"]
                if not (tmp_path / "out" / s["path"]).exists()
            ]
            seen["text"] = [f["path"] for f in index["text"]["files"]]
            seen["files"] = {p.name for p in (tmp_path / "out" / "text").iterdir()}
        real(loc, data)

    monkeypatch.setattr(shards_module, "write_bytes_atomic", spy)
    write_shards(documents, tmp_path / "out", tokenizer, CONFIG)
    assert seen["missing"] == []
    assert {p.rsplit("/", 1)[-1] for p in seen["text"]} <= seen["files"]


def test_a_failed_write_leaves_no_index(built, documents, tokenizer, monkeypatch):
    out = built[0].parent / "failed"
    write_shards(documents, out, tokenizer, CONFIG)
    calls = []

    def failing(*args):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("disk full")

    monkeypatch.setattr(shards_module, "_pack_batch", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        write_shards(documents, out, tokenizer, CONFIG)
    assert not (out / INDEX_FILE).exists()
    with pytest.raises(CurationError, match=r"no index\.json"):
        ShardReader(out)
    assert not list(out.rglob("*.tmp"))


def test_rewriting_removes_stale_shards_and_gives_identical_bytes(built, documents, tokenizer, tmp_path):
    out = tmp_path / "again"
    write_shards(documents, out, tokenizer, ShardConfig(seq_len=64, sequences_per_shard=5))
    index = write_shards(documents, out, tokenizer, CONFIG)
    listed = {s["path"] for source in index["sources"].values() for s in source["shards"]}
    on_disk = {str(p.relative_to(out)) for p in (out / "shards").rglob("*.bin")}
    assert on_disk == listed
    assert (out / INDEX_FILE).read_bytes() == (built[0] / INDEX_FILE).read_bytes()
    for path in listed:
        assert (out / path).read_bytes() == (built[0] / path).read_bytes()


def test_parquet_copy_loads_with_pyarrow_and_polars(built, documents, tokenizer):
    out, index = built
    source = Dataset.open(documents).read_table()
    with_pyarrow = pq.read_table(out / "text")
    with_polars = pl.read_parquet(out / "text")
    assert with_pyarrow.num_rows == with_polars.height == source.num_rows
    assert with_pyarrow.column("id").to_pylist() == source.column("id").to_pylist()
    assert with_polars["text"].to_list() == source.column("text").to_pylist()
    lengths = [len(tokenizer.encode(t).ids) for t in source.column("text").to_pylist()]
    assert with_polars["n_tokens"].to_list() == lengths
    assert not list((out / "text").glob("*.json"))  # no manifest to trip Parquet readers
    assert sum(f["rows"] for f in index["text"]["files"]) == source.num_rows


def test_keep_mask_and_dropping_the_last_partial_sequence(documents, tokenizer, tmp_path):
    dataset = Dataset.open(documents)
    keep = np.zeros(dataset.rows, dtype=bool)
    keep[::3] = True
    index = write_shards(dataset, tmp_path / "out", tokenizer, ShardConfig(seq_len=64, pad_last=False), keep)
    assert index["totals"]["documents"] == int(keep.sum())
    assert index["totals"]["padding"] == 0
    for entry in index["sources"].values():
        assert entry["tokens"] == entry["sequences"] * 64
        assert 0 <= entry["dropped_tokens"] < 64
    ids = pq.read_table(tmp_path / "out" / "text").column("id").to_pylist()
    assert ids == dataset.read_table(["id"]).column("id").to_numpy(zero_copy_only=False)[keep].tolist()


def test_bad_shard_config_is_refused():
    with pytest.raises(ValueError, match="seq_len must be >= 2"):
        ShardConfig(seq_len=1)
    with pytest.raises(ValueError, match="sequences_per_shard"):
        ShardConfig(sequences_per_shard=0)
    with pytest.raises(ValueError, match="pad_last must be True or False"):
        ShardConfig(pad_last="yes")


def loader(out, read_ahead, seed=5):
    reader = ShardReader(out)
    sizes = {s: reader.num_sequences(s) for s in reader.sources}
    mixture = Mixture(MixtureConfig()).fit(sizes, 120)
    sampler = MixtureSampler(mixture, sizes, 8, seed=seed, inner=RS2Config(fraction=0.5))
    return ShardLoader(reader, sampler, read_ahead)


def test_loader_gives_the_sampler_batches_and_resumes_mid_block(built):
    out = built[0]
    reference = loader(out, read_ahead=1)
    batches = list(reference)
    assert len(batches) == 120
    reader = ShardReader(out)
    sources = reference.sources
    for batch in batches[:10]:
        for row, i, index in zip(
            batch.tokens, batch.source_ids, reference_indices(out, batch.step), strict=True
        ):
            np.testing.assert_array_equal(row, reader.get(sources[i], int(index)))
    ahead = loader(out, read_ahead=16)
    first = [ahead.next() for _ in range(37)]  # 37: inside the third block
    state = json.loads(json.dumps(ahead.state_dict()))
    resumed = loader(out, read_ahead=16)
    resumed.load_state_dict(state)
    rest = list(resumed)
    got = first + rest
    assert [b.step for b in got] == list(range(120))
    for a, b in zip(got, batches, strict=True):
        np.testing.assert_array_equal(a.tokens, b.tokens)
        np.testing.assert_array_equal(a.source_ids, b.source_ids)


def reference_indices(out, step):
    """The sampler's indices for `step`, drawn by a fresh sampler."""
    sampler = loader(out, read_ahead=1).sampler
    for _ in range(step):
        sampler.next_batch()
    return sampler.next_batch().indices


@pytest.mark.parametrize("unit", [None, "documents"])
def test_open_loader_weighs_sources_by_their_tokens_or_documents(built, unit):
    out, index = built
    mixture = MixtureConfig(schedule="constant", **({"unit": unit} if unit else {}))
    loaded = open_loader(out, batch_size=4, total_steps=10, mixture=mixture)
    sizes = {name: index["sources"][name][unit or "tokens"] for name in index["sources"]}  # tokens by default
    expected = Mixture(mixture).fit(sizes, 10).weights(0)
    assert loaded.sampler.mixture.weights(0) == pytest.approx(expected)
    assert len(list(loaded)) == 10
