"""Hostile input: whatever bytes the readers get, each record becomes a document or
a quarantine row with its reason (or, in strict mode, a clear error naming file
and line); never a crash, never a hang, never a record silently lost."""

from __future__ import annotations

import csv
import gzip
import io
import json

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.errors import InputError
from curation.storage import Dataset, IngestConfig, ingest, open_quarantine

MAX = 4096  # max_doc_bytes in these tests
REASONS = {
    "malformed_json", "not_an_object", "invalid_utf8", "missing_text", "text_not_string", "empty_text",
    "too_large", "malformed_csv", "unreadable_file", "truncated_file",
}  # fmt: skip
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
pytestmark = pytest.mark.timeout(120)


def _ingest(path, max_doc_bytes: int = MAX):
    out = path.parent / "out"
    report = ingest([str(path)], str(out), IngestConfig(max_doc_bytes=max_doc_bytes))
    docs = Dataset.open(out).read_table().to_pylist()
    bad = open_quarantine(out).read_table().to_pylist()
    assert report.records_read == len(docs) + len(bad) == report.documents + report.quarantined
    assert {b["reason"] for b in bad} <= REASONS
    return report, docs, bad


def _line_of(doc: dict) -> int:
    return int(doc["origin"].rsplit(":", 1)[1])


# ---------------------------------------------------------------- JSONL, against an oracle

text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=120).filter(str.strip)
meta = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)


def _nested(depth: int) -> bytes:
    return b'{"text": "nested", "meta": ' + b"[" * depth + b"]" * depth + b"}"


def _cut(raw: bytes, keep: int) -> tuple[bytes, tuple]:
    """A JSON object cut short is never valid JSON; cut inside a UTF-8 sequence it is not UTF-8 either."""
    part = raw[: max(1, min(keep, len(raw) - 1))]
    try:
        part.decode("utf-8")
    except UnicodeDecodeError:
        return part, ("bad", "invalid_utf8")
    return part, ("bad", "malformed_json")


# (raw line without newline, expected outcome)
jsonl_lines = st.one_of(
    text.map(lambda t: (orjson.dumps({"text": t}), ("doc", t))),
    st.tuples(text, meta).map(lambda p: (orjson.dumps({"text": p[0], "meta": p[1]}), ("doc", p[0]))),
    text.map(lambda t: (orjson.dumps({"text": "\x00" + t}), ("doc", "\x00" + t))),  # an escaped NUL is text
    st.integers(1, 200).map(lambda d: (_nested(d), ("doc", "nested"))),
    # 255..1023 levels parse but orjson cannot write them back; 1024+ do not parse
    st.integers(260, 2000).map(lambda d: (_nested(d), ("bad", "malformed_json"))),
    st.sampled_from([" ", "\t\n", "\u3000", "\u00a0\u2028"]).map(
        lambda t: (orjson.dumps({"text": t}), ("bad", "empty_text"))
    ),
    st.just((b'{"body": "no text field"}', ("bad", "missing_text"))),
    st.sampled_from([b'{"text": 5}', b'{"text": null}', b'{"text": ["a"]}', b'{"text": {"a": "b"}}']).map(
        lambda raw: (raw, ("bad", "text_not_string"))
    ),
    st.sampled_from([b"[1, 2]", b"5", b'"a string"', b"null", b"true"]).map(
        lambda raw: (raw, ("bad", "not_an_object"))
    ),
    st.tuples(text, st.integers(1, 500)).map(lambda p: _cut(orjson.dumps({"text": p[0]}), p[1])),
    st.sampled_from([b'{"text": "a\x00b"}', b'{"text": "\\ud800"}', b'{"text": "x"} extra', b"{{{"]).map(
        lambda raw: (raw, ("bad", "malformed_json"))
    ),
    text.map(lambda t: (b'{"text":"\xff' + orjson.dumps(t)[1:] + b"}", ("bad", "invalid_utf8"))),
    st.integers(MAX + 1, 3 * MAX).map(lambda n: (orjson.dumps({"text": "a" * n}), ("bad", "too_large"))),
    st.integers(MAX + 1, 3 * MAX).map(lambda n: (b"\xff{" * n, ("bad", "too_large"))),
    st.sampled_from([b"", b"   ", b"\t"]).map(lambda raw: (raw, ("skip", None))),
)


def _compress(data: bytes, how: str) -> tuple[bytes, str]:
    if how == "gz":
        return gzip.compress(data), "in.jsonl.gz"
    if how == "zst":
        return zstandard.ZstdCompressor().compress(data), "in.jsonl.zst"
    return data, "in.jsonl"


def _body(lines, crlf: list[bool], bom: bool) -> bytes:
    ends = [b"\r\n" if c else b"\n" for c in crlf]
    body = b"".join(raw + end for (raw, _), end in zip(lines, ends[: len(lines)], strict=True))
    return (b"\xef\xbb\xbf" if bom else b"") + body


def _expected(lines):
    docs = [(n, out[1]) for n, (_, out) in enumerate(lines, 1) if out[0] == "doc"]
    bad = [(n, out[1]) for n, (_, out) in enumerate(lines, 1) if out[0] == "bad"]
    return docs, bad


@FUZZ
@given(
    lines=st.lists(jsonl_lines, max_size=30),
    crlf=st.lists(st.booleans(), min_size=30, max_size=30),
    bom=st.booleans(),
    how=st.sampled_from(["plain", "gz", "zst"]),
)
def test_jsonl_records_land_where_an_oracle_says(tmp_path_factory, lines, crlf, bom, how):
    folder = tmp_path_factory.mktemp("jsonl")
    data, name = _compress(_body(lines, crlf, bom), how)
    (folder / name).write_bytes(data)
    _, docs, bad = _ingest(folder / name)
    want_docs, want_bad = _expected(lines)
    assert sorted((_line_of(d), d["text"]) for d in docs) == want_docs
    assert sorted((b["line"], b["reason"]) for b in bad) == want_bad
    assert all(b["file"].endswith(name) for b in bad)


@FUZZ
@given(
    lines=st.lists(jsonl_lines, min_size=1, max_size=30), how=st.sampled_from(["gz", "zst"]), data=st.data()
)
def test_truncated_compressed_input_keeps_what_came_before_the_cut(tmp_path_factory, lines, how, data):
    folder = tmp_path_factory.mktemp("cut")
    whole, name = _compress(_body(lines, [False] * len(lines), False), how)
    cut = data.draw(st.integers(0, len(whole) - 1), label="cut")
    (folder / name).write_bytes(whole[:cut])
    _, docs, bad = _ingest(folder / name)
    failures = [b for b in bad if b["reason"] in ("truncated_file", "unreadable_file")]
    assert len(failures) <= 1
    got_docs = [(_line_of(d), d["text"]) for d in docs]
    got_bad = [(b["line"], b["reason"]) for b in bad if b not in failures]
    last = max((line for line, _ in got_docs + got_bad), default=0)
    if failures and failures[0]["line"] is not None:
        assert last < failures[0]["line"]  # nothing after the line reading stopped at
    # every line before the last one read is exactly as in the whole file; the last
    # one may be the line the cut went through, read in part
    want_docs, want_bad = _expected(lines)
    assert [x for x in got_docs if x[0] < last] == [x for x in want_docs if x[0] < last]
    assert [x for x in got_bad if x[0] < last] == [x for x in want_bad if x[0] < last]


def test_ten_thousand_deep_nesting_is_a_quarantine_row_not_a_crash(tmp_path):
    deep = b'{"text": "deep", "meta": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    top = b"[" * 10_000 + b"]" * 10_000
    middle = _nested(600)  # parses, but too deep to write back as meta
    path = tmp_path / "deep.jsonl"
    path.write_bytes(b"\n".join([b'{"text": "before"}', deep, top, middle, b'{"text": "after"}']) + b"\n")
    _, docs, bad = _ingest(path, max_doc_bytes=1 << 20)
    assert [(_line_of(d), d["text"]) for d in docs] == [(1, "before"), (5, "after")]
    assert [(b["line"], b["reason"]) for b in bad] == [(2, "malformed_json"), (3, "malformed_json"),
                                                       (4, "malformed_json")]  # fmt: skip
    assert "deep" in bad[2]["detail"]
    with pytest.raises(InputError, match=r"deep\.jsonl:2: malformed_json"):
        ingest([str(path)], str(tmp_path / "strict"), IngestConfig(strict=True))


# ---------------------------------------------------------------- CSV

plain_field = st.text(
    alphabet=st.characters(
        exclude_categories=("Cs",), exclude_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
    ),
    max_size=60,
)
csv_rows = st.one_of(
    st.tuples(plain_field, plain_field),
    st.tuples(st.integers(MAX + 50, 3 * MAX).map(lambda n: "x," * (n // 2)), plain_field),  # huge
)


def _csv_bytes(rows) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["text", "meta"])
    writer.writerows(rows)
    return buffer.getvalue().encode()


@FUZZ
@given(rows=st.lists(csv_rows, max_size=25))
def test_csv_rows_land_where_an_oracle_says(tmp_path_factory, rows):
    folder = tmp_path_factory.mktemp("csv")
    (folder / "in.csv").write_bytes(_csv_bytes(rows))
    _, docs, bad = _ingest(folder / "in.csv")
    want_docs, want_bad = [], []
    for line, (body, _) in enumerate(rows, start=2):
        if len(body) > MAX:
            want_bad.append((line, "too_large"))
        elif not body.strip():
            want_bad.append((line, "empty_text"))
        else:
            want_docs.append((line, body))
    assert sorted((_line_of(d), d["text"]) for d in docs) == want_docs
    assert sorted((b["line"], b["reason"]) for b in bad) == want_bad


csv_pieces = st.sampled_from([b'"', b",", b"\n", b"\r", b"\x00", b"\xff", b'""', b"x" * (MAX + 10)])


@FUZZ
@given(chunks=st.lists(st.one_of(st.binary(max_size=40), csv_pieces), max_size=40))
def test_any_csv_bytes_are_accounted_for(tmp_path_factory, chunks):
    folder = tmp_path_factory.mktemp("csvbytes")
    (folder / "in.csv").write_bytes(b"text,meta\n" + b"".join(chunks))
    _ingest(folder / "in.csv")


def test_a_huge_csv_header_is_one_quarantine_row(tmp_path):
    (tmp_path / "in.csv").write_bytes(b"text," + b"h" * (3 * MAX) + b"\nrow,1\n")
    _, docs, bad = _ingest(tmp_path / "in.csv")
    assert docs == [] and [(b["line"], b["reason"]) for b in bad] == [(1, "too_large")]


# ---------------------------------------------------------------- Parquet and .txt


def test_parquet_strings_that_are_not_utf8_are_quarantined(tmp_path):
    values = [b"first document", b"bad \xff\xfe bytes", b"third document"]
    offsets = pa.array([0, *[sum(map(len, values[: i + 1])) for i in range(3)]], pa.int32())
    column = pa.StringArray.from_buffers(3, offsets.buffers()[1], pa.py_buffer(b"".join(values)))
    pq.write_table(pa.table({"text": column}), tmp_path / "in.parquet")
    _, docs, bad = _ingest(tmp_path / "in.parquet")
    assert [(_line_of(d), d["text"]) for d in docs] == [(1, "first document"), (3, "third document")]
    assert [(b["line"], b["reason"]) for b in bad] == [(2, "invalid_utf8")]


@pytest.fixture(scope="module")
def parquet_bytes(tmp_path_factory):
    from tests.conftest import stdlib_docstrings

    texts = stdlib_docstrings(120)
    sink = io.BytesIO()
    pq.write_table(pa.table({"text": texts, "n": list(range(len(texts)))}), sink, row_group_size=30)
    return sink.getvalue(), texts


@FUZZ
@given(
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)), min_size=1, max_size=4)
)
def test_damaged_parquet_is_refused_or_read_never_a_crash(tmp_path_factory, parquet_bytes, flips):
    data, texts = parquet_bytes
    damaged = bytearray(data)
    for where, bit in flips:
        damaged[int(where * len(damaged))] ^= 1 << bit
    folder = tmp_path_factory.mktemp("pq")
    (folder / "in.parquet").write_bytes(bytes(damaged))
    _, docs, _ = _ingest(folder / "in.parquet")
    assert len(docs) <= len(texts)


txt_bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=100).map(str.encode),
    st.just(b"\xef\xbb\xbf"),
    st.just(b"x" * (MAX + 1)),
)


@FUZZ
@given(files=st.lists(txt_bodies, min_size=1, max_size=8))
def test_text_files_are_one_record_each(tmp_path_factory, files):
    folder = tmp_path_factory.mktemp("txt")
    (folder / "in").mkdir()
    for i, data in enumerate(files):
        (folder / "in" / f"{i:02d}.txt").write_bytes(data)
    out = folder / "out"
    report = ingest([str(folder / "in")], str(out), IngestConfig(max_doc_bytes=MAX))
    docs = {d["origin"]: d["text"] for d in Dataset.open(out).read_table().to_pylist()}
    bad = {b["file"].rsplit("/", 1)[1]: b["reason"] for b in open_quarantine(out).read_table().to_pylist()}
    assert report.records_read == len(files)
    for i, data in enumerate(files):
        name = f"{i:02d}.txt"
        try:
            decoded = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            decoded = None
        if len(data) > MAX:
            assert bad[name] == "too_large"
        elif decoded is None:
            assert bad[name] == "invalid_utf8"
        elif not decoded.strip():
            assert bad[name] == "empty_text"
        else:
            assert docs[f"in/{name}:1"] == decoded


# ---------------------------------------------------------------- what is read at all


def test_symlinks_inside_an_input_folder_are_not_followed_and_are_named(tmp_path):
    """`ln -s .. in/loop` used to read each file about 40 times."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jsonl").write_bytes(b'{"text": "alpha"}\n{"text": "beta"}\n')
    (folder / "sub" / "b.jsonl").write_bytes(b'{"text": "gamma"}\n')
    (folder / "loop").symlink_to("..")
    (folder / "sub" / "again.jsonl").symlink_to(folder / "a.jsonl")
    report = ingest([str(folder)], str(tmp_path / "out"))
    assert report.records_read == report.documents == 3
    assert sorted(d["text"] for d in Dataset.open(tmp_path / "out").read_table().to_pylist()) == [
        "alpha", "beta", "gamma"
    ]  # fmt: skip
    assert sorted(report.skipped_links) == [str(folder / "loop"), str(folder / "sub" / "again.jsonl")]


@pytest.mark.timeout(30)  # reading a FIFO nobody writes would block forever
@pytest.mark.parametrize("where", ["given", "inside-a-folder"])
def test_a_fifo_or_device_is_refused_by_name(tmp_path, where):
    import os

    from curation.errors import CurationError

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(b'{"text": "alpha"}\n')
    fifo = folder / "pipe.jsonl"
    os.mkfifo(fifo)
    for special in [fifo, "/dev/null"] if where == "given" else [fifo]:
        target = str(special) if where == "given" else str(folder)
        with pytest.raises(CurationError, match=rf"{special}: .*not a regular file"):
            ingest([target], str(tmp_path / "out"))


def test_dictionary_encoded_parquet_text_respects_max_doc_bytes(tmp_path):
    texts = ["short one", "x" * (MAX + 100), "short two"]
    pq.write_table(pa.table({"text": pa.array(texts).dictionary_encode()}), tmp_path / "in.parquet")
    assert pa.types.is_dictionary(pq.read_schema(tmp_path / "in.parquet").field("text").type)
    _, docs, bad = _ingest(tmp_path / "in.parquet")
    assert sorted(d["text"] for d in docs) == ["short one", "short two"]
    assert [(b["line"], b["reason"]) for b in bad] == [(2, "too_large")]


@pytest.mark.parametrize("name", ["../../x", "a/b", "x" * 300, ".hidden", "tab\there"])
def test_source_field_values_are_checked_at_ingest(tmp_path, name):
    """They were checked only at `subset` (`../../x`; a 300-character name gave an
    ENAMETOOLONG traceback there)."""
    raw = tmp_path / "in.jsonl"
    raw.write_bytes(
        orjson.dumps({"text": "fine", "src": "web"}) + b"\n" + orjson.dumps({"text": "x", "src": name})
    )
    out = tmp_path / "out"
    report = ingest([str(raw)], str(out), IngestConfig(source_field="src"))
    assert report.documents == 1 and report.by_reason == {"invalid_source": 1}
    (bad,) = open_quarantine(out).read_table().to_pylist()
    assert bad["line"] == 2 and "src" in bad["detail"]


def test_a_csv_header_that_is_not_utf8_gives_the_real_reason(tmp_path):
    """Every row used to be quarantined as malformed_json, "nested too deeply"."""
    (tmp_path / "in.csv").write_bytes(b"text,na\xefme\nfirst,1\nsecond,2\n")
    _, docs, bad = _ingest(tmp_path / "in.csv")
    assert docs == []
    assert [(b["line"], b["reason"]) for b in bad] == [(2, "invalid_utf8"), (3, "invalid_utf8")]
    assert all("header" in b["detail"] for b in bad)


def test_large_json_integers_stay_exact_in_meta(tmp_path):
    big = [2**64 + 1, -(2**63) - 1, 10**30, 2**63 - 1]
    raw = tmp_path / "in.jsonl"
    raw.write_bytes(b'{"text": "numbers", "ids": [' + b", ".join(str(n).encode() for n in big) + b"]}\n")
    _, docs, bad = _ingest(raw)
    assert bad == []
    assert json.loads(docs[0]["meta"]) == {"ids": big}
