"""Cleaning: the compiled batch path must equal the plain-Python recipe exactly."""

from __future__ import annotations

import string
import sysconfig
import unicodedata
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.selectors.dedup import clean as clean_module
from curation.selectors.dedup import clean_text, content_chars, shingle_set
from curation.selectors.dedup.clean import WHITESPACE, Cleaner, clean_batch, short_length

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def test_whitespace_table_is_python_isspace():
    assert sorted(WHITESPACE) == [c for c in range(0x110000) if chr(c).isspace()]


def test_clean_text_follows_the_recipe():
    text = "  Hello,\tWORLD!!  It's\n\n  a   test...  "
    assert clean_text(text) == "hello world its a test"
    assert content_chars(text) == len("HelloWORLDItsatest")


def test_nfc_applies_before_cleaning():
    decomposed = "Cafe\u0301 au lait"  # e + combining acute
    assert clean_text(decomposed) == "caf\u00e9 au lait"
    assert content_chars(decomposed) == len("Caf\u00e9aulait")


def test_shingles_are_character_ngrams_of_the_cleaned_text():
    assert shingle_set("A b, C d!", ngram=3) == {"a b", " b ", "b c", " c ", "c d"}
    assert shingle_set("Hi!", ngram=13) == {"hi"}  # shorter than n: the whole text
    assert shingle_set("", ngram=13) == {""}


def _stdlib_texts(limit: int) -> list[str]:
    texts = []
    for path in sorted(STDLIB.glob("*.py"))[:limit]:
        texts.append(path.read_text(encoding="utf-8", errors="replace"))
    return texts


EDGE_CASES = [
    "",
    "   \t\n ",
    "\u0130stanbul \u039f\u0394\u039f\u03a3 ",  # expands under lower(); final sigma
    "x\u2003y\u0085z\u00a0w\x1c\x1dv\u3000u",  # Unicode and C0 whitespace
    "Kelvin \u212a, e\u0301t\u00e9, \ufb01 ligature",
    "emoji \U0001f600\U0001f601 -- \u00bfqu\u00e9?",
    "a" * 5 + "!" * 5 + "B" * 5,
    "\u0130ZM\u0130R \u00c7ALI\u015eMA",  # U+0130 lowered by the kernel (no sigma)
    "\u039f\u0394\u039f\u03a3 \u03a3\u039f\u03a6\u0399\u0391\u03a3",  # final and inner sigma
    "nul\x00byte and \ufffd replacement",
]


def test_kernel_lowercase_matches_python_for_every_code_point():
    cased = [chr(c) for c in range(0x80, 0x110000) if chr(c).lower() != chr(c) and c != 0x3A3]
    text = " ".join(cased)
    _check_batch([text, text.upper()])


def _check_batch(texts: list[str]) -> None:
    batch = clean_batch(pa.array(texts))
    for i, text in enumerate(texts):
        assert batch.text(i) == clean_text(text), repr(text[:60])
        assert batch.content_chars[i] == content_chars(text), repr(text[:60])


def test_batch_equals_reference_on_real_and_edge_texts():
    _check_batch(_stdlib_texts(60) + EDGE_CASES)


def test_batch_handles_sliced_and_large_string_arrays():
    texts = _stdlib_texts(8) + EDGE_CASES
    batch = clean_batch(pa.array(texts, type=pa.large_string()).slice(3))
    for i, text in enumerate(texts[3:]):
        assert batch.text(i) == clean_text(text)


def test_fingerprint_is_of_the_cleaned_text():
    batch = clean_batch(pa.array(["Hello, World", "hello   world!", "hello worlds"]))
    assert (batch.digest_lo[0], batch.digest_hi[0]) == (batch.digest_lo[1], batch.digest_hi[1])
    assert batch.digest_lo[0] != batch.digest_lo[2]
    assert batch.digest_hi[0] != batch.digest_hi[2]


def test_null_text_is_an_error():
    with pytest.raises(ValueError, match="null"):
        clean_batch(pa.array(["a", None]))


UNICODE_PIECES = [
    "\u0130",
    "\u03a3",
    "\u00e9",
    "e\u0301",
    "\u2003",
    "\u0085",
    "\x1c",
    "\u212a",
    "\U0001f600",
    "\u0301",
    "\u0323",
    "\u0344",
    "\u0958",
    "\u212b",
    "\u1100",
    "\u1161",
    "\u11a8",
    "\uac00",
    "\u0b47",
    "\u0b3e",
    "\u0e33",
    "\u01d5",
    "\ufb2c",
    "\u2019",
    "\u00a9",
    "\u0410",
]  # marks, excluded and singleton forms, Hangul jamo, pairs that compose, safe letters
PIECES = st.sampled_from(
    [*string.ascii_letters, *string.digits, *string.punctuation, " ", "\t", "\n", *UNICODE_PIECES]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(PIECES, max_size=60).map("".join), min_size=1, max_size=8))
def test_batch_equals_reference_on_generated_text(texts):
    _check_batch(texts)


# The reference (Cerebras modelzoo, SlimPajama preprocessing/filter.py) drops a
# document when len(clean(doc)) < 200, where clean() keeps one space between
# words; its normalize_text.py runs ftfy.fix_text(doc, normalization="NFC").

MOJIBAKE = "It\u00e2\u20ac\u2122s a caf\u00c3\u00a9"  # "It\u2019s a café" read as Windows-1252


def test_short_length_counts_content_by_default_and_the_reference_count_on_request():
    text = "  Hello,\tWORLD!!  It's\n\n  a   test...  "
    assert short_length(text) == content_chars(text) == len("HelloWORLDItsatest")
    assert short_length(text, rule="cleaned") == len("hello world its a test")


def test_ftfy_repairs_text_before_cleaning():
    assert clean_text(MOJIBAKE) != clean_text("It\u2019s a caf\u00e9")
    assert clean_text(MOJIBAKE, normalize="ftfy") == clean_text("It\u2019s a caf\u00e9", normalize="ftfy")
    assert clean_text("\ufb01ne", normalize="ftfy") == "fine"  # ftfy's ligature fix; NFC keeps the ligature
    assert clean_text("\ufb01ne") == "\ufb01ne"


def test_ftfy_batch_equals_reference():
    texts = _stdlib_texts(10) + EDGE_CASES + [MOJIBAKE, "a&amp;b\r\nc \uff21\uff22"]
    batch = Cleaner(normalize="ftfy")(pa.array(texts))
    for i, text in enumerate(texts):
        assert batch.text(i) == clean_text(text, normalize="ftfy"), repr(text[:60])
        assert batch.lengths[i] == short_length(text, "cleaned", "ftfy"), repr(text[:60])
        assert batch.content_chars[i] == short_length(text, "content", "ftfy"), repr(text[:60])


def test_unknown_normalization_is_an_error():
    with pytest.raises(ValueError, match="normalize"):
        Cleaner(normalize="nfkc")


# The kernel sends a text to Python only when it holds a code point that the
# table marks; these tests check that an unmarked code point never changes
# under NFC, whatever comes before it, so skipping Python for them is exact.


def _canonical_pairs() -> list[tuple[int, int]]:
    pairs = []
    for c in range(0x110000):
        parts = unicodedata.decomposition(chr(c)).split()
        if len(parts) == 2 and not parts[0].startswith("<"):
            pairs.append((int(parts[0], 16), int(parts[1], 16)))
    return pairs


def test_unmarked_code_points_are_stable_under_nfc():
    unsure = clean_module._unsure_table()
    pairs = _canonical_pairs()
    assert not any(unsure[b] == 0 for _, b in pairs if b < unsure.size)  # never completes a pair
    for c in range(unsure.size):
        if unsure[c] or 0xD800 <= c < 0xE000:
            continue
        ch = chr(c)
        assert unicodedata.combining(ch) == 0 and unicodedata.is_normalized("NFC", ch), hex(c)
    # Hangul: a leading consonant (or LV syllable) composes with what follows only if it is marked.
    for lead in ("\u1100", "\uac00"):
        for c in range(0x1100, 0x1200):
            if not unsure[c]:
                assert unicodedata.is_normalized("NFC", lead + chr(c)), hex(c)
    assert (ord("e"), 0x301) in pairs and unsure[0x301] == 1  # e + acute composes: the acute is marked
    assert unsure[0x3A3] == 1  # capital sigma goes to Python for lower()


def test_a_long_text_with_one_mark_is_normalised_around_it():
    prose = (STDLIB / "textwrap.py").read_text(encoding="utf-8") * 4
    texts = [
        prose + " Cafe\u0301 " + prose,  # not NFC: the mark composes with the e
        prose + " \u0627\u0653 " + prose,  # Arabic alef + maddah: NFC composes them
        prose + " x\u0653 " + prose,  # a mark that composes with nothing here: already NFC
        "\u0301" + prose[:300] + "\u1100\u1161",  # a mark first, jamo that compose last
        prose[:500] + " \u039f\u0394\u039f\u03a3 " + "Cafe\u0301",  # sigma and a mark
    ]
    _check_batch(texts)


def test_a_repaired_text_that_outgrows_its_slots_goes_after_the_batch(monkeypatch):
    fixed_text = clean_module._fixed_text

    def longer(data, start, end):  # NFC never outgrows a text; make one that does
        fixed, added = fixed_text(data, start, end)
        return (fixed or data[start:end].tobytes()) * 3, added

    monkeypatch.setattr(clean_module, "_fixed_text", longer)
    texts = ["plain ascii text", "Cafe\u0301 au lait", "more plain text", "x\u0301y"]
    batch = Cleaner()(pa.array(texts))
    assert batch.text(0) == "plain ascii text" and batch.text(2) == "more plain text"
    assert batch.text(1) == clean_text(("Cafe\u0301 au lait") * 3)
    assert batch.text(3) == clean_text("x\u0301y" * 3)
