"""Each heuristic rule on hand-made documents at its threshold: the signal's
exact value, and the rule passing at the threshold and failing just past it."""

from __future__ import annotations

import pytest

from curation.selectors.quality import (
    C4Rules,
    GopherQuality,
    GopherRepetition,
    QualityConfig,
    RuleSet,
    first_failed,
    measure,
    signal,
)

QUALITY = {r.reason: r for r in GopherQuality().rules()}
REPETITION = {r.reason: r for r in GopherRepetition().rules()}
C4 = {r.reason: r for r in C4Rules().rules()}
FILLER = ("river", "stone", "north", "lamp", "glass", "field", "window", "garden", "paper", "music")


def words(n: int, start: int = 0) -> list[str]:
    """n distinct-looking words: FILLER words with a counter (no repeated n-grams)."""
    return [f"{FILLER[(start + i) % len(FILLER)]}{start + i}" for i in range(n)]


def verdict(text: str, rule) -> tuple[float, bool]:
    """(the rule's signal, whether the document passes the rule)."""
    values = measure([text])
    return float(signal(values, rule.signal)[0]), first_failed(values, [rule])[0] == ""


def test_word_count_bounds():
    rule_min, rule_max = QUALITY["gopher_too_few_words"], QUALITY["gopher_too_many_words"]
    assert verdict(" ".join(words(50)), rule_min) == (50, True)
    assert verdict(" ".join(words(49)), rule_min) == (49, False)
    assert verdict(" ".join(["word"] * 100_000), rule_max) == (100_000, True)
    assert verdict(" ".join(["word"] * 100_001), rule_max) == (100_001, False)
    assert verdict("  spaced\u00a0out\tby\u3000unicode\nwhitespace ", rule_min)[0] == 5  # str.split() words


def test_mean_word_length_bounds():
    low, high = QUALITY["gopher_short_words"], QUALITY["gopher_long_words"]
    assert verdict("cat " * 60, low) == (3.0, True)
    assert verdict("cat " * 59 + "at", low)[1] is False
    assert verdict("abcdefghij " * 60, high) == (10.0, True)
    assert verdict("abcdefghij " * 59 + "abcdefghijk", high)[1] is False


def test_hash_and_ellipsis_ratios():
    hashes, dots = QUALITY["gopher_hash_ratio"], QUALITY["gopher_ellipsis_ratio"]
    body = words(90)
    assert verdict(" ".join(body + ["#tag"] * 10), hashes) == (0.1, True)
    assert verdict(" ".join(body + ["#tag"] * 9 + ["##"]), hashes)[1] is False  # 11 '#' in 100 words
    assert verdict(" ".join(body + ["so..."] * 10), dots) == (0.1, True)
    assert verdict(" ".join(body + ["so..."] * 9 + ["so\u2026", "x...."]), dots)[1] is False  # … counts too


def test_bullet_and_ellipsis_lines():
    bullets, trailing = QUALITY["gopher_bullet_lines"], QUALITY["gopher_ellipsis_lines"]
    lines = [f"- item {w}" for w in words(9)] + ["plain line"]
    assert verdict("\n".join(lines), bullets) == (0.9, True)
    assert verdict("\n".join(["  \u2022 item"] * 10), bullets) == (1.0, False)  # after whitespace
    lines = [f"{w} and so on..." for w in words(3)] + [f"{w} ends" for w in words(7)]
    assert verdict("\n".join(lines), trailing) == (0.3, True)
    lines = [f"{w} and so on\u2026  " for w in words(4)] + [f"{w} ends" for w in words(6)]
    assert verdict("\n".join(lines), trailing) == (0.4, False)


def test_alphabetic_words_and_stop_words():
    alpha, stop = QUALITY["gopher_alpha_words"], QUALITY["gopher_stop_words"]
    assert verdict(" ".join(words(80) + ["1999"] * 20), alpha) == (0.8, True)
    assert verdict(" ".join(words(79) + ["42!"] * 21), alpha)[1] is False
    assert verdict(" ".join([*words(48), "the", "of"]), stop) == (2, True)
    assert verdict(" ".join(words(48) + ["the"] * 5), stop) == (1, False)  # distinct words count
    assert verdict(" ".join([*words(48), "The", "Of", "the,"]), stop) == (0, False)  # exact, case-sensitive


def test_duplicate_lines_and_paragraphs():
    para, para_chars = REPETITION["gopher_dup_para_frac"], REPETITION["gopher_dup_para_char_frac"]
    line, line_chars = REPETITION["gopher_dup_line_frac"], REPETITION["gopher_dup_line_char_frac"]
    unique = [f"{a} {b}" for a, b in zip(words(6), words(6, 100), strict=True)]
    text = "\n".join([*unique, "repeat me", "repeat me", "repeat me", "repeat me"])  # 3 later copies in 10
    assert verdict(text, line) == (0.3, True)
    assert verdict(text + "\nrepeat me", line)[1] is False  # 4 of 11
    text = "\n\n".join([*unique, "same para", "same para", "same para", "same para"])
    assert verdict(text, para) == (0.3, True)
    assert verdict("\n\n\n".join([*unique, *["same para"] * 5]), para)[1] is False
    block = "x" * 20
    text = "\n".join(["y" * 58, block, block])  # 20 of 100 characters repeat an earlier line
    assert verdict(text, line_chars) == (0.2, True)
    assert verdict("\n".join(["y" * 57, block, block]), line_chars)[1] is False
    text = "\n\n".join(["y" * 56, block, block])
    assert verdict(text, para_chars) == (0.2, True)
    assert verdict("\n\n".join(["y" * 55, block, block]), para_chars)[1] is False


def test_top_ngram_fraction():
    rule = REPETITION["gopher_top_2gram"]
    # "ab cd" (5 characters) four times: 20 characters of a 100-character text
    text = " ".join(["ab cd"] * 4) + " " + "z" * 76
    assert verdict(text, rule) == (0.2, True)
    assert verdict(" ".join(["ab cd"] * 4) + " " + "z" * 75, rule)[1] is False


def test_duplicate_ngrams_count_overlaps_once():
    rule = REPETITION["gopher_dup_5gram"]
    # a b c d e f a b c d e: the 5-grams "a b c d e" and ... repeat; words a-e are
    # covered twice, f never: 10 of 11 one-letter words
    value, ok = verdict("a b c d e f a b c d e", rule)
    assert value == pytest.approx(10 / 11) and not ok
    unique = words(30)
    chars = sum(map(len, unique))
    repeated = ["aaaa", "bbbb", "cccc", "dddd", "eeee"]
    text = " ".join([*repeated, *unique, *repeated])
    value, _ = verdict(text, rule)
    assert value == pytest.approx(40 / (chars + 40))  # both copies counted, each word once


def test_c4_sentences_and_line_rules():
    rule = C4["c4_too_few_sentences"]
    good = [f"{w} is a fine line here." for w in words(3)]
    assert verdict("\n".join(good), rule) == (3, True)
    dropped = [
        "Too few words here.",  # 4 words
        "No end mark on this line",
        "This line trails off into dots...",
        "This line says javascript is needed here.",
        "This web site uses cookies for many things.",
    ]
    assert verdict("\n".join([*good[:2], *dropped]), rule) == (2, False)
    assert verdict("One here. Two here! Three here? All in line.", rule) == (4, True)
    assert verdict("\n".join([*good[:2], "A cited line ends with a mark.[1][edit]"]), rule)[1]


def test_c4_lorem_ipsum_and_curly_bracket_only_in_kept_lines():
    lorem, curly = C4["c4_lorem_ipsum"], C4["c4_curly_bracket"]
    assert verdict("This page holds Lorem Ipsum dolor sit amet.", lorem) == (1, False)
    assert verdict("This page holds lorem ipsum dolor sit amet", lorem) == (0, True)  # no end mark
    assert verdict("Code such as { x } belongs elsewhere now.", curly) == (1, False)
    assert verdict("Enable javascript to see { x } here now.", curly) == (0, True)  # line removed first


def test_rule_sets_per_source():
    assert RuleSet.parse("code") == RuleSet(gopher_quality=None, c4=None)
    assert RuleSet.parse("c4,gopher_quality").gopher_repetition is None
    with pytest.raises(ValueError, match="preset"):
        RuleSet.parse("gopher")
    rules = QualityConfig.parse_rules(["docs=c4", "none"])
    config = QualityConfig(rules=rules)
    assert config.rules_for("docs").c4 is not None and config.rules_for("docs").gopher_quality is None
    assert config.rules_for("code").gopher_repetition is not None  # the default code preset stays
    assert config.rules_for("anything").rules() == []
