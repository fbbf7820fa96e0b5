"""Property tests: whatever bytes come in, ingest neither crashes nor loses a record."""

from __future__ import annotations

import gzip

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.storage import Dataset, IngestConfig, ingest, open_quarantine

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
records = st.one_of(
    st.fixed_dictionaries({"text": st.text(min_size=0, max_size=80)}, optional={"meta": json_values}),
    st.dictionaries(st.text(max_size=6), json_values, max_size=3),
)
lines = st.lists(
    st.one_of(
        records.map(orjson.dumps),
        st.binary(max_size=60).filter(lambda b: b"\n" not in b),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=lines, compress=st.booleans(), cut=st.integers(min_value=0, max_value=400))
def test_any_jsonl_is_accounted_for(tmp_path_factory, body, compress, cut):
    folder = tmp_path_factory.mktemp("fuzz")
    data = b"\n".join(body) + b"\n"
    name = "in.jsonl"
    if compress:
        data, name = gzip.compress(data)[: max(cut, 10)], "in.jsonl.gz"
    (folder / name).write_bytes(data)
    report = ingest([str(folder / name)], str(folder / "out"), IngestConfig(max_doc_bytes=200))
    docs = Dataset.open(folder / "out")
    bad = open_quarantine(folder / "out")
    assert report.records_read == docs.rows + bad.rows
    texts = docs.read_table(["text"]).column("text").to_pylist()
    assert all(t.strip() for t in texts)
    reasons = set(bad.read_table(["reason"]).column("reason").to_pylist())
    assert reasons <= {
        "malformed_json",
        "not_an_object",
        "invalid_utf8",
        "missing_text",
        "text_not_string",
        "empty_text",
        "too_large",
        "unreadable_file",
        "truncated_file",
    }
