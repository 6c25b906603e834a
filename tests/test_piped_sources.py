"""The source readers called from Python with pipes (FIFOs, as bash's <(...) hands them): each input is read
once, so nothing waits for a second writer, and the cell is the one the same bytes in regular files give."""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from histcli.errors import InputError
from histcli.sources import deepchrome, deepdiff
from histcli.sources.expression import ExpressionFile
from histcli.sources.tracks import read_tracks_cell

# A reader that opens a pipe a second time waits for a writer that never comes; this is far beyond a good read.
PATIENCE_S = 60

TRACK = b"chr1\t0\t1000\t5\nchr1\t1000\t2000\t7\n"
GENES = (b"chr1\t500\t501\tENSG00000000001_A\t0\t+\n"
         b"chr1\t1500\t1501\tENSG00000000003_C\t0\t-\n"
         b"chr1\t900\t901\tENSG00000000004_D\t0\t+\n")
EXPRESSION = gzip.compress(b"gene_id\tT\nENSG00000000001\t10\nENSG00000000003\t30\nENSG00000000004\t20\n")


def _fifo(path: Path, data: bytes) -> Path:
    """A named pipe at ``path`` that a thread fills with ``data`` once, then closes."""
    os.mkfifo(path)

    def write() -> None:
        try:
            with open(path, "wb") as handle:
                handle.write(data)
        except BrokenPipeError:
            pass  # a reader that closed early; the test then fails on what it read

    threading.Thread(target=write, daemon=True).start()
    return path


def _within_patience(read):
    """``read()``'s result; the test fails if it is still reading after PATIENCE_S."""
    outcome = {}

    def run() -> None:
        try:
            outcome["value"] = read()
        except BaseException as exc:  # handed to the test below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(PATIENCE_S)
    assert not thread.is_alive(), f"still reading after {PATIENCE_S} s: an input was opened twice"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _files(folder: Path, contents: dict[str, bytes], *, piped: bool) -> dict[str, Path]:
    folder.mkdir()
    paths = {name: folder / name for name in contents}
    for name, data in contents.items():
        if piped:
            _fifo(paths[name], data)
        else:
            paths[name].write_bytes(data)
    return paths


def _assert_same_cell(piped, regular, given: list[Path], contents: list[bytes]) -> None:
    for field in ("gene_ids", "split", "expression", "labels"):
        assert np.array_equal(getattr(piped, field), getattr(regular, field)), field
    assert np.array_equal(piped.counts_array(), regular.counts_array())
    # Sources are named as given, with the digest of the bytes read through each pipe.
    assert [source.path for source in piped.sources] == [str(path) for path in given]
    assert [source.sha256 for source in piped.sources] == [hashlib.sha256(data).hexdigest() for data in contents]
    # So is a piped expression table in the attributes that say where the levels and labels came from (not
    # the kernel's /proc/<pid>/fd/pipe:[inode], nor the bare name "63" of /dev/fd/63).
    if "expression_file" in regular.attrs:
        expression = next(path for path in given if str(path) == piped.attrs["expression_file"])
        assert piped.attrs["label_rule"].endswith(f"of {expression}")


# prepare hands the readers one ExpressionFile that several cells share; it reads its pipe once too.
EXPRESSION_AS = {"path": Path, "ExpressionFile": ExpressionFile}


@pytest.mark.parametrize("expression_as", EXPRESSION_AS)
def test_read_tracks_cell_reads_pipes_once(tmp_path, expression_as):
    contents = {"H3K4me3.bedGraph": TRACK, "H3K27me3.bedGraph": TRACK.replace(b"\t5\n", b"\t2\n"),
                "genes.bed": GENES, "m.tsv": EXPRESSION}

    def read(paths):
        return read_tracks_cell("T", tracks={"H3K4me3": paths["H3K4me3.bedGraph"],
                                             "H3K27me3": paths["H3K27me3.bedGraph"]},
                                genes=paths["genes.bed"], expression=EXPRESSION_AS[expression_as](paths["m.tsv"]),
                                bin_size=100, window=200)

    regular = read(_files(tmp_path / "files", contents, piped=False))
    assert regular.gene_ids.tolist() == ["ENSG00000000001_A", "ENSG00000000003_C", "ENSG00000000004_D"]
    pipes = _files(tmp_path / "pipes", contents, piped=True)
    piped = _within_patience(lambda: read(pipes))
    _assert_same_cell(piped, regular, list(pipes.values()), list(contents.values()))


def test_an_error_in_a_piped_track_names_the_pipe(tmp_path):
    pipes = _files(tmp_path / "pipes", {"bad.bedGraph": b"chr1\t0\t1000\t5\nchr1\t1000\tx\t7\n",
                                        "genes.bed": GENES}, piped=True)
    with pytest.raises(InputError) as caught:
        _within_patience(lambda: read_tracks_cell("T", tracks={"H3K4me3": pipes["bad.bedGraph"]},
                                                  genes=pipes["genes.bed"], bin_size=100, window=200))
    assert str(caught.value).startswith(f"{pipes['bad.bedGraph']}, line 2, field end: ")


def test_deepchrome_read_cell_reads_pipes_once(tmp_path):
    contents = {f"{split}.csv": "".join(f"{split}{g},{b},{b},2,3,4,5,{g}\n" for g in range(2)
                                        for b in range(1, 5)).encode() for split in ("train", "valid", "test")}

    def read(paths):
        return deepchrome.read_cell("c", {name.removesuffix(".csv"): path for name, path in paths.items()})

    regular = read(_files(tmp_path / "files", contents, piped=False))
    pipes = _files(tmp_path / "pipes", contents, piped=True)
    piped = _within_patience(lambda: read(pipes))
    _assert_same_cell(piped, regular, list(pipes.values()), list(contents.values()))


@pytest.mark.parametrize("expression_as", EXPRESSION_AS)
def test_deepdiff_read_cell_reads_pipes_once(tmp_path, expression_as):
    genes = {"train": "ENSG00000000001_A", "valid": "ENSG00000000002_B", "test": "ENSG00000000003_C"}
    contents = {f"X.{split}.csv": "".join(f"{gene}_{b},1,2,{b},4,5\n" for b in range(1, 3)).encode()
                for split, gene in genes.items()}
    contents["X.expr.csv"] = b"ENSG00000000001,1\nENSG00000000002,2\nENSG00000000003,3\n"

    def read(paths):
        splits = {split: paths[f"X.{split}.csv"] for split in genes}
        return deepdiff.read_cell("X", splits, EXPRESSION_AS[expression_as](paths["X.expr.csv"]))

    regular = read(_files(tmp_path / "files", contents, piped=False))
    assert regular.labels.tolist() == [0, 0, 1]
    pipes = _files(tmp_path / "pipes", contents, piped=True)
    piped = _within_patience(lambda: read(pipes))
    _assert_same_cell(piped, regular, list(pipes.values()), list(contents.values()))


def test_prepare_tracks_checks_the_expression_column_before_reading_a_track(tmp_path):
    """A mistyped column fails at once, not after a genome-wide track pipe has been read (or, here, a pipe
    that nobody writes: reading it would wait for ever)."""
    from conftest import assert_one_line_error, run_cli

    os.mkfifo(tmp_path / "never-written.bedGraph")
    (tmp_path / "genes.bed").write_bytes(GENES)
    (tmp_path / "m.tsv.gz").write_bytes(EXPRESSION)
    result = run_cli("prepare", "tracks", "--cell", "T", "--track", f"H3K4me3={tmp_path / 'never-written.bedGraph'}",
                     "--genes", tmp_path / "genes.bed", "--expression", tmp_path / "m.tsv.gz",
                     "--expression-column", "nope", "--bin-size", 100, "--window", 200,
                     "--store", tmp_path / "store.h5", timeout=PATIENCE_S)
    assert_one_line_error(result, "nope", code=2)
    assert not (tmp_path / "store.h5").exists()
