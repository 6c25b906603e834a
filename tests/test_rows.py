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
        "007,2,5 ,0.5,1E+3,7,5,0",
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


def _cell_files(tmp_path, train_lines: list[str]) -> dict[str, Path]:
    files = {}
    for split, lines in (("train", train_lines), ("valid", _lines(1)), ("test", _lines(1))):
        files[split] = tmp_path / f"{split}.csv"
        files[split].write_text("\n".join(line.replace("g", f"{split}-g", 1) if split != "train" else line
                                          for line in lines) + "\n")
    return files


@pytest.mark.parametrize("blank", ["", " "])
def test_a_gene_without_an_id_is_refused_past_the_first_line(tmp_path, blank):
    lines = _lines(3)
    lines[4:8] = [blank + line.removeprefix("g1") for line in lines[4:8]]  # gene g1, lines 5-8
    with pytest.raises(InputError, match=r"train\.csv, line 5, field gene_id: empty gene id"):
        read_cell("c", _cell_files(tmp_path, lines))


def test_one_row_without_an_id_inside_a_gene_is_named(tmp_path):
    lines = _lines(3)
    lines[5] = lines[5].removeprefix("g1")
    with pytest.raises(InputError, match=r"train\.csv, line 6, field gene_id: empty gene id"):
        read_cell("c", _cell_files(tmp_path, lines))


@pytest.mark.parametrize(("row", "spaced"), [(5, " g1"), (7, "g1 "), (1, "g0\t")])
def test_a_gene_id_with_spaces_around_it_is_named(tmp_path, row, spaced):
    # Not stripped: "000003 " would be another gene than 000003 everywhere else (the expression table, the store).
    lines = _lines(3)
    gene = spaced.strip()
    lines[row - 1] = spaced + lines[row - 1].removeprefix(gene)
    with pytest.raises(InputError) as caught:
        read_cell("c", _cell_files(tmp_path, lines))
    assert str(caught.value) == (f"{tmp_path / 'train.csv'}, line {row}, field gene_id: gene id has leading or "
                                 "trailing spaces")


def test_rows_sorted_by_bin_are_refused_as_genes_split_apart(tmp_path):
    # Every gene's bin 1, then every gene's bin 2, ...: each gene's rows are apart.
    by_bin = sorted(_lines(3), key=lambda line: int(line.split(",")[1]))
    with pytest.raises(InputError, match=r"train\.csv, line 4: gene g0 appears again \(first at line 1\); "
                                         r"the rows of a gene must be consecutive"):
        read_cell("c", _cell_files(tmp_path, by_bin))


def test_a_gene_interrupted_by_another_is_refused_as_split_apart(tmp_path):
    lines = _lines(3)
    lines[2], lines[4] = lines[4], lines[2]  # g1's bin 1 among g0's rows
    with pytest.raises(InputError, match=r"line 4: gene g0 appears again \(first at line 1\)"):
        read_cell("c", _cell_files(tmp_path, lines))


@pytest.mark.parametrize("gzipped", [False, True])
def test_bytes_that_are_not_utf8_are_named_by_line(tmp_path, gzipped):
    data = ("\n".join(_lines(3)) + "\n").encode()
    data = data.replace(b"g2,", b"g\xe92,", 1)  # Latin-1 e-acute, as an editor saving Latin-1 writes it
    files = _cell_files(tmp_path, _lines(1))
    if gzipped:
        files["train"] = tmp_path / "train.csv.gz"
        files["train"].write_bytes(gzip.compress(data))
    else:
        files["train"].write_bytes(data)
    with pytest.raises(InputError, match=r"train\.csv(\.gz)?, line 9: not UTF-8 text \(byte 0xe9 at character 2\)"):
        read_cell("c", files)


def test_a_header_line_is_pointed_out(tmp_path):
    header = "gene_id,bin,H3K27me3,H3K36me3,H3K4me1,H3K4me3,H3K9me3,label"
    with pytest.raises(InputError) as caught:
        read_cell("c", _cell_files(tmp_path, [header] + _lines(2)))
    assert str(caught.value) == (f"{tmp_path / 'train.csv'}, line 1, field bin: 'bin' is not a number; line 1 looks "
                                 "like a header, which this layout does not have: remove it")
    # A first line with numbers where they belong is a bad row, not a header.
    (tmp_path / "row").mkdir()
    with pytest.raises(InputError) as caught:
        read_cell("c", _cell_files(tmp_path / "row", ["g0,x,1,2,3,4,5,0"] + _lines(2)))
    assert str(caught.value).endswith("line 1, field bin: 'x' is not a number")


def test_a_blank_line_is_named_as_such(tmp_path):
    lines = _lines(3) + [""]
    path = tmp_path / "train.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"line 13: expected 8 comma-separated fields \(gene_id, .*\), "
                                         r"found a blank line"):
        _read_all(path)


def test_a_file_of_a_header_only_yields_no_chunk(tmp_path):
    path = tmp_path / "h.tsv"
    path.write_text("gene_id\tbin\tm0\tm1\tm2\tm3\tm4\tlabel\n")
    seen = []
    with pytest.raises(InputError, match="no data lines"):
        for _, chunk in rows.read_chunks(path, SCHEMA, sep="\t", skip_lines=1):
            seen.append(len(chunk))
    assert seen == []


def test_a_file_compressed_other_than_gzip_says_so(tmp_path):
    import bz2

    path = tmp_path / "train.csv.bz2"
    path.write_bytes(bz2.compress(("\n".join(_lines(2)) + "\n").encode()))
    with pytest.raises(InputError, match=r"train\.csv\.bz2: is bzip2-compressed; only plain text and gzip are read "
                                         r"\(decompress it first, e.g. with bunzip2\)"):
        _read_all(path)


@pytest.mark.parametrize("closed_at", [None, 6, 9])
def test_a_quote_is_part_of_its_value_and_named_at_its_line(tmp_path, closed_at):
    """No CSV quoting: pandas' read a field opened by a quote on to its closing quote, lines later or at the end
    of the file, and took '"g1"' for g1 (so, past the first line, for a gene given again)."""
    lines = _lines(3)
    lines[5] = '"' + lines[5]
    if closed_at is not None:
        lines[closed_at - 1] = lines[closed_at - 1].replace(",", '",', 1)
    shown = '"g1"' if closed_at == 6 else '"g1'
    with pytest.raises(InputError, match=rf"train\.csv, line 6, field gene_id: gene id {shown} holds a double "
                                         r"quote; fields are read as written, without CSV quoting"):
        read_cell("c", _cell_files(tmp_path, lines))
    numbers = _lines(3)
    numbers[7] = numbers[7].replace(",0,1,", ',0,"1",', 1)
    with pytest.raises(InputError, match=r"train\.csv, line 8, field H3K4me3: '\"1\"' is not a number"):
        read_cell("c", _cell_files(tmp_path, numbers))


@pytest.mark.parametrize("text, lines", [
    ("a\nb\r\nc", ["a", "b", "c"]),
    ("a\nb\n\n", ["a", "b", ""]),  # the blank line is a line; the break at the end is not one
    ("a\rb\r", ["a", "b"]),  # an old Mac file: \r alone ends lines when no \n does
    ("a\rb\nc\r\n", ["a\rb", "c"]),  # a stray \r inside a line of a \n file stays in it
    ("a\x0cb\u2028c\x1dd\n", ["a\x0cb\u2028c\x1dd"]),  # str.splitlines would make four lines of it
    ("", []),
])
def test_text_lines_end_where_sed_sees_them_end(text, lines):
    from histcli.sources.common import text_lines

    assert text_lines(text) == lines


def test_text_lines_of_a_file_refuse_a_control_character_inside_a_line(tmp_path):
    from histcli.sources.common import text_lines

    assert text_lines("g1\t5\r\ng2\t6\r\n", tmp_path / "t.tsv") == ["g1\t5", "g2\t6"]
    with pytest.raises(InputError) as caught:
        text_lines("g1\t5\ng\r2\t6\n", tmp_path / "t.tsv")
    assert str(caught.value).startswith(f"{tmp_path / 't.tsv'}, line 2: control character '\\r' inside the line")


@pytest.mark.parametrize("ending, expected", [(b"\n", "\n"), (b"\r\n", "\n"), (b"\r", "\r")])
@pytest.mark.parametrize("gzipped", [False, True])
def test_rows_are_read_at_the_files_own_line_breaks(tmp_path, ending, expected, gzipped):
    """Lines end at \\n (or \\r\\n), or at \\r in a file without \\n; a stray \\r inside a line does not end it,
    so the lines after it keep the numbers `sed -n` gives them, and a gene id holding it is named."""
    from histcli.sources.common import file_line_break

    files = _cell_files(tmp_path, _lines(1))
    lines = _lines(30)
    files["train"] = path = tmp_path / ("train.csv.gz" if gzipped else "train.csv")

    def write(lines):
        data = ending.join(line.encode() for line in lines) + ending
        path.write_bytes(gzip.compress(data) if gzipped else data)

    write(lines)
    assert file_line_break(path) == expected
    assert _read_all(path, chunk_rows=7)[1]["m4"] == [g % 7 for g in range(30) for _ in range(4)]
    counts = np.concatenate(read_cell("c", files).counts)
    np.testing.assert_array_equal(counts[10], [[10, 2 * b, 0, 1, 3] for b in range(1, 5)])
    if ending != b"\r":
        lines[40] = "g\r" + lines[40][1:]  # line 41, the first row of gene g10
        write(lines)
        with pytest.raises(InputError) as caught:
            read_cell("c", files)
        assert str(caught.value) == (f"{path}, line 41, field gene_id: gene id 'g\\r10' holds a control character")


def test_the_line_break_is_found_past_the_first_mib(tmp_path):
    """A "\\r\\n" split by the first MiB, or a stray "\\r" in a first line longer than a MiB, still makes a
    "\\n" file, as text_lines decides for the whole text; only a file without any "\\n" breaks at "\\r"."""
    from histcli.sources.common import file_line_break, text_lines

    for text in ("a" * ((1 << 20) - 1) + "\r\nb\r\n", "a\rb" + "c" * (1 << 20) + "\nline2\n", "a\rb\r" * 400_000):
        path = tmp_path / "t.txt"
        path.write_bytes(text.encode())
        assert file_line_break(path) == ("\n" if "\n" in text else "\r")
        with rows.open_lines(path) as handle:
            assert [line.removesuffix("\n").removesuffix("\r") for line in handle] == text_lines(text)


def test_a_carriage_return_at_the_end_of_a_gene_id_is_named_as_such(tmp_path):
    lines = _lines(3)
    lines[4] = "\r" + lines[4]
    with pytest.raises(InputError) as caught:
        read_cell("c", _cell_files(tmp_path, lines))
    assert str(caught.value) == f"{tmp_path / 'train.csv'}, line 5, field gene_id: gene id '\\rg1' holds a control character"
