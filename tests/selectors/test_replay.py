"""Loss-ranked replay: one full pass, then only the hardest batches, resumable."""

from __future__ import annotations

import numpy as np
import pytest

from curation.selectors.replay import LossRankedReplay, ReplayConfig


def _run(replay: LossRankedReplay, steps: int, losses: np.ndarray) -> list[int]:
    seen = []
    for _ in range(steps):
        batch = replay.next_batch_id()
        replay.observe(batch, float(losses[batch]))
        seen.append(batch)
    return seen


def test_first_pass_visits_every_batch_then_replays_the_top_half():
    losses = np.arange(10, dtype=float)  # batch 9 is the hardest
    replay = LossRankedReplay(10, ReplayConfig(delta=0.5, seed=3))
    seen = _run(replay, 20, losses)
    assert sorted(seen[:10]) == list(range(10))
    assert sorted(seen[10:15]) == [5, 6, 7, 8, 9]
    assert sorted(seen[15:20]) == [5, 6, 7, 8, 9]


def test_replay_follows_the_latest_losses():
    replay = LossRankedReplay(4, ReplayConfig(delta=0.25))
    losses = np.array([1.0, 4.0, 2.0, 3.0])
    _run(replay, 4, losses)
    assert _run(replay, 1, losses) == [1]
    replay.observe(1, 0.0)  # training on batch 1 made it easy; batch 3 is now the hardest
    assert _run(replay, 1, losses) == [3]


def test_resume_gives_the_identical_stream():
    losses = np.random.default_rng(0).random(12)
    a = LossRankedReplay(12, ReplayConfig(delta=0.3, seed=1))
    _run(a, 17, losses)
    state = a.state_dict()
    expected = _run(a, 15, losses)
    b = LossRankedReplay(12, ReplayConfig(delta=0.3, seed=99))
    b.load_state_dict(state)
    assert _run(b, 15, losses) == expected


@pytest.mark.parametrize("delta", [0.0, 1.5, -1])
def test_bad_delta_is_refused(delta):
    with pytest.raises(ValueError, match="delta"):
        ReplayConfig(delta=delta)
