"""Materializing a subset: budget, temperature shares, selection tables, determinism, records."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.errors import CurationError
from curation.selectors.budget import Budget
from curation.selectors.mixture import MixtureConfig, temperature_weights
from curation.selectors.subset import counted_prefixes, source_orders
from curation.storage.dataset import Dataset
from curation.storage.decisions import write_decisions
from curation.storage.shards import ShardConfig, ShardReader
from curation.storage.tokenizer import TokenizerConfig, load_tokenizer, save_tokenizer, train_tokenizer
from curation.subset import (
    SUBSET_FILE,
    SubsetConfig,
    TokenCounts,
    materialize_subset,
    source_codes,
)
from tests.storage.shard_helpers import write_documents

SIZES = {"big": 600, "mid": 200, "small": 40, "tiny": 8}
SHARDS = ShardConfig(seq_len=64)


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    return write_documents(tmp_path_factory.mktemp("subset"), SIZES)


@pytest.fixture(scope="module")
def tokenizer_file(documents, tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    save_tokenizer(train_tokenizer(documents, config=TokenizerConfig(vocab_size=600)), path)
    return path


def constant(temperature, unit="documents"):
    return MixtureConfig(schedule="constant", temperature=temperature, unit=unit)


def run(documents, out, tokenizer_file, budget, mixture=None, seed=0, selections=()):
    config = SubsetConfig(budget=budget, mixture=mixture or constant(1.0), seed=seed, shards=SHARDS)
    return materialize_subset(documents, out, config, selections=selections, tokenizer=tokenizer_file)


def text_copy(out):
    return pl.read_parquet(out / "text")


def test_documents_budget_is_met_and_shares_follow_the_temperature(documents, tokenizer_file, tmp_path):
    report = run(documents, tmp_path / "s", tokenizer_file, Budget(documents=200), constant(2.0))
    assert report.selected == report.budget_achieved == 200
    weights = temperature_weights(SIZES, 2.0)
    # "tiny" (8 documents) is worth 11.9 of 200: capped, the rest shared by weight.
    assert report.per_source["tiny"] == SIZES["tiny"]
    rest = 200 - SIZES["tiny"]
    open_weight = sum(w for name, w in weights.items() if name != "tiny")
    for name in ("big", "mid", "small"):
        assert abs(report.per_source[name] - rest * weights[name] / open_weight) <= 1
    counts = text_copy(tmp_path / "s")["source"].value_counts()
    assert dict(counts.iter_rows()) == {k: v for k, v in report.per_source.items() if v}


def test_proportional_mixture_keeps_natural_shares(documents, tokenizer_file, tmp_path):
    report = run(documents, tmp_path / "s", tokenizer_file, Budget(documents=106), constant(1.0))
    total = sum(SIZES.values())
    for name, n in SIZES.items():
        assert abs(report.per_source[name] - 106 * n / total) <= 1


def test_higher_temperature_gives_small_sources_more(documents, tokenizer_file, tmp_path):
    low = run(documents, tmp_path / "a", tokenizer_file, Budget(documents=150), constant(1.0))
    high = run(documents, tmp_path / "b", tokenizer_file, Budget(documents=150), constant(10.0))
    assert high.per_source["small"] > low.per_source["small"]
    assert high.per_source["big"] < low.per_source["big"]


def test_cooldown_budget_follows_the_schedule_average(documents, tokenizer_file, tmp_path):
    report = run(
        documents, tmp_path / "s", tokenizer_file, Budget(documents=80), MixtureConfig(unit="documents")
    )
    hot, cold = temperature_weights(SIZES, 5.0), temperature_weights(SIZES, 1.0)
    for name in SIZES:
        assert report.weights[name] == pytest.approx(0.5 * hot[name] + 0.5 * cold[name], abs=1e-6)


def test_token_sizes_by_default_give_token_shares_under_a_documents_budget(
    documents, tokenizer_file, tmp_path
):
    """The default mixture counts tokens; a documents budget is then split so
    that each source's share of the subset's tokens follows p_i(T)."""
    assert MixtureConfig().unit == "tokens"
    report = run(documents, tmp_path / "s", tokenizer_file, Budget(documents=300), constant(2.0, "tokens"))
    assert report.selected == 300
    copy = text_copy(tmp_path / "s")
    tokens = copy.group_by("source").agg(pl.col("n_tokens").sum())
    got = dict(tokens.iter_rows())
    assert report.per_source["tiny"] == SIZES["tiny"]  # capped: the others share the rest by weight
    for name in ("mid", "small"):
        ratio = got[name] / got["big"]
        assert ratio == pytest.approx(report.weights[name] / report.weights["big"], rel=0.1), name


def test_token_budget_is_never_exceeded_and_matches_the_shards(documents, tokenizer_file, tmp_path):
    out = tmp_path / "s"
    report = run(documents, out, tokenizer_file, Budget(tokens=20_000), constant(3.0))
    copy = text_copy(out)
    longest = int(copy["n_tokens"].max()) + 1
    assert report.budget_unit == "tokens" and report.budget_asked == 20_000
    assert 20_000 - len(SIZES) * longest <= report.budget_achieved <= 20_000
    assert report.tokens == report.budget_achieved == int((copy["n_tokens"] + 1).sum())
    reader = ShardReader(out)
    assert sum(reader.index["sources"][s]["tokens"] for s in reader.sources) == report.tokens
    for name in reader.sources:
        assert reader.index["sources"][name]["tokens"] == report.per_source_tokens[name]


def test_token_counts_count_what_a_decision_needs_and_estimate_the_rest(documents, tokenizer_file):
    dataset, tokenizer = Dataset.open(documents), load_tokenizer(tokenizer_file)
    names, codes = source_codes(dataset)
    candidates = np.ones(dataset.rows, dtype=bool)
    orders = source_orders(names, codes, candidates, seed=0)
    every = TokenCounts(dataset, tokenizer, 64)
    every.count(np.arange(dataset.rows))
    truth = every.counted
    counts = TokenCounts(dataset, tokenizer, 64)
    counts.count_prefixes(orders, 2_000)
    counted = counts.counted > 0
    assert 0 < counted.sum() < dataset.rows
    assert np.array_equal(counts.counted[counted], truth[counted])
    estimate = counts.lengths(codes, candidates)
    for position, name in enumerate(names):
        mine = codes == position
        assert estimate[mine].sum() == pytest.approx(truth[mine].sum(), rel=0.25), name
    targets = [0.3 * truth[codes == position].sum() for position in range(len(names))]
    prefixes = counted_prefixes(counts, orders, targets, codes, candidates)
    for rows, prefix, target in zip(orders, prefixes, targets, strict=True):
        assert truth[prefix].sum() <= target < truth[rows[: len(prefix) + 1]].sum()
    assert (counts.counted > 0).sum() < 0.6 * dataset.rows  # the rest were never tokenised


def test_fraction_budget_and_a_tokenizer_trained_on_the_spot(documents, tmp_path):
    config = SubsetConfig(
        budget=Budget(fraction=0.25),
        mixture=constant(1.0),
        shards=SHARDS,
        tokenizer=TokenizerConfig(vocab_size=400),
    )
    report = materialize_subset(documents, tmp_path / "s", config)
    assert report.selected == math.floor(0.25 * sum(SIZES.values()))
    reader = ShardReader(tmp_path / "s")
    assert reader.tokenizer().get_vocab_size() == 400
    manifest = json.loads((tmp_path / "s" / SUBSET_FILE).read_text())
    assert manifest["tokenizer"]["given"] is None
    assert manifest["tokenizer"]["sha256"] == reader.index["tokenizer"]["sha256"]


def test_a_budget_beyond_the_data_takes_everything_and_says_so(documents, tokenizer_file, tmp_path):
    report = run(documents, tmp_path / "s", tokenizer_file, Budget(documents=10_000), constant(5.0))
    assert report.selected == sum(SIZES.values())
    assert report.per_source == SIZES
    manifest = json.loads((tmp_path / "s" / SUBSET_FILE).read_text())
    assert manifest["budget"] == {"unit": "documents", "asked": 10_000, "achieved": sum(SIZES.values())}


def decisions(documents, kept, stage):
    ids = Dataset.open(documents).read_table(["id", "source"])
    n = ids.num_rows
    return pa.table(
        {
            "id": ids.column("id"),
            "source": ids.column("source"),
            "stage": [stage] * n,
            "kept": pa.array(kept, pa.bool_()),
            "reason": [None if k else "test" for k in kept],
            "cluster": pa.array([None] * n, pa.int64()),
        }
    )


def test_only_documents_every_table_keeps_are_chosen(documents, tokenizer_file, tmp_path):
    table = Dataset.open(documents).read_table(["id", "source"])
    sources = table.column("source").to_pylist()
    no_mid = [s != "mid" for s in sources]
    odd = [i % 2 == 1 for i in range(len(sources))]
    write_decisions(decisions(documents, no_mid, "exact_dedup"), tmp_path / "a.parquet")
    # The second table in another order: rows are matched by id.
    shuffled = decisions(documents, odd, "fuzzy_dedup").take(np.random.default_rng(0).permutation(len(odd)))
    write_decisions(shuffled, tmp_path / "b.parquet")
    out = tmp_path / "s"
    report = run(
        documents,
        out,
        tokenizer_file,
        Budget(fraction=1.0),
        selections=[tmp_path / "a.parquet", tmp_path / "b.parquet"],
    )
    allowed = {i for i, a, b in zip(table.column("id").to_pylist(), no_mid, odd, strict=True) if a and b}
    chosen = set(text_copy(out)["id"].to_list())
    assert chosen == allowed and report.candidates == len(allowed)
    assert report.per_source["mid"] == 0
    manifest = json.loads((out / SUBSET_FILE).read_text())
    assert [s["stages"] for s in manifest["selections"]] == [["exact_dedup"], ["fuzzy_dedup"]]
    assert [s["kept"] for s in manifest["selections"]] == [sum(no_mid), sum(odd)]


def test_a_list_of_ids_selects_those_documents(documents, tokenizer_file, tmp_path):
    ids = Dataset.open(documents).read_table(["id"]).column("id").to_pylist()
    picked = ids[5:40:3]
    pq.write_table(pa.table({"id": picked}), tmp_path / "pick.parquet")
    out = tmp_path / "s"
    run(documents, out, tokenizer_file, Budget(fraction=1.0), selections=[tmp_path / "pick.parquet"])
    assert text_copy(out)["id"].to_list() == picked  # input order kept
    manifest = json.loads((out / SUBSET_FILE).read_text())
    assert manifest["selections"][0]["missing"] == 0


def test_documents_a_table_does_not_mention_are_counted_as_missing(documents, tokenizer_file, tmp_path):
    full = decisions(documents, [True] * sum(SIZES.values()), "diversity")
    write_decisions(full.slice(0, 100), tmp_path / "part.parquet")
    out = tmp_path / "s"
    report = run(documents, out, tokenizer_file, Budget(fraction=1.0), selections=[tmp_path / "part.parquet"])
    assert report.selected == 100
    manifest = json.loads((out / SUBSET_FILE).read_text())
    assert manifest["selections"][0]["missing"] == sum(SIZES.values()) - 100


def test_bad_selection_tables_are_refused_by_name(documents, tokenizer_file, tmp_path):
    pq.write_table(pa.table({"id": ["nope:1"]}), tmp_path / "unknown.parquet")
    with pytest.raises(CurationError, match=r"unknown\.parquet: 1 ids are not in the documents"):
        run(
            documents,
            tmp_path / "s",
            tokenizer_file,
            Budget(documents=5),
            selections=[tmp_path / "unknown.parquet"],
        )
    ids = Dataset.open(documents).read_table(["id"]).column("id").to_pylist()
    pq.write_table(pa.table({"id": [ids[0], ids[0]]}), tmp_path / "twice.parquet")
    with pytest.raises(CurationError, match=r"twice\.parquet: id .* appears more than once"):
        run(
            documents,
            tmp_path / "s",
            tokenizer_file,
            Budget(documents=5),
            selections=[tmp_path / "twice.parquet"],
        )
    pq.write_table(pa.table({"name": ["x"]}), tmp_path / "noid.parquet")
    with pytest.raises(CurationError, match=r"noid\.parquet: has no id column"):
        run(
            documents,
            tmp_path / "s",
            tokenizer_file,
            Budget(documents=5),
            selections=[tmp_path / "noid.parquet"],
        )
    with pytest.raises(CurationError, match=r"absent\.parquet: no such decision"):
        run(
            documents,
            tmp_path / "s",
            tokenizer_file,
            Budget(documents=5),
            selections=[tmp_path / "absent.parquet"],
        )


def test_nothing_left_to_choose_is_an_error(documents, tokenizer_file, tmp_path):
    write_decisions(decisions(documents, [False] * sum(SIZES.values()), "x"), tmp_path / "none.parquet")
    with pytest.raises(CurationError, match="no documents are left"):
        run(
            documents,
            tmp_path / "s",
            tokenizer_file,
            Budget(documents=5),
            selections=[tmp_path / "none.parquet"],
        )


def test_same_seed_same_bytes_other_seed_other_documents(documents, tokenizer_file, tmp_path):
    budget = Budget(documents=120)
    run(documents, tmp_path / "a", tokenizer_file, budget, constant(2.0), seed=1)
    run(documents, tmp_path / "b", tokenizer_file, budget, constant(2.0), seed=1)
    run(documents, tmp_path / "c", tokenizer_file, budget, constant(2.0), seed=2)
    for name in (SUBSET_FILE, "index.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    a, c = set(text_copy(tmp_path / "a")["id"]), set(text_copy(tmp_path / "c")["id"])
    assert a != c

    def counts(folder):
        sources = json.loads((folder / SUBSET_FILE).read_text())["sources"]
        return {name: entry["selected"] for name, entry in sources.items()}

    assert counts(tmp_path / "a") == counts(tmp_path / "c")  # same shares, other documents


def test_subset_json_records_how_it_was_made(documents, tokenizer_file, tmp_path):
    out = tmp_path / "s"
    report = run(documents, out, tokenizer_file, Budget(documents=60), constant(4.0), seed=3)
    manifest = json.loads((out / SUBSET_FILE).read_text())
    assert manifest["kind"] == "subset"
    assert manifest["documents"]["rows"] == sum(SIZES.values())
    assert len(manifest["documents"]["manifest_sha256"]) == 64
    assert manifest["config"]["mixture"]["temperature"] == 4.0 and manifest["config"]["seed"] == 3
    assert manifest["tokenizer"]["given"] == str(tokenizer_file)
    assert {n: s["selected"] for n, s in manifest["sources"].items()} == report.per_source
    assert {n: s["candidates"] for n, s in manifest["sources"].items()} == SIZES
    assert manifest["totals"]["selected"] == 60 == report.selected
    assert report.output == str(out) and report.documents_in == sum(SIZES.values())


def test_rerunning_into_the_same_folder_replaces_the_subset(documents, tokenizer_file, tmp_path):
    out = tmp_path / "s"
    run(documents, out, tokenizer_file, Budget(documents=300))
    report = run(documents, out, tokenizer_file, Budget(documents=20))
    assert text_copy(out).height == 20 == report.selected
    assert sum(ShardReader(out).index["sources"][s]["documents"] for s in ShardReader(out).sources) == 20
