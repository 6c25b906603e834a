"""Row-per-bin CSV reading: pyarrow's blocks and pandas' chunks give the same rows and the same errors."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest

from histcli.errors import InputError
from histcli.sources import rows
from histcli.sources.deepchrome import read_cell

SCHEMA = [rows.Field("gene_id", "id"), rows.Field("bin", "bin")]
SCHEMA += [rows.Field(f"m{i}", "count") for i in range(5)] + [rows.Field("label", "label")]


def _pandas_only(monkeypatch) -> None:
    """Read as where pyarrow is not installed: pandas reads every row."""
    monkeypatch.setitem(sys.modules, "pyarrow.csv", None)  # makes `import pyarrow.csv` fail


def _read_all(path: Path, **kwargs) -> tuple[list[int], dict[str, list]]:
    """The first line of every chunk and the concatenated columns."""
    firsts, columns = [], {f.name: [] for f in SCHEMA}
    for first_line, chunk in rows.read_chunks(path, SCHEMA, **kwargs):
        firsts.append(first_line)
        for name in columns:
            columns[name] += chunk[name].tolist()
    return firsts, columns


def _lines(n_genes: int, n_bins: int = 4) -> list[str]:
    return [f"g{g},{b},{g},{b * 2},0,1,{g % 7},{g % 2}" for g in range(n_genes) for b in range(1, n_bins + 1)]


ODD_BUT_VALID = [
    "\ufeffg0,1, 5,+.5,1e3,007,5,0",  # a byte-order mark, blanks, signs, exponents, quotes
    "g0,2,5 ,0.5,1E+3,7,\"5\",0",
    "g0,3,\t5,.5,1000.0,7.,5,0",
    "g0,4,5,5e-1,1000,7,5,0",
]


def test_pyarrow_and_pandas_read_the_same_values(tmp_path, monkeypatch):
    path = tmp_path / "train.csv"
    path.write_bytes(("\r\n".join(ODD_BUT_VALID + _lines(3000)[4:]) + "\r\n").encode())
    arrow = _read_all(path, chunk_rows=1000)
    _pandas_only(monkeypatch)
    plain = _read_all(path, chunk_rows=1000)
    assert arrow[1] == plain[1]
    assert arrow[1]["gene_id"][:5] == ["g0", "g0", "g0", "g0", "g1"]
    assert [arrow[1][f"m{i}"][0] for i in range(5)] == [5.0, 0.5, 1000.0, 7.0, 5.0]
    # Several blocks, numbered by the line each starts at.
    assert len(arrow[0]) > 1 and arrow[0][0] == 1 and arrow[0] == sorted(arrow[0])
    assert len(arrow[1]["gene_id"]) == 12000


@pytest.fixture(params=["pyarrow", "pandas"])
def reader(request, monkeypatch):
    if request.param == "pandas":
        _pandas_only(monkeypatch)
    return request.param


def test_a_bad_line_after_the_first_block_is_named_exactly(tmp_path, reader):
    lines = _lines(4000)
    bad_line = 14_321
    lines[bad_line - 1] = lines[bad_line - 1].replace(",0,1,", ",0,x1,", 1)
    path = tmp_path / "train.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as raised:
        _read_all(path, chunk_rows=1000)
    message = str(raised.value)
    assert f"line {bad_line}" in message and "'x1' is not a number" in message and "m3" in message


@pytest.mark.parametrize("damage", ["blank", "field"])
def test_a_broken_row_deep_in_a_gzip_file_is_named_exactly(tmp_path, damage, reader):
    lines = _lines(4000)
    lines[9_999] = "" if damage == "blank" else lines[9_999] + ",9"
    path = tmp_path / "train.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(InputError, match=r"line 10000: expected 8 comma-separated fields \(gene_id, bin"):
        _read_all(path, chunk_rows=1000)


def test_a_cell_read_by_pyarrow_equals_the_cell_read_by_pandas(tmp_path, monkeypatch):
    files = {}
    for index, split in enumerate(("train", "valid", "test")):
        lines = [line.replace("g", f"{split}-g", 1) for line in _lines(500 + index)]
        files[split] = tmp_path / f"{split}.csv"
        files[split].write_text("\n".join(lines) + "\n")
    arrow = read_cell("c", files)
    _pandas_only(monkeypatch)
    plain = read_cell("c", files)
    np.testing.assert_array_equal(np.concatenate(arrow.counts), np.concatenate(plain.counts))
    assert list(arrow.gene_ids) == list(plain.gene_ids)
    np.testing.assert_array_equal(arrow.labels, plain.labels)
    assert np.concatenate(arrow.counts).dtype == np.int32
    # Gene g7 of valid.csv, bins 1..4: columns g, 2b, 0, 1, g % 7.
    index = list(arrow.gene_ids).index("valid-g7")
    np.testing.assert_array_equal(np.concatenate(arrow.counts)[index],
                                  [[7, 2 * b, 0, 1, 0] for b in range(1, 5)])
