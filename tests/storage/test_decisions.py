"""The one id-alignment helper: a keyed table's column in the documents' order, clear refusals."""

from __future__ import annotations

import pyarrow as pa
import pytest

from curation.errors import CurationError, IntegrityError
from curation.storage.decisions import align_by_id

IDS = pa.array(["a", "b", "c"])


def test_a_column_comes_back_in_the_documents_order():
    table = pa.table({"id": ["c", "a", "b"], "score": [3.0, 1.0, 2.0]})
    assert align_by_id(IDS, table, "score", "t.parquet").to_list() == [1.0, 2.0, 3.0]
    in_order = pa.table({"id": IDS, "score": [1.0, 2.0, 3.0]})
    assert align_by_id(pa.chunked_array([IDS]), in_order, "score", "t.parquet").to_list() == [1.0, 2.0, 3.0]


def test_missing_ids_are_null_unless_refused():
    table = pa.table({"id": ["a", "c"], "cluster": [4, 5]})
    assert align_by_id(IDS, table, "cluster", "clu").to_list() == [4, None, 5]
    with pytest.raises(IntegrityError, match=r"clu: 1 documents have no cluster, e\.g\. 'b'"):
        align_by_id(IDS, table, "cluster", "clu", missing_ok=False)


def test_unknown_and_repeated_ids_are_refused_naming_the_file():
    extra = pa.table({"id": ["a", "b", "c", "z"], "kept": [True] * 4})
    with pytest.raises(CurationError, match=r"sel\.parquet: 1 ids are not in the documents, e\.g\. 'z'"):
        align_by_id(IDS, extra, "kept", "sel.parquet")
    assert align_by_id(IDS, extra, "kept", "sel.parquet", unknown_ok=True).to_list() == [True] * 3
    twice = pa.table({"id": ["a", "a"], "kept": [True, False]})
    with pytest.raises(CurationError, match=r"sel\.parquet: id 'a' appears more than once"):
        align_by_id(IDS, twice, "kept", "sel.parquet")


def test_same_order_refuses_any_other_order_or_length():
    with pytest.raises(IntegrityError, match="emb: 2 rows, but the documents have 3"):
        align_by_id(IDS, pa.table({"id": ["a", "b"]}), "id", "emb", same_order=True)
    with pytest.raises(IntegrityError, match="emb: ids differ from the documents' ids"):
        align_by_id(IDS, pa.table({"id": ["b", "a", "c"]}), "id", "emb", same_order=True)
