"""Where work runs: in process (local) or on a Ray cluster (ray).

    from curation.engine import get_engine

    with get_engine("ray", ray_address=None) as engine:   # None: a Ray for this process
        decisions = engine.dedup("data/documents", DedupConfig())

See `Engine` for the stages and `stages` for the report-returning wrappers
the CLI and Dagster call. Ray is an optional extra: pip install 'curation[ray]'.
"""

from curation.engine.base import ENGINES, RAY_MISSING, Engine, get_engine, require_ray
from curation.engine.local import LocalEngine

__all__ = ["ENGINES", "RAY_MISSING", "Engine", "LocalEngine", "get_engine", "require_ray"]
