"""Dagster: assets, resources, checks and jobs. Thin wrappers over library calls."""
