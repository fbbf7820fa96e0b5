"""Where work runs: in process (local) or on a Ray cluster."""
