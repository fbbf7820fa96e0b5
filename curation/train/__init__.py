"""The bundled PyTorch training loop that consumes shards."""
