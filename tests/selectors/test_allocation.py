"""The one budget allocator: capped proportional shares, whole by largest remainder."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from curation.selectors.allocation import allocate


@given(
    available=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=8),
    # 0 or well above subnormal floats, where relative precision is lost.
    raw_weights=st.lists(
        st.one_of(st.just(0.0), st.floats(min_value=1e-9, max_value=1.0)), min_size=8, max_size=8
    ),
    total=st.integers(min_value=0, max_value=50_000),
)
def test_allocation_is_capped_complete_and_proportional(available, raw_weights, total):
    avail = np.array(available, dtype=np.float64)
    weights = np.array(raw_weights[: len(available)])
    alloc = allocate(total, weights, avail, whole=False)
    usable = avail * (weights > 0)
    assert np.all(alloc <= avail + 1e-6) and np.all(alloc >= 0)
    assert alloc.sum() == pytest.approx(min(total, usable.sum()), abs=1e-6)
    uncapped = (alloc < avail - 1e-6) & (weights > 0)
    if uncapped.sum() >= 2:  # sources with room left are shared strictly by weight
        ratio = alloc[uncapped] / weights[uncapped]
        assert np.allclose(ratio, ratio[0], rtol=1e-6)
    whole = allocate(total, weights, avail.astype(np.int64))
    assert whole.sum() == min(total, int(usable.sum())) and np.all(whole <= avail)
    assert np.all(whole[weights == 0] == 0)
    assert np.all(np.abs(whole - alloc) < 1 + 1e-9)


def test_a_full_group_gives_its_surplus_to_the_others_by_weight():
    assert allocate(10, np.array([1.0, 1.0, 2.0]), np.array([1, 100, 100])).tolist() == [1, 3, 6]
    assert allocate(10, np.array([1.0, 1.0, 2.0]), np.array([1, 100, 100]), whole=False).tolist() == [1, 3, 6]


def test_remainders_go_to_the_largest_then_the_earlier_group():
    assert allocate(2, np.ones(3), np.full(3, 9)).tolist() == [1, 1, 0]
    assert allocate(4, np.array([1.0, 2.0, 2.0]), np.full(3, 9)).tolist() == [1, 2, 1]


def test_at_least_one_each_then_remainders_by_what_flooring_lost():
    # exact shares 2.7, 2.7, 0.9, 0.7: floors 2, 2, 0, 0 raised to 1, the last unit to the 0.9
    sizes = np.array([27, 27, 9, 7])
    assert allocate(7, sizes, sizes, at_least=1).tolist() == [2, 2, 2, 1]
    assert allocate(7, sizes, sizes).tolist() == [3, 3, 1, 0]


def test_at_least_more_than_the_total_takes_back_from_the_largest_later_first():
    sizes = np.array([5, 5, 1])
    assert allocate(2, sizes, sizes, at_least=1).tolist() == [1, 1, 0]
    assert allocate(3, np.array([10, 1, 1]), np.array([10, 1, 1]), at_least=1).tolist() == [1, 1, 1]


def test_nothing_to_give_gives_zeros():
    assert allocate(0, np.ones(3), np.full(3, 5), at_least=1).tolist() == [0, 0, 0]
    assert allocate(5, np.ones(3), np.zeros(3)).tolist() == [0, 0, 0]
