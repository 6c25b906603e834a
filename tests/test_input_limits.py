"""Values a file can spell but its destination type cannot hold, and chromosome naming styles.

Counts end up as int32/int64/float32 in the store (or as a model's float32
input), coordinates as int64: anything beyond is refused with one line naming
the file, line and field. Tracks and genes named in the two common styles
(UCSC chr1/chrM, Ensembl 1/MT) are matched when that is unambiguous.
"""

from __future__ import annotations

import gzip
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, file_digest, parse_tsv, run_cli

from histcli.errors import InputError
from histcli.sources import deepchrome, deepdiff
from histcli.sources.annotation import read_genes
from histcli.sources.common import labels_from_expression
from histcli.sources.tracks import read_track, read_tracks_cell
from histcli.store import SPLIT_CODES, Store

FLOAT32_MAX = float(np.finfo(np.float32).max)  # 3.4028235e38
INT64_MAX = 2**63 - 1


# DeepChrome / DeepDiff CSV counts -----------------------------------------------------


def _deepchrome_folder(folder: Path, first_count: str = "1") -> Path:
    """Two genes of 4 bins per split; the first count of train.csv line 2 is ``first_count``."""
    folder.mkdir()
    for split in ("train", "valid", "test"):
        rows = [f"{split}{g},{b},{b},2,3,4,5,{g}" for g in range(2) for b in range(1, 5)]
        if split == "train":
            rows[1] = f"train0,2,{first_count},2,3,4,5,0"
        (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "store.h5"
    assert run_cli("prepare", "deepchrome", _deepchrome_folder(tmp_path / "good"), "--cell", "good",
                   "--store", path, "-q").code == 0
    return path


@pytest.mark.parametrize("count", ["1e40", "3.4028236e38", "1e400", "-1e40"])
def test_deepchrome_counts_beyond_float32_are_refused(tmp_path, store, count):
    folder = _deepchrome_folder(tmp_path / "bad", count)
    digest = file_digest(store)
    result = run_cli("prepare", "deepchrome", folder, "--cell", "bad", "--store", store)
    expected = {"1e40": "too large", "3.4028236e38": "too large", "1e400": "not a finite number", "-1e40": "negative"}
    assert_one_line_error(result, "train.csv", "line 2", "field H3K27me3", expected[count])
    assert "Warning" not in result.stderr
    assert file_digest(store) == digest


def test_whole_counts_beyond_int64_are_stored_as_float32(tmp_path):
    # 1e19 > 2**63 - 1: int64 would wrap it to a negative number.
    files = {split: tmp_path / "c" / f"{split}.csv" for split in ("train", "valid", "test")}
    _deepchrome_folder(tmp_path / "c", "10000000000000000000")
    cell = deepchrome.read_cell("c", files)
    counts = np.concatenate(cell.counts)
    assert counts.dtype == np.float32
    assert counts[0, 1, 0] == np.float32(1e19)
    assert counts[0, :, 1].tolist() == [2, 2, 2, 2] and counts[0, 0, 0] == 1
    # The largest float32 itself fits, also as printed (3.4028235e38 is a little more, and rounds to it).
    for text in (repr(FLOAT32_MAX), "3.4028235e38"):
        folder = _deepchrome_folder(tmp_path / text, text)
        edge = deepchrome.read_cell("edge", {s: folder / f"{s}.csv" for s in files})
        assert np.concatenate(edge.counts)[0, 1, 0] == np.float32(FLOAT32_MAX)


def _deepdiff_folder(folder: Path, bad_row: str) -> Path:
    folder.mkdir()
    for split, gene in (("train", "ENSG00000000001_A"), ("valid", "ENSG00000000002_B"),
                        ("test", "ENSG00000000003_C")):
        rows = [f"{gene}_{b},1,2,3,4,5" for b in range(1, 3)]
        if split == "valid":
            rows[1] = bad_row
        (folder / f"X.{split}.csv").write_text("\n".join(rows) + "\n")
    (folder / "X.expr.csv").write_text("ENSG00000000001,1\nENSG00000000002,2\nENSG00000000003,3\n")
    return folder


@pytest.mark.parametrize("row, fragments", [
    ("ENSG00000000002_B_2,1,2,1e39,4,5", ("line 2", "field H3K9me3", "too large")),
    # Digits other than 0-9 pass str.isdigit() but are no bin number.
    ("ENSG00000000002_B_\u00b2,1,2,3,4,5", ("line 2", "field gene_bin", "is not a number")),
    ("ENSG00000000002_B_\u0663,1,2,3,4,5", ("line 2", "field gene_bin", "'\u0663' is not a number")),
    # float() reads "1e0" as 1, but a bin in a gene_bin field is plain digits.
    ("ENSG00000000002_B_1e0,1,2,3,4,5", ("line 2", "field gene_bin", "bin '1e0' is not a positive whole number")),
    ("ENSG00000000002_B_99999999999999999999999,1,2,3,4,5",
     ("gene ENSG00000000002_B", "bin 99999999999999991611392 is outside 1..2")),
])
def test_deepdiff_values_beyond_their_types_name_the_line(tmp_path, row, fragments):
    folder = _deepdiff_folder(tmp_path / "dd", row)
    splits, expression = deepdiff.find_files(folder, "X")
    with pytest.raises(InputError) as caught:
        deepdiff.read_cell("X", splits, expression)
    message = str(caught.value)
    assert message.startswith(str(folder / "X.valid.csv"))
    for fragment in fragments:
        assert fragment in message


# expression tables ------------------------------------------------------------------


def test_the_median_of_huge_expression_values_does_not_overflow():
    values = np.array([1.2e308, 1.0e308, 1.6e308, 1.4e308])
    labels, threshold = labels_from_expression(values)
    exact = float((Fraction(1.2e308) + Fraction(1.4e308)) / 2)
    assert threshold == exact
    assert labels.tolist() == [0, 0, 1, 1]


# tracks and gene coordinates ---------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("line, fragments", [
    ("chr1\t10\t20\t1e39", ("line 2", "field value", "too large")),
    ("chr1\t10\t20\t340282350000000000000000000000000000000.5e1", ("line 2", "field value", "too large")),
    ("chr1\t10\t9223372036854775808\t1", ("line 2", "field end", "beyond the largest position")),
    ("chr1\t10\t99999999999999999999999\t1", ("line 2", "field end", "beyond the largest position")),
    ("chr1\t18446744073709551615\t18446744073709551616\t1", ("line 2", "field start", "beyond the largest")),
])
def test_bedgraph_values_and_coordinates_beyond_their_types(tmp_path, line, fragments):
    path = _write(tmp_path / "t.bedGraph", "chr1\t0\t10\t1\n" + line + "\n")
    with pytest.raises(InputError) as caught:
        read_track(path)
    message = str(caught.value)
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message


def test_the_largest_float32_value_is_a_valid_bedgraph_value(tmp_path):
    track = read_track(_write(tmp_path / "t.bedGraph", f"chr1\t0\t10\t{FLOAT32_MAX!r}\nchr1\t10\t20\t3.4028235e38\n"))
    assert track.chroms["chr1"].values.tolist() == [FLOAT32_MAX, 3.4028235e38]
    assert np.float32(3.4028235e38) == np.float32(FLOAT32_MAX)


@pytest.mark.parametrize("name, text, field", [
    ("g.bed", "chr1\t99999999999999999999\t99999999999999999999\tENSG00000000001\t0\t+\n", "start"),
    ("g.gtf", 'chr1\tx\tgene\t10\t99999999999999999999\t.\t+\t.\tgene_id "ENSG00000000001";\n', "end"),
])
def test_gene_coordinates_beyond_int64_are_refused(tmp_path, name, text, field):
    path = _write(tmp_path / name, text)
    with pytest.raises(InputError, match=rf"{name}, line 1, field {field}: coordinate 9+ is beyond the largest"):
        read_genes(path)


def test_a_window_reaching_past_the_largest_position_names_the_gene(tmp_path):
    track = _write(tmp_path / "t.bedGraph", "chr1\t0\t10\t1\n")
    tss = INT64_MAX - 500
    genes = _write(tmp_path / "g.bed", f"chr1\t5\t6\tENSG00000000001\t0\t+\n"
                                       f"chr1\t{tss}\t{tss + 1}\tENSG00000000002\t0\t-\n")
    with pytest.raises(InputError, match=r"g.bed, line 2: gene ENSG00000000002: TSS \d+ plus the window of 1000 bp"):
        read_tracks_cell("c", tracks={"H3K4me3": track}, genes=genes, bin_size=100, window=1000)


def _huge_track_cell(tmp_path, aggregate):
    # Ten 10 bp intervals of 3e38 each: every one fits float32, a 100 bp bin's sum (3e39) does not.
    lines = "".join(f"chr1\t{i * 10}\t{i * 10 + 10}\t3e38\n" for i in range(30))
    k4 = _write(tmp_path / "k4.bedGraph", lines)
    k27 = _write(tmp_path / "k27.bedGraph", "chr1\t0\t300\t1\n")
    genes = _write(tmp_path / "g.bed", "chr1\t150\t151\tENSG00000000001\t0\t+\n")
    return read_tracks_cell("c", tracks={"H3K27me3": k27, "H3K4me3": k4}, genes=genes, bin_size=100, window=100,
                            aggregate=aggregate)


def test_a_bin_summing_beyond_float32_names_the_track_and_region(tmp_path):
    with pytest.raises(InputError) as caught:
        _huge_track_cell(tmp_path, "sum")
    assert str(caught.value).startswith(f"{tmp_path / 'k4.bedGraph'}: the sum over chr1:50-150 (bin 1 of gene "
                                        "ENSG00000000001) is 3e+39, beyond the largest count")


@pytest.mark.parametrize("aggregate", ["sum", "mean"])
def test_a_huge_value_does_not_swamp_small_ones_elsewhere_on_the_chromosome(tmp_path, aggregate):
    # Running totals would hold 3.4e38 + 0.125, which is 3.4e38: the small bins would read 0.
    track = _write(tmp_path / "t.bedGraph", f"chr1\t0\t1\t{FLOAT32_MAX!r}\nchr1\t1000\t1010\t0.125\n"
                                            "chr1\t1010\t1030\t3\n")
    genes = _write(tmp_path / "g.bed", "chr1\t1010\t1011\tENSG00000000001\t0\t+\n"
                                       "chr1\t1010\t1011\tENSG00000000002\t0\t-\n")
    cell = read_tracks_cell("c", tracks={"H3K4me3": track}, genes=genes, bin_size=10, window=20, aggregate=aggregate)
    counts = np.concatenate(cell.counts)[:, :, 0]
    # + strand bins [990,1000) [1000,1010) [1010,1020) [1020,1030); - strand (mirrored around
    # base 1010) [1021,1031) [1011,1021) [1001,1011) [991,1001). Per base: 0.0125 on [1000,1010),
    # 0.15 on [1010,1030) when summing counts; 0.125 and 3 as signal (mean).
    if aggregate == "sum":
        expected = [[0, 0.125, 1.5, 1.5], [9 * 0.15, 1.5, 9 * 0.0125 + 0.15, 0.0125]]
    else:
        expected = [[0, 0.125, 3, 3], [2.7, 3, (9 * 0.125 + 3) / 10, 0.0125]]
    np.testing.assert_allclose(counts, np.array(expected, dtype=np.float32), rtol=1e-6)


def test_the_mean_of_huge_values_fits(tmp_path):
    cell = _huge_track_cell(tmp_path, "mean")
    assert np.concatenate(cell.counts)[0, :, 1].tolist() == [np.float32(3e38)] * 2


# predict TSVs ---------------------------------------------------------------------------


MARKS = ("H3K4me3", "H3K4me1", "H3K36me3", "H3K9me3", "H3K27me3")


def _long(path: Path, value: str, gzipped: bool = False) -> Path:
    rows = ["gene_id\tbin\t" + "\t".join(MARKS)]
    rows += [f"g{g}\t{b}\t" + "\t".join(["1"] * 5) for g in range(2) for b in range(1, 5)]
    rows[3] = "g0\t3\t1\t1\t1\t1\t" + value
    text = "\n".join(rows) + "\n"
    if gzipped:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def _wide(path: Path, value: str) -> Path:
    header = ["gene_id"] + [f"{m}_{b}" for m in MARKS for b in range(1, 5)]
    rows = ["\t".join(header), "\t".join(["g0"] + ["1"] * 20), "\t".join(["g1"] + ["1"] * 19 + [value])]
    return _write(path, "\n".join(rows) + "\n")


@pytest.mark.parametrize("layout", ["long", "wide"])
def test_predict_refuses_values_beyond_float32_and_scores_the_largest(tiny_model, tmp_path, layout):
    if layout == "long":
        write, field, line = _long, "field H3K27me3", "line 4"
    else:
        write, field, line = _wide, "field H3K27me3_4", "line 3"
    bad = write(tmp_path / "bad.tsv", "1e39")
    out = tmp_path / "out.tsv"
    result = run_cli("predict", "logistic", bad, "--cell", "sim01", "-o", out, env=tiny_model)
    assert_one_line_error(result, str(bad), line, field, "too large")
    assert not out.exists()
    # log1p of the largest float32 is 88.7: the model still gives a probability.
    edge = run_cli("predict", "logistic", write(tmp_path / "edge.tsv", repr(FLOAT32_MAX)), "--cell", "sim01",
                   env=tiny_model)
    assert edge.code == 0, edge.stderr
    rows = parse_tsv(edge.stdout)
    assert [r["gene_id"] for r in rows] == ["g0", "g1"]
    assert all(0.0 <= float(r["probability"]) <= 1.0 for r in rows)


def test_a_wide_header_with_non_ascii_digits_is_an_error(tiny_model, tmp_path):
    path = _wide(tmp_path / "w.tsv", "1")
    path.write_text(path.read_text().replace("H3K4me3_2\t", "H3K4me3_\u00b2\t", 1))
    assert_one_line_error(run_cli("predict", "logistic", path, "--cell", "sim01", env=tiny_model),
                          "line 1", "field H3K4me3_\u00b2", "neither 'bin'")


# chromosome naming styles -------------------------------------------------------------


UCSC_LINES = "chr1\t0\t1000\t5\nchr1\t1000\t2000\t7\nchrM\t0\t100\t3\nchr2\t0\t500\t4\n"
ENSEMBL_LINES = UCSC_LINES.replace("chrM", "MT").replace("chr", "")
UCSC_GENES = ("chr1\t500\t501\tENSG00000000001_A\t0\t+\nchr1\t1500\t1501\tENSG00000000002_B\t0\t-\n"
              "chrM\t50\t51\tENSG00000000003_C\t0\t+\nchr2\t250\t251\tENSG00000000004_D\t0\t+\n")


def _style_cell(tmp_path, genes_text, k4_text, k27_text, notes=None, **options):
    genes = _write(tmp_path / "genes.bed", genes_text)
    k4 = _write(tmp_path / "k4.bedGraph", k4_text)
    k27 = _write(tmp_path / "k27.bedGraph", k27_text)
    return read_tracks_cell("c", tracks={"H3K4me3": k4, "H3K27me3": k27}, genes=genes, bin_size=100, window=200,
                            notes=notes, **options)


def test_ensembl_tracks_match_ucsc_genes(tmp_path):
    reference = _style_cell(tmp_path, UCSC_GENES, UCSC_LINES, UCSC_LINES)
    notes: list[str] = []
    # One track of two named the other way, as when files come from different sources.
    mixed = _style_cell(tmp_path, UCSC_GENES, ENSEMBL_LINES, UCSC_LINES, notes)
    assert np.array_equal(np.concatenate(mixed.counts), np.concatenate(reference.counts))
    # chrM's gene: 100 bp bins from -150 to 250 over [0,100) of value 3 (spread 0.03/bp).
    assert np.concatenate(mixed.counts)[2, :, 0].tolist() == pytest.approx([0, 1.5, 1.5, 0])
    assert notes == ["k4.bedGraph: chromosomes named Ensembl-style (1, 2, MT), the genes of genes.bed UCSC-style "
                     "(chr1, chr2, chrM); matched them by name (chr1 = 1, chrM = MT)"]
    both = _style_cell(tmp_path, UCSC_GENES, ENSEMBL_LINES, ENSEMBL_LINES)
    assert np.array_equal(np.concatenate(both.counts), np.concatenate(reference.counts))


def test_ucsc_tracks_match_ensembl_genes_and_the_genes_keep_their_names(tmp_path):
    genes = UCSC_GENES.replace("chrM", "MT").replace("chr", "")
    reference = _style_cell(tmp_path, genes, ENSEMBL_LINES, ENSEMBL_LINES)
    cell = _style_cell(tmp_path, genes, UCSC_LINES, UCSC_LINES)
    assert np.array_equal(np.concatenate(cell.counts), np.concatenate(reference.counts))
    assert cell.coordinates["chrom"].tolist() == ["1", "1", "MT", "2"]


@pytest.mark.parametrize("k4, fragment", [
    # Both M and MT would become chrM: which one is meant is unclear.
    (ENSEMBL_LINES + "M\t0\t100\t9\n", "k4.bedGraph is Ensembl-style (1, 2, M, ...)"),
    # Mixed names: no rule renames them all.
    (UCSC_LINES.replace("chr2", "2"), "k4.bedGraph mixes both styles (2, chr1, chrM)"),
])
def test_ambiguous_chromosome_names_are_refused_naming_each_files_style(tmp_path, k4, fragment):
    with pytest.raises(InputError) as caught:
        _style_cell(tmp_path, UCSC_GENES, k4, UCSC_LINES)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'genes.bed'}: ")
    assert "genes.bed is UCSC-style (chr1, chr2, chrM)" in message
    assert fragment in message
    assert "k27.bedGraph is UCSC-style" in message


def test_prepare_tracks_says_which_names_it_matched(tmp_path):
    genes = _write(tmp_path / "genes.bed", UCSC_GENES)
    tracks = [f"--track=H3K4me3={_write(tmp_path / 'k4.bedGraph', ENSEMBL_LINES)}",
              f"--track=H3K27me3={_write(tmp_path / 'k27.bedGraph', UCSC_LINES)}"]
    store = tmp_path / "s.h5"
    result = run_cli("prepare", "tracks", "--cell", "T", *tracks, "--genes", genes, "--bin-size", 100,
                     "--window", 200, "--store", store)
    assert result.code == 0, result.stderr
    assert "note: k4.bedGraph: chromosomes named Ensembl-style" in result.stderr
    assert Store(store).load("T").coordinates["chrom"].tolist() == ["chr1", "chr1", "chrM", "chr2"]


def test_predict_tracks_are_checked_and_matched_like_prepared_ones(tiny_model, tmp_path):
    genes = _write(tmp_path / "genes.bed", UCSC_GENES)
    tracks = {mark: _write(tmp_path / f"{mark}.bedGraph", ENSEMBL_LINES) for mark in MARKS}
    options = [f"--track={mark}={path}" for mark, path in tracks.items()] + ["--genes", genes]
    result = run_cli("predict", "logistic", "--cell", "sim01", *options, env=tiny_model)
    assert result.code == 0, result.stderr
    assert [row["gene_id"] for row in parse_tsv(result.stdout)] == [f"ENSG0000000000{i}_{c}" for i, c in
                                                                    zip(range(1, 5), "ABCD", strict=True)]
    assert "chromosomes named Ensembl-style (1, 2, MT)" in result.stderr
    tracks["H3K9me3"].write_text("1\t0\t1000\t5\n1\t1000\t2000\t1e39\n")
    out = tmp_path / "out.tsv"
    result = run_cli("predict", "logistic", "--cell", "sim01", *options, "-o", out, env=tiny_model)
    assert_one_line_error(result, "H3K9me3.bedGraph", "line 2", "field value", "too large")
    assert not out.exists()


# text that Python reads as a number but a data file should not hold ---------------------


@pytest.mark.parametrize("name, text, fragment", [
    ("g.bed", "chr1\t\u0663\t5\tENSG00000000001\t0\t+\n", "field start: '\u0663' is not an integer"),
    ("g.bed", "chr1\t1_0\t50\tENSG00000000001\t0\t+\n", "field start: '1_0' is not an integer"),
    ("t.bedGraph", "chr1\t0\t10\t1_5\n", "field value: '1_5' is not a number"),
    ("t.bedGraph", "chr1\t\u0663\t10\t1\n", "field start: '\u0663' is not an integer"),
])
def test_numbers_are_ascii_without_underscores(tmp_path, name, text, fragment):
    # float() and int() accept "1_5" and digits of other scripts; pandas and other tools do not.
    path = _write(tmp_path / name, text)
    with pytest.raises(InputError, match=f"{name}, line 1, {fragment}"):
        (read_genes if name.endswith(".bed") else read_track)(path)


def test_expression_values_are_ascii_numbers(tmp_path):
    from histcli.sources.expression import read_expression

    path = _write(tmp_path / "e.csv", "ENSG00000000001,1\nENSG00000000002,\u0663\n")
    with pytest.raises(InputError, match=r"e.csv, line 2, field expression: '\u0663' is not a number"):
        read_expression(path)
    files = {"tracks": {"H3K4me3": _write(tmp_path / "t.bedGraph", "chr1\t0\t10\t1\n")},
             "genes": _write(tmp_path / "g.bed", "chr1\t5\t6\tENSG00000000001\t0\t+\n"),
             "expression": _write(tmp_path / "x.tsv", "gene\tvalue\nENSG00000000001\t2_0\n")}
    with pytest.raises(InputError, match=r"x.tsv, line 2, field expression: '2_0' is not a number"):
        read_tracks_cell("c", **files, bin_size=5, window=5)


def test_a_byte_order_mark_is_not_part_of_the_first_name(tmp_path):
    bom = "\ufeff"
    genes = read_genes(_write(tmp_path / "g.bed", bom + "chr1\t5\t6\tENSG00000000001\t0\t+\n"))
    assert genes.chrom.tolist() == ["chr1"]
    track = read_track(_write(tmp_path / "t.bedGraph", bom + "chr1\t0\t10\t1\n"))
    assert list(track.chroms) == ["chr1"]
    gz = tmp_path / "t.bedGraph.gz"
    gz.write_bytes(gzip.compress((bom + "chr2\t0\t10\t1\n").encode()))
    assert list(read_track(gz).chroms) == ["chr2"]


def test_an_infinite_bin_is_refused_before_it_is_cast(tmp_path):
    folder = _deepchrome_folder(tmp_path / "c")
    train = folder / "train.csv"
    train.write_text(train.read_text().replace("train0,3,", "train0,inf,", 1))
    with pytest.raises(InputError, match=r"train.csv, line 3, field bin: 'inf' is not a finite number"):
        deepchrome.read_cell("c", {s: folder / f"{s}.csv" for s in ("train", "valid", "test")})


def test_a_chromosome_split_may_name_chromosomes_in_the_other_style(tmp_path):
    genes = UCSC_GENES.replace("chrM", "MT").replace("chr", "")
    notes: list[str] = []
    cell = _style_cell(tmp_path, genes, ENSEMBL_LINES, ENSEMBL_LINES, notes,
                       split_by_chromosome={"test": ["chr2"], "valid": ["chrM", "chr9"]})
    assert cell.split.tolist() == [SPLIT_CODES[s] for s in ("train", "train", "valid", "test")]
    assert notes == ["chromosome split: chr2 (test) taken as 2, as genes.bed names chromosomes Ensembl-style",
                     "chromosome split: chrM (valid) taken as MT, as genes.bed names chromosomes Ensembl-style",
                     "chromosome split: no gene of the cell lies on chr9 (valid)"]
