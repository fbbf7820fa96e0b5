"""Where per-part work runs: in process (local) or on a Ray cluster (ray).

    from curation.engine import get_engine

    with get_engine("ray", ray_address=None) as engine:   # None: a Ray for this process
        embed_dataset("data/documents", "data/embeddings", encoder, engine=engine)

Every heavy stage takes `engine=`; see `Engine.map` and `Engine.frame`.
Ray is an optional extra: pip install 'curation[ray]'.
"""

from curation.engine.base import (
    ENGINES,
    RAY_MISSING,
    Engine,
    Frame,
    engine_for,
    get_engine,
    local_default,
    require_ray,
)
from curation.engine.local import LocalEngine, LocalFrame

__all__ = [
    "ENGINES",
    "RAY_MISSING",
    "Engine",
    "Frame",
    "LocalEngine",
    "LocalFrame",
    "engine_for",
    "get_engine",
    "local_default",
    "require_ray",
]
