"""run_dedup end to end on real text (Python standard library sources)."""

from __future__ import annotations

import io
import sysconfig
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.selectors.dedup import DedupConfig, run_dedup, shingle_set, summarize_decisions

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def jaccard(a: str, b: str) -> float:
    x, y = shingle_set(a), shingle_set(b)
    return len(x & y) / len(x | y)


def real_chunks(count: int, size: int = 2500) -> list[str]:
    """Distinct pieces of stdlib modules, past their license headers."""
    chunks: list[str] = []
    for path in sorted(STDLIB.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if len(text) < size + 1500:
            continue
        chunk = text[1500 : 1500 + size]
        if all(jaccard(chunk, other) < 0.3 for other in chunks):
            chunks.append(chunk)
        if len(chunks) == count:
            return chunks
    raise AssertionError("not enough stdlib text")


def edit_words(text: str, rng: np.random.Generator, words: int) -> str:
    """Change a few words, the way an edited copy of a page differs."""
    tokens = text.split(" ")
    candidates = [i for i, t in enumerate(tokens) if len(t) >= 4 and t.isalpha()]
    for i in rng.choice(candidates, size=words, replace=False):
        tokens[i] = tokens[i][::-1] + "x"
    return " ".join(tokens)


def table(rows: list[tuple[str, str, str]]) -> pa.Table:
    ids, sources, texts = zip(*rows, strict=True) if rows else ((), (), ())
    return pa.table(
        {"id": list(ids), "source": list(sources), "text": list(texts)},
        schema=pa.schema([("id", pa.string()), ("source", pa.string()), ("text", pa.string())]),
    )


def dedup(t: pa.Table, tmp_path, batch_rows: int = 16, **config) -> pa.Table:
    return run_dedup(lambda: iter(t.to_batches(max_chunksize=batch_rows)), DedupConfig(**config), tmp_path)


def by_id(decisions: pa.Table) -> dict[str, dict]:
    return {row["id"]: row for row in decisions.to_pylist()}


@pytest.fixture(scope="module")
def chunks() -> list[str]:
    return real_chunks(40)


def check_accounting(t: pa.Table, decisions: pa.Table) -> None:
    assert decisions.column("id").to_pylist() == t.column("id").to_pylist()
    kept = decisions.column("kept").to_pylist()
    rows = by_id(decisions)
    assert sum(kept) + kept.count(False) == t.num_rows
    for row in rows.values():
        if row["cluster"] is not None:
            assert rows[row["cluster"]]["kept"], row  # every group points at its kept doc
        if row["kept"] and row["cluster"] is not None:
            assert row["cluster"] == row["id"]
            assert row["reason"] == "representative"
        if not row["kept"]:
            assert row["reason"] in ("too_short", "exact_duplicate", "near_duplicate")


def test_planted_near_duplicates_are_found_and_unrelated_kept(chunks, tmp_path):
    rng = np.random.default_rng(0)
    rows = [(f"doc{i:03d}", "web", text) for i, text in enumerate(chunks)]
    copies = {}
    for i in range(0, 20, 2):
        edited = edit_words(chunks[i], rng, words=3)
        assert 0.85 < jaccard(edited, chunks[i]) < 1.0
        copies[f"edit{i:03d}"] = f"doc{i:03d}"
        rows.append((f"edit{i:03d}", "web", edited))
    t = table(rows)
    decisions = dedup(t, tmp_path)
    check_accounting(t, decisions)
    rows_by_id = by_id(decisions)
    for copy, original in copies.items():
        assert rows_by_id[copy]["cluster"] == rows_by_id[original]["cluster"] == original
        assert rows_by_id[copy]["reason"] == "near_duplicate"
        assert rows_by_id[copy]["stage"] == "fuzzy"
        assert rows_by_id[original]["reason"] == "representative"
    for i in range(20, 40):
        row = rows_by_id[f"doc{i:03d}"]
        assert (row["kept"], row["reason"], row["cluster"]) == (True, "unique", None)


def test_exact_duplicates_differ_only_after_cleaning(chunks, tmp_path):
    base = chunks[0]
    variants = [base.upper(), "  " + base.replace(" ", "   ") + "\n", base.replace(".", "!")]
    rows = [("b", "s", base)] + [(f"c{i}", "s", v) for i, v in enumerate(variants)]
    rows.append(("a", "s", variants[0]))  # smallest id: kept
    rows.append(("z", "s", chunks[1]))
    decisions = by_id(dedup(table(rows), tmp_path))
    assert decisions["a"]["kept"] and decisions["a"]["reason"] == "representative"
    for doc in ("b", "c0", "c1", "c2"):
        assert decisions[doc]["reason"] == "exact_duplicate"
        assert decisions[doc]["stage"] == "exact"
        assert decisions[doc]["cluster"] == "a"
    assert decisions["z"]["reason"] == "unique"


def test_short_filter_counts_characters_without_punctuation_or_spaces(tmp_path):
    words = "".join(chr(ord("a") + i % 26) for i in range(199))
    rows = [
        ("short", "s", " ".join(words) + "!!! ... ???" * 30),  # 199 content characters
        ("enough", "s", words + "q"),  # 200
        ("empty", "s", ""),
    ]
    decisions = by_id(dedup(table(rows), tmp_path))
    assert (decisions["short"]["stage"], decisions["short"]["reason"]) == ("short", "too_short")
    assert not decisions["short"]["kept"] and not decisions["empty"]["kept"]
    assert decisions["enough"]["kept"]
    assert by_id(dedup(table(rows), tmp_path, min_chars=0))["short"]["kept"]


def test_global_and_local_differ_exactly_on_cross_source_duplicates(chunks, tmp_path):
    rng = np.random.default_rng(1)
    rows = [
        ("a1", "A", chunks[0]),
        ("a2", "A", edit_words(chunks[0], rng, 2)),  # near dup inside A
        ("b1", "B", chunks[1]),
        ("b2", "B", chunks[1]),  # exact dup inside B
        ("b3", "B", edit_words(chunks[2], rng, 2)),  # near dup of a3, across sources
        ("a3", "A", chunks[2]),
        ("b4", "B", chunks[3]),  # exact dup of a4, across sources
        ("a4", "A", chunks[3]),
        ("a5", "A", chunks[4]),
        ("b5", "B", chunks[5]),
    ]
    t = table(rows)
    glob = by_id(dedup(t, tmp_path, mode="global"))
    local = by_id(dedup(t, tmp_path, mode="local"))
    dropped_global = {k for k, r in glob.items() if not r["kept"]}
    dropped_local = {k for k, r in local.items() if not r["kept"]}
    assert dropped_local == {"a2", "b2"}
    assert dropped_global - dropped_local == {"b3", "b4"}
    assert glob["b4"]["reason"] == "exact_duplicate" and glob["b3"]["reason"] == "near_duplicate"
    assert local["b3"]["reason"] == local["a3"]["reason"] == "unique"


def test_keep_rule_smallest_id_or_preferred_source(chunks, tmp_path):
    rng = np.random.default_rng(2)
    rows = [
        ("m", "forum", chunks[0]),
        ("k", "wiki", edit_words(chunks[0], rng, 2)),
        ("x", "books", chunks[0]),
    ]
    default = by_id(dedup(table(rows), tmp_path))
    assert [r["id"] for r in default.values() if r["kept"]] == ["k"]
    preferred = by_id(dedup(table(rows), tmp_path, source_priority=("books", "forum")))
    assert [r["id"] for r in preferred.values() if r["kept"]] == ["x"]
    assert preferred["m"]["reason"] == "exact_duplicate" and preferred["m"]["cluster"] == "x"


def test_same_input_same_bytes_whatever_the_batching(chunks, tmp_path):
    rng = np.random.default_rng(3)
    rows = [(f"d{i:02d}", f"s{i % 3}", c) for i, c in enumerate(chunks)]
    rows += [(f"e{i:02d}", "s0", edit_words(chunks[i], rng, 3)) for i in range(0, 40, 3)]
    rows += [(f"x{i:02d}", "s1", chunks[i]) for i in range(0, 40, 5)]
    t = table(rows)

    def parquet_bytes(decisions: pa.Table) -> bytes:
        sink = io.BytesIO()
        pq.write_table(decisions, sink)
        return sink.getvalue()

    first = dedup(t, tmp_path, batch_rows=7)
    again = dedup(t, tmp_path, batch_rows=7)
    assert parquet_bytes(first) == parquet_bytes(again)
    split = dedup(t, tmp_path, batch_rows=1000, batch_chars=6000, bands_per_pass=1, num_threads=1)
    assert parquet_bytes(first) == parquet_bytes(split)
    check_accounting(t, first)
    assert first.schema.names == ["id", "source", "stage", "kept", "reason", "cluster"]
    assert not any(p.name.startswith("dedup-") for p in tmp_path.iterdir())  # cleaned up


def test_stages_can_be_switched_off(chunks, tmp_path):
    rng = np.random.default_rng(4)
    rows = [("a", "s", chunks[0]), ("b", "s", chunks[0]), ("c", "s", chunks[1])]
    rows.append(("d", "s", edit_words(chunks[1], rng, 2)))
    rows.append(("e", "s", "too short"))
    t = table(rows)
    no_exact = by_id(dedup(t, tmp_path, exact=False))
    assert (no_exact["b"]["stage"], no_exact["b"]["reason"]) == ("fuzzy", "near_duplicate")
    no_fuzzy = by_id(dedup(t, tmp_path, fuzzy=False))
    assert no_fuzzy["b"]["reason"] == "exact_duplicate"
    assert no_fuzzy["d"]["kept"] and no_fuzzy["d"]["stage"] == "exact"
    neither = by_id(dedup(t, tmp_path, exact=False, fuzzy=False))
    assert [k for k, r in neither.items() if not r["kept"]] == ["e"]
    assert neither["a"]["stage"] == "short"


def pairs_at(chunks: list[str], low: float, high: float) -> list[tuple[str, str]]:
    """(a, b) with low <= Jaccard < high: a shared head and different tails."""
    out = []
    for i in range(0, len(chunks) - 1):
        head = chunks[i][:2000]
        for tail in (350, 420, 500):
            a, b = head + chunks[i][2000 : 2000 + tail], head + chunks[i + 1][:tail]
            if low <= jaccard(a, b) < high:
                out.append((a, b))
                break
    return out


def test_verification_drops_false_positive_candidates(chunks, tmp_path):
    low = pairs_at(chunks, 0.6, 0.78)
    rng = np.random.default_rng(5)
    high = [(c, edit_words(c, rng, 3)) for c in chunks[:10]]
    rows = []
    for kind, pairs in (("lo", low), ("hi", high)):
        for i, (a, b) in enumerate(pairs):
            rows += [(f"{kind}{i:02d}a", kind, a), (f"{kind}{i:02d}b", kind, b)]
    t = table(rows)
    plain = by_id(dedup(t, tmp_path, mode="local"))
    checked = by_id(dedup(t, tmp_path, mode="local", verify=True))
    merged = lambda d, kind, n: sum(not d[f"{kind}{i:02d}b"]["kept"] for i in range(n))  # noqa: E731
    assert merged(plain, "lo", len(low)) > 0  # the recipe links some pairs below 0.8
    assert merged(checked, "lo", len(low)) == 0
    assert merged(checked, "hi", len(high)) == merged(plain, "hi", len(high)) == len(high)


def test_errors_name_the_problem(chunks, tmp_path):
    with pytest.raises(ValueError, match="'source' is missing"):
        run_dedup(lambda: iter(pa.table({"id": ["a"], "text": ["x"]}).to_batches()),
                  DedupConfig(), tmp_path)  # fmt: skip
    with pytest.raises(ValueError, match=r"unique.*'a'"):
        dedup(table([("a", "s", chunks[0]), ("a", "s", chunks[1])]), tmp_path)
    nulls = pa.table({"id": ["a", None], "source": ["s", "s"], "text": ["x", "y"]})
    with pytest.raises(ValueError, match="'id' is null at input row 1"):
        dedup(nulls, tmp_path)
    nulls = pa.table({"id": ["a", "b", "c"], "source": ["s"] * 3, "text": ["x", "y", None]})
    with pytest.raises(ValueError, match="'text' is null at input row 2 \\(id 'c'\\)"):
        dedup(nulls, tmp_path, batch_rows=2)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mode", "regional", "mode must be one of"),
        ("bands", 10, "bands \\* rows must be <= num_perm"),
        ("ngram", 0, "ngram must be >= 1"),
        ("verify_threshold", 0.0, "verify_threshold must be in \\(0, 1\\]"),
        ("verify_threshold", 1.5, "verify_threshold must be in \\(0, 1\\]"),
        ("min_chars", -1, "min_chars must be >= 0"),
        ("num_perm", 12.5, "num_perm must be an integer"),
        ("source_priority", "wiki", "source_priority must be a tuple"),
        ("exact", "yes", "exact must be True or False"),
    ],
)
def test_bad_config_values_are_explained(field, value, message):
    with pytest.raises(ValueError, match=message):
        DedupConfig(**{field: value})


def test_empty_input_progress_and_summary(chunks, tmp_path):
    empty = dedup(table([]), tmp_path)
    assert empty.num_rows == 0 and empty.schema.names[-1] == "cluster"
    rows = [(f"d{i}", "s", chunks[i % 5]) for i in range(12)] + [("t", "s", "tiny")]
    seen: list[tuple[str, int]] = []
    t = table(rows)
    decisions = run_dedup(
        lambda: iter(t.to_batches(max_chunksize=4)), DedupConfig(), tmp_path,
        progress=lambda stage, done: seen.append((stage, done)),
    )  # fmt: skip
    assert [d for s, d in seen if s == "signatures"] == [4, 8, 12, 13]
    assert seen[-1] == ("decide", 13)
    summary = summarize_decisions(decisions, top=2)
    assert (summary["docs_in"], summary["kept"], summary["dropped"]) == (13, 5, 8)
    assert summary["by_stage_reason"] == {
        "exact/exact_duplicate": 7, "fuzzy/representative": 5, "short/too_short": 1,
    }  # fmt: skip
    assert summary["largest_clusters"] == [{"cluster": "d0", "size": 3}, {"cluster": "d1", "size": 3}]


def test_short_filter_offers_the_reference_code_count(tmp_path):
    # Cerebras' filter.py: len(clean(doc)) < 200, single spaces counted
    letters = "".join(chr(ord("a") + i % 26) for i in range(120))
    rows = [
        ("spaced", "s", " ".join(letters)),  # 120 letters + 119 spaces: 239 cleaned characters
        ("short", "s", " ".join(letters[:100])),  # 199
    ]
    decisions = by_id(dedup(table(rows), tmp_path, short_count="cleaned"))
    assert decisions["spaced"]["kept"]
    assert decisions["short"]["reason"] == "too_short"
    assert by_id(dedup(table(rows), tmp_path))["spaced"]["reason"] == "too_short"


def test_ftfy_normalisation_finds_mojibake_copies(tmp_path):
    clean = "It\u2019s a caf\u00e9 on the corner of the street, open every day. " * 8
    broken = clean.encode("utf-8").decode("windows-1252")
    rows = [("a", "s", clean), ("b", "s", broken)]
    assert by_id(dedup(table(rows), tmp_path))["b"]["kept"]  # NFC alone: two different texts
    decisions = by_id(dedup(table(rows), tmp_path, normalize="ftfy"))
    assert decisions["b"]["reason"] == "exact_duplicate"
