"""Encoders (static, MiniLM, hashed) and FAISS clustering (GPU when the device allows)."""

from curation.embeddings.cluster import (
    ClusteredDocuments,
    ClusterReport,
    Clusters,
    KMeansConfig,
    KMeansModel,
    assign,
    assign_embeddings,
    auto_k,
    choose_k,
    cluster_embeddings,
    fit_kmeans,
    k_candidates,
    load_clustered,
    matching_store,
    read_clusters,
)
from curation.embeddings.encoders import Encoder, HashedEncoder, MiniLMEncoder, normalize_rows
from curation.embeddings.static import DistillSettings, StaticEncoder, static_model_path
from curation.embeddings.store import EmbeddingStore, EmbedReport, embed_dataset

__all__ = [
    "ClusterReport",
    "ClusteredDocuments",
    "Clusters",
    "DistillSettings",
    "EmbedReport",
    "EmbeddingStore",
    "Encoder",
    "HashedEncoder",
    "KMeansConfig",
    "KMeansModel",
    "MiniLMEncoder",
    "StaticEncoder",
    "assign",
    "assign_embeddings",
    "auto_k",
    "choose_k",
    "cluster_embeddings",
    "embed_dataset",
    "fit_kmeans",
    "k_candidates",
    "load_clustered",
    "matching_store",
    "normalize_rows",
    "read_clusters",
    "static_model_path",
]
