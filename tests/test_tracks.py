"""Genome-wide tracks binned around TSSs: hand-worked examples, real E116 data, bad input."""

from __future__ import annotations

import collections
import gzip
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data

from histcli.errors import InputError, MissingExtraError, MissingGenesError, UsageError, describe
from histcli.sources import tracks as tracks_module
from histcli.sources.annotation import read_genes
from histcli.sources.tracks import bin_tracks, read_track, read_tracks_cell
from histcli.store import SPLIT_CODES, Store

# chr1 in 10 bp steps with values 1..8: [0,10)=1, [10,20)=2, ..., [70,80)=8.
FINE = [("chr1", 10 * i, 10 * i + 10, i + 1) for i in range(8)]
# chr1 in 20 bp steps: [0,20)=10, [20,40)=20, [40,60)=40.
COARSE = [("chr1", 0, 20, 10), ("chr1", 20, 40, 20), ("chr1", 40, 60, 40)]


def write_lines(path: Path, lines, *, compress: bool = False) -> Path:
    text = "".join("\t".join(map(str, fields)) + "\n" for fields in lines)
    if compress:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def bins(tmp_path: Path, intervals, genes, *, bin_size: int, window: int, aggregate: str = "sum") -> np.ndarray:
    """Bin one bedGraph track around genes given as (chrom, tss, strand); returns genes x bins."""
    track = read_track(write_lines(tmp_path / "track.bedGraph", intervals))
    bed = [(chrom, tss, tss + 1, f"g{i}", 0, strand) for i, (chrom, tss, strand) in enumerate(genes)]
    table = read_genes(write_lines(tmp_path / "genes.bed", bed))
    return bin_tracks({"H3K4me3": track}, table, bin_size=bin_size, window=window, aggregate=aggregate)[:, :, 0]


# binning rules, worked by hand -----------------------------------------------------


def test_bins_aligned_with_the_track_reproduce_its_counts(tmp_path):
    result = bins(tmp_path, FINE, [("chr1", 40, "+")], bin_size=10, window=20)
    # Bins [20,30) [30,40) [40,50) [50,60) are exactly the track's intervals.
    assert result.tolist() == [[3, 4, 5, 6]]


def test_bins_wider_than_the_track_add_its_intervals(tmp_path):
    result = bins(tmp_path, FINE, [("chr1", 40, "+")], bin_size=20, window=20)
    assert result.tolist() == [[3 + 4, 5 + 6]]


def test_a_coarser_track_is_split_in_proportion_to_the_overlap(tmp_path):
    result = bins(tmp_path, COARSE, [("chr1", 40, "+")], bin_size=10, window=20)
    # Each 20 bp interval gives half its count to each 10 bp bin it covers.
    assert result.tolist() == [[10, 10, 20, 20]]


def test_mean_aggregation_averages_the_signal_over_the_bin(tmp_path):
    result = bins(tmp_path, COARSE, [("chr1", 40, "+")], bin_size=10, window=20, aggregate="mean")
    assert result.tolist() == [[20, 20, 40, 40]]


def test_a_bin_straddling_two_intervals_takes_a_share_of_each(tmp_path):
    fine = bins(tmp_path, FINE, [("chr1", 35, "+")], bin_size=10, window=10)
    # [25,35): half of [20,30)=3 and half of [30,40)=4; [35,45): half of 4 and half of 5.
    assert fine.tolist() == [[1.5 + 2.0, 2.0 + 2.5]]
    coarse = bins(tmp_path, COARSE, [("chr1", 35, "+")], bin_size=10, window=10)
    # [25,35): 10 of the 20 bases of [20,40)=20; [35,45): 5 bases of it and 5 of [40,60)=40.
    assert coarse.tolist() == [[10.0, 5.0 + 10.0]]
    mean = bins(tmp_path, COARSE, [("chr1", 35, "+")], bin_size=10, window=10, aggregate="mean")
    assert mean.tolist() == [[20.0, (20 * 5 + 40 * 5) / 10]]


def test_bases_without_intervals_count_as_zero(tmp_path):
    gapped = [("chr1", 0, 10, 1), ("chr1", 30, 40, 4)]
    result = bins(tmp_path, gapped, [("chr1", 20, "+"), ("chr1", 40, "+")], bin_size=10, window=20)
    assert result.tolist() == [[1, 0, 0, 4], [0, 4, 0, 0]]


def test_minus_strand_bins_run_five_prime_to_three_prime(tmp_path):
    # TSS base 39 on '-': bin k covers [60 - 10(k+1), 60 - 10k), the mirror image of
    # the '+' bins around base 39, so bin 0 is the upstream (right-hand) end.
    result = bins(tmp_path, FINE, [("chr1", 39, "-"), ("chr1", 40, "+")], bin_size=10, window=20)
    assert result.tolist() == [[6, 5, 4, 3], [3, 4, 5, 6]]


def test_windows_running_past_the_chromosome_start(tmp_path):
    result = bins(tmp_path, FINE, [("chr1", 5, "+"), ("chr1", 5, "-")], bin_size=10, window=20)
    # '+': [-15,-5) [-5,5) [5,15) [15,25); '-': [16,26) [6,16) [-4,6) [-14,-4).
    expected_plus = [0, 0.5 * 1, 0.5 * 1 + 0.5 * 2, 0.5 * 2 + 0.5 * 3]
    expected_minus = [0.4 * 2 + 0.6 * 3, 0.4 * 1 + 0.6 * 2, 0.6 * 1, 0]
    assert result[0] == pytest.approx(expected_plus, abs=1e-12)
    assert result[1] == pytest.approx(expected_minus, abs=1e-12)


@pytest.mark.parametrize("aggregate", ["sum", "mean"])
def test_random_tracks_match_a_base_by_base_count(tmp_path, monkeypatch, aggregate):
    """Spread every interval over its bases one by one and add up each bin's bases."""
    rng = np.random.default_rng(7)
    intervals, per_base = [], {}
    for chrom, length in (("chr1", 600), ("chr2", 400)):
        cuts = np.sort(rng.choice(np.arange(1, length), size=40, replace=False))
        bases = [0.0] * length
        for start, end in zip(cuts[:-1], cuts[1:], strict=True):
            if rng.random() < 0.25:
                continue  # a gap: no reads
            value = int(rng.integers(0, 50))
            intervals.append((chrom, int(start), int(end), value))
            for base in range(start, end):
                bases[base] = value / (end - start) if aggregate == "sum" else value
        per_base[chrom] = bases
    genes = [
        (str(rng.choice(["chr1", "chr2"])), int(rng.integers(0, 400)), str(rng.choice(["+", "-"]))) for _ in range(30)
    ]
    bin_size, window = 6, 21
    expected = []
    for chrom, tss, strand in genes:
        rows = []
        for k in range(2 * window // bin_size):
            if strand == "+":
                first = tss - window + k * bin_size
            else:
                first = tss + 1 + window - (k + 1) * bin_size
            total = sum(per_base[chrom][base] for base in range(first, first + bin_size) if base >= 0)
            rows.append(total / bin_size if aggregate == "mean" else total)
        expected.append(rows)
    whole = bins(tmp_path, intervals, genes, bin_size=bin_size, window=window, aggregate=aggregate)
    assert whole == pytest.approx(np.array(expected))
    # Binning in blocks of a few genes gives the same values in the same order.
    monkeypatch.setattr(tracks_module, "_BLOCK_VALUES", 3 * 8)
    assert np.array_equal(bins(tmp_path, intervals, genes, bin_size=bin_size, window=window, aggregate=aggregate), whole)


def test_a_bedgraph_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "t.bedGraph"
    path.write_bytes(b"chr1\t0\t100\t5\nchr1\t100\t200\t6\nchr\xe91\t200\t300\t7\n")
    with pytest.raises(InputError, match=r"t\.bedGraph, line 3: not UTF-8 text \(byte 0xe9 at character 4\)"):
        read_track(path)


def test_a_genes_file_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "genes.bed"
    path.write_bytes(b"chr1\t0\t20\tENSG00000000001_A\nchr1\t0\t20\tENSG0000000000\xe92_B\n")
    with pytest.raises(InputError) as caught:
        read_genes(path)
    assert str(caught.value) == f"{path}, line 2: not UTF-8 text (byte 0xe9 at character 25); save the file as UTF-8"


def test_window_must_be_whole_bins(tmp_path):
    with pytest.raises(UsageError, match="whole number"):
        bins(tmp_path, FINE, [("chr1", 40, "+")], bin_size=30, window=20)


def test_bin_tracks_refuses_a_gene_on_a_chromosome_the_track_lacks(tmp_path):
    with pytest.raises(InputError, match="chr2"):
        bins(tmp_path, FINE, [("chr1", 40, "+"), ("chr2", 40, "+")], bin_size=10, window=20)


# gene annotation -------------------------------------------------------------------


def test_bed_tss_rules(tmp_path):
    path = write_lines(
        tmp_path / "genes.bed",
        [
            ("#chrom", "start", "end", "name"),
            ("track", "name=genes"),
            ("chr1", 100, 101, "ENSG00000000001_A", 0, "+"),  # a TSS base
            ("chr1", 200, 220, "ENSG00000000002_B", 0, "-"),  # a window: TSS = 200 + 10
            ("chr1", 300, 321, "ENSG00000000003_C", 0, "."),  # unknown strand reads as '+'
            ("chr2", 400, 410, "ENSG00000000004_D"),  # no strand column reads as '+'
        ],
    )
    table = read_genes(path)
    assert table.name.tolist() == [f"ENSG0000000000{i}_{c}" for i, c in zip("1234", "ABCD", strict=True)]
    assert table.key.tolist() == [f"ENSG0000000000{i}" for i in "1234"]
    assert table.tss.tolist() == [100, 210, 310, 405]
    assert table.strand.tolist() == ["+", "-", "+", "+"]
    assert table.line.tolist() == [3, 4, 5, 6]
    assert table.n_unstranded == 2


def test_gtf_tss_is_the_five_prime_end_in_zero_based_coordinates(tmp_path):
    attributes = 'gene_id "{}"; gene_name "{}"; gene_type "protein_coding";'
    path = write_lines(
        tmp_path / "genes.gtf.gz",
        [
            ("##description: test",),
            ("chr1", "test", "gene", 101, 200, ".", "+", ".", attributes.format("ENSG00000000001.5", "AAA")),
            ("chr1", "test", "transcript", 101, 200, ".", "+", ".", attributes.format("ENSG00000000001.5", "AAA")),
            ("chr1", "test", "exon", 101, 150, ".", "+", ".", attributes.format("ENSG00000000001.5", "AAA")),
            ("chr3", "test", "gene", 301, 400, ".", "-", ".", 'gene_id "ENSG00000000002.1";'),
        ],
        compress=True,
    )
    table = read_genes(path)
    # 1-based inclusive [101, 200] is 0-based [100, 200): '+' TSS 100; [301, 400] on '-': TSS 399.
    assert table.name.tolist() == ["ENSG00000000001.5", "ENSG00000000002.1"]
    assert table.key.tolist() == ["ENSG00000000001", "ENSG00000000002"]
    assert table.chrom.tolist() == ["chr1", "chr3"]
    assert table.tss.tolist() == [100, 399]
    assert table.strand.tolist() == ["+", "-"]
    assert table.line.tolist() == [2, 5]


def test_gtf_genes_bin_like_the_same_genes_in_bed(tmp_path):
    track = read_track(write_lines(tmp_path / "t.bedGraph", FINE))
    gtf = write_lines(
        tmp_path / "g.gtf",
        [
            ("chr1", "t", "gene", 41, 70, ".", "+", ".", 'gene_id "ENSG00000000001";'),
            ("chr1", "t", "gene", 11, 40, ".", "-", ".", 'gene_id "ENSG00000000002";'),
        ],
    )
    result = bin_tracks({"H3K4me3": track}, read_genes(gtf), bin_size=10, window=20)[:, :, 0]
    # TSS 40 on '+' and 39 on '-': see the strand test above.
    assert result.tolist() == [[3, 4, 5, 6], [6, 5, 4, 3]]


def test_gff3_genes_read_like_the_same_genes_in_gtf(tmp_path):
    """GENCODE and Ensembl GFF3 give the genes of the equivalent GTF; other features and FASTA are skipped."""
    genes = [("chr1", 101, 200, "+", "ENSG00000000001.5"), ("chr3", 301, 400, "-", "ENSG00000000002.1"),
             ("chrX", 11, 20, ".", "ENSG00000000003.2")]
    gtf = write_lines(tmp_path / "g.gtf", [(c, "t", "gene", s, e, ".", st, ".", f'gene_id "{g}";')
                                           for c, s, e, st, g in genes])
    gencode = write_lines(tmp_path / "gencode.gff3.gz", [("##gff-version 3",)] + [
        row for c, s, e, st, g in genes for row in (
            (c, "HAVANA", "gene", s, e, ".", st, ".", f"ID={g};gene_id={g};gene_type=protein_coding;gene_name=A%3BB"),
            (c, "HAVANA", "transcript", s, e, ".", st, ".", f"ID=T{g};Parent={g};gene_id={g}"),
        )
    ], compress=True)
    ensembl_types = ["gene", "ncRNA_gene", "pseudogene"]
    ensembl = write_lines(tmp_path / "ensembl.txt", [("##gff-version 3",)] + [
        (c, "ensembl", kind, s, e, ".", st, ".", f"ID=gene:{g.split('.')[0]};Name=X;biotype=lncRNA")
        for (c, s, e, st, g), kind in zip(genes, ensembl_types, strict=True)
    ] + [("##FASTA",), (">chr9",), ("chr9", "ensembl", "gene", 1, 2, ".", "+", ".", "ID=gene:ENSG00000000009")])
    expected = read_genes(gtf)
    assert expected.tss.tolist() == [100, 399, 10]
    for path in (gencode, ensembl):
        table = read_genes(path)
        assert table.key.tolist() == expected.key.tolist(), path
        for column in ("chrom", "tss", "strand"):
            assert getattr(table, column).tolist() == getattr(expected, column).tolist(), (path, column)
        assert table.n_unstranded == 1
    assert read_genes(gencode).name.tolist() == [g for *_, g in genes]
    assert read_genes(ensembl).name.tolist() == ["ENSG00000000001", "ENSG00000000002", "ENSG00000000003"]
    # Without extension or version line, key=value attributes still say GFF3.
    bare = write_lines(tmp_path / "genes.annotation", [("chr1", "t", "gene", 5, 9, ".", "-", ".", "ID=ENSG00000000004")])
    assert read_genes(bare).tss.tolist() == [8]


def test_gff3_errors_name_the_line_and_field(tmp_path):
    no_id = write_lines(tmp_path / "a.gff3", [("##gff-version 3",),
                                              ("chr1", "t", "gene", 5, 9, ".", "+", ".", "Name=TP53;biotype=x")])
    with pytest.raises(InputError) as error:
        read_genes(no_id)
    assert error.value.line == 2 and error.value.field == "attributes" and "gene_id or ID" in str(error.value)
    broken = write_lines(tmp_path / "b.gff3", [("chr1", "t", "gene", 5, 9, ".", "+", ".", "ID=G1;orphan")])
    with pytest.raises(InputError) as error:
        read_genes(broken)
    assert error.value.line == 1 and "'orphan' is not key=value" in str(error.value)
    backwards = write_lines(tmp_path / "c.gff3", [("chr1", "t", "gene", 9, 5, ".", "+", ".", "ID=G1")])
    with pytest.raises(InputError) as error:
        read_genes(backwards)
    assert error.value.field == "end" and "end 5 is before start 9" in str(error.value)


def test_gff_and_nine_column_files_are_told_apart_by_content(tmp_path):
    """.gff may be GTF-like (GFF2); a 9-column BED with '=' in column 9 stays BED; GFF3 '?' strands are unknown."""
    gff2 = write_lines(tmp_path / "genes.gff", [("chr1", "t", "gene", 101, 200, ".", "-", ".",
                                                 'gene_id "ENSG00000000001";')])
    assert read_genes(gff2).tss.tolist() == [199]
    bed9 = write_lines(tmp_path / "genes.txt", [("chr1", 100, 300, "ENSG00000000002", 0, "-", 100, 300, "type=pc")])
    table = read_genes(bed9)
    assert table.tss.tolist() == [200] and table.strand.tolist() == ["-"]
    gff3 = write_lines(tmp_path / "genes.gff3", [("chr1", "t", "gene", 5, 9, ".", "?", ".", "ID=ENSG00000000003;;"),
                                                 ("chr1", "t", "gene", 20, 30, ".", "+", ".", ".")])
    with pytest.raises(InputError) as error:
        read_genes(gff3)
    assert error.value.line == 2 and "without a gene_id or ID" in str(error.value)
    gff3.write_text(gff3.read_text().splitlines()[0] + "\n")
    table = read_genes(gff3)
    assert table.tss.tolist() == [4] and table.n_unstranded == 1


def test_the_same_gene_twice_at_one_tss_is_kept_once(tmp_path):
    path = write_lines(
        tmp_path / "genes.bed",
        [
            ("chr1", 0, 20, "ENSG00000000001_A"),
            ("chr1", 0, 20, "ENSG00000000001_B"),
            ("chr1", 50, 70, "ENSG00000000002_C"),
        ],
    )
    table = read_genes(path)
    assert table.name.tolist() == ["ENSG00000000001_A", "ENSG00000000002_C"]
    assert table.repeated == [("ENSG00000000001_A", "ENSG00000000001_B")]


# reading whole cells ----------------------------------------------------------------


@pytest.fixture
def small_cell_files(tmp_path):
    """Two marks on chr1 and chr2, four genes (one on chrX), expression and a split file."""
    k4 = write_lines(tmp_path / "k4.bedGraph.gz", FINE + [("chr2", 0, 100, 10)], compress=True)
    k27 = write_lines(tmp_path / "k27.bedGraph", COARSE + [("chr2", 0, 50, 5)])
    genes = write_lines(
        tmp_path / "genes.bed",
        [
            ("#chrom", "start", "end", "name"),
            ("chr1", 20, 60, "ENSG00000000001_A", 0, "+"),
            ("chr2", 39, 40, "ENSG00000000002_B", 0, "-"),
            ("chrX", 40, 41, "ENSG00000000003_C", 0, "+"),
            ("chr1", 39, 40, "ENSG00000000004_D", 0, "-"),
        ],
    )
    expression = write_text(
        tmp_path / "expr.tsv",
        "gene_id\trpkm\nENSG00000000001.3\t5\nENSG00000000002\t1\nENSG00000000003\t7\n"
        "ENSG00000000004\t2\nENSG00000000009\t100\n",
    )
    split = write_text(tmp_path / "split.tsv", "gene_id\tsplit\nENSG00000000001\ttrain\nENSG00000000002\ttest\n")
    return {"tracks": {"h3k4me3": k4, "H3K27ME3": k27}, "genes": genes, "expression": expression, "split": split}


def test_read_tracks_cell_builds_a_complete_cell(tmp_path, small_cell_files):
    files = small_cell_files
    notes: list[str] = []
    cell = read_tracks_cell(
        "small", **files, bin_size=10, window=20, drop_missing=True, notes=notes
    )
    assert cell.marks == ("H3K4me3", "H3K27me3")
    assert cell.gene_ids.tolist() == ["ENSG00000000001_A", "ENSG00000000002_B", "ENSG00000000004_D"]
    counts = np.concatenate(cell.counts)
    assert counts.dtype == np.int32
    assert counts[0, :, 0].tolist() == [3, 4, 5, 6]
    assert counts[0, :, 1].tolist() == [10, 10, 20, 20]
    # chr2, TSS 39 on '-', bins [50,60) [40,50) [30,40) [20,30): 10 over [0,100) is 1 per
    # 10 bp; 5 over [0,50) is 1 per 10 bp up to base 50.
    assert counts[1, :, 0].tolist() == [1, 1, 1, 1]
    assert counts[1, :, 1].tolist() == [0, 1, 1, 1]
    assert counts[2, :, 0].tolist() == [6, 5, 4, 3]
    assert cell.coordinates["chrom"].tolist() == ["chr1", "chr2", "chr1"]
    assert cell.coordinates["tss"].tolist() == [40, 39, 39]
    assert cell.coordinates["strand"].tolist() == ["+", "-", "-"]
    assert (cell.bin_size, cell.window, cell.tss_offset) == (10, 20, 20)
    # The median over all five genes of the expression table is 5, not that of the matched ones.
    assert cell.attrs["label_threshold"] == 5.0
    assert "expr.tsv" in cell.attrs["label_rule"]
    assert cell.expression.tolist() == [5, 1, 2]
    assert cell.labels.tolist() == [0, 0, 0]
    assert cell.split.tolist() == [SPLIT_CODES["train"], SPLIT_CODES["test"], SPLIT_CODES["none"]]
    assert cell.attrs["source_format"] == "tracks" and cell.attrs["aggregate"] == "sum"
    assert cell.attrs["orientation"] == "5' to 3'"  # every gene has a strand
    assert [Path(source.path).name for source in cell.sources] == [
        "k4.bedGraph.gz", "k27.bedGraph", "genes.bed", "expr.tsv", "split.tsv"
    ]
    joined = "\n".join(notes)
    assert "1 of 4 genes lie on chromosomes absent from the tracks (chrX 1)" in joined
    assert "1 of 3 genes are not in the split file" in joined
    assert "1 of 5 genes are not in genes.bed" in joined

    store = Store(tmp_path / "s.h5")
    store.write([cell])
    loaded = store.load("small")
    assert np.array_equal(loaded.counts, counts)
    assert loaded.coordinates["tss"].tolist() == [40, 39, 39]
    assert loaded.gene_ids.tolist() == cell.gene_ids.tolist()
    assert loaded.attrs["orientation"] == "5' to 3'"


@pytest.mark.parametrize(("strands", "orientation"), [(("+", "."), "partly unknown"), ((".", "."), "unknown")])
def test_genes_without_strand_leave_the_orientation_unknown(tmp_path, small_cell_files, strands, orientation):
    genes = write_lines(
        tmp_path / "unstranded.bed",
        [("chr1", 20, 60, "ENSG00000000001_A", 0, strands[0]), ("chr2", 39, 40, "ENSG00000000002_B", 0, strands[1])],
    )
    files = {**small_cell_files, "genes": genes}
    notes: list[str] = []
    cell = read_tracks_cell("small", **files, bin_size=10, window=20, notes=notes)
    assert cell.attrs["orientation"] == orientation
    assert any("no strand for" in note for note in notes)


def test_genes_on_absent_chromosomes_are_refused_without_drop_missing(small_cell_files):
    with pytest.raises(MissingGenesError) as caught:
        read_tracks_cell("small", **small_cell_files, bin_size=10, window=20)
    message = str(caught.value)
    assert "genes.bed" in message
    assert "1 of 4 genes lie on chromosomes absent from the tracks (chrX 1)" in message
    assert (caught.value.missing, caught.value.total) == (1, 4)
    # The library says what is wrong; the command line adds which option changes that.
    assert "--drop-missing" not in message
    assert describe(caught.value)[0] == message + "; pass --drop-missing to leave them out"


def test_missing_expression_is_refused_without_drop_missing(tmp_path, small_cell_files):
    files = dict(small_cell_files)
    files["expression"] = write_text(tmp_path / "partial.tsv", "ENSG00000000001\t5\nENSG00000000003\t7\n")
    files["genes"] = write_lines(
        tmp_path / "autosomal.bed",
        [
            ("chr1", 40, 41, "ENSG00000000001_A"),
            ("chr1", 50, 51, "ENSG00000000002_B"),
            ("chr2", 50, 51, "ENSG00000000004_D"),
        ],
    )
    with pytest.raises(InputError) as caught:
        read_tracks_cell("small", **files, bin_size=10, window=20)
    message = str(caught.value)
    assert "partial.tsv" in message
    assert "no expression value for 2 of 3 genes" in message
    assert "ENSG00000000002_B" in message
    notes: list[str] = []
    cell = read_tracks_cell("small", **files, bin_size=10, window=20, drop_missing=True, notes=notes)
    assert cell.gene_ids.tolist() == ["ENSG00000000001_A"]
    assert any("no expression value for 2 of 3 genes" in note for note in notes)


def test_without_expression_there_are_no_labels(small_cell_files):
    files = {key: small_cell_files[key] for key in ("tracks", "genes")}
    cell = read_tracks_cell("small", **files, bin_size=10, window=20, drop_missing=True)
    assert cell.expression is None and cell.labels is None
    assert "label_threshold" not in cell.attrs
    assert cell.split.tolist() == [SPLIT_CODES["none"]] * 3


def test_split_by_chromosome_and_by_fractions(small_cell_files):
    files = {key: small_cell_files[key] for key in ("tracks", "genes")}
    cell = read_tracks_cell(
        "small", **files, split_by_chromosome={"test": ["chr2"]}, bin_size=10, window=20, drop_missing=True
    )
    assert cell.split.tolist() == [SPLIT_CODES["train"], SPLIT_CODES["test"], SPLIT_CODES["train"]]
    settings = {"split_fractions": (0.34, 0.33, 0.33), "seed": 3, "bin_size": 10, "window": 20, "drop_missing": True}
    first = read_tracks_cell("a", **files, **settings)
    again = read_tracks_cell("a", **files, **settings)
    assert first.split.tolist() == again.split.tolist()
    assert sorted(first.split.tolist()) == [1, 2, 3]


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"split_by_chromosome": {"test": ["chr2"]}, "split_fractions": (0.8, 0.1, 0.1)}, "at most one"),
        ({"split_by_chromosome": {"train": ["chr2"]}}, "'valid' and 'test' only"),
        ({"split_by_chromosome": {"test": ["chr2"], "valid": ["chr2"]}}, "listed twice"),
        ({"split_fractions": (0.8, 0.1, 0.2)}, "sum to 1"),
        ({"bin_size": 30}, "whole number"),
        ({"aggregate": "max"}, "aggregate"),
    ],
)
def test_settings_that_cannot_work_are_usage_errors(small_cell_files, options, fragment):
    files = {key: small_cell_files[key] for key in ("tracks", "genes")}
    settings = {"bin_size": 10, "window": 20, "drop_missing": True, **options}
    with pytest.raises(UsageError, match=fragment):
        read_tracks_cell("small", **files, **settings)


def test_unknown_mark_names_are_usage_errors(small_cell_files):
    files = dict(small_cell_files)
    files["tracks"] = {"H3K4me3": files["tracks"]["h3k4me3"], "input": files["tracks"]["H3K27ME3"]}
    with pytest.raises(UsageError, match="'input' is not a histone mark"):
        read_tracks_cell("small", **files, bin_size=10, window=20, drop_missing=True)


def test_unknown_split_value_names_its_line(tmp_path, small_cell_files):
    files = dict(small_cell_files)
    files["split"] = write_text(
        tmp_path / "bad_split.tsv", "gene_id\tsplit\nENSG00000000001\ttrain\nENSG00000000002\ttrian\n"
    )
    with pytest.raises(InputError, match=r"bad_split.tsv, line 3, field split: split 'trian'"):
        read_tracks_cell("small", **files, bin_size=10, window=20, drop_missing=True)


def test_a_split_file_without_header_checks_its_first_line(tmp_path, small_cell_files):
    files = dict(small_cell_files)
    files["split"] = write_text(tmp_path / "bad_split.tsv", "ENSG00000000001\tvalidation\nENSG00000000002\ttest\n")
    with pytest.raises(InputError, match=r"bad_split.tsv, line 1, field split"):
        read_tracks_cell("small", **files, bin_size=10, window=20, drop_missing=True)


def test_a_split_file_that_is_not_utf8_names_the_line(tmp_path, small_cell_files):
    files = dict(small_cell_files)
    files["split"] = tmp_path / "split.tsv"
    files["split"].write_bytes(b"gene_id\tsplit\nENSG00000000001\ttrain\nENSG0000000000\xe92\ttest\n")
    with pytest.raises(InputError, match=r"split\.tsv, line 3: not UTF-8 text \(byte 0xe9 at character 15\)"):
        read_tracks_cell("small", **files, bin_size=10, window=20, drop_missing=True)


def test_expression_tables_may_be_comma_separated_and_repeat_genes(tmp_path, small_cell_files):
    files = dict(small_cell_files)
    files["expression"] = write_text(
        tmp_path / "expr.csv", "ENSG00000000001,5\nENSG00000000002,1\nENSG00000000002,1\nENSG00000000004,2\n"
    )
    notes: list[str] = []
    cell = read_tracks_cell("small", **files, bin_size=10, window=20, drop_missing=True, notes=notes)
    assert cell.expression.tolist() == [5, 1, 2]
    # The median counts every row, as DeepChrome did: median(5, 1, 1, 2) = 1.5.
    assert cell.attrs["label_threshold"] == 1.5
    assert cell.labels.tolist() == [1, 0, 1]
    assert any("1 rows repeat a gene" in note for note in notes)


def test_a_gene_with_two_expression_values_names_both_lines(tmp_path, small_cell_files):
    files = dict(small_cell_files)
    files["expression"] = write_text(tmp_path / "expr.tsv", "gene\tvalue\nENSG00000000001\t5\nENSG00000000001.2\t6\n")
    with pytest.raises(InputError, match=r"expr.tsv, line 3, field expression: .*5.0 on line 2"):
        read_tracks_cell("small", **files, bin_size=10, window=20, drop_missing=True)


def test_tracks_sharing_no_chromosome_with_the_genes_are_refused(tmp_path):
    # (1 and 2 against chr1 would be matched as the same chromosomes in another naming style.)
    track = write_lines(tmp_path / "t.bedGraph", [("chr5", 0, 100, 1), ("chr6", 0, 100, 1)])
    genes = write_lines(tmp_path / "g.bed", [("chr1", 10, 11, "ENSG00000000001")])
    with pytest.raises(InputError, match=r"1 of 1 genes lie on chromosomes absent .*every track: chr5, chr6"):
        read_tracks_cell("c", tracks={"H3K4me3": track}, genes=genes, bin_size=10, window=20, drop_missing=True)


# bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lines, line, fragment",
    [
        (["chr1\t0\t10\t1", "chr1\t10\t20"], 2, "expected 4 columns"),
        (["chr1\t0\t10\t1", "chr1\t10\t20\t1\t7"], 2, "expected 4 columns"),
        (["chr1\t0\t10\t1", "chr1\t10\t20\tmany"], 2, "'many' is not a number"),
        (["chr1\t0\t10\t1", "chr1\t1e1\t20\t1"], 2, "'1e1' is not an integer"),
        (["chr1\t0\t10\t1", "chr1\t10\t20\t-3"], 2, "negative value"),
        (["chr1\t0\t10\t1", "chr1\t10\t20\tNaN"], 2, "NaN"),
        (["chr1\t0\t10\t1", "chr1\t10\t20\tinf"], 2, "infinite"),
        (["chr1\t0\t10\t1", "chr1\t20\t20\t1"], 2, "not after start"),
        # A "\r" next to a number is whitespace, as for the fast parser: the error is the real one, at line 3.
        (["chr1\t\r0\t10\t1", "chr1\t10\t20\t1", "chr1\t15\t20\t1"], 3, "overlap"),
        (["chr1\t0\t10\t1", "ch\rr1\t10\t20\t1"], 2, "control character '\\r' in the chromosome name"),
    ],
)
def test_bad_bedgraph_lines_are_named(tmp_path, lines, line, fragment):
    # A track line and a comment first, so the reported numbers count every line of the file.
    path = write_text(tmp_path / "bad.bedGraph", "track type=bedGraph\n# comment\n" + "\n".join(lines) + "\n")
    with pytest.raises(InputError) as caught:
        read_track(path)
    message = str(caught.value)
    assert message.startswith(f"{path}, line {line + 2}")
    assert fragment in message


def test_overlapping_intervals_name_both_lines(tmp_path):
    path = write_lines(
        tmp_path / "overlap.bedGraph.gz",
        [("chr1", 0, 10, 1), ("chr2", 0, 10, 1), ("chr1", 30, 40, 1), ("chr1", 5, 15, 2)],
        compress=True,
    )
    with pytest.raises(InputError) as caught:
        read_track(path)
    message = str(caught.value)
    assert message.startswith(f"{path}, line 4")
    assert "chr1:0-10 and chr1:5-15 overlap (lines 1 and 4)" in message


def test_empty_and_truncated_gzip_tracks(tmp_path):
    empty = tmp_path / "empty.bedGraph.gz"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.bedGraph\.gz: empty file"):
        read_track(empty)
    whole = gzip.compress(("".join(f"chr1\t{i * 10}\t{i * 10 + 10}\t{i}\n" for i in range(5000))).encode())
    truncated = tmp_path / "cut.bedGraph.gz"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match=r"cut\.bedGraph\.gz: truncated or corrupt gzip"):
        read_track(truncated)


def test_a_track_without_intervals_is_refused(tmp_path):
    path = write_text(tmp_path / "comments.bedGraph", "track type=bedGraph\n# nothing here\n")
    with pytest.raises(InputError, match="no intervals"):
        read_track(path)


def test_duplicate_gene_at_another_tss_names_both_lines(tmp_path):
    path = write_lines(
        tmp_path / "dup.bed",
        [
            ("#header",),
            ("chr1", 0, 20, "ENSG00000000001_A"),
            ("chr1", 50, 70, "ENSG00000000002_B"),
            ("chr2", 0, 20, "ENSG00000000001.2"),
        ],
    )
    with pytest.raises(InputError) as caught:
        read_genes(path)
    message = str(caught.value)
    assert message.startswith(f"{path}, line 4")
    assert "ENSG00000000001.2" in message and "ENSG00000000001_A" in message and "line 2" in message


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("chr1\t10\tENSG00000000009_X", "expected at least 4 columns"),
        ("chr1\tten\t20\tENSG00000000009_X", "'ten' is not an integer"),
        ("chr1\t20\t10\tENSG00000000009_X", "not after start"),
        ("chr1\t10\t20\tENSG00000000009_X\t0\tup", "strand 'up'"),
    ],
)
def test_malformed_bed_lines_are_named(tmp_path, line, fragment):
    path = write_text(tmp_path / "bad.bed", "chr1\t0\t20\tENSG00000000001_A\n" + line + "\n")
    with pytest.raises(InputError) as caught:
        read_genes(path)
    assert str(caught.value).startswith(f"{path}, line 2")
    assert fragment in str(caught.value)


# bigWig ---------------------------------------------------------------------------


def test_bigwig_and_bedgraph_of_the_same_intervals_bin_identically(tmp_path):
    pyBigWig = pytest.importorskip("pyBigWig")
    intervals = [("chr1", 0, 10, 1.0), ("chr1", 30, 40, 4.0), ("chr1", 40, 60, 2.5), ("chr2", 0, 100, 10.0)]
    bedgraph = read_track(write_lines(tmp_path / "t.bedGraph", intervals))
    path = tmp_path / "t.bw"
    handle = pyBigWig.open(str(path), "w")
    handle.addHeader([("chr1", 1000), ("chr2", 1000)])
    for chrom, start, end, value in intervals:
        handle.addEntries([chrom], [start], ends=[end], values=[value])
    handle.close()
    bigwig = read_track(path)
    assert bigwig.format == "bigWig"
    genes = read_genes(
        write_lines(
            tmp_path / "g.bed", [("chr1", 25, 26, "a", 0, "+"), ("chr1", 44, 45, "b", 0, "-"), ("chr2", 5, 6, "c")]
        )
    )
    for aggregate in ("sum", "mean"):
        from_bigwig = bin_tracks({"H3K4me3": bigwig}, genes, bin_size=10, window=30, aggregate=aggregate)
        from_bedgraph = bin_tracks({"H3K4me3": bedgraph}, genes, bin_size=10, window=30, aggregate=aggregate)
        assert np.array_equal(from_bigwig, from_bedgraph)
        assert from_bigwig.any()


def test_a_damaged_bigwig_is_an_input_error(tmp_path):
    pytest.importorskip("pyBigWig")
    path = write_text(tmp_path / "damaged.bw", "not a bigWig\n")
    with pytest.raises(InputError, match=r"damaged\.bw: cannot be read as bigWig"):
        read_track(path)


def test_bigwig_without_pybigwig_names_the_extra(tmp_path, monkeypatch):
    pyBigWig = pytest.importorskip("pyBigWig")
    path = tmp_path / "t.bw"
    handle = pyBigWig.open(str(path), "w")
    handle.addHeader([("chr1", 1000)])
    handle.addEntries(["chr1"], [0], ends=[10], values=[1.0])
    handle.close()
    monkeypatch.setitem(sys.modules, "pyBigWig", None)
    with pytest.raises(MissingExtraError, match=r"histcli\[bigwig\]"):
        read_track(path)


# real data: E116 -------------------------------------------------------------------

E116_MARKS = ("H3K4me3", "H3K4me1", "H3K36me3", "H3K9me3", "H3K27me3")
AUTOSOMES = {f"chr{i}" for i in range(1, 23)}


def e116_cell(folder: Path, **options):
    return read_tracks_cell(
        "E116",
        tracks={mark: folder / f"E116.{mark}.bedGraph.gz" for mark in E116_MARKS},
        genes=folder / "genes.hg19.bed",
        expression=folder / "E116.expression.tsv",
        split=folder / "deepchrome_split.tsv",
        bin_size=10000,
        window=100000,
        **options,
    )


def bed_rows(folder: Path) -> list[list[str]]:
    lines = (folder / "genes.hg19.bed").read_text().splitlines()
    return [line.split() for line in lines if not line.startswith("#")]


def plain_bins(track: Path, windows: dict[str, tuple[str, int]]) -> dict[str, list[float]]:
    """For each gene (chrom, tss): twenty 10 kb bins over tss +/- 100 kb, summing
    value * overlap / length over the raw lines by hand."""
    edges = {gene: [tss - 100000 + 10000 * k for k in range(21)] for gene, (_, tss) in windows.items()}
    totals = {gene: [0.0] * 20 for gene in windows}
    with gzip.open(track, "rt") as handle:
        for line in handle:
            chrom, start, end, value = line.split()
            start, end, value = int(start), int(end), float(value)
            for gene, (gene_chrom, _) in windows.items():
                gene_edges = edges[gene]
                if chrom != gene_chrom or end <= gene_edges[0] or start >= gene_edges[-1]:
                    continue
                for k in range(20):
                    overlap = min(end, gene_edges[k + 1]) - max(start, gene_edges[k])
                    if overlap > 0:
                        totals[gene][k] += value * overlap / (end - start)
    return totals


# Genes whose bins are recomputed from the raw lines.
CHECKED_GENES = (
    "ENSG00000000457_SCYL3",  # chr1, an ordinary window
    # chr2, TSS 46870: the window starts before base 0, and chr2's first 10 kb has no line.
    "ENSG00000184731_FAM110C",
    "ENSG00000185220_PGBD2",  # chr1, TSS 249200395: the window runs past chr1's last line
)


@pytest.fixture(scope="module")
def e116():
    folder = shared_data("e116-10kb")
    notes: list[str] = []
    return folder, e116_cell(folder, drop_missing=True, notes=notes), notes


def test_e116_keeps_the_autosomal_genes(e116):
    folder, cell, notes = e116
    # Seven genes are listed twice under two symbols; they count once.
    autosomal = {row[3].split("_")[0] for row in bed_rows(folder) if row[0] in AUTOSOMES}
    assert len(autosomal) == 18915
    assert cell.n_genes == 18915
    assert {gene.split("_")[0] for gene in cell.gene_ids} == autosomal
    assert "ENSG00000062370_ZFP112" in set(cell.gene_ids) and "ENSG00000062370_ZNF285" not in set(cell.gene_ids)
    counts = np.concatenate(cell.counts)
    assert counts.shape == (18915, 20, 5)
    assert cell.marks == E116_MARKS
    assert any("(chrX 829, chrY 51)" in note for note in notes)
    assert cell.attrs["orientation"] == "unknown"  # the BED has no strand column


@pytest.fixture(scope="module")
def raw_e116_bins(e116):
    folder = e116[0]
    windows = {}
    for row in bed_rows(folder):
        if row[3] in CHECKED_GENES:
            windows[row[3]] = (row[0], int(row[1]) + 10000)  # the BED gives TSS +/- 10 kb
    by_mark = {mark: plain_bins(folder / f"E116.{mark}.bedGraph.gz", windows) for mark in E116_MARKS}
    return windows, by_mark


@pytest.mark.parametrize("gene", CHECKED_GENES)
def test_e116_bins_match_sums_over_the_raw_lines(e116, raw_e116_bins, gene):
    _, cell, _ = e116
    windows, by_mark = raw_e116_bins
    chrom, tss = windows[gene]
    index = cell.gene_ids.tolist().index(gene)
    assert cell.coordinates["chrom"][index] == chrom and cell.coordinates["tss"][index] == tss
    counts = np.concatenate(cell.counts)
    for column, mark in enumerate(E116_MARKS):
        assert counts[index, :, column].tolist() == pytest.approx(by_mark[mark][gene], rel=1e-6, abs=1e-4)


def test_e116_labels_use_the_median_of_the_whole_expression_table(e116):
    folder, cell, _ = e116
    rows = [line.split() for line in (folder / "E116.expression.tsv").read_text().splitlines()[1:]]
    threshold = statistics.median(float(value) for _, value in rows)
    assert cell.attrs["label_threshold"] == threshold
    by_gene = {gene: float(value) for gene, value in rows}
    expected = [by_gene[gene.split("_")[0]] for gene in cell.gene_ids]
    assert cell.expression.tolist() == expected
    assert cell.labels.tolist() == [int(value > threshold) for value in expected]


def test_e116_split_follows_the_split_file(e116):
    folder, cell, _ = e116
    rows = [line.split() for line in (folder / "deepchrome_split.tsv").read_text().splitlines()[1:]]
    by_gene = dict(rows)
    expected = collections.Counter(by_gene[gene.split("_")[0]] for gene in cell.gene_ids)
    codes = collections.Counter(cell.split.tolist())
    assert {name: codes[SPLIT_CODES[name]] for name in ("train", "valid", "test")} == expected
    assert codes[SPLIT_CODES["none"]] == 0


def test_e116_refuses_sex_chromosome_genes_without_drop_missing():
    folder = shared_data("e116-10kb")
    rows = bed_rows(folder)
    distinct = {row[3].split("_")[0]: row[0] for row in rows}
    per_chrom = collections.Counter(chrom for chrom in distinct.values() if chrom not in AUTOSOMES)
    assert set(per_chrom) == {"chrX", "chrY"}
    with pytest.raises(InputError) as caught:
        e116_cell(folder)
    message = str(caught.value)
    assert "genes.hg19.bed" in message
    assert f"{sum(per_chrom.values())} of {len(distinct)} genes" in message
    assert f"chrX {per_chrom['chrX']}, chrY {per_chrom['chrY']}" in message
