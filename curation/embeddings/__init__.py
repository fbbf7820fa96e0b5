"""Encoders and FAISS clustering (GPU when the device allows)."""
