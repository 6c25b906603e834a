"""Row-per-bin CSV reading in chunks: the values of every row, and errors that name the exact line."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from histcli.errors import InputError
from histcli.sources import rows
from histcli.sources.deepchrome import read_cell

SCHEMA = [rows.Field("gene_id", "id"), rows.Field("bin", "bin")]
SCHEMA += [rows.Field(f"m{i}", "count") for i in range(5)] + [rows.Field("label", "label")]


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


def test_values_and_ids_of_every_chunk(tmp_path):
    odd_but_valid = [
        "\ufeff007,1, 5,+.5,1e3,007,5,0",  # a byte-order mark, a numeric-looking id, blanks, signs, exponents
        "007,2,5 ,0.5,1E+3,7,\"5\",0",  # a quoted number
        "007,3,\t5,.5,1000.0,7.,5,0",
        "007,4,5,5e-1,1000,7,5,0",
    ]
    path = tmp_path / "train.csv"
    path.write_bytes(("\r\n".join(odd_but_valid + _lines(3000)[4:]) + "\r\n").encode())
    firsts, columns = _read_all(path, chunk_rows=1000)
    assert firsts == list(range(1, 12001, 1000))
    assert len(columns["gene_id"]) == 12000
    # Ids stay text, exactly as written (no number parsing, no stripped zeros).
    assert columns["gene_id"][:5] == ["007", "007", "007", "007", "g1"]
    assert all(type(gene) is str for gene in columns["gene_id"])
    assert [columns[f"m{i}"][0] for i in range(5)] == [5.0, 0.5, 1000.0, 7.0, 5.0]
    assert [columns[f"m{i}"][1] for i in range(5)] == [5.0, 0.5, 1000.0, 7.0, 5.0]
    assert [columns[f"m{i}"][11999] for i in range(5)] == [2999.0, 8.0, 0.0, 1.0, 2999 % 7]


def test_a_bad_line_in_a_later_chunk_is_named_exactly(tmp_path):
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
def test_a_broken_row_deep_in_a_gzip_file_is_named_exactly(tmp_path, damage):
    lines = _lines(4000)
    lines[9_999] = "" if damage == "blank" else lines[9_999] + ",9"
    path = tmp_path / "train.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(InputError, match=r"line 10000: expected 8 comma-separated fields \(gene_id, bin"):
        _read_all(path, chunk_rows=1000)


def test_a_cell_read_in_chunks_has_the_values_written(tmp_path):
    files = {}
    for index, split in enumerate(("train", "valid", "test")):
        lines = [line.replace("g", f"{split}-g", 1) for line in _lines(500 + index)]
        files[split] = tmp_path / f"{split}.csv"
        files[split].write_text("\n".join(lines) + "\n")
    cell = read_cell("c", files)
    counts = np.concatenate(cell.counts)
    assert counts.dtype == np.int32 and counts.shape == (1503, 4, 5)
    assert list(cell.gene_ids[:2]) == ["train-g0", "train-g1"] and cell.gene_ids[-1] == "test-g501"
    # Gene g7 of valid.csv, bins 1..4: columns g, 2b, 0, 1, g % 7; label g % 2.
    index = list(cell.gene_ids).index("valid-g7")
    np.testing.assert_array_equal(counts[index], [[7, 2 * b, 0, 1, 0] for b in range(1, 5)])
    assert cell.labels[index] == 1
