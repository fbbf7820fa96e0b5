"""The engine resource: one engine per run, handed to every heavy asset. On Ray,
joined through dagster-ray's LocalRay, the assets write the local run's bytes."""

from __future__ import annotations

import shutil
import tempfile

import dagster as dg
import pytest

from curation.errors import CurationError
from curation.pipelines.definitions import ASSETS
from curation.pipelines.resources import ExecutionEngine, StorageRoot
from tests.pipelines.helpers import metadata_by_asset, resources
from tests.storage.shard_helpers import write_documents

CHAIN = ["embeddings", "clusters"]
SMALL = {"embeddings": {"config": {"encoder": "hashed"}}, "clusters": {"config": {"k": 6}}}


def test_engine_resource_checks_its_settings():
    with pytest.raises(CurationError, match="unknown engine"):
        ExecutionEngine(kind="spark").check()
    with pytest.raises(CurationError, match="needs kind ray"):
        ExecutionEngine(ray=StorageRoot()).check()
    with pytest.raises(CurationError, match="only inside a Dagster run"):
        ExecutionEngine().get()


def test_a_bad_engine_fails_the_run_before_any_asset(tmp_path):
    write_documents(tmp_path / "store" / "quality", {"a": 20})
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            ASSETS, selection=CHAIN, instance=instance, run_config={"ops": SMALL}, raise_on_error=False,
            resources={**resources(tmp_path / "store"), "engine": ExecutionEngine(kind="spark")},
        )  # fmt: skip
    assert not result.success
    assert not (tmp_path / "store" / "embeddings").exists()


def _materialize(root, engine: ExecutionEngine) -> tuple[dict, dict[str, bytes], list[str]]:
    """Metadata, output manifests and the engine's log lines of one run of the chain."""
    for name in CHAIN:
        shutil.rmtree(root / name, ignore_errors=True)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            ASSETS, selection=CHAIN, instance=instance, run_config={"ops": SMALL},
            resources={**resources(root), "engine": engine},
        )  # fmt: skip
        logs = [e.user_message for e in instance.all_logs(result.run_id) if "engine: " in e.user_message]
    assert result.success
    manifests = {name: (root / name / "manifest.json").read_bytes() for name in CHAIN}
    return metadata_by_asset(result), manifests, logs


def test_embeddings_and_clusters_on_local_ray_match_the_local_run(tmp_path):
    ray = pytest.importorskip("ray")
    dagster_ray = pytest.importorskip("dagster_ray")
    root = tmp_path / "store"
    write_documents(root / "quality", {"a": 150, "b": 50})
    local, local_manifests, _ = _materialize(root, ExecutionEngine())
    temp = tempfile.mkdtemp(prefix="curation-ray-")  # Ray's socket paths must stay short
    options = {"num_cpus": 2, "include_dashboard": False, "_temp_dir": temp}
    try:
        engine = ExecutionEngine(kind="ray", ray=dagster_ray.LocalRay(ray_init_options=options))
        on_ray, ray_manifests, logs = _materialize(root, engine)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert not ray.is_initialized()  # LocalRay shut its Ray down after the run
    assert ray_manifests == local_manifests
    for name in CHAIN:
        assert local[name]["engine"].value == "local (1 worker)"
        assert on_ray[name]["engine"].value == "ray (local Ray: 2 CPU)"
    assert logs == ["engine: ray (local Ray: 2 CPU)"]  # one engine served the whole run
