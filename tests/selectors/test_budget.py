"""The one budget syntax: the CLI's text forms, the checks, a fraction in documents."""

from __future__ import annotations

import pytest

from curation.errors import CurationError
from curation.selectors.budget import Budget


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("documents=500", Budget(documents=500)),
        ("tokens=2e6", Budget(tokens=2_000_000)),
        ("fraction=0.1", Budget(fraction=0.1)),
        ("fraction=1", Budget(fraction=1.0)),
        ("500", Budget(documents=500)),
        ("0.3", Budget(fraction=0.3)),
        (" tokens = 64 ", Budget(tokens=64)),
    ],
)
def test_budget_parses_the_long_and_short_forms(text, expected):
    assert Budget.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("docs=5", "write documents=N"),
        ("fraction=lots", "could not convert"),
        ("tokens=", "could not convert"),
        ("lots", "could not convert"),
        ("documents=2.5", "documents budget must be an integer >= 1, got 2.5"),
        ("tokens=0", "tokens budget must be an integer >= 1"),
        ("1.5", "documents budget must be an integer"),
        ("0", "documents budget must be an integer >= 1"),
        ("fraction=1.5", r"fraction budget must be in \(0, 1\]"),
    ],
)
def test_bad_budget_text_is_refused_with_the_forms(text, message):
    with pytest.raises(CurationError, match=message) as caught:
        Budget.parse(text)
    assert f"budget {text!r}" in str(caught.value) and "fraction=F" in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "exactly one of"),
        ({"documents": 5, "tokens": 9}, "exactly one of"),
        ({"documents": 0}, "documents budget must be an integer >= 1"),
        ({"tokens": 1.5}, "tokens budget"),
        ({"fraction": 0.0}, r"fraction budget must be in \(0, 1\]"),
        ({"fraction": 2}, "fraction budget"),
    ],
)
def test_bad_budget_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        Budget(**fields)


def test_amount_is_the_budget_in_its_unit():
    assert Budget(documents=7).amount(100) == 7
    assert Budget(tokens=900).amount(100) == 900
    assert Budget(fraction=0.25).amount(848) == 212
    assert Budget(fraction=0.6).amount(7) == 4  # nearest whole number
    assert Budget(fraction=0.01).amount(10) == 1  # never nothing
    assert Budget(fraction=1.0).amount(5) == 5
