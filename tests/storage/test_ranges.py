"""Row ranges: regrouping a dataset's rows by owner through scratch files, as a part's worker does."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation.storage import Dataset, write_dataset
from curation.storage.ranges import file_spans, gather_rows, spread_name, spread_rows


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    """100 documents in files of 30 rows, row groups of 8 rows."""
    schema = pa.schema([("id", pa.string())])
    table = pa.table({"id": [f"d{i:03d}" for i in range(100)]}, schema=schema)
    out = tmp_path_factory.mktemp("ranges") / "rows"
    write_dataset(out, table.to_batches(max_chunksize=8), schema, "rows", rows_per_file=30)
    return Dataset.open(out)


def test_rows_regrouped_through_scratch_files_come_back_whole_and_in_order(documents, tmp_path):
    """The shuffle through storage SemDeDup uses: each file is read once, its
    rows written per owner; an owner gathers exactly its rows, in row order."""
    spans = file_spans(documents)
    assert len(spans) > 1
    owners = np.random.default_rng(0).integers(-1, 4, size=documents.rows).astype(np.int32)
    written, names = 0, {o: [] for o in range(4)}
    for index, span in enumerate(spans):
        mine = owners[span.first : span.first + span.rows]
        written += spread_rows((index, span, mine), scratch=str(tmp_path), columns=["id"])
        for owner in np.unique(mine[mine >= 0]):
            names[int(owner)].append(spread_name(int(owner), index))
    assert written == int((owners >= 0).sum())
    for owner, files in names.items():
        table = gather_rows(str(tmp_path), files)
        rows = np.flatnonzero(owners == owner)
        assert table.column("row").to_numpy().tolist() == rows.tolist()
        assert table.column("id").to_pylist() == [f"d{i:03d}" for i in rows]
