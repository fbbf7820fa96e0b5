"""A fastText quality classifier, trained here as DCLM trains its own (Li et al.
2024, mlfoundations/dclm baselines/train_fasttext_classifier.py): positives are
a reference set the user names, negatives a seeded sample of the pool, labels
`__label__hq` / `__label__cc`, each text on one line (newlines become spaces),
fastText's supervised defaults with word bigrams. The score is P(hq).

Training runs on one thread with a fixed seed, so the same inputs give the same
model and the same scores. DCLM trains on 200k examples per side; any size works.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

POSITIVE, NEGATIVE = "__label__hq", "__label__cc"


@dataclass(frozen=True)
class ClassifierConfig:
    """Fields (fastText's defaults, as DCLM used them, except `bucket`):
    negatives_per_positive: pool documents sampled as negatives per reference document.
    max_examples: at most this many examples per side (a seeded sample beyond it).
    dim, lr, word_ngrams, min_count: fastText's supervised settings.
    epoch: passes over the examples; None: DCLM's 5, more for small sets (see
        `schedule`): with fastText's rate, a few hundred examples seen 5 times
        teach it nothing.
    bucket: hashed n-gram rows; fastText's 2,000,000 makes a 800 MB model at dim 100.
    min_score: with a value, documents scoring below it are dropped (reason `classifier`).
    seed: the negative sample, the example order and fastText's own seed.
    """

    negatives_per_positive: float = 1.0
    max_examples: int = 200_000
    dim: int = 100
    epoch: int | None = None
    lr: float = 0.1
    word_ngrams: int = 2
    min_count: int = 1
    bucket: int = 200_000
    min_score: float | None = None
    seed: int = 0

    def __post_init__(self):
        if self.negatives_per_positive <= 0 or self.max_examples < 1:
            raise ValueError("negatives_per_positive and max_examples must be positive")
        if min(self.dim, self.epoch or 1, self.word_ngrams, self.min_count, self.bucket) < 1 or self.lr <= 0:
            raise ValueError("dim, epoch, word_ngrams, min_count, bucket and lr must be positive")

    def schedule(self, examples: int) -> tuple[int, float]:
        """(epochs, learning rate). Without `epoch`: DCLM's 5 epochs at `lr` when
        there are 4,000+ examples; smaller sets get more passes, up to 20 epochs
        and then a proportionally higher rate (at most 1.0, fastText's usual top)."""
        if self.epoch is not None:
            return self.epoch, self.lr
        passes = min(100, max(5, math.ceil(20_000 / max(examples, 1))))
        epochs = min(passes, 20)
        return epochs, min(1.0, self.lr * passes / epochs)
        if self.min_score is not None and not 0 <= self.min_score <= 1:
            raise ValueError(f"min_score {self.min_score} is not a probability")


def one_line(text: str) -> str:
    """fastText reads one example per line: DCLM joins a text's lines with spaces."""
    return " ".join(text.strip().splitlines())


class QualityClassifier:
    """fit(positives, negatives) -> score(texts) = P(positive); save(path)."""

    def __init__(self, config: ClassifierConfig | None = None):
        self.config = config or ClassifierConfig()
        self.model = None

    def fit(self, positives: Sequence[str], negatives: Sequence[str]) -> QualityClassifier:
        import fasttext

        if not positives or not negatives:
            raise ValueError(f"{len(positives)} positives and {len(negatives)} negatives: need both")
        lines = [f"{POSITIVE} {one_line(t)}" for t in positives]
        lines += [f"{NEGATIVE} {one_line(t)}" for t in negatives]
        order = np.random.default_rng(self.config.seed).permutation(len(lines))
        c = self.config
        epochs, lr = c.schedule(len(lines))
        with tempfile.TemporaryDirectory(prefix="curation-fasttext-") as tmp:
            path = os.path.join(tmp, "train.txt")
            with open(path, "w", encoding="utf-8") as handle:
                handle.writelines(lines[i] + "\n" for i in order)
            self.model = _train(fasttext, path, c, epochs, lr)
        return self

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """P(positive) of each text, float64."""
        if self.model is None:
            raise ValueError("fit the classifier first")
        if not texts:
            return np.zeros(0)
        # The list form of predict (fastText's multilinePredict) returns plain arrays.
        labels, probs = self.model.predict([one_line(t) for t in texts], k=2)
        out = np.empty(len(texts))
        for i, (names, p) in enumerate(zip(labels, probs, strict=True)):
            chance = dict(zip(names, p.tolist(), strict=True))
            out[i] = chance.get(POSITIVE, 1.0 - chance.get(NEGATIVE, 0.0))
        return np.clip(out, 0.0, 1.0)

    def save(self, path: str) -> None:
        if self.model is None:
            raise ValueError("fit the classifier first")
        self.model.save_model(path)


def load_classifier(model: bytes, config: ClassifierConfig | None = None) -> QualityClassifier:
    """A classifier from the bytes `save` wrote (fastText loads only from a file)."""
    import fasttext

    classifier = QualityClassifier(config)
    with tempfile.TemporaryDirectory(prefix="curation-fasttext-") as tmp:
        path = os.path.join(tmp, "model.bin")
        with open(path, "wb") as handle:
            handle.write(model)
        classifier.model = fasttext.load_model(path)
    return classifier


def _train(fasttext, path: str, c, epochs: int, lr: float, halvings: int = 3):
    """fastText's supervised model; a run that diverges ("Encountered NaN", a known
    fastText failure at high learning rates on small sets) is retried at half the rate."""
    # one thread: fastText's Hogwild threads race, one thread is deterministic
    settings = dict(input=path, dim=c.dim, epoch=epochs, wordNgrams=c.word_ngrams, minCount=c.min_count,
                    bucket=c.bucket, seed=c.seed, verbose=0, thread=1)  # fmt: skip
    for attempt in range(halvings):
        try:
            return fasttext.train_supervised(lr=lr / 2**attempt, **settings)
        except RuntimeError as exc:
            if "NaN" not in str(exc):
                raise
    return fasttext.train_supervised(lr=lr / 2**halvings, **settings)
