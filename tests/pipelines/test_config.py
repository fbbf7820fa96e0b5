"""Dagster config checked where it is entered: library defaults, choices the Launchpad
offers, one budget type the Launchpad checks, and a run that refuses bad settings at
its first step, before any asset is written."""

from __future__ import annotations

import inspect

import dagster as dg
import pytest

from curation.embeddings import KMeansConfig, embed_dataset
from curation.pipelines.assets import ExactDedupConfig
from curation.pipelines.config import STAGE_CONFIGS, Split, choices
from curation.pipelines.definitions import build_definitions
from curation.presets import DEMO
from curation.selectors.dedup import DedupConfig
from curation.selectors.diversity import SPLITS, KMQConfig
from curation.selectors.mixture import MixtureConfig
from curation.selectors.quality import QualityConfig
from curation.selectors.semdedup import SemDeDupConfig
from curation.storage import IngestConfig
from curation.subset import SubsetConfig
from curation.train.refine import ProbeConfig

DEFS = build_definitions(storage_root="unused", device="cpu")
JOBS = [DEFS.resolve_job_def(name) for name in ("ingest_job", "full_pipeline")]


def _defaults() -> dict[str, dict]:
    """Each step's config as the Launchpad fills it in when nothing is entered."""
    found = {}
    for job in JOBS:
        for op, body in dg.validate_run_config(job, {})["ops"].items():
            if body.get("config"):  # steps with a config class (the others accept anything)
                found[op] = body["config"]
    return found


def test_each_dagster_default_is_the_library_default():
    """Built from the Launchpad's defaults, every step's settings equal the library's own
    defaults, or the DEMO preset's for the training-scale steps."""
    defaults = _defaults()
    settings = {op: STAGE_CONFIGS[op](**config).settings() for op, config in defaults.items()}
    assert settings["documents"] == IngestConfig()
    assert settings["exact_dedup"] == DedupConfig(exact=True, fuzzy=False)
    assert settings["fuzzy_dedup"] == DedupConfig(exact=False, fuzzy=True, min_chars=0)
    assert settings["quality"] == QualityConfig()
    assert settings["clusters"] == KMeansConfig()
    assert settings["semantic_dedup"] == SemDeDupConfig()
    assert settings["diverse_subset"] == (KMQConfig(budget=1), ProbeConfig())  # 60% of 1 document
    assert settings["mixture_plan"] == MixtureConfig()
    assert settings["tokenizer"] == DEMO.tokenizer
    assert settings["shards"] == SubsetConfig(budget=DEMO.shards_budget, shards=DEMO.shards)
    assert settings["trained_model"] == DEMO.train
    assert (
        defaults["embeddings"]["batch_size"]
        == inspect.signature(embed_dataset).parameters["batch_size"].default
    )
    assert defaults["diverse_subset"]["budget"] == {"fraction": {"share": DEMO.select_fraction}}


def test_every_configurable_step_is_checked_at_the_start_of_a_run():
    assert set(_defaults()) == set(STAGE_CONFIGS)


def test_settings_with_a_fixed_set_of_values_are_enums_of_the_library_values():
    assert [m.value for m in Split] == list(SPLITS)
    assert "bands" not in ExactDedupConfig.model_fields and "verify" not in ExactDedupConfig.model_fields
    job = DEFS.resolve_job_def("materialize_subset")
    with pytest.raises(dg.DagsterInvalidConfigError, match="not in enum type Split"):
        dg.validate_run_config(job, {"ops": {"diverse_subset": {"config": {"split": "evenly"}}}})
    assert choices("Probe", ("a", "b")).a == "a"  # members are the library's strings


@pytest.mark.parametrize(
    "budget, problem",
    [
        ("tokens=lots", "Value for selector type at path root:ops:shards:config:budget must be a dict"),
        (
            {"tokens": {"count": "lots"}},
            'Value "lots" of type "<class \'str\'>" is not valid for expected type "Int"',
        ),
        ({"tokens": {"count": 5}, "fraction": {"share": 0.5}}, "You can only specify a single field"),
        ({"bytes": {"count": 5}}, 'Received unexpected config entry "bytes"'),
    ],
)
def test_the_launchpad_refuses_a_malformed_budget(budget, problem):
    """What the Launchpad checks (the schema), before anything runs."""
    job = DEFS.resolve_job_def("materialize_subset")
    with pytest.raises(dg.DagsterInvalidConfigError) as refused:
        dg.validate_run_config(job, {"ops": {"shards": {"config": {"budget": budget}}}})
    assert problem in str(refused.value)


def test_a_bad_value_stops_the_run_at_its_first_step_before_anything_is_written(tmp_path):
    """A budget of 0 tokens and a vocabulary under 257 pass the schema; the run's first
    step refuses both, in one message that lists the accepted forms, and nothing runs."""
    job = build_definitions(storage_root=str(tmp_path / "store"), device="cpu").resolve_job_def(
        "materialize_subset"
    )
    run_config = {
        "ops": {
            "shards": {"config": {"budget": {"tokens": {"count": 0}}}},
            "tokenizer": {"config": {"vocab_size": 100}},
        }
    }
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=False)
    assert not result.success
    assert result.get_asset_materialization_events() == []
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [e.step_key for e in failures] == ["diverse_subset"]  # the first step, before it reads anything
    message = failures[0].event_specific_data.error.to_string()
    assert "nothing was run" in message
    assert "shards: budget: tokens budget must be an integer >= 1, got 0" in message
    assert "{documents: {count: N}}, {tokens: {count: N}} or {fraction: {share: F}}" in message
    assert "tokenizer: vocab_size must be an integer in [257, 2**32), got 100" in message
    assert not (tmp_path / "store").exists()
