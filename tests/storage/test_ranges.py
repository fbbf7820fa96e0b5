"""Row ranges: reading chosen rows of a dataset from its files, as a part's worker does."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation.errors import IntegrityError
from curation.storage import Dataset, write_dataset
from curation.storage.ranges import file_spans, take_rows


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    """100 documents in files of 30 rows, row groups of 8 rows."""
    schema = pa.schema([("id", pa.string())])
    table = pa.table({"id": [f"d{i:03d}" for i in range(100)]}, schema=schema)
    out = tmp_path_factory.mktemp("ranges") / "rows"
    write_dataset(out, table.to_batches(max_chunksize=8), schema, "rows", rows_per_file=30)
    return Dataset.open(out)


def test_take_rows_reads_the_rows_asked_for_across_files(documents):
    spans = file_spans(documents)
    assert len(spans) > 1
    rows = np.array([0, 7, 8, 29, 30, 31, 64, 99])
    taken = take_rows(spans, rows, ["id"])
    assert taken.column("id").to_pylist() == [f"d{i:03d}" for i in rows]
    assert take_rows(spans, np.array([], np.int64), ["id"]).num_rows == 0


def test_take_rows_refuses_rows_beyond_the_dataset(documents):
    with pytest.raises(IntegrityError, match="beyond"):
        take_rows(file_spans(documents), np.array([5, 100]), ["id"])
