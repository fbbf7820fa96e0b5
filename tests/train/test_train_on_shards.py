"""Training on real shards: every data option composes, and resume is exact."""

from __future__ import annotations

import json

import numpy as np
import pytest

from curation.errors import CurationError
from curation.selectors.mixture import MixtureConfig
from curation.selectors.replay import ReplayConfig
from curation.selectors.rs2 import RS2Config
from curation.storage.shards import ShardConfig, write_shards
from curation.storage.tokenizer import TokenizerConfig, train_tokenizer
from curation.train.colm import CoLMConfig
from curation.train.loop import TrainConfig
from curation.train.model import GPTConfig
from curation.train.run import train_on_shards
from tests.storage.shard_helpers import write_documents

TINY = GPTConfig(layers=2, heads=2, width=64)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    documents = write_documents(folder, {"big": 300, "mid": 90, "small": 30})
    tokenizer = train_tokenizer(documents, config=TokenizerConfig(vocab_size=512))
    write_shards(documents, folder / "shards", tokenizer, ShardConfig(seq_len=33, sequences_per_shard=200))
    return str(folder / "shards")


def _config(**changes) -> TrainConfig:
    base = {
        "model": TINY,
        "steps": 24,
        "batch_size": 8,
        "lr": 3e-3,
        "eval_every": 12,
        "checkpoint_every": 8,
        "holdout": 4,
    }
    return TrainConfig(**{**base, **changes})


def _losses(folder) -> list[float]:
    return [json.loads(line)["loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_cooldown_rs2_and_colm_compose_in_one_run(tmp_path, shards):
    config = _config(mixture=MixtureConfig(), rs2=RS2Config(fraction=0.5), colm=CoLMConfig())
    result = train_on_shards(shards, config, tmp_path, device="cpu")
    assert result.steps == 24
    assert set(result.eval["by_source"]) == {"big", "mid", "small"}
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(r["kept"] <= 8 for r in records)  # CoLM trained on a small batch each step
    assert (tmp_path / "loss_curves.png").read_bytes().startswith(b"\x89PNG")


def test_resume_on_shards_matches_an_uninterrupted_run(tmp_path, shards):
    config = _config(mixture=MixtureConfig(mode="scalarize"), rs2=RS2Config(fraction=0.5))
    train_on_shards(shards, config, tmp_path / "full", device="cpu")

    def crash(step, _loss):
        if step == 11:  # between the step-8 and step-16 checkpoints
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_on_shards(shards, config, tmp_path / "cut", device="cpu", on_step=crash)
    train_on_shards(shards, config, tmp_path / "cut", device="cpu")
    assert _losses(tmp_path / "cut") == _losses(tmp_path / "full")


def test_loss_ranked_replay_runs_on_shards(tmp_path, shards):
    result = train_on_shards(shards, _config(replay=ReplayConfig(delta=0.5)), tmp_path, device="cpu")
    assert result.steps == 24 and result.eval["overall"] > 0


def test_topic_batches_fill_each_batch_from_one_cluster(tmp_path, shards):
    from curation.train.data import ShardSource, TopicConfig, TopicSource

    source = ShardSource(shards, 8, 10, MixtureConfig(), holdout=4)
    topics = TopicSource(source, TopicConfig(clusters=4, seed=1))
    label = np.empty(len(topics.pairs), dtype=np.int64)
    for cluster, members in enumerate(topics.members):
        label[members] = cluster
    big = {c for c, m in enumerate(topics.members) if len(m) >= 8}
    state = topics.state_dict()
    single = 0
    for step in range(6):
        topics.next_batch(step, 8)
        clusters = {int(c) for c in label[topics.last_rows]}
        single += len(clusters) == 1
        assert len(clusters) == 1 or not clusters & big  # only small clusters get topped up
    assert single >= 3
    again = TopicSource(source, TopicConfig(clusters=4, seed=1))
    again.load_state_dict(state)
    for step in range(6):
        again.next_batch(step, 8)
    assert again.state_dict()["cursor"] == topics.state_dict()["cursor"]
    result = train_on_shards(shards, _config(topic_batches=TopicConfig(clusters=4)), tmp_path, device="cpu")
    assert result.steps == 24


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """Two sources whose shares of documents and of packed sequences differ ~5x:
    'long' has few documents of fifteen docstrings each, 'short' many of one."""
    from curation.storage import InputSpec, ingest
    from tests.storage.shard_helpers import docstrings

    folder = tmp_path_factory.mktemp("uneven")
    texts = docstrings(300)
    raw = {"long": ["\n\n".join(texts[i : i + 15]) for i in range(0, 180, 15)], "short": texts[180:300]}
    specs = []
    for name, docs in raw.items():
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
        specs.append(InputSpec(str(path), source=name))
    ingest(specs, str(folder / "documents"))
    tokenizer = train_tokenizer(folder / "documents", config=TokenizerConfig(vocab_size=512))
    write_shards(folder / "documents", folder / "shards", tokenizer, ShardConfig(seq_len=33))
    return str(folder / "shards")


def test_proportional_mixture_draws_sequences_in_proportion_by_default(uneven):
    """T=1 means proportional to what the sampler draws (packed sequences), not documents."""
    from curation.storage.shards import ShardReader
    from curation.train.data import ShardSource

    source = ShardSource(uneven, 16, 400, MixtureConfig(schedule="constant", temperature=1.0), holdout=0)
    counts = {name: ShardReader(uneven).num_sequences(name) for name in ("long", "short")}
    documents = ShardReader(uneven).index["sources"]["long"]["documents"]
    assert documents / 132 < 0.5 * counts["long"] / sum(counts.values())  # the two shares differ
    drawn = [name for step in range(400) for name in source.next_batch(step, 16).sources]
    share = drawn.count("long") / len(drawn)
    assert share == pytest.approx(counts["long"] / sum(counts.values()), abs=0.03)
    by_documents = MixtureConfig(schedule="constant", temperature=1.0, unit="documents")
    source = ShardSource(uneven, 16, 200, by_documents, holdout=0)  # the option, for document budgets
    drawn = [name for step in range(200) for name in source.next_batch(step, 16).sources]
    assert drawn.count("long") / len(drawn) == pytest.approx(documents / 132, abs=0.03)


def test_rs2_rounds_in_the_config_set_the_steps(tmp_path, shards):
    """Rounds inside the mixture: a round is every source's r*N_i training rows;
    the steps are rounds * floor(sum r*N_i / B) (the reference drops the last
    partial batch of a round), and each source's own rounds are reported."""
    from curation.selectors.rs2 import per_round
    from curation.storage.shards import ShardReader
    from curation.train.config import train_config_from_dict

    body = {
        "model": {"layers": 2, "heads": 2, "width": 64},
        "batch_size": 8,
        "holdout": 4,
        "eval_every": 1000,
        "mixture": {"schedule": "constant", "temperature": 1.0},
        "rs2": {"fraction": 0.1, "rounds": 1},
    }
    config = train_config_from_dict(body)
    reader = ShardReader(shards)
    rows = [reader.num_sequences(name) - 4 for name in reader.sources]
    expected = sum(per_round(n, 0.1) for n in rows) // 8
    result = train_on_shards(shards, config, tmp_path, device="cpu")
    assert result.steps == expected
    assert set(result.rs2_rounds) == {"big", "mid", "small"}
    for name, rounds in result.rs2_rounds.items():  # T=1: every source goes through about one round
        assert rounds == pytest.approx(1.0, rel=0.15), name
    with pytest.raises(CurationError, match="rounds"):
        train_config_from_dict({**body, "steps": 10})


def test_rs2_rounds_differ_per_source_when_the_mixture_is_not_proportional(shards):
    from curation.train.data import ShardSource

    hot = MixtureConfig(schedule="constant", temperature=5.0)
    source = ShardSource(shards, 8, 100, hot, RS2Config(fraction=0.1), holdout=4)
    rounds = source.rs2_rounds(100)
    assert rounds["small"] > rounds["mid"] > rounds["big"]
    draws = {name: rounds[name] * max(1, round(0.1 * n)) for name, n in source.train_counts.items()}
    assert sum(draws.values()) == pytest.approx(100 * 8)
