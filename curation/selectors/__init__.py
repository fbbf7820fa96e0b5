"""Selectors: pure functions and classes that decide what to keep and how to weigh it."""
