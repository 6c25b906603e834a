"""Bad input through the command line for the DeepDiff and track layouts, and store safety.

Each case: a one-line error naming the file and line or field, exit code 1, and
a store left byte-for-byte as it was.
"""

from __future__ import annotations

import gzip
import os

import pytest
from conftest import assert_one_line_error, file_digest, run_cli, stalled_at_commit

from histcli.store import SPLIT_CODES, Store


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "store.h5"
    assert run_cli("prepare", "simulate", "--cells", 1, "--genes", 30, "--bins", 4, "--store", path, "-q").code == 0
    return path


def _deepdiff_folder(tmp_path, rows_per_split=None):
    folder = tmp_path / "dd"
    folder.mkdir()
    genes = {"train": ["ENSG00000000001_A", "ENSG00000000002_B"], "valid": ["ENSG00000000003_C"],
             "test": ["ENSG00000000004_D"]}
    for split, names in genes.items():
        lines = [f"{name}_{b},1,2,3,4,5" for name in names for b in range(1, 5)]
        (folder / f"X.{split}.csv").write_text("\n".join((rows_per_split or {}).get(split, lines)) + "\n")
    (folder / "X.expr.csv").write_text("".join(f"ENSG0000000000{i},{i * 1.5}\n" for i in range(1, 6)))
    return folder


DEEPDIFF_CASES = {
    "wrong column count": ({"train": ["ENSG00000000001_A_1,1,2,3,4"]}, "X.train.csv", "line 1", "found 5"),
    "non-numeric value": ({"valid": ["ENSG00000000003_C_1,1,two,3,4,5"]}, "X.valid.csv", "line 1",
                          "field H3K4me3", "'two' is not a number"),
    "negative value": ({"test": ["ENSG00000000004_D_1,1,2,3,-4,5"]}, "X.test.csv", "line 1", "field H3K27me3",
                       "negative"),
    "bin not a number": ({"train": ["ENSG00000000001_A_x,1,2,3,4,5"]}, "X.train.csv", "line 1", "field gene_bin",
                         "'x' is not a number"),
    "gene without a name": ({"train": [f"ENSG00000000001_A_{b},1,2,3,4,5" for b in range(1, 5)]
                             + [f" _{b},1,2,3,4,5" for b in range(1, 5)]}, "X.train.csv", "line 5",
                            "field gene_bin", "' _1' is not <gene>_<bin>"),
    "gene with a space": ({"train": [f"ENSG00000000001_A_{b},1,2,3,4,5" for b in range(1, 5)]
                           + [f"ENSG00000000002_B _{b},1,2,3,4,5" for b in range(1, 5)]}, "X.train.csv", "line 5",
                          "field gene_bin", "gene id has leading or trailing spaces"),
    "a header line": ({"train": ["gene_bin,H3K4me1,H3K4me3,H3K9me3,H3K27me3,H3K36me3", "ENSG00000000001_A_1,1,2,3,4,5"]},
                      "X.train.csv", "line 1, field gene_bin: 'bin' is not a number; line 1 looks like a header, "
                      "which this layout does not have: remove it"),
}


@pytest.mark.parametrize("case", sorted(DEEPDIFF_CASES))
def test_bad_deepdiff_input(tmp_path, store, case):
    rows, *fragments = DEEPDIFF_CASES[case]
    folder = _deepdiff_folder(tmp_path, rows)
    digest = file_digest(store)
    result = run_cli("prepare", "deepdiff", folder, "--cell", "X", "--store", store)
    assert_one_line_error(result, *fragments)
    assert file_digest(store) == digest


def test_deepdiff_and_deepchrome_need_every_split_file(tmp_path, store):
    folder = _deepdiff_folder(tmp_path)
    (folder / "X.valid.csv").unlink()
    assert_one_line_error(run_cli("prepare", "deepdiff", folder, "--cell", "X", "--store", store),
                          "X.valid.csv", "no such file")
    toy = tmp_path / "toy"
    toy.mkdir()
    (toy / "train.csv").write_text("g1,1,1,1,1,1,1,1\n")
    (toy / "test.csv").write_text("g2,1,1,1,1,1,1,0\n")
    assert_one_line_error(run_cli("prepare", "deepchrome", toy, "--cell", "toy", "--store", store),
                          "valid.csv", "missing: valid.csv")


def test_a_folder_in_place_of_a_split_file_is_named_as_a_folder(tmp_path, store):
    folder = _deepdiff_folder(tmp_path)
    (folder / "X.valid.csv").unlink()
    (folder / "X.valid.csv").mkdir()
    assert_one_line_error(run_cli("prepare", "deepdiff", folder, "--cell", "X", "--store", store),
                          f"{folder / 'X.valid.csv'}: is a folder, expected a file")
    toy = tmp_path / "toy"
    toy.mkdir()
    for split in ("train", "valid"):
        (toy / f"{split}.csv").write_text(f"{split}1,1,1,1,1,1,1,1\n")
    (toy / "test.csv").mkdir()
    assert_one_line_error(run_cli("prepare", "deepchrome", toy, "--cell", "toy", "--store", store),
                          f"{toy / 'test.csv'}: is a folder, expected a file")


@pytest.fixture
def track_files(tmp_path):
    """Two marks on chr1 and a BED of two genes, valid as written."""
    for mark in ("H3K4me3", "H3K27me3"):
        (tmp_path / f"{mark}.bedGraph").write_text("chr1\t0\t1000\t5\nchr1\t1000\t2000\t7\n")
    (tmp_path / "genes.bed").write_text("chr1\t500\t501\tENSG00000000001_A\t0\t+\n"
                                        "chr1\t1500\t1501\tENSG00000000002_B\t0\t-\n")
    (tmp_path / "expr.tsv").write_text("gene_id\tvalue\nENSG00000000001\t3\nENSG00000000002\t0\n")
    return tmp_path


def _prepare_tracks(files, store, *extra, tracks=None):
    tracks = tracks or [f"--track=H3K4me3={files / 'H3K4me3.bedGraph'}",
                        f"--track=H3K27me3={files / 'H3K27me3.bedGraph'}"]
    return run_cli("prepare", "tracks", "--cell", "T", *tracks, "--genes", files / "genes.bed",
                   "--expression", files / "expr.tsv", "--bin-size", 100, "--window", 200, "--store", store, *extra)


def test_split_file_and_its_earlier_name(track_files, store):
    (track_files / "split.tsv").write_text("ENSG00000000001\ttrain\nENSG00000000002\ttest\n")
    for option in ("--split-file", "--split"):
        result = _prepare_tracks(track_files, store, option, track_files / "split.tsv", "--overwrite", "-q")
        assert result.code == 0, result.stderr
        assert Store(store).load("T").split.tolist() == [SPLIT_CODES["train"], SPLIT_CODES["test"]]
    both = _prepare_tracks(track_files, store, "--split-file", track_files / "split.tsv", "--split-fractions",
                           "0.6,0.2,0.2", "--overwrite")
    assert_one_line_error(both, "--split-file and --split-fractions cannot be combined", code=2)
    assert "--split-file" in run_cli("prepare", "tracks", "--help").stdout


def test_tracks_prepare_through_the_command_line(track_files, store):
    result = _prepare_tracks(track_files, store, "-q")
    assert result.code == 0, result.stderr
    cell = Store(store).load("T")
    # Gene A (+, TSS 500): bins [300,400) and [400,500) in the first interval, [500,600), [600,700) too: 5/1000 per base.
    assert cell.counts[0, :, 0].tolist() == pytest.approx([0.5, 0.5, 0.5, 0.5])


@pytest.mark.parametrize("damage, fragments", [
    ("chr1\t0\t1000\t5\nchr1\t1000\t2000\tmany\n", ("H3K4me3.bedGraph", "line 2", "'many'")),
    ("chr1\t0\t1000\t-5\n", ("H3K4me3.bedGraph", "line 1", "negative")),
    ("chr1\t0\t1000\t5\nchr1\t900\t2000\t7\n", ("H3K4me3.bedGraph", "line 2", "overlap")),
    ("chr1\t0\t1000\n", ("H3K4me3.bedGraph", "line 1", "4 columns")),
])
def test_bad_tracks_are_refused_and_the_store_kept(track_files, store, damage, fragments):
    (track_files / "H3K4me3.bedGraph").write_text(damage)
    digest = file_digest(store)
    assert_one_line_error(_prepare_tracks(track_files, store), *fragments)
    assert file_digest(store) == digest


def test_damaged_gzip_tracks_and_unknown_marks(track_files, store):
    data = gzip.compress((track_files / "H3K4me3.bedGraph").read_bytes() * 5000)
    (track_files / "cut.bedGraph.gz").write_bytes(data[: len(data) // 2])
    (track_files / "empty.bedGraph.gz").write_bytes(b"")
    digest = file_digest(store)
    for name, expected in (("cut", "truncated or corrupt gzip"), ("empty", "empty")):
        result = _prepare_tracks(track_files, store, tracks=[f"--track=H3K4me3={track_files / f'{name}.bedGraph.gz'}"])
        assert_one_line_error(result, f"{name}.bedGraph.gz", expected)
    result = _prepare_tracks(track_files, store, tracks=[f"--track=H3K4mex={track_files / 'H3K4me3.bedGraph'}"])
    assert_one_line_error(result, "--track", "'H3K4mex' is not a histone mark name", code=2)
    assert file_digest(store) == digest


def test_missing_expression_says_how_many(track_files, store):
    (track_files / "expr.tsv").write_text("gene_id\tvalue\nENSG00000000001\t3\n")
    digest = file_digest(store)
    assert_one_line_error(_prepare_tracks(track_files, store), "expr.tsv", "1 of 2 genes", "--drop-missing")
    assert file_digest(store) == digest
    assert _prepare_tracks(track_files, store, "--drop-missing", "-q").code == 0
    assert Store(store).load("T").n_genes == 1


def test_a_read_only_store_is_left_alone(tmp_path, store):
    os.chmod(store, 0o444)
    try:
        digest = file_digest(store)
        result = run_cli("prepare", "simulate", "--cells", 1, "--genes", 30, "--bins", 4, "--prefix", "new",
                         "--store", store)
        assert_one_line_error(result, str(store), "read-only")
        assert file_digest(store) == digest and oct(store.stat().st_mode & 0o777) == "0o444"
    finally:
        os.chmod(store, 0o644)


def test_a_shared_store_keeps_its_permissions(tmp_path, store):
    os.chmod(store, 0o664)
    assert run_cli("prepare", "simulate", "--cells", 1, "--genes", 30, "--bins", 4, "--prefix", "more",
                   "--store", store, "-q").code == 0
    assert oct(store.stat().st_mode & 0o777) == "0o664"


def test_a_folder_given_as_store_is_named(tmp_path):
    result = run_cli("prepare", "simulate", "--cells", 1, "--genes", 30, "--bins", 4, "--store", tmp_path)
    assert_one_line_error(result, str(tmp_path), "is a folder")


def test_sigkill_inside_the_commit_leaves_the_store_intact(tmp_path, store):
    """Kill a writer while it holds the lock with the new store half-finished beside the old one."""
    before = Store(store).fingerprint("sim01")
    with stalled_at_commit("from histcli.sources.simulate import simulate_cells\n"
                           f"store_module.Store({str(store)!r}).write(simulate_cells(2, 500, 10, prefix='late'))"):
        leftovers = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
        assert leftovers, "the new store is being written beside the old one"
    assert Store(store).cell_names() == ["sim01"]
    assert Store(store).fingerprint("sim01") == before
    # The next writer removes what the killed one left.
    assert run_cli("prepare", "simulate", "--cells", 1, "--genes", 30, "--bins", 4, "--prefix", "next",
                   "--store", store, "-q").code == 0
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".staging-" in p.name]
    assert Store(store).cell_names() == ["next01", "sim01"]


def test_store_rm_prints_what_it_removed(tmp_path, store):
    assert run_cli("prepare", "simulate", "--cells", 2, "--genes", 30, "--bins", 4, "--prefix", "x",
                   "--store", store, "-q").code == 0
    result = run_cli("store", "rm", "x01", "--store", store, "-f", "tsv")
    assert result.code == 0, result.stderr
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == ["cell", "x01"]
    assert Store(store).cell_names() == ["sim01", "x02"]
    digest = file_digest(store)
    assert_one_line_error(run_cli("store", "rm", "x01", "--store", store), "no cell 'x01'")
    assert file_digest(store) == digest
