"""One local Ray (2 CPUs, no dashboard, temp files under pytest's temp dir) for
every test in this folder, shut down after the last of them."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def ray_engine(tmp_path_factory):
    ray = pytest.importorskip("ray")
    from curation.engine import get_engine

    assert not ray.is_initialized()
    engine = get_engine("ray", num_cpus=2, temp_dir=str(tmp_path_factory.mktemp("ray")))
    try:
        yield engine
    finally:
        engine.close()
    assert not ray.is_initialized()
