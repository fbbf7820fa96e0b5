"""curation: curate and select training data, from raw corpora to training shards."""

__version__ = "0.1.0"
