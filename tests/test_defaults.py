"""Each default lives in one place: the command line shows and uses the library's."""

from __future__ import annotations

import inspect

import pytest
import typer.main
from typer.testing import CliRunner

from curation.cli import app
from curation.defaults import LibraryDefault, default_of
from curation.embeddings import KMeansConfig, embed_dataset
from curation.selectors.dedup import DedupConfig
from curation.selectors.diversity import KMQConfig
from curation.selectors.mixture import MixtureConfig
from curation.selectors.quality import PerplexityConfig
from curation.selectors.semdedup import SemDeDupConfig
from curation.storage import IngestConfig
from curation.storage.shards import ShardConfig
from curation.storage.tokenizer import TokenizerConfig
from curation.subset import SubsetConfig
from curation.train.clusters import ClusterScoring
from curation.train.loop import TrainConfig
from curation.train.model import GPTConfig

# command -> option -> (library source, setting): what each option's default must be
CLI = {
    "ingest": {"text_field": (IngestConfig, "text_field"), "strict": (IngestConfig, "strict"),
               "max_doc_bytes": (IngestConfig, "max_doc_bytes")},
    "dedup": {name: (DedupConfig, name) for name in ("mode", "min_chars", "short_count", "normalize", "bands",
                                                     "rows")},
    "embed": {"batch_size": (embed_dataset, "batch_size")},
    "cluster": {"seed": (KMeansConfig, "seed")},
    "semdedup": {"target_fraction": (SemDeDupConfig, "target_fraction"), "keep": (SemDeDupConfig, "keep")},
    "select": {name: (KMQConfig, name) for name in ("split", "rounds", "holdout", "seed")},
    "quality": {"steps": (PerplexityConfig, "steps"), "seed": (PerplexityConfig, "seed")},
    "subset": {"temperature": (MixtureConfig, "temperature"), "schedule": (MixtureConfig, "schedule"),
               "unit": (MixtureConfig, "unit"), "seq_len": (ShardConfig, "seq_len"),
               "vocab_size": (TokenizerConfig, "vocab_size"), "seed": (SubsetConfig, "seed")},
    "shards": {"seq_len": (ShardConfig, "seq_len"), "vocab_size": (TokenizerConfig, "vocab_size")},
    "train": {"score_on": (ClusterScoring, "on")},
}  # fmt: skip


def test_every_cli_default_is_the_library_default():
    group = typer.main.get_command(app)
    for command, options in CLI.items():
        params = {p.name: p for p in group.commands[command].params}
        for option, (source, setting) in options.items():
            default = params[option].default
            assert isinstance(default, LibraryDefault), (command, option, default)  # not a copy
            assert default() == default_of(source, setting), (command, option)


def test_help_shows_the_library_default_and_a_left_out_option_gets_it(tmp_path):
    shown = CliRunner().invoke(app, ["subset", "--help"], terminal_width=200).output
    assert f"[default: {TokenizerConfig().vocab_size}]" in shown  # 8192, the library's, not a copy
    assert f"[default: {ShardConfig().seq_len}]" in shown
    result = CliRunner().invoke(app, ["ingest", str(tmp_path / "absent.jsonl"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "absent.jsonl" in result.output  # defaults resolved, then a clear error


def test_default_of_reads_dataclasses_presets_and_keywords():
    assert default_of(TrainConfig, "model.layers") == GPTConfig().layers  # nested, via a default factory
    assert default_of(TrainConfig(steps=7), "steps") == 7  # a preset's value
    assert (
        default_of(embed_dataset, "batch_size")
        == inspect.signature(embed_dataset).parameters["batch_size"].default
    )
    with pytest.raises(AttributeError, match="no setting 'bandz'"):
        default_of(DedupConfig, "bandz")
    with pytest.raises(AttributeError, match="has no default"):
        default_of(KMQConfig, "budget")
